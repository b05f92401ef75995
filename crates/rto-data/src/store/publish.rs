//! The locked part of [`Store::run`](super::Store::run): the stage lock, the temporary folder the
//! stage writes, the swap into place, and the guard that undoes all of it when any step after
//! the lock fails (an error or a panic), so a failed run leaves the store as it found it.

use super::ArtifactKey;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// A step of publishing a computed stage folder, named by [`Store::with_fault`](super::Store::with_fault).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishPhase {
    /// Hashing the files of the finished temporary folder for the manifest.
    Hash,
    /// Writing `manifest.json` into the temporary folder.
    WriteManifest,
    /// Moving an existing folder under the key aside (`--force`, or a folder that failed
    /// verification) so that the swap is one rename.
    MoveAside,
    /// Renaming the temporary folder into place.
    Rename,
}

/// How an injected fault fails its phase.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Error,
    Panic,
}

/// A fault a test asked for; see [`Store::with_fault`](super::Store::with_fault).
#[derive(Clone, Copy, Debug)]
pub(super) struct Fault {
    pub(super) phase: PublishPhase,
    pub(super) kind: FaultKind,
}

/// Fails `phase` when `fault` names it; a no-op (one comparison) otherwise.
pub(super) fn inject(fault: Option<Fault>, phase: PublishPhase) -> Result<()> {
    match fault {
        Some(f) if f.phase == phase => match f.kind {
            FaultKind::Error => bail!("injected fault in publish phase {phase:?} (Store::with_fault)"),
            FaultKind::Panic => panic!("injected panic in publish phase {phase:?} (Store::with_fault)"),
        },
        _ => Ok(()),
    }
}

/// `<stage root>/.work-<key>`: the scratch folder of a key (see `StageDir::scratch`).
pub(super) fn scratch_path(stage_root: &Path, key: &ArtifactKey) -> PathBuf {
    stage_root.join(format!(".work-{key}"))
}

/// Owns everything a run holds or creates from taking the stage lock until its folder is in
/// place: the lock (and whether this run created the lock file), the stage folder (whether
/// this run created it), the temporary folder, the scratch folder, and an old folder moved
/// aside for the swap. Dropped without [`commit`](Self::commit) or [`release`](Self::release),
/// after an error or during a panic's unwinding alike, it puts the store back as it was before
/// the run. The one exception is a scratch folder holding checkpoints: it stays for the resume.
pub(super) struct PublishGuard {
    /// `Some` until the guard lets go of the lock.
    lock: Option<fs::File>,
    lock_path: PathBuf,
    lock_created: bool,
    stage_root: PathBuf,
    root_created: bool,
    /// The temporary folder, once created and until renamed into place.
    tmp: Option<PathBuf>,
    scratch: PathBuf,
    scratch_existed: bool,
    /// (where the old folder was moved, where it came from) between the two renames of a swap.
    aside: Option<(PathBuf, PathBuf)>,
    done: bool,
}

impl PublishGuard {
    /// Takes the lock of `key` in `stage_root` (creating both if needed) and starts guarding.
    pub(super) fn lock(stage_root: &Path, stage: &str, key: &ArtifactKey) -> Result<Self> {
        let root_created = !stage_root.exists();
        let lock_path = stage_root.join(format!("{key}.lock"));
        let (lock, lock_created) = match lock_stage(stage_root, &lock_path, stage, key) {
            Ok(locked) => locked,
            Err(err) => {
                if root_created {
                    let _ = fs::remove_dir(stage_root);
                }
                return Err(err);
            }
        };
        let scratch = scratch_path(stage_root, key);
        Ok(Self {
            lock: Some(lock),
            lock_path,
            lock_created,
            stage_root: stage_root.to_path_buf(),
            root_created,
            tmp: None,
            scratch_existed: scratch.exists(),
            scratch,
            aside: None,
            done: false,
        })
    }

    pub(super) fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// Creates the empty temporary folder `.tmp-<key>-<pid>` the stage writes into.
    pub(super) fn create_tmp(&mut self, key: &ArtifactKey) -> Result<PathBuf> {
        let tmp = self.stage_root.join(format!(".tmp-{key}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
        }
        self.tmp = Some(tmp.clone());
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(tmp)
    }

    /// Renames the finished temporary folder to `final_path` and commits. A folder already
    /// there is moved aside first, so the swap is a rename; should the swap fail, the drop
    /// moves it back.
    pub(super) fn publish(mut self, final_path: &Path, key: &ArtifactKey, fault: Option<Fault>) -> Result<()> {
        let tmp = self.tmp.clone().context("internal error: publish before the temporary folder was created")?;
        if final_path.exists() {
            let old = self.stage_root.join(format!(".old-{key}-{}", std::process::id()));
            inject(fault, PublishPhase::MoveAside)?;
            fs::rename(final_path, &old).with_context(|| format!("cannot move {} aside", final_path.display()))?;
            self.aside = Some((old, final_path.to_path_buf()));
        }
        inject(fault, PublishPhase::Rename)?;
        fs::rename(&tmp, final_path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), final_path.display()))?;
        self.tmp = None;
        self.commit();
        Ok(())
    }

    /// Success: the folder is in place. Deletes the replaced folder and the scratch folder and
    /// releases the lock; the lock file stays (removing it is only safe for a run that failed,
    /// see `lock_stage`).
    fn commit(mut self) {
        if let Some((old, _)) = self.aside.take() {
            let _ = fs::remove_dir_all(old);
        }
        if self.scratch.exists() {
            let _ = fs::remove_dir_all(&self.scratch);
        }
        self.done = true;
    }

    /// The output turned out to exist already (another run finished while we waited): let go of
    /// the lock and leave everything as it is.
    pub(super) fn release(mut self) {
        self.done = true;
    }

    /// Undoes the run, in the order that keeps the lock-file protocol: everything under the
    /// lock first, then the lock file (while still locked, so a waiter sees it replaced), then
    /// the lock, then the stage folder if this run created it and it is empty again.
    fn roll_back(&mut self) {
        if let Some((old, final_path)) = self.aside.take() {
            if let Err(e) = fs::rename(&old, &final_path) {
                eprintln!(
                    "rto: cannot move the previous output {} back to {}: {e}; move it back by hand before the next run deletes it",
                    old.display(),
                    final_path.display()
                );
            }
        }
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_dir_all(tmp);
        }
        if !self.scratch_existed {
            // remove_dir only removes it while empty: saved checkpoints stay for a resume.
            let _ = fs::remove_dir(&self.scratch);
        }
        if self.lock_created {
            let _ = fs::remove_file(&self.lock_path);
        }
        drop(self.lock.take());
        if self.root_created {
            let _ = fs::remove_dir(&self.stage_root);
        }
    }
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        if !self.done {
            self.roll_back();
        }
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

/// Removes `.tmp-<key>-<pid>` and `.old-<key>-<pid>` folders left by killed runs. A folder
/// is stale exactly when its key's lock can be taken: a live run holds that lock throughout.
pub(super) fn clean_stale(stage_root: &Path, held: &ArtifactKey) {
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
