//! Reading and writing safetensors weights in the Hugging Face folder layout.
//!
//! We read the files ourselves (rather than `VarStore::load`) for two reasons: errors must name
//! the file and tensor, and `VarStore::load` silently switches a variable to the file's dtype.

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// Which file of a checkpoint folder holds each tensor.
pub fn tensor_locations(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let index = dir.join(SHARD_INDEX);
    let single = dir.join(SINGLE_FILE);
    if index.exists() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: field `weight_map` missing", index.display()))?;
        map.iter()
            .map(|(name, file)| {
                let file = file
                    .as_str()
                    .with_context(|| format!("{}: weight_map entry {name:?} is not a string", index.display()))?;
                Ok((name.clone(), dir.join(file)))
            })
            .collect()
    } else if single.exists() {
        let names = header_tensor_names(&single)?;
        Ok(names.into_iter().map(|n| (n, single.clone())).collect())
    } else {
        bail!("{}: no {SINGLE_FILE} or {SHARD_INDEX} (is this a model folder?)", dir.display())
    }
}

/// Tensor names from a safetensors header, without reading the data that follows it.
fn header_tensor_names(path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let invalid = || format!("{}: not a valid safetensors file", path.display());
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_context(invalid)?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        bail!("{}: header length {len} is implausible", invalid());
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).with_context(invalid)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).with_context(invalid)?;
    Ok(header.into_iter().map(|(k, _)| k).filter(|k| k != "__metadata__").collect())
}

/// Copies checkpoint tensors into `targets` (name → variable), converting dtype and device.
/// Every target must be present with the right shape; extra tensors in the files are ignored
/// (e.g. `lm_head.weight` of a causal LM loaded as a critic).
pub fn load_into(dir: &Path, targets: &HashMap<String, Tensor>) -> Result<()> {
    let locations = tensor_locations(dir)?;
    let mut by_file: BTreeMap<&PathBuf, Vec<&String>> = BTreeMap::new();
    for name in targets.keys() {
        let file = locations.get(name).with_context(|| {
            let hint = match name.as_str() {
                "score.weight" => "is this a reward model folder (written by rm-train)?",
                "lm_head.weight" => "is this a language model folder (not a reward model)?",
                _ => "the weights do not match its config.json",
            };
            format!(
                "checkpoint {}: tensor `{name}` is missing from its {SINGLE_FILE} (or shards): {hint}",
                dir.display()
            )
        })?;
        by_file.entry(file).or_default().push(name);
    }
    for (file, names) in by_file {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e:?}", file.display()))?;
        for name in names {
            let view = tensors.tensor(name).map_err(|_| {
                anyhow::anyhow!("{}: tensor `{name}` is listed in the index but absent", file.display())
            })?;
            let target = &targets[name];
            let source = tensor_from_view(&view).with_context(|| format!("{}: tensor `{name}`", file.display()))?;
            if source.size() != target.size() {
                bail!(
                    "{}: tensor `{name}` has shape {:?}, the config expects {:?} (the weights do not match config.json)",
                    file.display(),
                    source.size(),
                    target.size()
                );
            }
            tch::no_grad(|| {
                let mut target = target.shallow_clone();
                target.copy_(&source.to_kind(target.kind()).to_device(target.device()));
            });
        }
    }
    Ok(())
}

fn tensor_from_view(view: &TensorView<'_>) -> Result<Tensor> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        other => bail!("unsupported dtype {other:?} (expected F32, BF16 or F16)"),
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(view.data(), &shape, kind)?)
}

/// A tensor borrowed for serialization in a chosen dtype.
struct Owned {
    data: Vec<u8>,
    shape: Vec<usize>,
    dtype: Dtype,
}

impl View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_owned_bytes(tensor: &Tensor, kind: Kind) -> Result<Owned> {
    let dtype = match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        other => bail!("cannot save weights as {other:?}"),
    };
    let cpu = tensor.detach().to_device(tch::Device::Cpu).to_kind(kind).contiguous();
    let numel = cpu.numel();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    cpu.f_copy_data_u8(&mut data, numel)?;
    Ok(Owned { data, shape: cpu.size().iter().map(|&d| d as usize).collect(), dtype })
}

/// Writes named tensors as `model.safetensors`, or as shards plus an index when they exceed
/// `max_shard_bytes`. The `format: pt` metadata is what transformers requires to load them.
pub fn save(dir: &Path, tensors: &BTreeMap<String, Tensor>, kind: Kind, max_shard_bytes: usize) -> Result<()> {
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let mut shards: Vec<Vec<(String, Owned)>> = vec![vec![]];
    let mut shard_bytes = 0usize;
    let mut total = 0usize;
    for (name, tensor) in tensors {
        let owned = to_owned_bytes(tensor, kind).with_context(|| format!("tensor `{name}`"))?;
        if shard_bytes > 0 && shard_bytes + owned.data.len() > max_shard_bytes {
            shards.push(vec![]);
            shard_bytes = 0;
        }
        shard_bytes += owned.data.len();
        total += owned.data.len();
        shards.last_mut().expect("one shard").push((name.clone(), owned));
    }
    let write = |path: &Path, shard: &Vec<(String, Owned)>| -> Result<()> {
        let views = shard.iter().map(|(n, o)| (n.as_str(), o));
        safetensors::tensor::serialize_to_file(views, &metadata, path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))
    };
    if shards.len() == 1 {
        return write(&dir.join(SINGLE_FILE), &shards[0]);
    }
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, count);
        write(&dir.join(&file), shard)?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), file.clone());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let path = dir.join(SHARD_INDEX);
    std::fs::write(&path, serde_json::to_string_pretty(&index)?).with_context(|| format!("writing {}", path.display()))
}
