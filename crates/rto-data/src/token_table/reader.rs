//! Reading token-reward tables back, with the schema checked first so that a table edited
//! by hand or produced by another tool fails with the file and column named, not with a
//! panic or silently wrong numbers.

use super::{
    sample_columns, table_dir, token_columns, Columns, SampleRecord, TableLayout, TokenRecord, GOLD_CREDIT_COLUMN,
    OPTIONAL_TOKEN_COLUMNS, SAMPLES_FILE, SCHEMA_VERSION_KEY, TOKENS_FILE, TOKEN_TABLE_SCHEMA_VERSION,
};
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Schema, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Opens one of the two files, checks its metadata and schema, and returns the batch reader,
/// the key-value metadata and the layout of optional columns.
fn open_checked(
    path: &Path,
    columns_of: fn(TableLayout) -> Columns,
) -> Result<(ParquetRecordBatchReader, BTreeMap<String, String>, TableLayout)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
    if len == 0 {
        bail!("{}: file is empty", path.display());
    }
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let metadata: BTreeMap<String, String> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| kv.iter().filter_map(|e| Some((e.key.clone(), e.value.clone()?))).collect())
        .unwrap_or_default();
    match metadata.get(SCHEMA_VERSION_KEY).map(|v| v.parse::<u32>()) {
        None => bail!("{}: no `{SCHEMA_VERSION_KEY}` metadata; not an RTO token-reward table", path.display()),
        Some(Err(_)) => bail!("{}: malformed `{SCHEMA_VERSION_KEY}` metadata", path.display()),
        Some(Ok(v)) if v > TOKEN_TABLE_SCHEMA_VERSION => bail!(
            "{}: table schema version {v} is newer than this tool's ({TOKEN_TABLE_SCHEMA_VERSION}); upgrade",
            path.display()
        ),
        Some(Ok(_)) => {}
    }
    let schema = builder.schema().clone();
    let has = |n: &str| schema.fields().iter().any(|f| f.name() == n);
    let layout = TableLayout {
        iteration: has("iteration"),
        side: has("side"),
        gold_score: has("gold_score"),
        group: has("group"),
        advantage: has("advantage"),
    };
    check_schema(path, &schema, &columns_of(layout))?;
    check_optional_columns(path, &schema)?;
    let reader = builder.build().with_context(|| format!("{}: cannot read Parquet data", path.display()))?;
    Ok((reader, metadata, layout))
}

fn check_schema(path: &Path, schema: &Schema, expected: &Columns) -> Result<()> {
    for (name, ty, _) in expected {
        let Ok(field) = schema.field_with_name(name) else {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            bail!("{}: missing column `{name}`; the file has: {}", path.display(), have.join(", "));
        };
        if !ty.accepts(field.data_type()) {
            bail!("{}: column `{name}` has type {}, expected {}", path.display(), field.data_type(), ty.arrow());
        }
    }
    Ok(())
}

/// An optional column is read only when present, so its type is checked here, before a
/// typed read could fail on it.
fn check_optional_columns(path: &Path, schema: &Schema) -> Result<()> {
    for (name, ty) in OPTIONAL_TOKEN_COLUMNS {
        if let Ok(field) = schema.field_with_name(name) {
            if !ty.accepts(field.data_type()) {
                bail!("{}: column `{name}` has type {}, expected {}", path.display(), field.data_type(), ty.arrow());
            }
        }
    }
    Ok(())
}

/// Typed access to one batch's columns; every error names file, column and row.
struct Batch<'a> {
    path: &'a Path,
    batch: RecordBatch,
    first_row: usize,
}

impl Batch<'_> {
    fn col(&self, name: &str) -> Result<&ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| anyhow!("{}: missing column `{name}`", self.path.display()))
    }

    fn null_err(&self, name: &str, i: usize) -> anyhow::Error {
        anyhow!("{}: column `{name}` is null at row {}", self.path.display(), self.first_row + i)
    }

    fn u64s(&self, name: &str) -> Result<Vec<u64>> {
        let a = self.col(name)?.as_primitive::<UInt64Type>();
        (0..a.len()).map(|i| if a.is_null(i) { Err(self.null_err(name, i)) } else { Ok(a.value(i)) }).collect()
    }

    fn opt_u32s(&self, name: &str) -> Result<Vec<Option<u32>>> {
        let Some(col) = self.batch.column_by_name(name) else {
            return Ok(vec![None; self.batch.num_rows()]);
        };
        let a = col.as_primitive::<UInt32Type>();
        (0..a.len()).map(|i| if a.is_null(i) { Err(self.null_err(name, i)) } else { Ok(Some(a.value(i))) }).collect()
    }

    fn u32s(&self, name: &str) -> Result<Vec<u32>> {
        let a = self.col(name)?.as_primitive::<UInt32Type>();
        (0..a.len()).map(|i| if a.is_null(i) { Err(self.null_err(name, i)) } else { Ok(a.value(i)) }).collect()
    }

    /// Every value the tables hold is a finite number by construction; a NaN or infinity
    /// means the file was edited or written by something else, and would silently poison
    /// whatever reads it (a colour scale, a PPO return).
    fn finite_err(&self, name: &str, i: usize, v: f64) -> anyhow::Error {
        anyhow!(
            "{}: column `{name}` holds {v} at row {}; the table's values must be finite: recompute it (e.g. rerun the stage with --force)",
            self.path.display(),
            self.first_row + i
        )
    }

    /// A nullable column (a source the table was written without): `None` per null row.
    fn opt_f32s(&self, name: &str) -> Result<Vec<Option<f32>>> {
        let a = self.col(name)?.as_primitive::<Float32Type>();
        (0..a.len())
            .map(|i| match (!a.is_null(i)).then(|| a.value(i)) {
                Some(v) if !v.is_finite() => Err(self.finite_err(name, i, v.into())),
                v => Ok(v),
            })
            .collect()
    }

    /// A non-null finite f32 column that only some tables have (`None` per row when absent).
    fn opt_column_f32s(&self, name: &str) -> Result<Vec<Option<f32>>> {
        if self.batch.column_by_name(name).is_none() {
            return Ok(vec![None; self.batch.num_rows()]);
        }
        Ok(self.f32s(name)?.into_iter().map(Some).collect())
    }

    fn f32s(&self, name: &str) -> Result<Vec<f32>> {
        let a = self.col(name)?.as_primitive::<Float32Type>();
        (0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    Err(self.null_err(name, i))
                } else if !a.value(i).is_finite() {
                    Err(self.finite_err(name, i, a.value(i).into()))
                } else {
                    Ok(a.value(i))
                }
            })
            .collect()
    }

    fn opt_f64s(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let Some(col) = self.batch.column_by_name(name) else {
            return Ok(vec![None; self.batch.num_rows()]);
        };
        let a = col.as_primitive::<Float64Type>();
        (0..a.len())
            .map(|i| match (!a.is_null(i)).then(|| a.value(i)) {
                Some(v) if !v.is_finite() => Err(self.finite_err(name, i, v)),
                v => Ok(v),
            })
            .collect()
    }

    /// Strings of any Arrow width, normalized through a cast to Utf8.
    fn strs(&self, name: &str) -> Result<Vec<String>> {
        let cast = arrow::compute::cast(self.col(name)?, &DataType::Utf8)
            .with_context(|| format!("{}: column `{name}`", self.path.display()))?;
        let a = cast.as_string::<i32>();
        (0..a.len())
            .map(|i| if a.is_null(i) { Err(self.null_err(name, i)) } else { Ok(a.value(i).to_string()) })
            .collect()
    }

    fn opt_strs(&self, name: &str) -> Result<Vec<Option<String>>> {
        if self.batch.column_by_name(name).is_none() {
            return Ok(vec![None; self.batch.num_rows()]);
        }
        Ok(self.strs(name)?.into_iter().map(Some).collect())
    }
}

fn next_batch<'a>(
    reader: &mut ParquetRecordBatchReader,
    path: &'a Path,
    rows: &mut usize,
) -> Result<Option<Batch<'a>>> {
    match reader.next() {
        None => Ok(None),
        Some(b) => {
            let batch = b.with_context(|| format!("{}: cannot decode Parquet data", path.display()))?;
            let first_row = *rows;
            *rows += batch.num_rows();
            Ok(Some(Batch { path, batch, first_row }))
        }
    }
}

/// Token rows of one batch as (sample_id, prompt_id, record).
fn token_rows(b: &Batch) -> Result<Vec<(u64, String, TokenRecord)>> {
    let ids = b.u64s("sample_id")?;
    let pids = b.strs("prompt_id")?;
    let pos = b.u32s("position")?;
    let tids = b.u32s("token_id")?;
    let toks = b.strs("token")?;
    let (lr, ld, lp) = (b.opt_f32s("logp_ref")?, b.opt_f32s("logp_dpo")?, b.opt_f32s("logp_policy")?);
    let (dr, kl, sr) = (b.opt_f32s("dpo_reward")?, b.opt_f32s("kl_penalty")?, b.opt_f32s("sentence_reward")?);
    let rw = b.f32s("reward")?;
    let gold = b.opt_column_f32s(GOLD_CREDIT_COLUMN)?;
    let adv = b.opt_column_f32s("advantage")?;
    let mut out = Vec::with_capacity(ids.len());
    for (i, (tok, pid)) in toks.into_iter().zip(pids).enumerate() {
        out.push((
            ids[i],
            pid,
            TokenRecord {
                position: pos[i],
                token_id: tids[i],
                token: tok,
                logp_ref: lr[i],
                logp_dpo: ld[i],
                logp_policy: lp[i],
                dpo_reward: dr[i],
                kl_penalty: kl[i],
                sentence_reward: sr[i],
                reward: rw[i],
                gold_credit: gold[i],
                advantage: adv[i],
            },
        ));
    }
    Ok(out)
}

fn sample_rows(b: &Batch) -> Result<Vec<SampleRecord>> {
    let ids = b.u64s("sample_id")?;
    let pids = b.strs("prompt_id")?;
    let prompts = b.strs("prompt")?;
    let responses = b.strs("response")?;
    let n = b.u32s("n_tokens")?;
    let (dret, sr, ret) = (b.opt_f32s("dpo_return")?, b.opt_f32s("sentence_reward")?, b.f32s("return")?);
    let gold = b.opt_f64s("gold_score")?;
    let it = b.opt_u32s("iteration")?;
    let group = b.opt_u32s("group")?;
    let side = b.opt_strs("side")?;
    let rows = prompts.into_iter().zip(responses).zip(pids).zip(side).enumerate();
    Ok(rows
        .map(|(i, (((prompt, response), prompt_id), side))| SampleRecord {
            sample_id: ids[i],
            prompt_id,
            prompt,
            response,
            n_tokens: n[i],
            dpo_return: dret[i],
            sentence_reward: sr[i],
            ret: ret[i],
            gold_score: gold[i],
            iteration: it[i],
            side,
            group: group[i],
        })
        .collect())
}

/// All rows of `samples.parquet` (path: the table folder or either of its files).
pub fn read_samples(path: &Path) -> Result<Vec<SampleRecord>> {
    Ok(samples_with_layout(path)?.0)
}

fn samples_with_layout(path: &Path) -> Result<(Vec<SampleRecord>, TableLayout)> {
    let file = table_dir(path).join(SAMPLES_FILE);
    let (mut reader, _, layout) = open_checked(&file, sample_columns)?;
    let (mut out, mut rows) = (Vec::new(), 0);
    while let Some(b) = next_batch(&mut reader, &file, &mut rows)? {
        out.extend(sample_rows(&b)?);
    }
    Ok((out, layout))
}

/// All rows of `tokens.parquet` as (sample_id, token).
pub fn read_tokens(path: &Path) -> Result<Vec<(u64, TokenRecord)>> {
    let file = table_dir(path).join(TOKENS_FILE);
    let (mut reader, _, _) = open_checked(&file, token_columns)?;
    let (mut out, mut rows) = (Vec::new(), 0);
    while let Some(b) = next_batch(&mut reader, &file, &mut rows)? {
        out.extend(token_rows(&b)?.into_iter().map(|(id, _, t)| (id, t)));
    }
    Ok(out)
}

/// The key-value metadata of `tokens.parquet` (`rto.schema_version`, β1, model hashes, ...).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let file = table_dir(path).join(TOKENS_FILE);
    Ok(open_checked(&file, token_columns)?.1)
}

/// Every sample with its tokens, in file order.
pub fn read_table(path: &Path) -> Result<Vec<(SampleRecord, Vec<TokenRecord>)>> {
    TokenTableReader::open(path)?.collect()
}

/// Streams (sample, tokens) pairs: the samples table is read whole (one row per sample),
/// the tokens table one batch at a time, and the two are checked to line up.
pub struct TokenTableReader {
    tokens_path: PathBuf,
    samples: std::vec::IntoIter<SampleRecord>,
    reader: ParquetRecordBatchReader,
    pending: VecDeque<(u64, String, TokenRecord)>,
    rows_read: usize,
    rows_used: usize,
    metadata: BTreeMap<String, String>,
    layout: TableLayout,
    done: bool,
}

impl TokenTableReader {
    /// Opens a table folder (or either of its files), validating both schemas.
    pub fn open(path: &Path) -> Result<Self> {
        let dir = table_dir(path);
        let (samples, sample_layout) = samples_with_layout(&dir)?;
        let tokens_path = dir.join(TOKENS_FILE);
        let (reader, metadata, token_layout) = open_checked(&tokens_path, token_columns)?;
        let shared = |l: TableLayout| (l.iteration, l.side, l.group);
        if shared(token_layout) != shared(sample_layout) {
            bail!(
                "{}: the optional columns iteration/side/group differ between tokens.parquet and samples.parquet",
                dir.display()
            );
        }
        let layout = TableLayout { advantage: token_layout.advantage, ..sample_layout };
        Ok(Self {
            tokens_path,
            samples: samples.into_iter(),
            reader,
            pending: VecDeque::new(),
            rows_read: 0,
            rows_used: 0,
            metadata,
            layout,
            done: false,
        })
    }

    /// Key-value metadata of the tokens file.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Which optional columns the table has.
    pub fn layout(&self) -> TableLayout {
        self.layout
    }

    fn take_tokens(&mut self, sample: &SampleRecord) -> Result<Vec<TokenRecord>> {
        let n = sample.n_tokens as usize;
        while self.pending.len() < n {
            let path = self.tokens_path.clone();
            match next_batch(&mut self.reader, &path, &mut self.rows_read)? {
                Some(b) => self.pending.extend(token_rows(&b)?),
                None => bail!(
                    "{}: ends before the {n} tokens of sample {} (samples.parquet's n_tokens)",
                    self.tokens_path.display(),
                    sample.sample_id
                ),
            }
        }
        let mut out = Vec::with_capacity(n);
        for (id, prompt_id, tok) in self.pending.drain(..n) {
            if id != sample.sample_id || prompt_id != sample.prompt_id {
                bail!(
                    "{}: row {} belongs to sample {id}, expected sample {} (tokens must follow samples.parquet's order)",
                    self.tokens_path.display(),
                    self.rows_used,
                    sample.sample_id
                );
            }
            self.rows_used += 1;
            out.push(tok);
        }
        Ok(out)
    }
}

impl Iterator for TokenTableReader {
    type Item = Result<(SampleRecord, Vec<TokenRecord>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some(sample) = self.samples.next() else {
            self.done = true;
            // Anything left over in the tokens file has no sample row.
            let extra = if !self.pending.is_empty() {
                true
            } else {
                let path = self.tokens_path.clone();
                match next_batch(&mut self.reader, &path, &mut self.rows_read) {
                    Ok(b) => b.is_some_and(|b| b.batch.num_rows() > 0),
                    Err(e) => return Some(Err(e)),
                }
            };
            return extra.then(|| {
                Err(anyhow!(
                    "{}: has token rows after the last sample of samples.parquet (row {})",
                    self.tokens_path.display(),
                    self.rows_used
                ))
            });
        };
        match self.take_tokens(&sample) {
            Ok(tokens) => Some(Ok((sample, tokens))),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
