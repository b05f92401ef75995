//! The content-hash cache of DESIGN.md §3.
//!
//! A stage's output lives at `<root>/<stage>/<key>/`, where the key hashes the stage name, its
//! artifact schema version, its canonical settings and the content keys of its inputs. A
//! folder only ever appears there by an atomic rename of a complete temporary folder that
//! already holds its `manifest.json`, so a killed run can never leave an accepted output, and
//! rerunning a stage whose folder exists and verifies does no work.

mod hash;
mod manifest;

pub use hash::{canonical_json, hash_file, hash_folder_content, list_files, ArtifactKey};
pub use manifest::{verify, Manifest, ManifestInput, MANIFEST_FILE, MANIFEST_FORMAT};

use anyhow::{bail, Context, Result};
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
    let meta =
        fs::metadata(path).with_context(|| format!("input {} does not exist or cannot be read", path.display()))?;
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
}

/// Removes a temporary folder unless disarmed: covers errors and panics in the closure.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
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
        Ok(self.root.join(&spec.stage).join(format!(".work-{key}")))
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
        let key = resolved.key.clone();
        let stage = spec.stage.as_str();
        let stage_root = self.root.join(stage);
        let final_path = stage_root.join(key.as_str());

        // Lock-free fast path. A verification failure here is no verdict: a --force run may be
        // swapping the folder right now (under the lock), so it is checked again below.
        if !force {
            if let Ok(Some(outcome)) = self.try_reuse(stage, &key, &final_path) {
                return Ok(outcome);
            }
        }

        let root_created = !stage_root.exists();
        let lock_path = stage_root.join(format!("{key}.lock"));
        let (lock, lock_created) = lock_stage(&stage_root, &lock_path, stage, &key)?;
        // Another process may have finished while we waited; under the lock nobody writes
        // the folder, so what verification says now stands.
        if !force {
            match self.try_reuse(stage, &key, &final_path) {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {}
                Err(err) => {
                    if lock_created {
                        let _ = fs::remove_file(&lock_path);
                    }
                    return Err(err);
                }
            }
        }
        clean_stale(&stage_root, &key);

        let tmp = stage_root.join(format!(".tmp-{key}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut guard = TempGuard(Some(tmp.clone()));
        let dir = StageDir { path: tmp.clone(), scratch: stage_root.join(format!(".work-{key}")), key: key.clone() };

        let started = Instant::now();
        let metrics = match compute(&dir) {
            Ok(metrics) => metrics,
            Err(err) => {
                // Leave the store as it was before this run (bad input must not litter it):
                // the temporary folder, an empty scratch folder (one holding checkpoints stays
                // for a resume), and the lock file and stage folder if this run created them.
                drop(guard);
                let _ = fs::remove_dir(&dir.scratch);
                if lock_created {
                    let _ = fs::remove_file(&lock_path);
                }
                drop(lock);
                if root_created {
                    let _ = fs::remove_dir(&stage_root);
                }
                return Err(err.context(format!("stage {stage} failed; no output was stored")));
            }
        };
        let wall_time_s = started.elapsed().as_secs_f64();

        if tmp.join(MANIFEST_FILE).exists() {
            bail!("stage {stage} wrote its own {MANIFEST_FILE}; that name is reserved for the store");
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_string(),
            key: key.clone(),
            stage: stage.to_string(),
            schema_version: spec.schema_version,
            inputs: resolved.inputs,
            settings: spec.settings.clone(),
            files: manifest::hash_all(&tmp)?,
            metrics,
            wall_time_s,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        };
        write_manifest(&tmp.join(MANIFEST_FILE), &manifest)?;

        if final_path.exists() {
            // --force, or a folder that failed verification: move it aside so the swap is a
            // rename, then delete it.
            let old = stage_root.join(format!(".old-{key}-{}", std::process::id()));
            fs::rename(&final_path, &old).with_context(|| format!("cannot move {} aside", final_path.display()))?;
            fs::rename(&tmp, &final_path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), final_path.display()))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&tmp, &final_path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), final_path.display()))?;
        }
        guard.0 = None;
        if dir.scratch.exists() {
            let _ = fs::remove_dir_all(&dir.scratch);
        }
        drop(lock);
        eprintln!("rto: {stage}: computed {} in {wall_time_s:.1}s -> {}", key.short(), final_path.display());
        Ok(StageOutcome { path: final_path, key, reused: false, manifest })
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

/// Creates (if needed) and locks `lock_path`; returns the locked file and whether this call
/// created it. A run that fails removes the lock file it created, so a waiter may end up
/// holding the lock of a removed file: after locking, the path must still name the locked
/// file, or the whole step is retried on the current one (the usual lock-file protocol).
fn lock_stage(stage_root: &Path, lock_path: &Path, stage: &str, key: &ArtifactKey) -> Result<(fs::File, bool)> {
    use std::os::unix::fs::MetadataExt;
    loop {
        fs::create_dir_all(stage_root)
            .with_context(|| format!("cannot create {} (is --store a writable folder?)", stage_root.display()))?;
        let mut open = fs::OpenOptions::new();
        open.write(true).truncate(false);
        let (lock, created) = match open.clone().create_new(true).open(lock_path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match open.open(lock_path) {
                Ok(f) => (f, false),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot open lock file {}", lock_path.display())),
            },
            // The stage folder was removed by a failing run between our mkdir and open.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create lock file {}", lock_path.display())),
        };
        if lock.try_lock().is_err() {
            eprintln!("rto: {stage}: waiting for another run computing {} (lock {})", key.short(), lock_path.display());
            lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
        }
        let held = lock.metadata().with_context(|| format!("cannot stat {}", lock_path.display()))?;
        match fs::metadata(lock_path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok((lock, created)),
            _ => continue,
        }
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

/// Removes `.tmp-<key>-<pid>` and `.old-<key>-<pid>` folders left by killed runs. A folder
/// is stale exactly when its key's lock can be taken: a live run holds that lock throughout.
fn clean_stale(stage_root: &Path, held: &ArtifactKey) {
    let Ok(entries) = fs::read_dir(stage_root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(".tmp-").or_else(|| name.strip_prefix(".old-")) else {
            continue;
        };
        let Some(key) = rest.get(..64).filter(|k| ArtifactKey::is_key_like(k)) else {
            continue;
        };
        let lock_path = stage_root.join(format!("{key}.lock"));
        let Ok(lock) = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path) else {
            continue;
        };
        // The caller already holds `held`'s lock (so try_lock on a second descriptor would
        // fail): nobody else can be writing that key's folders.
        if key == held.as_str() || lock.try_lock().is_ok() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
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
