//! AdamW's weight decay reaches weight matrices and embeddings, never biases or norm weights
//! (HF Trainer's and OpenRLHF's rule), checked on one step worked out by hand.

use rto_stages::optim::{decays, AdamW, AdamWSettings};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

#[test]
fn decay_skips_biases_and_norm_weights() {
    for name in ["model.layers.0.self_attn.qkv_proj.bias", "model.norm.weight", "model.layers.3.input_layernorm.weight"]
    {
        assert!(!decays(name), "{name}");
    }
    for name in ["model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight", "lm_head.weight", "score.weight"] {
        assert!(decays(name), "{name}");
    }
}

#[test]
fn one_step_with_zero_gradients_only_decays_the_matrices() {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let linear = nn::linear(&root / "proj", 2, 2, nn::LinearConfig { bias: true, ..Default::default() });
    let norm = (&root / "post_attention_layernorm").ones("weight", &[2]);
    tch::no_grad(|| {
        let _ = linear.ws.shallow_clone().fill_(2.0);
        let _ = linear.bs.as_ref().unwrap().shallow_clone().fill_(3.0);
    });
    let settings =
        AdamWSettings { adam_beta1: 0.9, adam_beta2: 0.95, adam_eps: 1e-8, weight_decay: 0.1, max_grad_norm: 1.0 };
    let mut adam = AdamW::new(&vs, settings).unwrap();
    adam.zero_grad();
    // Gradients that exist and are all zero: the Adam update is 0 / (0 + eps) = 0, so each
    // parameter moves by its decay alone: p ← p·(1 − lr·λ) = p·(1 − 0.5·0.1) = 0.95·p.
    let x = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
    ((linear.forward(&x) * &norm).sum(Kind::Float) * 0.0).backward();
    adam.clip_and_step(0.5).unwrap();
    let values = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    assert_eq!(values(&linear.ws), vec![1.9; 4], "the weight matrix decays");
    assert_eq!(values(linear.bs.as_ref().unwrap()), vec![3.0; 2], "the bias does not");
    assert_eq!(values(&norm), vec![1.0; 2], "the norm weight does not");
}
