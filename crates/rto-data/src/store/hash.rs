//! Content keys: blake3 over bytes, never over paths, so that moving or renaming an artifact
//! keeps its key and a changed byte always changes it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::path::Path;
use std::str::FromStr;

/// A blake3 digest as 64 lowercase hex characters: the name of an artifact in the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArtifactKey(String);

impl ArtifactKey {
    /// Wraps a finished blake3 hash.
    pub fn from_hash(hash: blake3::Hash) -> Self {
        Self(hash.to_hex().to_string())
    }

    /// The full 64-character hex form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex characters, for log lines where the full key is noise.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// Whether `s` has the shape of a key (used to tell store folders from user folders).
    pub fn is_key_like(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ArtifactKey {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if !Self::is_key_like(s) {
            bail!("`{s}` is not an artifact key (64 lowercase hex characters)");
        }
        Ok(Self(s.to_string()))
    }
}

impl TryFrom<String> for ArtifactKey {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<ArtifactKey> for String {
    fn from(k: ArtifactKey) -> String {
        k.0
    }
}

/// Feeds one length-prefixed field, so that field boundaries cannot be shifted to collide
/// (`("ab","c")` and `("a","bc")` hash differently).
pub(crate) fn update_field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// blake3 of a file's bytes, streamed; equal to what `b3sum` prints for the file.
pub fn hash_file(path: &Path) -> Result<ArtifactKey> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(ArtifactKey::from_hash(hasher.finalize()))
}

/// Every regular file under `dir`, as sorted '/'-separated relative paths. Symlinks are
/// followed (a model folder may link to shared weights); depth is capped to stop loops.
pub fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk(dir, "", 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) -> Result<()> {
    if depth > 32 {
        bail!("{}: folders nested deeper than 32 levels (a symlink loop?)", dir.display());
    }
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            bail!("{}: file name is not valid UTF-8", path.display());
        };
        let rel = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let meta = fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_dir() {
            walk(&path, &rel, depth + 1, out)?;
        } else if meta.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// Key of a folder that is not ours (e.g. a downloaded Hugging Face model): blake3 over the
/// sorted (relative path, file hash) pairs. Relative paths inside the folder do matter (a
/// renamed `config.json` is a different model); the folder's own location does not.
pub fn hash_folder_content(dir: &Path) -> Result<ArtifactKey> {
    let mut hasher = blake3::Hasher::new();
    update_field(&mut hasher, b"rto-folder/1");
    for rel in list_files(dir)? {
        let key = hash_file(&dir.join(&rel))?;
        update_field(&mut hasher, rel.as_bytes());
        update_field(&mut hasher, key.as_str().as_bytes());
    }
    Ok(ArtifactKey::from_hash(hasher.finalize()))
}

/// Serializes JSON with object keys sorted at every level and no whitespace, whatever
/// serde_json's map type is (another crate in the build may turn on `preserve_order`).
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
