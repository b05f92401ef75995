//! Comparing stage outputs across runs and stores (kill/resume, determinism, concurrency):
//! published folders, their files with wall-clock data removed, and manifest verification.
//!
//! Wall-clock data is excluded by name, in one place: `wall_time_s`, `created` and the
//! process's `peak_rss_bytes` in `manifest.json`, `*tokens_per_s` and `time/*` in metrics
//! records. Manifests also record the paths their inputs were read from, which differ between stores by the store root only;
//! [`normalized_files`] replaces that root by `<store>`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Is `key` a wall-clock or machine-dependent field (never reproducible across runs)?
pub fn is_wall_clock(key: &str) -> bool {
    key == "wall_time_s"
        || key == "created"
        || key == "peak_rss_bytes"
        || key == "cuda_used_bytes"
        || key.ends_with("tokens_per_s")
        || key.starts_with("time/")
}

/// `value` with every wall-clock field removed, at any depth.
pub fn strip_wall_clock(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !is_wall_clock(k));
            map.values_mut().for_each(strip_wall_clock);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_wall_clock),
        _ => {}
    }
}

/// The comparable content of one output file: JSON/JSONL without wall-clock fields (and,
/// in a manifest, without the hash of metrics logs, which hold them); other files verbatim.
pub fn comparable(rel: &str, bytes: &[u8]) -> Vec<u8> {
    let name = Path::new(rel).file_name().unwrap().to_string_lossy().into_owned();
    if name.ends_with(".jsonl") {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<String> = text
            .lines()
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(mut v) => {
                    strip_wall_clock(&mut v);
                    v.to_string()
                }
                Err(_) => line.to_string(),
            })
            .collect();
        return lines.join("\n").into_bytes();
    }
    if name == "manifest.json" {
        let mut v: Value = serde_json::from_slice(bytes).expect("manifest.json parses");
        strip_wall_clock(&mut v);
        if let Some(files) = v.get_mut("files").and_then(Value::as_object_mut) {
            files.retain(|k, _| !k.ends_with(".jsonl"));
        }
        return serde_json::to_vec_pretty(&v).unwrap();
    }
    bytes.to_vec()
}

/// Every file under `dir` (relative path → comparable content), with `store` in manifest
/// text replaced by `<store>`.
pub fn normalized_files(dir: &Path, store: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let root = store.to_string_lossy().into_owned();
    for (rel, path) in list(dir) {
        let mut bytes = fs::read(&path).unwrap();
        if rel.ends_with("manifest.json") {
            bytes = String::from_utf8(bytes).unwrap().replace(&root, "<store>").into_bytes();
        }
        out.insert(rel.clone(), comparable(&rel, &bytes));
    }
    out
}

fn list(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), path));
            }
        }
    }
    out.sort();
    out
}

/// Asserts two output folders hold the same files with the same comparable bytes.
pub fn assert_same_outputs(a: &Path, store_a: &Path, b: &Path, store_b: &Path) {
    let (fa, fb) = (normalized_files(a, store_a), normalized_files(b, store_b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "{} and {} list different files",
        a.display(),
        b.display()
    );
    for (rel, bytes) in &fa {
        if bytes != &fb[rel] {
            panic!("{rel} differs between {} and {}{}", a.display(), b.display(), first_difference(bytes, &fb[rel]));
        }
    }
}

/// For text files, the first differing line of each side.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let (Ok(a), Ok(b)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else { return String::new() };
    let mut lines = a.lines().zip(b.lines()).enumerate().filter(|(_, (x, y))| x != y);
    lines.next().map_or(String::new(), |(i, (x, y))| format!(": line {}:\n  {x}\n  {y}", i + 1))
}

/// The accepted (published) folders of a store: `stage/key` → path. Dot-folders (scratch,
/// temporaries) and lock files are not accepted outputs.
pub fn published(store: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let Ok(stages) = fs::read_dir(store) else { return out };
    for stage in stages.flatten().filter(|e| e.path().is_dir()) {
        for entry in fs::read_dir(stage.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && !name.starts_with('.') {
                out.insert(format!("{}/{name}", stage.file_name().to_string_lossy()), entry.path());
            }
        }
    }
    out
}

/// Asserts every accepted folder of `store` verifies against its manifest (`when` says at
/// which point of the test).
pub fn assert_all_verify(store: &Path, when: &str) {
    for (name, path) in published(store) {
        if let Err(e) = rto_data::store::verify(&path) {
            panic!("{when}: accepted folder {name} does not verify: {e:#}");
        }
    }
}

/// A small seeded generator (splitmix64) for choosing kill points reproducibly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `count` distinct values in `lo..hi`, ascending.
    pub fn distinct(&mut self, count: usize, lo: u64, hi: u64) -> Vec<u64> {
        assert!(hi - lo >= count as u64, "range {lo}..{hi} too small for {count} values");
        let mut picked = std::collections::BTreeSet::new();
        while picked.len() < count {
            picked.insert(lo + self.next() % (hi - lo));
        }
        picked.into_iter().collect()
    }
}
