//! The frame every stage binary shares: key the stage, run it through the store, report.

use crate::dist::{self, Ranked, Work};
use anyhow::{Context, Result};
use rto_data::cli::{CommonArgs, SaveDtype, TrainedModelArgs, TrainingLogArgs, DEFAULT_LORA_ALPHA};
use rto_data::store::{StageDir, StageOutcome, StageSpec};
use rto_dist::ProcessGroup;
use rto_model::lora::TARGET_MODULES;
use rto_model::memory::{self, BatchShape, MemoryPlan, PlannedModel, Role};
use rto_model::{adapter, CausalLm, Head, LoraConfig, ModelConfig, Precision};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use tch::Kind;

/// The spec of `stage` with the stage's own settings plus the seed and device in the key.
pub fn spec(stage: &str, schema_version: u32, common: &CommonArgs, settings: &impl Serialize) -> Result<StageSpec> {
    let settings = json!({"stage": serde_json::to_value(settings)?, "common": common.key_settings()});
    StageSpec::new(stage, schema_version, &settings)
}

/// [`spec`] for a training stage: its [`TrainedModelArgs`] join the key as far as they are
/// set (a run with the defaults keeps the key it had before those flags existed).
pub fn training_spec(
    stage: &str,
    schema_version: u32,
    common: &CommonArgs,
    trained: &TrainedModelArgs,
    settings: &impl Serialize,
) -> Result<StageSpec> {
    let mut settings = json!({"stage": serde_json::to_value(settings)?, "common": common.key_settings()});
    let model_key = trained.key_settings();
    if model_key.as_object().is_some_and(|m| !m.is_empty()) {
        settings["model"] = model_key;
    }
    StageSpec::new(stage, schema_version, &settings)
}

/// `spec` for a run on `group`: a world of several ranks joins the key as `world_size`, for
/// the stages whose numbers depend on it (training sums gradients in another order: equal to
/// a single process only up to rounding). World size 1 keeps the single process's key.
pub fn keyed_by_world(mut spec: StageSpec, group: &ProcessGroup) -> StageSpec {
    if group.world_size() > 1 {
        spec.settings["world_size"] = group.world_size().into();
    }
    spec
}

/// Fails unless `--flag` holds a finite learning rate > 0. Stages call it (and their other
/// setting checks) before [`run`], so a typo fails before the store or a model is touched.
pub fn check_learning_rate(flag: &str, lr: f64) -> Result<()> {
    anyhow::ensure!(lr.is_finite() && lr > 0.0, "--{flag} must be a finite number > 0, got {lr}");
    Ok(())
}

/// Prints the memory plan of `models` (and a rollout KV cache) on stderr before any model is
/// loaded, and refuses when the device cannot hold it (see [`budget`]). Returns `false` under
/// `--dry-run`: the caller stops there, having loaded nothing.
pub fn plan_memory(
    common: &CommonArgs,
    spec: &StageSpec,
    models: &[PlannedModel],
    extra: Option<&MemoryPlan>,
) -> Result<bool> {
    plan_memory_against(common, spec, models, extra, budget(common)?.as_ref())
}

/// [`plan_memory`] against a [`budget`] the caller has already read (ppo-train sizes its
/// forward batch against the same figure).
pub fn plan_memory_against(
    common: &CommonArgs,
    spec: &StageSpec,
    models: &[PlannedModel],
    extra: Option<&MemoryPlan>,
    budget: Option<&Budget>,
) -> Result<bool> {
    // A missing input is the error to see, not a plan followed by it.
    spec.check_inputs_exist()?;
    let stage = spec.stage.as_str();
    let plan = build_plan(common, models, extra);
    eprintln!("{}", plan.render(stage));
    match budget {
        Some(budget) => {
            eprintln!("{stage}: {}", budget.describe(plan.total()));
            plan.check_fits_ranks(stage, budget.available, &budget.device, budget.ranks)?;
        }
        None => eprintln!(
            "{stage}: the CUDA runtime gave no free-memory figure; the plan is not checked (a dry run can name the device's size: --plan-memory-gib)"
        ),
    }
    Ok(!common.dry_run)
}

/// The plan of `models` (each in the stage's precision), the process's runtime and `extra`.
pub fn build_plan(common: &CommonArgs, models: &[PlannedModel], extra: Option<&MemoryPlan>) -> MemoryPlan {
    let mut plan = MemoryPlan::default();
    plan.add_runtime(memory::current_rss_bytes().unwrap_or(0));
    for model in models {
        plan.add_model(&PlannedModel { precision: precision(common), ..model.clone() });
    }
    if let Some(extra) = extra {
        plan.lines.extend(extra.lines.iter().cloned());
    }
    plan
}

/// What one stage's plan is checked against: `available` bytes that `ranks` processes of this
/// launch share, each holding the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub available: u64,
    pub device: String,
    pub ranks: u64,
}

impl Budget {
    /// Whether the budget holds `ranks` copies of `plan`.
    pub fn holds(&self, plan: &MemoryPlan) -> bool {
        plan.fits_ranks(self.available, self.ranks)
    }

    /// The check in one line: per GPU, or the node's ranks times the plan against its RAM.
    pub fn describe(&self, plan_total: u64) -> String {
        let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
        let (need, have) = (gib(plan_total * self.ranks), gib(self.available));
        match self.ranks {
            1 => format!(
                "the plan of {:.1} GiB per rank against {} ({have:.1} GiB available)",
                gib(plan_total),
                self.device
            ),
            n => format!(
                "{n} ranks on this node share {}: {n} × {:.1} GiB = {need:.1} GiB against {have:.1} GiB available",
                self.device,
                gib(plan_total)
            ),
        }
    }
}

/// The memory a plan must fit: with `--plan-memory-gib` (dry runs), that many GiB per rank's
/// device; on CUDA the free memory of this rank's GPU (each rank has its own: one plan per GPU;
/// `None` when the runtime gives no figure); on CPU the node's available RAM, which its local
/// ranks share (`LOCAL_WORLD_SIZE`, Slurm's tasks per node, or a dry run's
/// `--plan-world-size` on one node).
pub fn budget(common: &CommonArgs) -> Result<Option<Budget>> {
    // Named by the flag alone, so a dry run of a CUDA config needs no GPU on this machine.
    let on_cuda = common.device.trim().starts_with("cuda");
    let ranks = if on_cuda { 1 } else { local_ranks(common)? };
    if let Some(gib) = common.plan_memory_gib {
        let what = if on_cuda { "each rank's GPU" } else { "this node's RAM" };
        let available = (gib * (1u64 << 30) as f64) as u64;
        return Ok(Some(Budget { available, device: format!("{what} (--plan-memory-gib {gib})"), ranks }));
    }
    Ok(match rto_model::parse_device(&common.device)? {
        tch::Device::Cuda(index) => rto_model::cuda_memory::cuda_free_and_total_bytes(index).map(|(free, _)| Budget {
            available: free,
            device: format!("cuda:{index} (free memory)"),
            ranks,
        }),
        _ => memory::cpu_available_bytes().map(|available| Budget {
            available,
            device: "this machine's RAM".into(),
            ranks,
        }),
    })
}

/// The world size a plan is for (ZeRO-1's shards): a dry run's `--plan-world-size`, else the
/// launch's (torchrun/srun), else 1.
pub fn plan_world_size(common: &CommonArgs) -> Result<u64> {
    if let Some(n) = common.plan_world_size {
        return Ok(n);
    }
    Ok(launch()?.map_or(1, |l| l.world_size as u64))
}

/// This launch's processes on this node: torchrun's LOCAL_WORLD_SIZE; under Slurm the most
/// tasks any node runs (SLURM_TASKS_PER_NODE, e.g. `4(x2),3`), else the world size (an upper
/// bound); without a launch, a dry run's `--plan-world-size` (taken as one node), else 1.
fn local_ranks(common: &CommonArgs) -> Result<u64> {
    let Some(launch) = launch()? else { return Ok(common.plan_world_size.unwrap_or(1)) };
    if let Some(local) = launch.local_world_size {
        return Ok(local as u64);
    }
    let slurm = std::env::var("SLURM_TASKS_PER_NODE").ok();
    Ok(slurm.as_deref().and_then(most_tasks_per_node).unwrap_or(launch.world_size as u64))
}

/// The largest count of a SLURM_TASKS_PER_NODE value (`2(x3),1` → 2).
pub fn most_tasks_per_node(value: &str) -> Option<u64> {
    value.split(',').map(|part| part.split('(').next().unwrap_or(part).trim().parse::<u64>().ok()).max().flatten()
}

fn launch() -> Result<Option<rto_dist::Launch>> {
    rto_dist::Launch::from_env().context("reading the launch environment (torchrun or Slurm)")
}

/// The precision of `--bf16`: the dtype every model of the stage is loaded and run in. Warns
/// once per process when bf16 matmuls would fall back to libtorch's slow loops on this CPU.
pub fn precision(common: &CommonArgs) -> Precision {
    // A stage asks several times with the same flags: /proc/cpuinfo is read on the first only.
    static CHECKED: std::sync::Once = std::sync::Once::new();
    let precision = Precision::from_bf16_flag(common.bf16);
    CHECKED.call_once(|| {
        if let Some(warning) = rto_model::precision::slow_bf16_warning(precision, common.device.trim() == "cpu") {
            eprintln!("warning: {warning}");
        }
    });
    precision
}

/// The dtype a training stage saves its model in: `--save-dtype`, or for `auto` the dtype the
/// input model's config.json names (float32 when it names none).
pub fn save_kind(trained: &TrainedModelArgs, input: &ModelConfig) -> Kind {
    match trained.save_dtype {
        SaveDtype::Float32 => Kind::Float,
        SaveDtype::Bfloat16 => Kind::BFloat16,
        SaveDtype::Auto => input.stored_kind().unwrap_or(Kind::Float),
    }
}

/// The model a supervised training stage (dpo, rm) trains, for its plan: [`planned`] with the
/// stage's checkpointing, LoRA adapters and ZeRO-1 shards over `world` ranks
/// ([`plan_world_size`]).
pub fn planned_trained(
    name: &str,
    dir: &Path,
    head: Head,
    (rows, tokens): (usize, usize),
    trained: &TrainedModelArgs,
    (train, world): (&crate::trainer::LoopSettings, u64),
) -> Result<PlannedModel> {
    Ok(planned(name, dir, head, Role::Trained, rows, tokens)?
        .with_gradient_checkpointing(trained.gradient_checkpointing)
        .with_lora(planned_lora(trained, dir)?)
        .with_optimizer_shards(train.optimizer_shards(world)))
}

/// A model of a stage's plan, its sizes read from `dir/config.json` (its precision is the
/// stage's, set by [`plan_memory`]).
pub fn planned(name: &str, dir: &Path, head: Head, role: Role, rows: usize, tokens: usize) -> Result<PlannedModel> {
    let config = ModelConfig::from_file(&adapter::config_folder(dir)?.join("config.json"))?;
    Ok(PlannedModel {
        name: name.into(),
        config,
        head,
        role,
        batch: BatchShape { rows: rows as u64, tokens: tokens as u64, head_tokens: None },
        precision: Precision::Fp32,
        gradient_checkpointing: false,
        lora: None,
        shares_base_with: None,
        optimizer_shards: 1,
    })
}

/// A frozen causal LM of a plan (one forward of `rows` × `tokens`), on the base weights of the
/// model `donor` (plan name, folder) when both stand on one base folder: then only its own
/// adapters count, as `token_scoring::load_lm` loads it.
pub fn planned_frozen_lm(
    name: &str,
    dir: &Path,
    donor: Option<(&str, &Path)>,
    rows: usize,
    tokens: usize,
) -> Result<PlannedModel> {
    planned_frozen(name, dir, Head::LanguageModel, donor, rows, tokens)
}

/// [`planned_frozen_lm`] with any head (a reward model, as `token_scoring::load_frozen`).
pub fn planned_frozen(
    name: &str,
    dir: &Path,
    head: Head,
    donor: Option<(&str, &Path)>,
    rows: usize,
    tokens: usize,
) -> Result<PlannedModel> {
    let model = planned(name, dir, head, Role::Frozen, rows, tokens)?;
    match donor {
        Some((other, donor_dir)) if crate::token_scoring::shares_base(dir, head, donor_dir)? => {
            let lora = if adapter::is_adapter(dir) { Some(adapter::AdapterFolder::read(dir)?.lora) } else { None };
            Ok(model.with_lora(lora).sharing_base_with(other))
        }
        _ => Ok(model),
    }
}

/// The adapters `--lora-*` ask for, checked (`None` without `--lora-rank`). Stages call it
/// before [`run`], so a bad flag fails before the store or a model is touched.
pub fn lora_config(trained: &TrainedModelArgs) -> Result<Option<LoraConfig>> {
    trained.check_lora_flags()?;
    if trained.lora_rank == 0 {
        return Ok(None);
    }
    let targets: Vec<String> = match &trained.lora_target_modules {
        Some(targets) => targets.iter().map(|t| t.trim().to_string()).collect(),
        None => TARGET_MODULES.iter().map(|t| t.to_string()).collect(),
    };
    let alpha = trained.lora_alpha.unwrap_or(DEFAULT_LORA_ALPHA);
    let config = LoraConfig::new(trained.lora_rank, alpha, trained.lora_dropout.unwrap_or(0.0), &targets)
        .context("--lora-rank/--lora-alpha/--lora-dropout/--lora-target-modules")?;
    anyhow::ensure!(
        config.dropout == 0.0 || !trained.gradient_checkpointing,
        "--lora-dropout {} with --gradient-checkpointing: the recomputed forward would draw other dropout masks than the recorded one; use one of them",
        config.dropout
    );
    Ok(Some(config))
}

/// A model loaded for training, set up as its stage's [`TrainedModelArgs`] say: gradient
/// checkpointing, and with `--lora-rank` fresh adapters on a frozen base (their A and dropout
/// drawn from `seed`). A loaded adapter (an adapter folder as input) keeps training its own
/// adapter; `--lora-*` flags must then agree with it.
pub fn trained_model(mut model: CausalLm, trained: &TrainedModelArgs, seed: u64) -> Result<CausalLm> {
    model.set_gradient_checkpointing(trained.gradient_checkpointing);
    match (lora_config(trained)?, model.lora()) {
        (Some(wanted), Some(loaded)) => anyhow::ensure!(
            wanted == *loaded,
            "the input model is an adapter with r={}, alpha={}, target modules {:?}; the --lora-* flags ask for r={}, alpha={}, {:?}: drop the flags to continue the adapter, or give its base as the model",
            loaded.rank, loaded.alpha, loaded.targets, wanted.rank, wanted.alpha, wanted.targets
        ),
        (Some(wanted), None) => model.add_lora(wanted, seed)?,
        (None, _) => {}
    }
    model.set_lora_seed(seed);
    Ok(model)
}

/// Saves a trained model as its stage's output `dir`: a PEFT adapter folder over the base the
/// input `model_dir` stands on (and with `--merge-lora` a full folder in `dir/merged`) when it
/// carries adapters, a full HF folder otherwise. Weights in [`save_kind`].
pub fn save_trained(
    model: &CausalLm,
    dir: &Path,
    trained: &TrainedModelArgs,
    model_dir: &Path,
    tokenizer_from: &Path,
) -> Result<()> {
    let kind = save_kind(trained, &model.config);
    if model.lora().is_none() {
        return model.save(dir, kind, Some(tokenizer_from));
    }
    let base = adapter::weights_folder(model_dir)?;
    let base = base.canonicalize().with_context(|| format!("resolving the base model folder {}", base.display()))?;
    adapter::save(model, dir, &base, kind, Some(tokenizer_from))?;
    if trained.merge_lora {
        model.save_merged(&dir.join("merged"), kind, Some(tokenizer_from))?;
    }
    Ok(())
}

/// The adapters a trained model will carry, for its memory plan: those of `--lora-*`, or an
/// input adapter folder's (which keeps training).
pub fn planned_lora(trained: &TrainedModelArgs, dir: &Path) -> Result<Option<LoraConfig>> {
    if let Some(lora) = lora_config(trained)? {
        return Ok(Some(lora));
    }
    Ok(if adapter::is_adapter(dir) { Some(adapter::AdapterFolder::read(dir)?.lora) } else { None })
}

/// `spec` with the model folder `dir` as input `role`; an adapter folder's base joins as
/// `<role>_base`, so the key covers the weights the adapter stands on.
pub fn with_model_input(spec: StageSpec, role: &str, dir: &Path) -> Result<StageSpec> {
    let spec = spec.with_input(role, dir);
    if !adapter::is_adapter(dir) {
        return Ok(spec);
    }
    Ok(spec.with_input(format!("{role}_base"), adapter::weights_folder(dir)?))
}

/// Runs `compute` through the cache on every rank of `group` (no-op when a verified output
/// exists): rank 0 owns the store (lock, reuse, publish, `--link`, the folder printed as the
/// last line of stdout), the other ranks compute their share in [`Work`] (see
/// [`dist::run_stage`]). A single process is rank 0 of one.
pub fn run_ranked(
    group: &ProcessGroup,
    common: &CommonArgs,
    spec: &StageSpec,
    compute: impl FnOnce(&Work) -> Result<Value>,
) -> Result<Ranked> {
    let ranked =
        dist::run_stage(group, &common.store(), spec, common.force, |work| with_peak_memory(common, compute(work)))?;
    if let Some(outcome) = &ranked.outcome {
        report(common, spec, outcome)?;
    }
    Ok(ranked)
}

/// [`run_ranked`] for a computation only rank 0 does (judging, labelling: cheap next to the
/// generation before it): rank 0 runs `compute` in its output folder, the other ranks wait for
/// it to publish.
pub fn run_on_main(
    group: &ProcessGroup,
    common: &CommonArgs,
    spec: &StageSpec,
    compute: impl FnOnce(&StageDir) -> Result<Value>,
) -> Result<Ranked> {
    run_ranked(group, common, spec, |work| match work.output() {
        Some(out) => compute(out),
        None => Ok(Value::Null),
    })
}

/// The summary with this process's peak RSS and, on CUDA, the device memory in use when the
/// stage ends (libtorch's caching allocator keeps what it reserved at the peak, so this is the
/// run's peak reservation, plus the CUDA context and any other process on the device). Not
/// reproducible (the allocator, the machine): excluded by name where outputs are compared,
/// like wall_time_s.
fn with_peak_memory(common: &CommonArgs, summary: Result<Value>) -> Result<Value> {
    let mut summary = summary?;
    if let (Some(map), Some(peak)) = (summary.as_object_mut(), memory::peak_rss_bytes()) {
        map.insert("peak_rss_bytes".into(), peak.into());
    }
    if let (Some(map), Ok(tch::Device::Cuda(index))) =
        (summary.as_object_mut(), rto_model::parse_device(&common.device))
    {
        if let Some((free, total)) = rto_model::cuda_memory::cuda_free_and_total_bytes(index) {
            map.insert("cuda_used_bytes".into(), (total - free).into());
        }
    }
    Ok(summary)
}

fn report(common: &CommonArgs, spec: &StageSpec, outcome: &StageOutcome) -> Result<()> {
    if outcome.reused {
        eprintln!("{}: inputs and settings unchanged, reusing {}", spec.stage, outcome.path.display());
    }
    common.finish(outcome)
}

/// [`run_ranked`] for a training stage. When the output is reused (no training ran),
/// `--tensorboard` still gets its curves, from the folder's metrics.jsonl (rank 0).
pub fn run_training_ranked(
    group: &ProcessGroup,
    common: &CommonArgs,
    logs: &TrainingLogArgs,
    spec: &StageSpec,
    compute: impl FnOnce(&Work) -> Result<Value>,
) -> Result<Ranked> {
    let ranked = run_ranked(group, common, spec, compute)?;
    if let Some(outcome) = &ranked.outcome {
        export_reused_curves(logs, spec, outcome)?;
    }
    Ok(ranked)
}

fn export_reused_curves(logs: &TrainingLogArgs, spec: &StageSpec, outcome: &StageOutcome) -> Result<()> {
    if let (true, Some(dir)) = (outcome.reused, logs.run_dir(&spec.stage, &outcome.key)) {
        crate::metrics::tensorboard::export(&dir, &outcome.path.join("metrics.jsonl"))?;
    }
    Ok(())
}
