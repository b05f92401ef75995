//! Flags shared by every stage binary, YAML config files, and the stdout convention.
//!
//! A config file is just a list of flags written as YAML: each key is a long flag name with
//! '-' written as '_' (`eval_fraction: 0.05` means `--eval-fraction 0.05`). Its values are
//! placed before the command-line arguments, and a flag given on the command line replaces
//! the file's value (for a repeated flag, the whole list), so a pipeline can keep one config
//! and override a setting per run. A flag's aliases (old names) are keys too. Paths in a
//! config are relative to the working directory, like paths on the command line.

use crate::reproducible;
use crate::store::{link, ArtifactKey, StageOutcome, Store};
use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgAction, Parser};
use serde::Serialize;
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Flags every stage binary takes; `#[command(flatten)]` it into the stage's own args.
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize)]
pub struct CommonArgs {
    /// YAML file of flags (keys are flag names with '_' for '-'); flags on the command line win.
    #[arg(long, value_name = "FILE.yaml")]
    pub config: Option<PathBuf>,
    /// Root of the content-addressed output store.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub store: PathBuf,
    /// Recompute even when a verified output with the same key exists.
    #[arg(long)]
    pub force: bool,
    /// Seed for every random choice of the stage (shuffles, init, sampling).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Device to compute on: cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also point <store>/latest/NAME at the output folder.
    #[arg(long, value_name = "NAME")]
    pub link: Option<String>,
    /// Print the memory plan (from config.json sizes) and stop before loading any model:
    /// exit 0 when it fits, an error naming its largest lines when it does not.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: plan for a launch of N ranks (ZeRO-1 divides the optimizer state by N;
    /// on CPU the N ranks share one node's RAM) [default: the launch's WORLD_SIZE, else 1].
    #[arg(long, value_name = "N", requires = "dry_run", value_parser = clap::value_parser!(u64).range(1..))]
    #[serde(skip)]
    pub plan_world_size: Option<u64>,
    /// With --dry-run: check the plan against a device of GIB GiB (per GPU; on CPU the node's
    /// RAM) instead of the memory this machine reports, e.g. 80 for an A100/H100-80GB.
    #[arg(long, value_name = "GIB", requires = "dry_run")]
    #[serde(skip)]
    pub plan_memory_gib: Option<f64>,
    /// bf16 weights and activations for every model of the stage (trained ones keep fp32
    /// master weights and Adam moments); log-probs, losses and rewards stay fp32.
    #[arg(long)]
    pub bf16: bool,
    /// Pin libtorch's CPU code paths (ATen, MKL, oneDNN) to AVX2, so that x86-64 machines with
    /// AVX2 give the same bytes; also on when RTO_REPRODUCIBLE=1. The pins join the key.
    #[arg(long)]
    pub reproducible: bool,
}

impl CommonArgs {
    /// The store named by `--store`.
    pub fn store(&self) -> Store {
        Store::new(&self.store)
    }

    /// The common flags that change a stage's results, for its key: the seed, the device
    /// (CPU and CUDA kernels give different floats) and the precision. `--store`, `--force`,
    /// `--config`, `--link` and `--dry-run` say where and whether to compute, not what, so
    /// they stay out of keys. The precision enters only when it is not the default fp32, so
    /// fp32 keys are those of the releases before `--bf16` existed.
    pub fn key_settings(&self) -> serde_json::Value {
        let mut key = self.numerics_key();
        key["seed"] = self.seed.into();
        key
    }

    /// The flags that change a deterministic computation's floats (device, precision and the
    /// reproducible mode's pins), for the keys of stages that draw no random numbers (the DPO
    /// reference pass). Precision and pins enter only when set, so other runs keep their keys.
    pub fn numerics_key(&self) -> serde_json::Value {
        let mut key = serde_json::json!({ "device": self.device });
        if self.bf16 {
            key["precision"] = "bf16".into();
        }
        if self.reproducible {
            key["reproducible"] = crate::reproducible::pins_json();
        }
        key
    }

    /// What a stage does after [`Store::run`]: honour `--link`, then print the output folder
    /// as the last line of stdout.
    pub fn finish(&self, outcome: &StageOutcome) -> Result<()> {
        if let Some(name) = &self.link {
            link(&self.store, name, &outcome.path)?;
        }
        print_output(&outcome.path)
    }
}

// The flags of every training stage (sft, dpo, rm, ppo) that say where else a run writes its
// metrics, never what it computes: no stage key includes them, so they cannot change a folder.
// No doc comment: clap would take it as the about text of the commands that flatten it.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainingLogArgs {
    /// Also write the metrics as TensorBoard event files to DIR/<stage>-<key>/ (outside the
    /// store: neither the key nor the stage folder changes).
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
}

impl TrainingLogArgs {
    /// Fails unless `--tensorboard DIR` can be written (it is created if missing), so a wrong
    /// path stops the run before the store or a model is touched, not after training.
    pub fn check(&self) -> Result<()> {
        let Some(dir) = &self.tensorboard else { return Ok(()) };
        let unwritable =
            || format!("--tensorboard {}: not a writable folder; give a folder you can write", dir.display());
        fs::create_dir_all(dir).with_context(unwritable)?;
        let probe = dir.join(format!(".rto-write-check-{}", std::process::id()));
        fs::write(&probe, b"").with_context(unwritable)?;
        fs::remove_file(&probe).with_context(unwritable)
    }

    /// The run folder of the stage output `key`: DIR/<stage>-<short key>, one per output, so
    /// runs with other settings sit side by side in TensorBoard.
    pub fn run_dir(&self, stage: &str, key: &ArtifactKey) -> Option<PathBuf> {
        self.tensorboard.as_ref().map(|dir| dir.join(format!("{stage}-{}", key.short())))
    }
}

/// The dtype a training stage saves its model folder in.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// The dtype of the input model (its config.json `dtype`/`torch_dtype`; float32 when it
    /// names none, and for a model trained from random weights).
    #[default]
    Auto,
    Float32,
    Bfloat16,
}

// The flags of every training stage (sft, dpo, rm, ppo) that say how the trained model is held
// in memory and written out. No doc comment: clap would take it as the commands' about text.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainedModelArgs {
    /// Recompute each decoder layer's activations during the backward pass instead of keeping
    /// them from the forward: less memory for about one more forward of compute.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// dtype of the saved model folder.
    #[arg(long, value_enum, default_value_t = SaveDtype::Auto)]
    pub save_dtype: SaveDtype,
    /// LoRA rank: train adapters of this rank on a frozen base and save a PEFT adapter folder
    /// (0: train every weight). ppo-train gives the actor and the critic the same adapters.
    #[arg(long, default_value_t = 0)]
    pub lora_rank: i64,
    /// LoRA alpha (the adapters are scaled by alpha / rank) [default: 16].
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Dropout on the adapters' input in training forwards [default: 0].
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// Modules that get adapters, comma-separated HF names
    /// [default: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj].
    #[arg(long, value_delimiter = ',')]
    pub lora_target_modules: Option<Vec<String>>,
    /// With LoRA, also write the base with the adapters merged in, a full HF folder, as
    /// `merged/` inside the output.
    #[arg(long)]
    pub merge_lora: bool,
}

// How the forwards over scored batches run (ppo-train and token-reward-annotate, the same flag
// in both). No doc comment: clap would take it as the commands' about text.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ForwardArgs {
    /// Lay each forward's sequences back to back instead of padding them to one width
    /// (attention kept within each sequence, positions restarting; OpenRLHF's
    /// --packing_samples): the same numbers within float rounding on fewer token slots, and
    /// the heads run on real tokens only. In the key when set (last-bit differences).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packing_samples: bool,
}

/// The default `--lora-alpha` (OpenRLHF's).
pub const DEFAULT_LORA_ALPHA: f64 = 16.0;

impl TrainedModelArgs {
    /// What these flags add to a stage key: only settings that differ from the defaults, so
    /// the keys of runs that do not use them stay those of earlier releases. Checkpointing is
    /// in the key because recomputation may sum gradients in another order (last-bit changes).
    pub fn key_settings(&self) -> serde_json::Value {
        let mut key = serde_json::Map::new();
        if self.gradient_checkpointing {
            key.insert("gradient_checkpointing".into(), true.into());
        }
        if self.save_dtype != SaveDtype::Auto {
            key.insert("save_dtype".into(), serde_json::to_value(self.save_dtype).expect("a plain enum"));
        }
        if self.lora_rank != 0 {
            key.insert(
                "lora".into(),
                serde_json::json!({
                    "rank": self.lora_rank,
                    "alpha": self.lora_alpha.unwrap_or(DEFAULT_LORA_ALPHA),
                    "dropout": self.lora_dropout.unwrap_or(0.0),
                    "target_modules": self.lora_target_modules,
                    "merge": self.merge_lora,
                }),
            );
        }
        key.into()
    }

    /// Fails when a LoRA flag is given without `--lora-rank` (a flag that would do nothing).
    pub fn check_lora_flags(&self) -> Result<()> {
        if self.lora_rank > 0 {
            return Ok(());
        }
        anyhow::ensure!(self.lora_rank == 0, "--lora-rank must be >= 0 (0: no LoRA), got {}", self.lora_rank);
        let given: Vec<&str> = [
            ("--lora-alpha", self.lora_alpha.is_some()),
            ("--lora-dropout", self.lora_dropout.is_some()),
            ("--lora-target-modules", self.lora_target_modules.is_some()),
            ("--merge-lora", self.merge_lora),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        anyhow::ensure!(
            given.is_empty(),
            "{} given but --lora-rank is 0 (no LoRA): set --lora-rank to a rank > 0 (e.g. 8) or drop {}",
            given.join(", "),
            if given.len() == 1 { "it" } else { "them" }
        );
        Ok(())
    }
}

/// Parses the process arguments with `--config` support; on a usage error (or `--help`)
/// prints clap's message and exits, as a plain `T::parse()` would.
///
/// This is also where the reproducible mode starts, being the first thing every stage binary
/// does: `RTO_REPRODUCIBLE=1` counts as `--reproducible`, and when the mode is on its pins are
/// set in the environment before the stage runs any libtorch kernel ([`crate::reproducible`]).
pub fn parse_with_config<T: Parser>() -> Result<T> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let switch = std::env::var(reproducible::SWITCH).ok();
    if reproducible::switch_on(switch.as_deref())? {
        add_reproducible_flag(&T::command(), &mut args);
    }
    let (parsed, pinned) = match parse_matches::<T>(args) {
        Ok(parsed) => parsed,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_err) => clap_err.exit(),
            Err(other) => return Err(other),
        },
    };
    if pinned {
        reproducible::pin_process()?;
    }
    Ok(parsed)
}

/// Inserts `--reproducible` before the user's arguments, for a command that has the flag and
/// unless it is given already or the arguments name a subcommand (`show` computes nothing).
fn add_reproducible_flag(cmd: &clap::Command, args: &mut Vec<OsString>) {
    let has_flag = cmd.get_arguments().any(|a| a.get_long() == Some("reproducible"));
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    let subcommand = first.as_deref().is_some_and(|f| cmd.get_subcommands().any(|s| s.get_name() == f));
    if has_flag && !subcommand && !args.iter().any(|a| a == "--reproducible") {
        args.insert(1.min(args.len()), "--reproducible".into());
    }
}

/// [`parse_with_config`] over explicit arguments (the first is the program name). Usage
/// errors come back as a `clap::Error` inside the `anyhow::Error`.
pub fn parse_with_config_from<T: Parser>(args: Vec<OsString>) -> Result<T> {
    Ok(parse_matches::<T>(args)?.0)
}

/// [`parse_with_config_from`], and whether the parsed flags turn the reproducible mode on.
fn parse_matches<T: Parser>(args: Vec<OsString>) -> Result<(T, bool)> {
    let cmd = T::command();
    let mut args = args.into_iter();
    let bin = args.next().unwrap_or_else(|| OsString::from(cmd.get_name().to_string()));
    let user: Vec<OsString> = args.collect();

    let mut full = vec![bin];
    let has_config_flag = cmd.get_arguments().any(|a| a.get_long() == Some("config"));
    if has_config_flag {
        if let Some(path) = find_config(&user) {
            let supplied = supplied_ids(&cmd, &user);
            full.extend(config_args(&cmd, &path, &supplied)?);
        }
    }
    full.extend(user);
    let has_mode = cmd.get_arguments().any(|a| a.get_id() == "reproducible");
    let matches = cmd.try_get_matches_from(full)?;
    let pinned = has_mode && matches.get_flag("reproducible");
    Ok((T::from_arg_matches(&matches)?, pinned))
}

/// The value of `--config` among the user's arguments, if any (before a `--`).
fn find_config(user: &[OsString]) -> Option<PathBuf> {
    let mut it = user.iter();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// Ids of the options the user wrote on the command line, so the config's entry for them is
/// dropped (this is what makes a command-line list replace, not extend, the file's list).
fn supplied_ids(cmd: &clap::Command, user: &[OsString]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for arg in user {
        let s = arg.to_string_lossy();
        if s == "--" {
            break;
        }
        if let Some(long) = s.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            if let Some(a) = cmd.get_arguments().find(|a| answers_to(a, name)) {
                ids.insert(a.get_id().to_string());
            }
        } else if let Some(shorts) = s.strip_prefix('-') {
            for c in shorts.chars() {
                let Some(a) = cmd.get_arguments().find(|a| a.get_short() == Some(c)) else {
                    break;
                };
                ids.insert(a.get_id().to_string());
                if a.get_action().takes_values() {
                    break; // the rest of the token is this option's value
                }
            }
        }
    }
    ids
}

/// Whether `--long` names `arg`, by its name or an alias (an old name kept when a flag was
/// renamed: configs written with it keep working).
fn answers_to(arg: &clap::Arg, long: &str) -> bool {
    arg.get_long() == Some(long) || arg.get_all_aliases().is_some_and(|aliases| aliases.contains(&long))
}

/// Turns the YAML mapping in `path` into `--flag=value` arguments.
fn config_args(cmd: &clap::Command, path: &Path, supplied: &BTreeSet<String>) -> Result<Vec<OsString>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let doc: Yaml =
        serde_yaml::from_str(&text).with_context(|| format!("config file {} is not valid YAML", path.display()))?;
    let map = match doc {
        Yaml::Mapping(m) => m,
        Yaml::Null => return Ok(Vec::new()), // an empty file sets nothing
        _ => bail!("config file {} must be a YAML mapping of flag names to values (key: value lines)", path.display()),
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            bail!("config file {}: key {k:?} is not a string", path.display());
        };
        let flag = key.replace('_', "-");
        if flag == "config" {
            bail!("config file {}: key `{key}`: a config file cannot include another", path.display());
        }
        let arg = cmd
            .get_arguments()
            .find(|a| answers_to(a, &flag) && !matches!(flag.as_str(), "help" | "version"))
            .ok_or_else(|| {
                let valid: Vec<String> = cmd
                    .get_arguments()
                    .filter_map(|a| a.get_long())
                    .filter(|l| !matches!(*l, "help" | "version" | "config"))
                    .map(|l| l.replace('-', "_"))
                    .collect();
                anyhow!(
                    "config file {}: unknown key `{key}` (no --{flag} option); valid keys: {}",
                    path.display(),
                    valid.join(", ")
                )
            })?;
        if supplied.contains(arg.get_id().as_str()) {
            continue;
        }
        let ctx = || format!("config file {}: key `{key}`", path.display());
        let action = arg.get_action();
        match (&v, action) {
            (Yaml::Null, _) => {}
            (Yaml::Bool(b), ArgAction::SetTrue) => {
                if *b {
                    out.push(format!("--{flag}").into());
                }
            }
            (Yaml::Bool(b), ArgAction::SetFalse) => {
                if !*b {
                    out.push(format!("--{flag}").into());
                }
            }
            (Yaml::Number(n), ArgAction::Count) => {
                let times = n.as_u64().ok_or_else(|| anyhow!("expected a count")).with_context(ctx)?;
                out.extend((0..times).map(|_| OsString::from(format!("--{flag}"))));
            }
            (Yaml::Sequence(items), a) if a.takes_values() => {
                for item in items {
                    let s = scalar(item).with_context(ctx)?;
                    out.push(format!("--{flag}={s}").into());
                }
            }
            (_, a) if a.takes_values() => {
                let s = scalar(&v).with_context(ctx)?;
                out.push(format!("--{flag}={s}").into());
            }
            _ => return Err(anyhow!("--{flag} is a switch: use true or false")).with_context(ctx),
        }
    }
    Ok(out)
}

fn scalar(v: &Yaml) -> Result<String> {
    match v {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Null => bail!("null inside a list"),
        Yaml::Sequence(_) => bail!("nested lists are not flag values"),
        Yaml::Mapping(_) => bail!("a mapping is not a flag value"),
        Yaml::Tagged(_) => bail!("tagged YAML values are not flag values"),
    }
}

/// Prints the absolute path of a stage's output folder. By convention it is the last line a
/// stage writes to stdout, so Makefiles can capture it with `$(shell ... | tail -n1)`.
pub fn print_output(path: &Path) -> Result<()> {
    let abs = fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", abs.display()).context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")?;
    Ok(())
}
