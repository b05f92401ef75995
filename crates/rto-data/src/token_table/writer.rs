//! Streaming writer of a token-reward table. Rows are buffered column-wise and written as one
//! row group every `row_group_tokens` tokens, so memory stays bounded by one row group however
//! long the rollout is. Files are written as `*.partial` and renamed on `finish`, so a crash
//! never leaves a file that looks complete.

use super::{
    arrow_schema, sample_columns, token_columns, ColType, SampleRecord, TableLayout, TokenRecord, GOLD_CREDIT_COLUMN,
    SAMPLES_FILE, SCHEMA_VERSION_KEY, TABLE_KIND_KEY, TOKENS_FILE, TOKEN_TABLE_SCHEMA_VERSION,
};
use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, Float32Array, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Construction options of a [`TokenTableWriter`].
#[derive(Clone, Debug)]
pub struct TableOptions {
    /// Optional columns: `iteration` (rollouts), `side` (annotated preference pairs),
    /// `gold_score` (samples table only).
    pub layout: TableLayout,
    /// Tokens per row group (default 65 536); also bounds the writer's memory.
    pub row_group_tokens: usize,
    /// Extra file-level key-value metadata (β1, clip, β2, model and tokenizer hashes, ...),
    /// written to both files next to `rto.schema_version`.
    pub metadata: BTreeMap<String, String>,
    /// Adds the `gold_credit` token column (the last one): every token's `gold_credit` must
    /// be set, and without this option none may be.
    pub gold_credit: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            layout: TableLayout::default(),
            row_group_tokens: 64 * 1024,
            metadata: BTreeMap::new(),
            gold_credit: false,
        }
    }
}

/// Counts returned by [`TokenTableWriter::finish`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    pub samples: u64,
    pub tokens: u64,
    pub row_groups: usize,
}

#[derive(Default)]
struct TokenBuf {
    sample_id: Vec<u64>,
    prompt_id: Vec<String>,
    position: Vec<u32>,
    token_id: Vec<u32>,
    token: Vec<String>,
    logp_ref: Vec<Option<f32>>,
    logp_dpo: Vec<Option<f32>>,
    logp_policy: Vec<Option<f32>>,
    dpo_reward: Vec<Option<f32>>,
    kl_penalty: Vec<Option<f32>>,
    sentence_reward: Vec<Option<f32>>,
    reward: Vec<f32>,
    iteration: Vec<u32>,
    side: Vec<String>,
    gold_credit: Vec<f32>,
    group: Vec<u32>,
    advantage: Vec<f32>,
}

#[derive(Default)]
struct SampleBuf {
    sample_id: Vec<u64>,
    prompt_id: Vec<String>,
    prompt: Vec<String>,
    response: Vec<String>,
    n_tokens: Vec<u32>,
    dpo_return: Vec<Option<f32>>,
    sentence_reward: Vec<Option<f32>>,
    ret: Vec<f32>,
    gold_score: Vec<Option<f64>>,
    iteration: Vec<u32>,
    side: Vec<String>,
    group: Vec<u32>,
}

/// Writes `tokens.parquet` and `samples.parquet` into a folder.
pub struct TokenTableWriter {
    dir: PathBuf,
    options: TableOptions,
    token_schema: SchemaRef,
    sample_schema: SchemaRef,
    tokens: Option<ArrowWriter<File>>,
    samples: Option<ArrowWriter<File>>,
    tok: TokenBuf,
    smp: SampleBuf,
    seen: HashSet<u64>,
    summary: TableSummary,
    finished: bool,
}

fn partial(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.partial"))
}

fn open_writer(path: &Path, schema: &SchemaRef, kv: &BTreeMap<String, String>) -> Result<ArrowWriter<File>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        // Row groups are cut by the writer itself (see `flush_group`), never by row count.
        .set_max_row_group_row_count(None)
        .set_key_value_metadata(Some(kv.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect()))
        .build();
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    ArrowWriter::try_new(file, schema.clone(), Some(props))
        .with_context(|| format!("cannot start Parquet file {}", path.display()))
}

impl TokenTableWriter {
    /// Creates the folder if needed and opens both files (as `.partial`).
    pub fn create(dir: impl AsRef<Path>, options: TableOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if options.row_group_tokens == 0 {
            bail!("row_group_tokens must be > 0");
        }
        for reserved in [SCHEMA_VERSION_KEY, TABLE_KIND_KEY] {
            if options.metadata.contains_key(reserved) {
                bail!("metadata key `{reserved}` is reserved for the table writer");
            }
        }
        let meta = |kind: &str| {
            let mut m = options.metadata.clone();
            m.insert(SCHEMA_VERSION_KEY.into(), TOKEN_TABLE_SCHEMA_VERSION.to_string());
            m.insert(TABLE_KIND_KEY.into(), kind.into());
            m
        };
        let (tmeta, smeta) = (meta("tokens"), meta("samples"));
        let mut columns = token_columns(options.layout);
        if options.gold_credit {
            columns.push((GOLD_CREDIT_COLUMN, ColType::F32, false));
        }
        let token_schema = arrow_schema(&columns, &tmeta);
        let sample_schema = arrow_schema(&sample_columns(options.layout), &smeta);
        let tokens = open_writer(&partial(&dir, TOKENS_FILE), &token_schema, &tmeta)?;
        let samples = open_writer(&partial(&dir, SAMPLES_FILE), &sample_schema, &smeta)?;
        Ok(Self {
            dir,
            options,
            token_schema,
            sample_schema,
            tokens: Some(tokens),
            samples: Some(samples),
            tok: TokenBuf::default(),
            smp: SampleBuf::default(),
            seen: HashSet::new(),
            summary: TableSummary::default(),
            finished: false,
        })
    }

    /// Adds one sample and its tokens. Checks what a reader of the table relies on: unique
    /// `sample_id`, `n_tokens` = number of tokens, positions 0..n in order, optional columns
    /// present exactly when the layout has them, finite rewards and advantages, and
    /// `return` = Σ reward.
    pub fn push_sample(&mut self, sample: SampleRecord, tokens: &[TokenRecord]) -> Result<()> {
        self.check_sample(&sample, tokens)?;
        self.buffer(sample, tokens);
        let limit = self.options.row_group_tokens;
        if self.tok.reward.len() >= limit || self.smp.ret.len() >= limit {
            self.flush_group()?;
        }
        Ok(())
    }

    fn check_sample(&mut self, sample: &SampleRecord, tokens: &[TokenRecord]) -> Result<()> {
        let id = sample.sample_id;
        let layout = self.options.layout;
        if sample.n_tokens as usize != tokens.len() {
            bail!("sample {id}: n_tokens is {} but {} tokens were given", sample.n_tokens, tokens.len());
        }
        if let Some((i, t)) = tokens.iter().enumerate().find(|(i, t)| t.position as usize != *i) {
            bail!("sample {id}: token {i} has position {}; positions must be 0, 1, 2, ...", t.position);
        }
        if let Some(t) = tokens.iter().find(|t| !t.reward.is_finite()) {
            bail!("sample {id}: reward at position {} is {}", t.position, t.reward);
        }
        if !sample.ret.is_finite() {
            bail!("sample {id}: return is {}", sample.ret);
        }
        let total = tokens.iter().map(|t| t.reward as f64).sum::<f64>();
        if (total - sample.ret as f64).abs() > 1e-3 * total.abs().max(1.0) {
            bail!("sample {id}: return {} differs from the sum of its token rewards {total}", sample.ret);
        }
        if sample.iteration.is_some() != layout.iteration {
            bail!(
                "sample {id}: `iteration` must be set exactly when the table has an iteration column ({})",
                layout.iteration
            );
        }
        if sample.side.is_some() != layout.side {
            bail!("sample {id}: `side` must be set exactly when the table has a side column ({})", layout.side);
        }
        if sample.gold_score.is_some() && !layout.gold_score {
            bail!("sample {id}: has a gold_score but the table was created without that column");
        }
        self.check_gold_credit(id, tokens)?;
        if sample.group.is_some() != layout.group {
            bail!("sample {id}: `group` must be set exactly when the table has a group column ({})", layout.group);
        }
        if let Some(t) = tokens.iter().find(|t| t.advantage.is_some() != layout.advantage) {
            bail!(
                "sample {id}: `advantage` at position {} must be set exactly when the table has an advantage column ({})",
                t.position,
                layout.advantage
            );
        }
        if let Some(t) = tokens.iter().find(|t| t.advantage.is_some_and(|a| !a.is_finite())) {
            bail!("sample {id}: advantage at position {} is {:?}", t.position, t.advantage);
        }
        if !self.seen.insert(id) {
            bail!("sample_id {id} was already written");
        }
        Ok(())
    }

    /// Appends a checked sample to the column buffers.
    fn buffer(&mut self, sample: SampleRecord, tokens: &[TokenRecord]) {
        let id = sample.sample_id;
        let t = &mut self.tok;
        for tr in tokens {
            t.sample_id.push(id);
            t.prompt_id.push(sample.prompt_id.clone());
            t.position.push(tr.position);
            t.token_id.push(tr.token_id);
            t.token.push(tr.token.clone());
            t.logp_ref.push(tr.logp_ref);
            t.logp_dpo.push(tr.logp_dpo);
            t.logp_policy.push(tr.logp_policy);
            t.dpo_reward.push(tr.dpo_reward);
            t.kl_penalty.push(tr.kl_penalty);
            t.sentence_reward.push(tr.sentence_reward);
            t.reward.push(tr.reward);
            if let Some(it) = sample.iteration {
                t.iteration.push(it);
            }
            if let Some(side) = &sample.side {
                t.side.push(side.clone());
            }
            if let Some(group) = sample.group {
                t.group.push(group);
            }
            if let Some(advantage) = tr.advantage {
                t.advantage.push(advantage);
            }
            if let Some(credit) = tr.gold_credit {
                t.gold_credit.push(credit);
            }
        }
        let s = &mut self.smp;
        s.sample_id.push(id);
        s.prompt_id.push(sample.prompt_id);
        s.prompt.push(sample.prompt);
        s.response.push(sample.response);
        s.n_tokens.push(sample.n_tokens);
        s.dpo_return.push(sample.dpo_return);
        s.sentence_reward.push(sample.sentence_reward);
        s.ret.push(sample.ret);
        s.gold_score.push(sample.gold_score);
        if let Some(it) = sample.iteration {
            s.iteration.push(it);
        }
        if let Some(side) = sample.side {
            s.side.push(side);
        }
        if let Some(group) = sample.group {
            s.group.push(group);
        }
        self.summary.samples += 1;
        self.summary.tokens += tokens.len() as u64;
    }

    /// `gold_credit` is set on every token exactly when the table has the column, and finite.
    fn check_gold_credit(&self, id: u64, tokens: &[TokenRecord]) -> Result<()> {
        let want = self.options.gold_credit;
        if let Some(t) = tokens.iter().find(|t| t.gold_credit.is_some() != want) {
            bail!(
                "sample {id}: token {} must {}have a gold_credit: the table was created {} that column",
                t.position,
                if want { "" } else { "not " },
                if want { "with" } else { "without" }
            );
        }
        if let Some((t, v)) = tokens.iter().find_map(|t| Some((t, t.gold_credit?)).filter(|(_, v)| !v.is_finite())) {
            bail!("sample {id}: gold_credit at position {} is {v}", t.position);
        }
        Ok(())
    }

    /// Writes the buffered rows as one row group in each file.
    fn flush_group(&mut self) -> Result<()> {
        let layout = self.options.layout;
        let t = std::mem::take(&mut self.tok);
        if !t.reward.is_empty() {
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(UInt64Array::from(t.sample_id)),
                Arc::new(StringArray::from(t.prompt_id)),
                Arc::new(UInt32Array::from(t.position)),
                Arc::new(UInt32Array::from(t.token_id)),
                Arc::new(StringArray::from(t.token)),
                Arc::new(Float32Array::from(t.logp_ref)),
                Arc::new(Float32Array::from(t.logp_dpo)),
                Arc::new(Float32Array::from(t.logp_policy)),
                Arc::new(Float32Array::from(t.dpo_reward)),
                Arc::new(Float32Array::from(t.kl_penalty)),
                Arc::new(Float32Array::from(t.sentence_reward)),
                Arc::new(Float32Array::from(t.reward)),
            ];
            if layout.iteration {
                cols.push(Arc::new(UInt32Array::from(t.iteration)));
            }
            if layout.side {
                cols.push(Arc::new(StringArray::from(t.side)));
            }
            if layout.group {
                cols.push(Arc::new(UInt32Array::from(t.group)));
            }
            if layout.advantage {
                cols.push(Arc::new(Float32Array::from(t.advantage)));
            }
            // Last, as in the schema `create` built.
            if self.options.gold_credit {
                cols.push(Arc::new(Float32Array::from(t.gold_credit)));
            }
            let batch = RecordBatch::try_new(self.token_schema.clone(), cols).context("building token batch")?;
            let path = partial(&self.dir, TOKENS_FILE);
            let w = self.tokens.as_mut().expect("writer open until finish");
            w.write(&batch).with_context(|| format!("cannot write {}", path.display()))?;
            w.flush().with_context(|| format!("cannot write {}", path.display()))?;
            self.summary.row_groups += 1;
        }
        let s = std::mem::take(&mut self.smp);
        if !s.ret.is_empty() {
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(UInt64Array::from(s.sample_id)),
                Arc::new(StringArray::from(s.prompt_id)),
                Arc::new(StringArray::from(s.prompt)),
                Arc::new(StringArray::from(s.response)),
                Arc::new(UInt32Array::from(s.n_tokens)),
                Arc::new(Float32Array::from(s.dpo_return)),
                Arc::new(Float32Array::from(s.sentence_reward)),
                Arc::new(Float32Array::from(s.ret)),
            ];
            if layout.gold_score {
                cols.push(Arc::new(Float64Array::from(s.gold_score)));
            }
            if layout.iteration {
                cols.push(Arc::new(UInt32Array::from(s.iteration)));
            }
            if layout.side {
                cols.push(Arc::new(StringArray::from(s.side)));
            }
            if layout.group {
                cols.push(Arc::new(UInt32Array::from(s.group)));
            }
            let batch = RecordBatch::try_new(self.sample_schema.clone(), cols).context("building sample batch")?;
            let path = partial(&self.dir, SAMPLES_FILE);
            let w = self.samples.as_mut().expect("writer open until finish");
            w.write(&batch).with_context(|| format!("cannot write {}", path.display()))?;
            w.flush().with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Writes the last row group, closes both files and renames them into place.
    pub fn finish(mut self) -> Result<TableSummary> {
        self.flush_group()?;
        for (file, writer) in [(TOKENS_FILE, self.tokens.take()), (SAMPLES_FILE, self.samples.take())] {
            let tmp = partial(&self.dir, file);
            let f = writer
                .expect("writer open until finish")
                .into_inner()
                .with_context(|| format!("cannot finish {}", tmp.display()))?;
            f.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
        }
        for file in [TOKENS_FILE, SAMPLES_FILE] {
            let (tmp, dst) = (partial(&self.dir, file), self.dir.join(file));
            fs::rename(&tmp, &dst).with_context(|| format!("cannot rename {} to {}", tmp.display(), dst.display()))?;
        }
        self.finished = true;
        Ok(self.summary.clone())
    }
}

impl Drop for TokenTableWriter {
    /// An abandoned writer (error or panic upstream) removes its partial files.
    fn drop(&mut self) {
        if !self.finished {
            self.tokens.take();
            self.samples.take();
            let _ = fs::remove_file(partial(&self.dir, TOKENS_FILE));
            let _ = fs::remove_file(partial(&self.dir, SAMPLES_FILE));
        }
    }
}
