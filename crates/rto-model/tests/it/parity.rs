//! Our model against transformers on the same tiny random checkpoints.

use crate::common::*;
use rto_model::decode_graph::DecodeMode;
use rto_model::kv_cache::KvCache;
use rto_model::llama::positions_from_mask;
use rto_model::{generate, CausalLm, Head, SamplingConfig};
use tch::{Device, Kind, Tensor};

/// Three left-padded rows of different lengths (pads are id 0).
fn padded_batch() -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let rows: Vec<Vec<i64>> =
        vec![vec![5, 17, 33, 8, 91, 44, 12, 60, 7], vec![21, 3, 77, 45, 9, 30], vec![88, 14, 56, 4]];
    let width = 9;
    let ids = rows.iter().map(|r| [vec![0; width - r.len()], r.clone()].concat()).collect();
    let mask = rows.iter().map(|r| [vec![0; width - r.len()], vec![1; r.len()]].concat()).collect();
    (ids, mask)
}

fn to_tensor(rows: &[Vec<i64>]) -> Tensor {
    Tensor::from_slice2(rows)
}

fn check_logits_parity(kind: &str) {
    let hf = hf_model(kind);
    let work = tempfile::tempdir().unwrap();
    let (ids, mask) = padded_batch();
    let batch_path = work.path().join("batch.json");
    write_batch(&batch_path, &ids, &mask);
    let reference_path = work.path().join("ref.safetensors");
    reference(&["logits", hf.path().to_str().unwrap(), batch_path.to_str().unwrap(), reference_path.to_str().unwrap()]);
    let theirs = read_tensor(&reference_path, "logits");

    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let (ids_t, mask_t) = (to_tensor(&ids), to_tensor(&mask));
    let ours = tch::no_grad(|| model.forward_logits(&ids_t, &mask_t));
    let err = masked_rel_error(&ours, &theirs, &mask_t);
    assert!(err <= 1e-4, "{kind}: relative logit error {err:e} vs transformers");

    // What we save, transformers loads with the same numbers.
    let saved = work.path().join("saved");
    model.save(&saved, Kind::Float, None).unwrap();
    let resaved_path = work.path().join("resaved.safetensors");
    reference(&["logits", saved.to_str().unwrap(), batch_path.to_str().unwrap(), resaved_path.to_str().unwrap()]);
    let theirs_again = read_tensor(&resaved_path, "logits");
    let err = masked_rel_error(&ours, &theirs_again, &mask_t);
    assert!(err <= 1e-4, "{kind}: transformers on our saved folder differs by {err:e}");
}

#[test]
fn llama_with_gqa_matches_transformers() {
    check_logits_parity("llama-gqa");
}

#[test]
fn qwen2_with_bias_matches_transformers() {
    check_logits_parity("qwen2-bias");
}

#[test]
fn tied_embeddings_match_transformers() {
    check_logits_parity("tied");
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check_logits_parity("llama3-rope");
}

#[test]
fn kv_cache_decoding_equals_full_forward_at_every_step() {
    let hf = hf_model("llama-gqa");
    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let (ids, mask) = padded_batch();
    let continuation: Vec<Vec<i64>> =
        vec![vec![11, 12, 13, 14, 15], vec![21, 22, 23, 24, 25], vec![31, 32, 33, 34, 35]];
    let full_ids: Vec<Vec<i64>> = ids.iter().zip(&continuation).map(|(a, b)| [a.clone(), b.clone()].concat()).collect();
    let full_mask: Vec<Vec<i64>> = mask.iter().map(|m| [m.clone(), vec![1; 5]].concat()).collect();
    let full = tch::no_grad(|| model.forward_logits(&to_tensor(&full_ids), &to_tensor(&full_mask)));

    let cfg = &model.config;
    let mut cache = KvCache::new(
        cfg.num_hidden_layers as usize,
        3,
        cfg.num_kv_heads(),
        14,
        cfg.head_dim(),
        (Kind::Float, Device::Cpu),
    );
    tch::no_grad(|| {
        let mut attn = to_tensor(&mask);
        let positions = positions_from_mask(&attn);
        let hidden = model.decoder.forward(&to_tensor(&ids), &attn, &positions, Some(&mut cache));
        let prefill = model.logits(&hidden);
        let err = masked_rel_error(&prefill, &full.narrow(1, 0, 9), &attn);
        assert!(err <= 1e-5, "prefill differs by {err:e}");
        let last_prompt_pos = positions.narrow(1, 8, 1);
        for step in 0..5i64 {
            let next_pos = &last_prompt_pos + (step + 1);
            let column: Vec<Vec<i64>> = continuation.iter().map(|c| vec![c[step as usize]]).collect();
            attn = Tensor::cat(&[&attn, &Tensor::ones([3, 1], (Kind::Int64, Device::Cpu))], 1);
            let hidden = model.decoder.forward(&to_tensor(&column), &attn, &next_pos, Some(&mut cache));
            let step_logits = model.logits(&hidden);
            let expected = full.narrow(1, 9 + step, 1);
            let diff = (&step_logits - &expected).abs().max().double_value(&[]);
            let scale = expected.abs().max().double_value(&[]);
            assert!(diff / scale <= 1e-5, "step {step}: cached decode differs by {:e}", diff / scale);
        }
    });
}

#[test]
fn greedy_generation_matches_transformers_generate() {
    let hf = hf_model("llama-gqa");
    let work = tempfile::tempdir().unwrap();
    let prompts: Vec<Vec<i64>> = vec![vec![5, 17, 33, 8, 91, 44, 12], vec![21, 3, 77], vec![88, 14, 56, 4, 19]];
    let prompts_path = work.path().join("prompts.json");
    std::fs::write(&prompts_path, serde_json::to_string(&prompts).unwrap()).unwrap();
    let out = work.path().join("gen.json");
    reference(&["generate", hf.path().to_str().unwrap(), prompts_path.to_str().unwrap(), "12", out.to_str().unwrap()]);
    let theirs: Vec<Vec<i64>> = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let config = SamplingConfig { max_new_tokens: 12, greedy: true, ..Default::default() };
    // All three prompts in one left-padded batch: padding must not change any row.
    let ours = generate(&model, &prompts, &config, 0).unwrap();
    assert_eq!(ours.responses, theirs);
    assert_eq!(ours.finished, vec![false; 3]);
}

#[test]
fn sampling_is_seeded_and_top_k_one_is_greedy() {
    let hf = hf_model("tied");
    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let prompts = vec![vec![5, 17, 33], vec![21, 3, 77, 45, 9]];
    let sample = |seed, top_k, top_p| {
        let config = SamplingConfig { max_new_tokens: 16, seed, top_k, top_p, ..Default::default() };
        generate(&model, &prompts, &config, 0).unwrap().responses
    };
    assert_eq!(sample(7, 0, 1.0), sample(7, 0, 1.0), "same seed, same tokens");
    assert_ne!(sample(7, 0, 1.0), sample(8, 0, 1.0), "another seed, other tokens");
    let greedy =
        generate(&model, &prompts, &SamplingConfig { max_new_tokens: 16, greedy: true, ..Default::default() }, 0)
            .unwrap();
    assert_eq!(sample(3, 1, 1.0), greedy.responses, "top-k 1 is greedy");
    assert_eq!(sample(3, 0, 1e-6), greedy.responses, "a tiny top-p keeps only the top token");
}

#[test]
fn generation_stops_rows_at_their_stop_token() {
    let hf = hf_model("llama-gqa");
    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let prompts = vec![vec![5, 17, 33], vec![21, 3, 77, 45]];
    let free =
        generate(&model, &prompts, &SamplingConfig { max_new_tokens: 10, greedy: true, ..Default::default() }, 0)
            .unwrap();
    // Declare row 0's third greedy token a stop token: row 0 ends there, stop token included.
    let stop = free.responses[0][2];
    let config = SamplingConfig { max_new_tokens: 10, greedy: true, stop_ids: vec![stop], ..Default::default() };
    let stopped = generate(&model, &prompts, &config, 0).unwrap();
    let first_stop = free.responses[0].iter().position(|&t| t == stop).unwrap();
    assert_eq!(stopped.responses[0], free.responses[0][..=first_stop].to_vec());
    assert!(stopped.finished[0]);
    let row1_stop = free.responses[1].iter().position(|&t| t == stop);
    match row1_stop {
        Some(i) => assert_eq!(stopped.responses[1], free.responses[1][..=i].to_vec()),
        None => assert_eq!(stopped.responses[1], free.responses[1]),
    }
}

#[test]
fn bf16_and_sharded_checkpoints_round_trip() {
    let hf = hf_model("llama-gqa");
    let work = tempfile::tempdir().unwrap();
    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    // Sharded: tiny shard limit forces several files and an index.
    let sharded = work.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    model.config.to_file(&sharded.join("config.json")).unwrap();
    rto_model::weights::save(&sharded, &model.named_tensors(), Kind::Float, 40_000).unwrap();
    assert!(sharded.join(rto_model::weights::SHARD_INDEX).exists());
    let reloaded = CausalLm::load(&sharded, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    for (name, tensor) in model.named_tensors() {
        assert!(tensor.equal(&reloaded.named_tensors()[&name]), "{name} changed through shards");
    }
    // bf16 on disk loads back into f32 variables (VarStore::load would have switched dtype).
    let bf16 = work.path().join("bf16");
    model.save(&bf16, Kind::BFloat16, None).unwrap();
    let from_bf16 = CausalLm::load(&bf16, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let w = &from_bf16.named_tensors()["model.layers.0.mlp.up_proj.weight"];
    assert_eq!(w.kind(), Kind::Float);
    let (ids, mask) = padded_batch();
    let (a, b) = tch::no_grad(|| {
        (
            model.forward_logits(&to_tensor(&ids), &to_tensor(&mask)),
            from_bf16.forward_logits(&to_tensor(&ids), &to_tensor(&mask)),
        )
    });
    let err = masked_rel_error(&b, &a, &to_tensor(&mask));
    assert!(err > 0.0 && err < 0.05, "bf16 round trip error {err}");
}

#[test]
fn score_head_matches_transformers_sequence_classification() {
    let hf = hf_model("llama-gqa");
    let work = tempfile::tempdir().unwrap();
    let model = CausalLm::load_as_value_model(hf.path(), Device::Cpu, tch::Kind::Float).unwrap();
    // A fresh value head starts at zero; give it values so the comparison means something.
    let score = model.named_tensors()["score.weight"].shallow_clone();
    let mut values = vec![0f32; score.numel()];
    rto_rng::SplitMix64::new(5).fill_normal(&mut values, 0.0, 1.0);
    tch::no_grad(|| score.shallow_clone().copy_(&Tensor::from_slice(&values).view(score.size().as_slice())));
    let rm_dir = work.path().join("rm");
    model.save(&rm_dir, Kind::Float, None).unwrap();
    let prompts = vec![vec![5, 17, 33, 8], vec![21, 3]];
    let responses = vec![vec![40, 41, 2], vec![50, 51, 52, 53, 2]];
    let batch = rto_model::SequenceBatch::new(&prompts, &responses, 0, Device::Cpu).unwrap();
    let ours = tch::no_grad(|| rto_model::sequence_scores(&model, &batch));
    let ids: Vec<Vec<i64>> = Vec::try_from(&batch.input_ids).unwrap();
    let mask: Vec<Vec<i64>> = Vec::try_from(&batch.attention_mask).unwrap();
    let batch_path = work.path().join("batch.json");
    write_batch(&batch_path, &ids, &mask);
    let out = work.path().join("scores.safetensors");
    reference(&["scores", rm_dir.to_str().unwrap(), batch_path.to_str().unwrap(), out.to_str().unwrap()]);
    let theirs = read_tensor(&out, "scores");
    let diff = (&ours - &theirs).abs().max().double_value(&[]);
    assert!(diff <= 1e-4 * theirs.abs().max().double_value(&[]).max(1.0), "scores {ours} vs {theirs}");
}

/// bf16 against transformers in bf16, both upcasting the logits to fp32 at the head.
/// Tolerance: bf16 keeps 8 significant bits (relative step 2⁻⁸ ≈ 3.9e-3); two layers of
/// products summed in other orders leave a few steps of difference, so logits agree within
/// 2e-2 of the largest logit and log-probs within 0.05 nats. (On the 2-core dev machine, an
/// AVX-512 Xeon, both came out bitwise equal.)
fn check_bf16_parity(kind: &str) {
    let hf = hf_model(kind);
    let work = tempfile::tempdir().unwrap();
    let (ids, mask) = padded_batch();
    let batch_path = work.path().join("batch.json");
    write_batch(&batch_path, &ids, &mask);
    let run_reference = |dir: &std::path::Path, dtype: &str, name: &str| {
        let out = work.path().join(name);
        reference(&["logits", dir.to_str().unwrap(), batch_path.to_str().unwrap(), out.to_str().unwrap(), dtype]);
        (read_tensor(&out, "logits"), read_tensor(&out, "bf16").int64_value(&[0]) == 1)
    };
    let (theirs, _) = run_reference(hf.path(), "bfloat16", "ref.safetensors");

    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::BFloat16).unwrap();
    assert_eq!(model.vs.kind(), Kind::BFloat16);
    let (ids_t, mask_t) = (to_tensor(&ids), to_tensor(&mask));
    let ours = tch::no_grad(|| model.forward_logits(&ids_t, &mask_t)).to_kind(Kind::Float);
    let err = masked_rel_error(&ours, &theirs, &mask_t);
    assert!(err <= 2e-2, "{kind}: bf16 relative logit error {err:e} vs transformers in bf16");
    let logprob_err = masked_logprob_error(&ours, &theirs, &mask_t);
    eprintln!("{kind}: bf16 vs transformers bf16: logits {err:.2e} relative, log-probs {logprob_err:.2e} nats");
    assert!(logprob_err <= 0.05, "{kind}: bf16 log-prob error {logprob_err} nats vs transformers in bf16");

    // A bf16 folder we save is bf16 on disk and in config.json: transformers loading it with
    // dtype="auto" gets bf16 weights and our logits.
    let saved = work.path().join("saved");
    model.save(&saved, Kind::BFloat16, None).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dtype"], "bfloat16");
    let (theirs_again, loaded_bf16) = run_reference(&saved, "auto", "resaved.safetensors");
    assert!(loaded_bf16, "{kind}: transformers did not load our bf16 folder as bf16");
    let err = masked_rel_error(&ours, &theirs_again, &mask_t);
    assert!(err <= 2e-2, "{kind}: transformers on our bf16 folder differs by {err:e}");
    // Round trip: loading our bf16 folder gives our bf16 weights bit for bit.
    let reloaded = CausalLm::load(&saved, Head::LanguageModel, Device::Cpu, Kind::BFloat16).unwrap();
    for (name, tensor) in model.named_tensors() {
        assert!(tensor.equal(&reloaded.named_tensors()[&name]), "{kind}: {name} changed through a bf16 save");
    }
}

/// Largest |Δ log p| over real positions and the whole vocabulary, log-softmax in fp32.
fn masked_logprob_error(ours: &Tensor, theirs: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.to_kind(Kind::Float).unsqueeze(-1);
    let (a, b) = (ours.log_softmax(-1, Kind::Float), theirs.log_softmax(-1, Kind::Float));
    ((a - b).abs() * m).max().double_value(&[])
}

#[test]
fn bf16_llama_with_gqa_matches_transformers_in_bf16() {
    check_bf16_parity("llama-gqa");
}

#[test]
fn bf16_tied_qwen_style_matches_transformers_in_bf16() {
    check_bf16_parity("tied");
}

/// The sampler's per-token log-probs and entropies are those of the unmodified distribution (no
/// temperature, top-k or top-p), equal to a full forward's over the sampled sequences within
/// 1e-5 (fp32): a rollout can take them as its old log-probs without another policy forward.
#[test]
fn sampled_logprobs_equal_a_full_forward_under_the_unmodified_distribution() {
    let hf = hf_model("llama-gqa");
    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let prompts: Vec<Vec<i64>> = vec![vec![5, 17, 33, 8, 91, 44], vec![21, 3, 77], vec![88, 14, 56, 4, 9]];
    let config = SamplingConfig {
        max_new_tokens: 12,
        temperature: 0.7,
        top_k: 20,
        top_p: 0.9,
        stop_ids: vec![2],
        seed: 7,
        ..Default::default()
    };
    let generation = generate(&model, &prompts, &config, 0).unwrap();
    assert_eq!(generation.logprobs.len(), prompts.len());
    let batch = generation.to_batch(&prompts, 0, Device::Cpu).unwrap();
    let full = tch::no_grad(|| rto_model::response_logprobs(&model, &batch, true));
    let entropy = Vec::<Vec<f32>>::try_from(full.entropy.as_ref().unwrap()).unwrap();
    let full = Vec::<Vec<f32>>::try_from(&full.logprobs).unwrap();
    let (mut worst, mut worst_entropy) = (0f32, 0f32);
    let rows = generation.logprobs.iter().zip(&generation.entropies).zip(&generation.responses);
    for (row, ((sampled, entropies), response)) in rows.enumerate() {
        assert_eq!(sampled.len(), response.len(), "row {row}: one log-prob per generated token");
        assert_eq!(entropies.len(), response.len(), "row {row}: one entropy per generated token");
        for (t, (&lp, &h)) in sampled.iter().zip(entropies).enumerate() {
            assert!(lp <= 0.0 && lp.is_finite(), "row {row} token {t}: {lp}");
            assert!(h > 0.0 && h.is_finite(), "row {row} token {t}: entropy {h}");
            worst = worst.max((lp - full[row][t]).abs());
            worst_entropy = worst_entropy.max((h - entropy[row][t]).abs());
        }
    }
    assert!(worst <= 1e-5, "sampled vs full-forward log-probs differ by {worst:e}");
    assert!(worst_entropy <= 1e-5, "sampled vs full-forward entropies differ by {worst_entropy:e}");
}

/// The largest |a − b| over two generations' per-token values (log-probs or entropies), row by
/// row in order.
fn largest_gap(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// Three prompts of different lengths, sampled at temperature 0.9 with a stop token: rows stop
/// at different steps, so finished rows decode pads for a while.
fn decode_case() -> (Vec<Vec<i64>>, SamplingConfig) {
    let prompts = vec![vec![5, 17, 33, 8, 91, 44], vec![21, 3, 77], vec![88, 14, 56, 4, 9]];
    (prompts, SamplingConfig { max_new_tokens: 12, temperature: 0.9, stop_ids: vec![2], seed: 3, ..Default::default() })
}

/// Decode steps over the whole KV cache (fixed shapes; the unwritten positions blocked by the
/// bias) sample what steps over the filled part sample: the same tokens, and log-probs and
/// entropies within 1e-6 in fp32 and within bf16 rounding in bf16 (where `generate` picks the
/// fixed width on a CPU).
#[test]
fn fixed_width_decode_samples_what_growing_width_decode_samples() {
    let hf = hf_model("llama-gqa");
    let (prompts, config) = decode_case();
    for (kind, tolerance) in [(Kind::Float, 1e-6f32), (Kind::BFloat16, 2e-2)] {
        let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, kind).unwrap();
        let run = |mode| rto_model::sampling::generate_with_decode(&model, &prompts, &config, 0, mode).unwrap();
        let (growing, fixed) = (run(DecodeMode::Growing), run(DecodeMode::Fixed));
        assert_eq!(fixed.responses, growing.responses, "{kind:?}: sampled tokens");
        assert!(growing.responses.iter().all(|r| r.len() > 3), "{kind:?}: the rows decode several steps");
        let logprob_gap = largest_gap(&fixed.logprobs, &growing.logprobs);
        let entropy_gap = largest_gap(&fixed.entropies, &growing.entropies);
        assert!(logprob_gap <= tolerance, "{kind:?}: log-probs differ by {logprob_gap:e}");
        assert!(entropy_gap <= tolerance, "{kind:?}: entropies differ by {entropy_gap:e}");
    }
    assert!(rto_model::sampling::fixed_decode_width(Kind::BFloat16, Device::Cpu));
    assert!(!rto_model::sampling::fixed_decode_width(Kind::Float, Device::Cpu));
}

/// The decode step a CUDA graph replays (inputs copied into buffers made once per call, KV
/// writes at a device-held slot, attention over the whole cache), run eagerly, samples the
/// same tokens with the same log-probs and entropies, bit for bit, as the plain fixed-width
/// step: the buffers change where the numbers live, not what is computed. Rows stop at
/// different steps, so finished rows' pad steps go through the buffers too.
#[test]
fn buffered_decode_step_samples_what_the_fixed_width_step_samples_bit_for_bit() {
    let hf = hf_model("llama-gqa");
    let (prompts, config) = decode_case();
    for kind in [Kind::Float, Kind::BFloat16] {
        let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, kind).unwrap();
        let run = |mode| rto_model::sampling::generate_with_decode(&model, &prompts, &config, 0, mode).unwrap();
        let (fixed, buffered) = (run(DecodeMode::Fixed), run(DecodeMode::Buffered { capture: false }));
        assert_eq!(buffered.responses, fixed.responses, "{kind:?}: sampled tokens");
        assert_eq!(buffered.finished, fixed.finished, "{kind:?}: stop flags");
        let lengths: Vec<usize> = fixed.responses.iter().map(Vec::len).collect();
        assert!(lengths.iter().all(|&n| n > 3), "{kind:?}: every row decodes several steps: {lengths:?}");
        let bits = |rows: &[Vec<f32>]| rows.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&buffered.logprobs), bits(&fixed.logprobs), "{kind:?}: log-probs");
        assert_eq!(bits(&buffered.entropies), bits(&fixed.entropies), "{kind:?}: entropies");
    }
}

/// `--cuda-graph` on a CPU model is refused before anything is sampled, with what it needs.
#[test]
fn cuda_graph_sampling_on_a_cpu_model_is_refused_with_the_reason() {
    let hf = hf_model("llama-gqa");
    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::Float).unwrap();
    let config = SamplingConfig { max_new_tokens: 4, cuda_graph: true, ..Default::default() };
    let err = generate(&model, &[vec![5, 17, 33]], &config, 0).unwrap_err().to_string();
    assert!(err.contains("--cuda-graph needs a CUDA device (--device cuda)"), "{err}");
}

/// On a GPU, in a build with CUDA graphs: the replayed decode steps sample what the same
/// buffered steps run eagerly sample (tokens equal, log-probs within 1e-6: the kernels are the
/// captured ones, the same). Elsewhere it says why it did not run.
#[test]
fn cuda_graph_replay_samples_what_the_eager_buffered_step_samples() {
    if !tch::Cuda::is_available() || !rto_cuda::AVAILABLE {
        eprintln!(
            "skipped: needs a GPU and a build with rto-cuda/graphs (CUDA available: {}, graphs built: {})",
            tch::Cuda::is_available(),
            rto_cuda::AVAILABLE
        );
        return;
    }
    let hf = hf_model("llama-gqa");
    let device = rto_model::parse_device("cuda").unwrap();
    let (prompts, config) = decode_case();
    let model = CausalLm::load(hf.path(), Head::LanguageModel, device, Kind::Float).unwrap();
    let run = |capture| {
        rto_model::sampling::generate_with_decode(&model, &prompts, &config, 0, DecodeMode::Buffered { capture })
            .unwrap()
    };
    let (eager, replayed) = (run(false), run(true));
    assert_eq!(replayed.responses, eager.responses, "sampled tokens");
    let gap = largest_gap(&eager.logprobs, &replayed.logprobs);
    assert!(gap <= 1e-6, "log-probs differ by {gap:e}");
}

/// The no-graph bf16 RmsNorm (its product written straight into the bf16 result) gives the
/// bytes the graph-building path gives: logits of a bf16 forward under `no_grad` equal, bit for
/// bit, those of the same forward recorded for a backward.
#[test]
fn bf16_forward_without_a_graph_equals_the_recorded_forward_bitwise() {
    let hf = hf_model("llama-gqa");
    let model = CausalLm::load(hf.path(), Head::LanguageModel, Device::Cpu, Kind::BFloat16).unwrap();
    let (ids, mask) = padded_batch();
    let (ids, mask) = (to_tensor(&ids), to_tensor(&mask));
    assert!(rto_model::grad_mode::enabled());
    let recorded = model.forward_logits(&ids, &mask);
    assert!(recorded.requires_grad(), "the forward in grad mode builds a graph");
    let plain = tch::no_grad(|| {
        assert!(!rto_model::grad_mode::enabled());
        model.forward_logits(&ids, &mask)
    });
    assert!(rto_model::grad_mode::enabled(), "no_grad restores the mode");
    assert!(!plain.requires_grad());
    assert!(plain.equal(&recorded.detach()), "no-graph and recorded bf16 logits differ");
}
