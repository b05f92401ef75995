//! The memory plan's parameter count against the tensors a built model really holds.

use rto_model::memory::{kv_cache_bytes, parameter_count, BatchShape, MemoryPlan, PlanLine, PlannedModel, Role};
use rto_model::{CausalLm, Head, ModelConfig, Precision};
use tch::{Device, Kind};

fn built_parameters(config: &ModelConfig, head: Head) -> u64 {
    let model = CausalLm::random(config.clone(), head, Device::Cpu, Kind::Float, 0).unwrap();
    model.named_tensors().values().map(|t| t.numel() as u64).sum()
}

#[test]
fn parameter_count_matches_the_built_model() {
    let llama = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    let mut qwen = llama.clone();
    qwen.model_type = "qwen2".into();
    let mut tied = llama.clone();
    tied.tie_word_embeddings = true;
    for (name, config) in [("llama gqa", &llama), ("qwen2 (q/k/v bias)", &qwen), ("tied embeddings", &tied)] {
        for head in [Head::LanguageModel, Head::Score] {
            assert_eq!(parameter_count(config, head), built_parameters(config, head), "{name}, {head:?}");
        }
    }
}

#[test]
fn kv_cache_bytes_by_hand() {
    // 3 layers × 2 (k and v) × 4 rows × 10 positions × 2 kv heads × head_dim 8 × 4 bytes.
    let config = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    assert_eq!(kv_cache_bytes(&config, 4, 10, 4), 3 * 2 * 4 * 10 * 2 * 8 * 4);
}

/// The activation line of a trained model, by hand: per layer and token 18·hidden +
/// 4·intermediate + heads·T values of 4 bytes; with checkpointing, one hidden-sized input per
/// layer plus one layer's full set. The head's fp32 logits (3·vocab per token) in both.
#[test]
fn checkpointing_keeps_one_input_per_layer_and_one_full_layer() {
    let config = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    let batch = BatchShape { rows: 2, tokens: 10, head_tokens: None };
    let planned = |checkpointing: bool| {
        let model = PlannedModel {
            name: "policy".into(),
            config: config.clone(),
            head: Head::LanguageModel,
            role: Role::Trained,
            batch,
            gradient_checkpointing: false,
            lora: None,
            shares_base_with: None,
            optimizer_shards: 1,
            precision: Precision::Fp32,
        }
        .with_gradient_checkpointing(checkpointing);
        let mut plan = MemoryPlan::default();
        plan.add_model(&model);
        plan.lines.into_iter().find(|l| l.what.contains("activations")).expect("an activation line")
    };
    let tokens = 2 * 10;
    let layer = tokens * (18 * 64 + 4 * 176 + 8 * 10) * 4;
    let head = tokens * 3 * 300 * 4;
    assert_eq!(planned(false).bytes, 3 * layer + head);
    let checkpointed = planned(true);
    assert_eq!(checkpointed.bytes, 3 * tokens * 64 * 4 + layer + head);
    assert!(checkpointed.what.contains("gradient checkpointing"), "{}", checkpointed.what);
}

/// A trained model in bf16, by hand: bf16 weights and gradients (2 bytes each), fp32 masters
/// (4) and two fp32 moments (8), 16 bytes per parameter as in fp32 (4 + 4 + 8); activations at
/// 2 bytes, the head's logits still fp32. A frozen bf16 model: 2 bytes per parameter.
#[test]
fn bf16_plan_has_masters_and_half_sized_weights_and_activations() {
    let config = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    let params = parameter_count(&config, Head::LanguageModel);
    let batch = BatchShape { rows: 2, tokens: 10, head_tokens: None };
    let plan_of = |role: Role| {
        let model = PlannedModel {
            name: "m".into(),
            config: config.clone(),
            head: Head::LanguageModel,
            role,
            batch,
            gradient_checkpointing: false,
            lora: None,
            shares_base_with: None,
            optimizer_shards: 1,
            precision: Precision::Bf16,
        };
        let mut plan = MemoryPlan::default();
        plan.add_model(&model);
        plan.lines.into_iter().map(|l| (l.what, l.bytes)).collect::<Vec<_>>()
    };
    let trained = plan_of(Role::Trained);
    let bytes = |what: &str| trained.iter().find(|(w, _)| w.contains(what)).unwrap_or_else(|| panic!("{what}")).1;
    assert!(trained[0].0.contains("bf16"), "{:?}", trained[0]);
    assert_eq!(trained[0].1, 2 * params);
    assert_eq!(bytes("gradients"), 2 * params);
    assert_eq!(bytes("master"), 4 * params);
    assert_eq!(bytes("moments"), 8 * params);
    let tokens = 2 * 10;
    let layer = tokens * (18 * 64 + 4 * 176 + 8 * 10) * 2;
    assert_eq!(bytes("activations"), 3 * layer + tokens * 3 * 300 * 4);
    // The step's transient: 3 fp32 buffers of the largest tensor (the fused gate/up matrix,
    // 2·176 × 64, beats the 300 × 64 embedding), plus a second embedding gradient when tied.
    let tied = if config.tie_word_embeddings { 300 * 64 * 2 } else { 0 };
    assert_eq!(bytes("optimizer step"), 3 * 2 * 176 * 64 * 4 + tied);
    let frozen = plan_of(Role::Frozen);
    assert_eq!(frozen[0].1, 2 * params);
    assert!(frozen.iter().all(|(w, _)| !w.contains("master")));
}

/// With LoRA the trained lines cover the adapters only. By hand for r = 4 on all seven modules
/// of a 3-layer model (hidden 64, intermediate 176, 8 heads of 8, 2 kv heads): per layer
/// 4·((64+64) + 2·(64+16) + (64+64) + 2·(64+176) + (176+64)) = 4544, so 13 632 parameters;
/// a score head adds its 64. The count equals the adapter tensors a built model holds.
#[test]
fn lora_plan_counts_adapter_parameters_only() {
    use rto_model::lora::TARGET_MODULES;
    use rto_model::memory::lora_parameter_count;
    let config = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    let targets: Vec<String> = TARGET_MODULES.iter().map(|s| s.to_string()).collect();
    let lora = rto_model::LoraConfig::new(4, 8.0, 0.0, &targets).unwrap();
    assert_eq!(lora_parameter_count(&config, Head::LanguageModel, &lora), 13_632);
    assert_eq!(lora_parameter_count(&config, Head::Score, &lora), 13_696);
    let mut model = CausalLm::random(config.clone(), Head::Score, Device::Cpu, Kind::Float, 0).unwrap();
    model.add_lora(lora.clone(), 0).unwrap();
    let built: u64 = model.adapter_tensors().values().map(|t| t.numel() as u64).sum();
    assert_eq!(built, 13_696);
    let planned = PlannedModel {
        name: "policy".into(),
        config,
        head: Head::LanguageModel,
        role: Role::Trained,
        batch: BatchShape { rows: 1, tokens: 4, head_tokens: None },
        gradient_checkpointing: false,
        lora: None,
        shares_base_with: None,
        optimizer_shards: 1,
        precision: Precision::Bf16,
    }
    .with_lora(Some(lora));
    let mut plan = MemoryPlan::default();
    plan.add_model(&planned);
    let bytes = |prefix: &str| plan.lines.iter().find(|l| l.what.starts_with(prefix)).unwrap().bytes;
    assert_eq!(bytes("policy: gradients of the adapters"), 13_632 * 2);
    assert_eq!(bytes("policy: fp32 master weights of the adapters"), 13_632 * 4);
    assert_eq!(bytes("policy: AdamW moments of the adapters"), 2 * 13_632 * 4);
    assert_eq!(bytes("policy: LoRA adapters"), 13_632 * 2);
}

/// Phases run one after another (each frozen model's forward, the trained model's forward and
/// backward, its optimizer step, sampling), so the total is every resident line plus only the
/// largest transient one, not their sum.
#[test]
fn the_total_counts_the_largest_transient_line_once() {
    let config = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    let model = |name: &str, role: Role, rows: u64| PlannedModel {
        name: name.into(),
        config: config.clone(),
        head: Head::LanguageModel,
        role,
        batch: BatchShape { rows, tokens: 10, head_tokens: None },
        gradient_checkpointing: false,
        precision: Precision::Fp32,
        lora: None,
        shares_base_with: None,
        optimizer_shards: 1,
    };
    let mut plan = MemoryPlan::default();
    plan.add_model(&model("policy", Role::Trained, 2));
    plan.add_model(&model("reference", Role::Frozen, 8));
    plan.add_model(&model("dpo", Role::Frozen, 4));
    let resident: u64 = plan.lines.iter().filter(|l| !l.transient).map(|l| l.bytes).sum();
    let transients: Vec<u64> = plan.lines.iter().filter(|l| l.transient).map(|l| l.bytes).collect();
    assert_eq!(transients.len(), 4, "activations of each model and the optimizer step: {:?}", plan.lines);
    let params = parameter_count(&config, Head::LanguageModel);
    assert_eq!(resident, params * 4 * 3 + params * 4 + params * 8, "three weights, one gradient, two moments");
    assert_eq!(plan.total(), resident + transients.iter().max().unwrap());
    assert!(plan.render("ppo").contains("(transient)"));
}

/// ZeRO-1 over 3 ranks, by hand: the masters (4 bytes) and moments (8) of ⌈params/3⌉
/// parameters per rank; weights and gradients stay whole.
#[test]
fn zero_1_divides_the_optimizer_lines_by_the_ranks() {
    let config = ModelConfig::small_llama(300, 64, 176, 3, 8, 2, 128);
    let params = parameter_count(&config, Head::LanguageModel);
    let planned = PlannedModel {
        name: "policy".into(),
        config,
        head: Head::LanguageModel,
        role: Role::Trained,
        batch: BatchShape { rows: 1, tokens: 4, head_tokens: None },
        gradient_checkpointing: false,
        lora: None,
        optimizer_shards: 1,
        shares_base_with: None,
        precision: Precision::Bf16,
    }
    .with_optimizer_shards(3);
    let mut plan = MemoryPlan::default();
    plan.add_model(&planned);
    let line = |what: &str| plan.lines.iter().find(|l| l.what.contains(what)).unwrap_or_else(|| panic!("{what}"));
    let shard = params.div_ceil(3);
    assert_eq!(line("master").bytes, 4 * shard);
    assert_eq!(line("moments").bytes, 8 * shard);
    assert!(line("moments").what.ends_with("sharded over 3 ranks (ZeRO-1)"), "{}", line("moments").what);
    assert_eq!(line("gradients").bytes, 2 * params);
    assert_eq!(line("weights").bytes, 2 * params);
}

/// A plan of 1.0 GiB resident and 0.5 GiB transient: 1.5 GiB per rank. Four ranks of one CPU
/// node hold it four times in one RAM: 6 GiB, which 5 GiB cannot hold and 6 GiB can; one rank
/// per GPU checks the 1.5 GiB alone. The refusal names the largest lines, largest first.
#[test]
fn ranks_sharing_one_memory_multiply_the_plan() {
    let gib = 1u64 << 30;
    let line = |what: &str, bytes: u64, transient: bool| PlanLine { what: what.into(), bytes, transient };
    let plan = MemoryPlan {
        lines: vec![
            line("runtime", gib / 8, false),
            line("policy: weights", 7 * gib / 8, false),
            line("policy: activations", gib / 2, true),
            line("policy: optimizer step", gib / 16, true),
        ],
    };
    assert_eq!(plan.total(), 3 * gib / 2);
    plan.check_fits_ranks("sft", 6 * gib, "this machine's RAM", 4).unwrap();
    plan.check_fits_ranks("sft", 2 * gib, "cuda:0", 1).unwrap();
    let error = plan.check_fits_ranks("sft", 5 * gib, "this machine's RAM", 4).unwrap_err().to_string();
    for part in ["needs 6.0 GiB (4 ranks × 1.5 GiB)", "has 5.0 GiB available", "--dry-run"] {
        assert!(error.contains(part), "no `{part}` in: {error}");
    }
    let largest = "largest lines: policy: weights (0.9 GiB); policy: activations (0.5 GiB); runtime (0.1 GiB)";
    assert!(error.contains(largest), "{error}");
    let alone = plan.check_fits("sft", gib, "cuda:0").unwrap_err().to_string();
    assert!(alone.contains("needs 1.5 GiB but cuda:0 has 1.0 GiB available"), "{alone}");
}
