//! `manifest.json`: what a stage folder holds and where it came from. It is both the
//! provenance record a user reads and the checklist `verify` uses to reject a folder that
//! changed after it was written.

use super::hash::{hash_file, list_files, ArtifactKey};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// File name of the manifest inside every stage folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Value of the manifest's `format` field: tells our manifests from any other `manifest.json`.
pub const MANIFEST_FORMAT: &str = "rto-manifest/1";

/// One input of a stage as recorded in its manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestInput {
    /// What the input is for in the stage ("model", "data", ...).
    pub role: String,
    /// The path as the user gave it: informative only, never part of a key.
    pub path: String,
    /// The input's content key.
    pub key: ArtifactKey,
}

/// Contents of `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The stage key; also the folder's name inside the store.
    pub key: ArtifactKey,
    pub stage: String,
    pub schema_version: u32,
    pub inputs: Vec<ManifestInput>,
    /// The resolved settings that entered the key.
    pub settings: Value,
    /// Every file of the folder except the manifest: relative path → blake3.
    pub files: BTreeMap<String, ArtifactKey>,
    /// Summary the stage returned (final loss, row counts, ...).
    pub metrics: Value,
    pub wall_time_s: f64,
    /// Version of the crate that wrote the folder.
    pub tool_version: String,
    /// Unix time (seconds) when the folder was accepted.
    pub created: u64,
}

/// Reads `path` as one of our manifests. `Ok(None)` when the JSON is someone else's
/// `manifest.json` (no `format: rto-manifest/1`); an error when it claims to be ours but is
/// broken, since silently keying such a folder by content would hide the damage.
pub(crate) fn read_manifest(path: &Path) -> Result<Option<Manifest>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    if value.get("format").and_then(Value::as_str) != Some(MANIFEST_FORMAT) {
        return Ok(None);
    }
    let manifest: Manifest =
        serde_json::from_value(value).with_context(|| format!("{}: malformed RTO manifest", path.display()))?;
    Ok(Some(manifest))
}

/// Checks a stage folder against its manifest: every listed file exists and has its recorded
/// blake3, and no unlisted file was added. Errors name the folder and the offending file.
pub fn verify(folder: &Path) -> Result<Manifest> {
    let manifest_path = folder.join(MANIFEST_FILE);
    if !manifest_path.is_file() {
        bail!("{}: no {MANIFEST_FILE}; not a finished stage output", folder.display());
    }
    let Some(manifest) = read_manifest(&manifest_path)? else {
        bail!("{}: not an RTO manifest (no \"format\": \"{MANIFEST_FORMAT}\")", manifest_path.display());
    };
    if let Some(name) = folder.file_name().and_then(|n| n.to_str()) {
        if ArtifactKey::is_key_like(name) && name != manifest.key.as_str() {
            bail!("{}: folder name does not match the manifest's key {}", folder.display(), manifest.key);
        }
    }
    check_files(folder, &manifest)?;
    Ok(manifest)
}

fn check_files(folder: &Path, manifest: &Manifest) -> Result<()> {
    let present: BTreeSet<String> = list_files(folder)?.into_iter().filter(|f| f != MANIFEST_FILE).collect();
    for rel in manifest.files.keys() {
        if !present.contains(rel) {
            bail!("{}: file `{rel}` listed in the manifest is missing", folder.display());
        }
    }
    if let Some(extra) = present.iter().find(|f| !manifest.files.contains_key(*f)) {
        bail!("{}: file `{extra}` is not listed in the manifest (added after the stage finished)", folder.display());
    }
    for (rel, expected) in &manifest.files {
        let actual = hash_file(&folder.join(rel))?;
        if &actual != expected {
            bail!(
                "{}: file `{rel}` was modified after the stage wrote it (blake3 {} , manifest says {})",
                folder.display(),
                actual.short(),
                expected.short()
            );
        }
    }
    Ok(())
}

/// Hashes every file of a freshly computed folder for its manifest.
pub(crate) fn hash_all(folder: &Path) -> Result<BTreeMap<String, ArtifactKey>> {
    let mut files = BTreeMap::new();
    for rel in list_files(folder)? {
        if rel == MANIFEST_FILE {
            continue;
        }
        let key = hash_file(&folder.join(&rel))?;
        files.insert(rel, key);
    }
    Ok(files)
}
