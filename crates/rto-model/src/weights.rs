//! Reading and writing safetensors weights in the Hugging Face folder layout.
//!
//! We read the files ourselves (rather than `VarStore::load`) for two reasons: errors must name
//! the file and tensor, and `VarStore::load` silently switches a variable to the file's dtype.

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, View};
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
    Ok(Header::read(path)?.entries.into_keys().collect())
}

/// Where one tensor's bytes are in a safetensors file, from its header.
struct Entry {
    kind: Kind,
    shape: Vec<i64>,
    /// Byte range within the data section.
    begin: u64,
    end: u64,
}

/// A safetensors file's header, read without the data after it, so loading reads one tensor
/// at a time instead of the whole file (a 16 GB checkpoint must not need 16 GB of transient
/// memory on top of the model it fills).
struct Header {
    file: std::fs::File,
    data_start: u64,
    entries: BTreeMap<String, Entry>,
}

impl Header {
    fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let invalid = || format!("{}: not a valid safetensors file", path.display());
        let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let file_len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).with_context(invalid)?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 || 8 + len > file_len {
            bail!("{}: header length {len} is implausible", invalid());
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header).with_context(invalid)?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header).with_context(invalid)?;
        let data_len = file_len - 8 - len;
        let mut entries = BTreeMap::new();
        for (name, value) in header.into_iter().filter(|(k, _)| k != "__metadata__") {
            let entry = Entry::parse(&value, data_len).with_context(|| format!("{}: tensor `{name}`", invalid()))?;
            entries.insert(name, entry);
        }
        Ok(Self { file, data_start: 8 + len, entries })
    }

    /// The tensor `name`, read from the file on its own.
    fn tensor(&mut self, name: &str) -> Result<Tensor> {
        use std::io::{Read, Seek, SeekFrom};
        let entry =
            self.entries.get(name).with_context(|| format!("tensor `{name}` is listed in the index but absent"))?;
        let mut bytes = vec![0u8; (entry.end - entry.begin) as usize];
        self.file.seek(SeekFrom::Start(self.data_start + entry.begin))?;
        self.file.read_exact(&mut bytes).with_context(|| format!("reading tensor `{name}`"))?;
        Ok(Tensor::f_from_data_size(&bytes, &entry.shape, entry.kind)?)
    }
}

impl Entry {
    fn parse(value: &serde_json::Value, data_len: u64) -> Result<Self> {
        let kind = match value["dtype"].as_str() {
            Some("F32") => Kind::Float,
            Some("F16") => Kind::Half,
            Some("BF16") => Kind::BFloat16,
            Some("F64") => Kind::Double,
            other => bail!("unsupported dtype {other:?} (expected F32, BF16 or F16)"),
        };
        let numbers = |field: &str| -> Result<Vec<u64>> {
            value[field]
                .as_array()
                .with_context(|| format!("`{field}` is not a list"))?
                .iter()
                .map(|v| v.as_u64().with_context(|| format!("`{field}` holds {v}, not a size")))
                .collect()
        };
        let shape = numbers("shape")?;
        let offsets = numbers("data_offsets")?;
        let [begin, end] = offsets[..] else { bail!("`data_offsets` must hold two numbers, got {offsets:?}") };
        let expected = shape.iter().product::<u64>() * kind.elt_size_in_bytes() as u64;
        if begin > end || end > data_len || end - begin != expected {
            bail!(
                "data_offsets {begin}..{end} do not hold {expected} bytes of shape {shape:?} in {data_len} data bytes"
            );
        }
        Ok(Self { kind, shape: shape.iter().map(|&d| d as i64).collect(), begin, end })
    }
}

/// Copies checkpoint tensors into `targets` (name → variable), converting dtype and device.
/// Every target must be present with the right shape; extra tensors in the files are ignored
/// (e.g. `lm_head.weight` of a causal LM loaded as a critic).
pub fn load_into(dir: &Path, targets: &HashMap<String, Tensor>) -> Result<()> {
    copy_into(dir, &tensor_locations(dir)?, targets)
}

/// [`load_into`] from one safetensors file (an adapter's `adapter_model.safetensors`).
pub fn load_file_into(file: &Path, targets: &HashMap<String, Tensor>) -> Result<()> {
    let locations = header_tensor_names(file)?.into_iter().map(|n| (n, file.to_path_buf())).collect();
    copy_into(file, &locations, targets)
}

/// Tensor names of one safetensors file, from its header.
pub fn file_tensor_names(file: &Path) -> Result<Vec<String>> {
    header_tensor_names(file)
}

fn copy_into(source: &Path, locations: &BTreeMap<String, PathBuf>, targets: &HashMap<String, Tensor>) -> Result<()> {
    let dir = source;
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
        let mut header = Header::read(file)?;
        for name in names {
            let target = &targets[name];
            let source = header.tensor(name).with_context(|| format!("{}", file.display()))?;
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

/// A tensor to serialize in a chosen dtype. Its bytes are made when the writer asks for them
/// (`View::data`, called once per tensor as the file is written), so saving holds one
/// tensor's host copy at a time instead of a copy of the whole model.
struct Pending {
    tensor: Tensor,
    kind: Kind,
    shape: Vec<usize>,
    dtype: Dtype,
}

impl Pending {
    fn new(tensor: &Tensor, kind: Kind) -> Result<Self> {
        let dtype = match kind {
            Kind::Float => Dtype::F32,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            other => bail!("cannot save weights as {other:?}"),
        };
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        Ok(Self { tensor: tensor.shallow_clone(), kind, shape, dtype })
    }

    fn bytes(&self) -> Vec<u8> {
        let cpu = self.tensor.detach().to_device(tch::Device::Cpu).to_kind(self.kind).contiguous();
        let numel = cpu.numel();
        let mut data = vec![0u8; numel * self.kind.elt_size_in_bytes()];
        // A CPU tensor of a float kind copies into a buffer of its exact size: nothing to fail
        // on but memory, which the allocation above would already have hit.
        cpu.f_copy_data_u8(&mut data, numel).expect("copying a CPU tensor into a buffer of its size");
        data
    }
}

impl View for &Pending {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.kind.elt_size_in_bytes()
    }
}

/// Writes named tensors as `model.safetensors`, or as shards plus an index when they exceed
/// `max_shard_bytes`. The `format: pt` metadata is what transformers requires to load them.
pub fn save(dir: &Path, tensors: &BTreeMap<String, Tensor>, kind: Kind, max_shard_bytes: usize) -> Result<()> {
    let mut shards: Vec<Vec<(String, Pending)>> = vec![vec![]];
    let mut shard_bytes = 0usize;
    let mut total = 0usize;
    for (name, tensor) in tensors {
        let pending = Pending::new(tensor, kind).with_context(|| format!("tensor `{name}`"))?;
        let len = (&pending).data_len();
        if shard_bytes > 0 && shard_bytes + len > max_shard_bytes {
            shards.push(vec![]);
            shard_bytes = 0;
        }
        shard_bytes += len;
        total += len;
        shards.last_mut().expect("one shard").push((name.clone(), pending));
    }
    if shards.len() == 1 {
        return write_file(&dir.join(SINGLE_FILE), &shards[0]);
    }
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, count);
        write_file(&dir.join(&file), shard)?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), file.clone());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let path = dir.join(SHARD_INDEX);
    std::fs::write(&path, serde_json::to_string_pretty(&index)?).with_context(|| format!("writing {}", path.display()))
}

/// Writes named tensors in `kind` as the one safetensors file `path` (an adapter's weights).
pub fn save_file(path: &Path, tensors: &BTreeMap<String, Tensor>, kind: Kind) -> Result<()> {
    let pending = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), Pending::new(t, kind).with_context(|| format!("tensor `{name}`"))?)))
        .collect::<Result<Vec<_>>>()?;
    write_file(path, &pending)
}

/// One safetensors file with the `format: pt` metadata transformers requires.
fn write_file(path: &Path, tensors: &[(String, Pending)]) -> Result<()> {
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let views = tensors.iter().map(|(n, o)| (n.as_str(), o));
    safetensors::tensor::serialize_to_file(views, &metadata, path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))
}
