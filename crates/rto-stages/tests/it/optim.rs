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

/// A bf16 parameter 1.0 with a constant gradient and lr 1e-3: Adam's first steps move it by
/// lr each (m̂/√v̂ = 1), a thousandth: less than half of bf16's spacing just below 1.0
/// (2⁻⁸ ≈ 3.9e-3). Without an
/// fp32 master each step would round back to 1.0 and the weight would never move; with it,
/// the master walks down by 1e-3 per step and the bf16 weight follows once the sum is large
/// enough to show.
#[test]
fn bf16_parameters_are_updated_through_fp32_masters() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let weight = (&vs.root() / "proj").ones("weight", &[1, 1]);
    vs.set_kind(Kind::BFloat16); // converts the variables in place: `weight` is bf16 now
    assert_eq!(weight.kind(), Kind::BFloat16);
    let mut adam = AdamW::new(&vs, no_clip_no_decay()).unwrap();
    assert!(adam.has_masters());
    let step = |adam: &mut AdamW| {
        adam.zero_grad();
        (weight.sum(Kind::Float) * 1.0).backward();
        assert_eq!(weight.grad().kind(), Kind::BFloat16, "the gradient stays in the parameter's dtype");
        adam.clip_and_step(1e-3).unwrap();
    };
    step(&mut adam);
    assert_eq!(weight.double_value(&[0, 0]), 1.0, "one update of 1e-3 does not show in bf16 at 1.0");
    for _ in 0..9 {
        step(&mut adam);
    }
    // Ten updates of (almost exactly) 1e-3: the master is at 0.990; bf16's neighbours of 0.99 are
    // 0.98828125 and 0.9921875, and 0.99 rounds to the nearer, 0.98828125.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adam.safetensors");
    adam.save(&path).unwrap();
    let stored: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(&path).unwrap().into_iter().collect();
    let master = &stored["master.proj.weight"];
    assert_eq!(master.kind(), Kind::Float, "masters are saved in fp32");
    let master_value = master.double_value(&[0, 0]);
    assert!((master_value - 0.990).abs() < 2e-5, "master after 10 steps: {master_value}");
    assert_eq!(weight.double_value(&[0, 0]), 0.98828125, "the bf16 weight is the master rounded");
    assert_eq!(stored["exp_avg.proj.weight"].kind(), Kind::Float, "moments stay fp32");

    // Restoring the state into a fresh optimizer brings the master back, and the parameter
    // with it: the next step is the same as the uninterrupted one.
    let mut resumed = AdamW::new(&vs, no_clip_no_decay()).unwrap();
    let _ = tch::no_grad(|| weight.shallow_clone().fill_(0.5));
    resumed.load(&path).unwrap();
    assert_eq!(weight.double_value(&[0, 0]), 0.98828125, "load restores the parameter from its master");
    step(&mut adam);
    let continued = weight.double_value(&[0, 0]);
    let _ = tch::no_grad(|| weight.shallow_clone().fill_(0.5));
    resumed.load(&path).unwrap();
    step(&mut resumed);
    assert_eq!(weight.double_value(&[0, 0]), continued, "a resumed step equals the uninterrupted one");
}

fn no_clip_no_decay() -> AdamWSettings {
    AdamWSettings { adam_beta1: 0.9, adam_beta2: 0.95, adam_eps: 1e-8, weight_decay: 0.0, max_grad_norm: 1e9 }
}
