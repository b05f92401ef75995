//! The content-hash cache of DESIGN.md §3.
//!
//! A stage's output lives at `<root>/<stage>/<key>/`, where the key hashes the stage name, its
//! artifact schema version, its canonical settings and the content keys of its inputs. A
//! folder only ever appears there by an atomic rename of a complete temporary folder that
//! already holds its `manifest.json`, so a killed run can never leave an accepted output, and
//! rerunning a stage whose folder exists and verifies does no work.
//!
//! A run that fails after taking the stage lock, by an error or a panic in any step (the
//! stage's own work, hashing, writing the manifest, the rename, the swap of an old folder under
//! `--force`), leaves the store as it found it: no temporary folder, no lock file or stage
//! folder it created, the replaced folder back in place. The one trace it may leave is state
//! the stage saved in its scratch folder, kept for the resume.

mod hash;
mod manifest;
mod publish;

pub use hash::{canonical_json, hash_file, hash_folder_content, list_files, ArtifactKey};
pub use manifest::{verify, Manifest, ManifestInput, MANIFEST_FILE, MANIFEST_FORMAT};
#[doc(hidden)]
pub use publish::{FaultKind, PublishPhase};

use anyhow::{bail, Context, Result};
use publish::{Fault, PublishGuard};
use serde::Serialize;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Content key of an input artifact. A folder holding one of our manifests is verified and
/// keyed by its manifest key (so a downstream key follows the upstream stage key, and a
/// tampered upstream folder is caught before any work); any other file is keyed by its bytes
/// and any other folder by its files' relative paths and bytes. The path itself never enters.
pub fn input_key(path: &Path) -> Result<ArtifactKey> {
    let meta = input_metadata(path)?;
    if meta.is_file() {
        let key = hash_file(path)?;
        check_file_in_stage_folder(path, &key)?;
        return Ok(key);
    }
    if !meta.is_dir() {
        bail!("input {} is neither a file nor a folder", path.display());
    }
    let manifest_path = path.join(MANIFEST_FILE);
    if manifest_path.is_file() && manifest::read_manifest(&manifest_path)?.is_some() {
        let manifest = verify(path)
            .with_context(|| format!("input {} is a stage output that no longer verifies", path.display()))?;
        return Ok(manifest.key);
    }
    hash_folder_content(path)
}

fn input_metadata(path: &Path) -> Result<fs::Metadata> {
    fs::metadata(path).with_context(|| format!("input {} does not exist or cannot be read", path.display()))
}

/// A file inside a stage folder (e.g. `runs/pairs/<key>/pairs.jsonl` given as `--data`) must
/// still be what that stage wrote: keyed by its bytes alone, an edit would silently become a
/// new input that looks like the stage's output.
fn check_file_in_stage_folder(path: &Path, key: &ArtifactKey) -> Result<()> {
    let (Some(folder), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    let manifest_path = folder.join(MANIFEST_FILE);
    if name == MANIFEST_FILE || !manifest_path.is_file() {
        return Ok(());
    }
    let Some(manifest) = manifest::read_manifest(&manifest_path)? else {
        return Ok(());
    };
    match manifest.files.get(name) {
        Some(expected) if expected != key => bail!(
            "input {} was modified after stage {} wrote it (blake3 {}, its manifest says {}): rerun that stage with --force, or copy the file out of the store if the edit is intended",
            path.display(),
            manifest.stage,
            key.short(),
            expected.short()
        ),
        _ => Ok(()),
    }
}

/// Key of a stage from already-known input keys. Inputs are ordered by role (stable, so
/// repeated roles keep their given order): code that collects inputs from a map cannot
/// change the key by iteration order.
pub fn stage_key(stage: &str, schema_version: u32, settings: &Value, inputs: &[(String, ArtifactKey)]) -> ArtifactKey {
    let mut sorted: Vec<&(String, ArtifactKey)> = inputs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = blake3::Hasher::new();
    hash::update_field(&mut hasher, b"rto-stage/1");
    hash::update_field(&mut hasher, stage.as_bytes());
    hash::update_field(&mut hasher, schema_version.to_string().as_bytes());
    hash::update_field(&mut hasher, canonical_json(settings).as_bytes());
    hash::update_field(&mut hasher, &(sorted.len() as u64).to_le_bytes());
    for (role, key) in sorted {
        hash::update_field(&mut hasher, role.as_bytes());
        hash::update_field(&mut hasher, key.as_str().as_bytes());
    }
    ArtifactKey::from_hash(hasher.finalize())
}

/// Everything that determines a stage's output. Paths go in `inputs` (keyed by content),
/// never in `settings` (keyed by value), or moving a file would rerun the stage.
#[derive(Clone, Debug)]
pub struct StageSpec {
    pub stage: String,
    /// Bump when the stage's output format or semantics change, to invalidate old outputs.
    pub schema_version: u32,
    pub settings: Value,
    /// (role, path) pairs, e.g. ("model", "runs/sft-train/ab12…").
    pub inputs: Vec<(String, PathBuf)>,
}

/// A spec whose inputs have been hashed.
#[derive(Clone, Debug)]
pub struct ResolvedSpec {
    pub key: ArtifactKey,
    pub inputs: Vec<ManifestInput>,
}

impl StageSpec {
    /// A spec with settings taken from any serializable value (typically the parsed CLI args
    /// minus paths and the flags that do not change results, like `--force`).
    pub fn new(stage: impl Into<String>, schema_version: u32, settings: &impl Serialize) -> Result<Self> {
        let stage = stage.into();
        let settings = serde_json::to_value(settings)
            .with_context(|| format!("stage {stage}: settings are not serializable to JSON"))?;
        Ok(Self { stage, schema_version, settings, inputs: Vec::new() })
    }

    /// Adds an input artifact.
    pub fn with_input(mut self, role: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.inputs.push((role.into(), path.into()));
        self
    }

    /// Hashes the inputs (verifying upstream stage folders) and computes the key.
    pub fn resolve(&self) -> Result<ResolvedSpec> {
        check_stage_name(&self.stage)?;
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (role, path) in &self.inputs {
            let key = input_key(path).with_context(|| format!("stage {}: input `{role}`", self.stage))?;
            inputs.push(ManifestInput { role: role.clone(), path: path.display().to_string(), key });
        }
        let pairs: Vec<(String, ArtifactKey)> = inputs.iter().map(|i| (i.role.clone(), i.key.clone())).collect();
        let key = stage_key(&self.stage, self.schema_version, &self.settings, &pairs);
        Ok(ResolvedSpec { key, inputs })
    }

    /// Fails, as [`StageSpec::resolve`] would, when an input does not exist, without hashing
    /// anything: for checks a stage makes before its first expensive step.
    pub fn check_inputs_exist(&self) -> Result<()> {
        for (role, path) in &self.inputs {
            input_metadata(path).with_context(|| format!("stage {}: input `{role}`", self.stage))?;
        }
        Ok(())
    }

    /// The stage key (hashes all inputs).
    pub fn key(&self) -> Result<ArtifactKey> {
        Ok(self.resolve()?.key)
    }
}

fn check_stage_name(stage: &str) -> Result<()> {
    let ok = !stage.is_empty()
        && !stage.starts_with('.')
        && stage.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        bail!("invalid stage name `{stage}`: use letters, digits, '-', '_' or '.', not starting with '.'");
    }
    Ok(())
}

/// The folder a running stage writes into, plus a place for resumable state.
#[derive(Debug)]
pub struct StageDir {
    path: PathBuf,
    scratch: PathBuf,
    key: ArtifactKey,
}

impl StageDir {
    /// The temporary output folder; everything in it becomes the artifact.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// The key the output will be stored under.
    pub fn key(&self) -> &ArtifactKey {
        &self.key
    }

    /// `<root>/<stage>/.work-<key>/`, created on first use. It survives a killed run (put
    /// periodic checkpoints here and resume from them) and is deleted once the stage succeeds.
    pub fn scratch(&self) -> Result<PathBuf> {
        fs::create_dir_all(&self.scratch).with_context(|| format!("cannot create {}", self.scratch.display()))?;
        Ok(self.scratch.clone())
    }
}

/// Result of [`Store::run`].
#[derive(Clone, Debug)]
pub struct StageOutcome {
    /// `<root>/<stage>/<key>/`.
    pub path: PathBuf,
    pub key: ArtifactKey,
    /// True when an existing verified folder was used and the closure did not run.
    pub reused: bool,
    pub manifest: Manifest,
}

/// A store rooted at a folder (default `runs/`).
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    /// Always `None` outside tests; see [`Store::with_fault`].
    fault: Option<Fault>,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), fault: None }
    }

    /// Makes `phase` of every later publish fail with an error or a panic. It exists for the
    /// tests of the cleanup after a failed publish: manifest writes and renames have no fault a
    /// test can provoke from outside (the tests run as root, so permissions do not stop them).
    /// Unset, it costs one comparison per phase.
    #[doc(hidden)]
    pub fn with_fault(mut self, phase: PublishPhase, kind: FaultKind) -> Self {
        self.fault = Some(Fault { phase, kind });
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<stage>/<key>` for a key.
    pub fn output_path(&self, stage: &str, key: &ArtifactKey) -> PathBuf {
        self.root.join(stage).join(key.as_str())
    }

    /// The resumable scratch folder of a spec (see [`StageDir::scratch`]); not created here.
    pub fn scratch_dir(&self, spec: &StageSpec) -> Result<PathBuf> {
        let key = spec.key()?;
        Ok(publish::scratch_path(&self.root.join(&spec.stage), &key))
    }

    /// Returns the verified cached output of `spec` if there is one, without computing.
    pub fn lookup(&self, spec: &StageSpec) -> Result<Option<StageOutcome>> {
        let key = spec.key()?;
        let path = self.output_path(&spec.stage, &key);
        if !path.exists() {
            return Ok(None);
        }
        let manifest = verify(&path)?;
        Ok(Some(StageOutcome { path, key, reused: true, manifest }))
    }

    /// Runs a stage through the cache; see the module docs. `compute` writes the artifact's
    /// files into the [`StageDir`] and returns a metrics summary for the manifest. A folder
    /// that exists but fails verification is an error unless `force` is set, in which case it
    /// is recomputed and replaced.
    pub fn run<F>(&self, spec: &StageSpec, force: bool, compute: F) -> Result<StageOutcome>
    where
        F: FnOnce(&StageDir) -> Result<Value>,
    {
        let resolved = spec.resolve()?;
        let stage = spec.stage.as_str();
        let stage_root = self.root.join(stage);
        let final_path = stage_root.join(resolved.key.as_str());

        // Lock-free fast path. A verification failure here is no verdict: a --force run may be
        // swapping the folder right now (under the lock), so it is checked again below.
        if !force {
            if let Ok(Some(outcome)) = self.try_reuse(stage, &resolved.key, &final_path) {
                return Ok(outcome);
            }
        }

        // From here on every exit, early return and panic included, goes through the guard.
        let guard = PublishGuard::lock(&stage_root, stage, &resolved.key)?;
        // Another process may have finished while we waited; under the lock nobody writes
        // the folder, so what verification says now stands.
        if !force {
            if let Some(outcome) = self.try_reuse(stage, &resolved.key, &final_path)? {
                guard.release();
                return Ok(outcome);
            }
        }
        self.compute_and_publish(spec, resolved, guard, &final_path, compute)
            .with_context(|| format!("stage {stage} failed; no output was stored"))
    }

    /// The locked part of [`Store::run`]: computes into a temporary folder, writes its manifest
    /// and renames it to `final_path`. Any failure drops `guard`, which undoes the run.
    fn compute_and_publish<F>(
        &self,
        spec: &StageSpec,
        resolved: ResolvedSpec,
        mut guard: PublishGuard,
        final_path: &Path,
        compute: F,
    ) -> Result<StageOutcome>
    where
        F: FnOnce(&StageDir) -> Result<Value>,
    {
        let key = resolved.key.clone();
        let stage = spec.stage.as_str();
        publish::clean_stale(&self.root.join(stage), &key);
        let tmp = guard.create_tmp(&key)?;
        let dir = StageDir { path: tmp.clone(), scratch: guard.scratch().to_path_buf(), key: key.clone() };

        let started = Instant::now();
        let metrics = compute(&dir)?;
        let wall_time_s = started.elapsed().as_secs_f64();

        let manifest = self.seal(&tmp, spec, resolved, metrics, wall_time_s)?;
        guard.publish(final_path, &key, self.fault)?;
        eprintln!("rto: {stage}: computed {} in {wall_time_s:.1}s -> {}", key.short(), final_path.display());
        Ok(StageOutcome { path: final_path.to_path_buf(), key, reused: false, manifest })
    }

    /// Hashes the finished folder `tmp` and writes its `manifest.json`.
    fn seal(
        &self,
        tmp: &Path,
        spec: &StageSpec,
        resolved: ResolvedSpec,
        metrics: Value,
        wall_time_s: f64,
    ) -> Result<Manifest> {
        let stage = spec.stage.as_str();
        if tmp.join(MANIFEST_FILE).exists() {
            bail!("stage {stage} wrote its own {MANIFEST_FILE}; that name is reserved for the store");
        }
        publish::inject(self.fault, PublishPhase::Hash)?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_string(),
            key: resolved.key,
            stage: stage.to_string(),
            schema_version: spec.schema_version,
            inputs: resolved.inputs,
            settings: spec.settings.clone(),
            files: manifest::hash_all(tmp)?,
            metrics,
            wall_time_s,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        };
        publish::inject(self.fault, PublishPhase::WriteManifest)?;
        write_manifest(&tmp.join(MANIFEST_FILE), &manifest)?;
        Ok(manifest)
    }

    fn try_reuse(&self, stage: &str, key: &ArtifactKey, path: &Path) -> Result<Option<StageOutcome>> {
        if !path.exists() {
            return Ok(None);
        }
        let manifest = verify(path).with_context(|| {
            format!("cached output of stage {stage} is damaged; rerun with --force to recompute it")
        })?;
        eprintln!("rto: {stage}: reusing cached output {} (key {})", path.display(), key.short());
        Ok(Some(StageOutcome { path: path.to_path_buf(), key: key.clone(), reused: true, manifest }))
    }
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    use std::io::Write;
    let mut bytes = serde_json::to_vec_pretty(manifest).context("cannot serialize manifest")?;
    bytes.push(b'\n');
    let mut file = fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(&bytes).with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

/// Points `<root>/latest/<name>` at `target` (a relative link when the target is inside the
/// store, so the store can be moved), replacing any old link atomically by rename.
pub fn link(root: &Path, name: &str, target: &Path) -> Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        bail!("invalid link name `{name}`");
    }
    let dir = root.join("latest");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target_abs = fs::canonicalize(target).with_context(|| format!("cannot resolve {}", target.display()))?;
    let root_abs = fs::canonicalize(root).with_context(|| format!("cannot resolve {}", root.display()))?;
    let pointee = match target_abs.strip_prefix(&root_abs) {
        Ok(rel) => Path::new("..").join(rel),
        Err(_) => target_abs.clone(),
    };
    let link_path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    make_symlink(&pointee, &tmp)?;
    fs::rename(&tmp, &link_path).with_context(|| format!("cannot replace {}", link_path.display()))?;
    Ok(link_path)
}

#[cfg(unix)]
fn make_symlink(pointee: &Path, at: &Path) -> Result<()> {
    std::os::unix::fs::symlink(pointee, at).with_context(|| format!("cannot create symlink {}", at.display()))
}

#[cfg(not(unix))]
fn make_symlink(_pointee: &Path, at: &Path) -> Result<()> {
    bail!("cannot create {}: symlinks are only supported on Unix", at.display())
}
