//! Reads the columns a dataset loader needs from Parquet or JSON lines into one uniform cell
//! representation, so that the row logic in `mod.rs` is written once for both formats and
//! every error can name the file, the row and the column.

use super::Message;
use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One value of one row, already decoded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    Null,
    Str(String),
    Messages(Vec<Message>),
    Num(f64),
    /// Something no loader accepts; the string describes it for the error message.
    Other(String),
}

/// File formats, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Parquet,
    JsonLines,
}

impl Format {
    pub(crate) fn of(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "pq" => Ok(Format::Parquet),
            "jsonl" | "json" | "ndjson" => Ok(Format::JsonLines),
            _ => bail!("{}: unknown dataset format `.{ext}` (expected .parquet, .jsonl or .json)", path.display()),
        }
    }
}

/// The requested columns of a dataset file.
pub(crate) struct RawTable {
    pub file: PathBuf,
    /// Every column of the file (for "missing column" messages).
    pub available: Vec<String>,
    pub n_rows: usize,
    columns: BTreeMap<String, Vec<Cell>>,
    /// For JSON lines: the 1-based line of each row, so errors point into the editor.
    lines: Option<Vec<usize>>,
}

impl RawTable {
    /// Loads the columns of `wanted` that exist in the file (absent ones are simply not
    /// loaded; callers decide which are required). Fails on an empty or unreadable file.
    pub fn load(path: &Path, wanted: &[&str]) -> Result<RawTable> {
        let format = Format::of(path)?;
        let meta = fs::metadata(path).with_context(|| format!("cannot read dataset {}", path.display()))?;
        if meta.is_dir() {
            bail!("{} is a folder; give the dataset file itself", path.display());
        }
        if meta.len() == 0 {
            bail!("{}: file is empty", path.display());
        }
        match format {
            Format::Parquet => load_parquet(path, wanted),
            Format::JsonLines => load_json(path, wanted),
        }
    }

    pub fn has(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }

    pub fn cell(&self, column: &str, row: usize) -> &Cell {
        self.columns.get(column).map(|c| &c[row]).unwrap_or(&Cell::Null)
    }

    /// "row 3" or "row 3 (line 5)".
    pub fn location(&self, row: usize) -> String {
        match &self.lines {
            Some(lines) => format!("row {row} (line {})", lines[row]),
            None => format!("row {row}"),
        }
    }

    /// Error naming the file, row and column.
    pub fn err(&self, row: usize, column: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: {}, column `{column}`: {msg}", self.file.display(), self.location(row))
    }

    /// Error for a column that the loader needs and the file lacks.
    pub fn missing(&self, column: &str) -> anyhow::Error {
        anyhow!(
            "{}: no column `{column}`; the file has columns: {} (if it has another name, pass that with the stage's --<role>-column flag, e.g. --{}-column)",
            self.file.display(),
            if self.available.is_empty() {
                "(none)".to_string()
            } else {
                self.available.join(", ")
            },
            column.replace('_', "-")
        )
    }
}

fn check_parquet_magic(path: &Path) -> Result<()> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata().with_context(|| format!("cannot stat {}", path.display()))?.len();
    let mut head = [0u8; 4];
    let mut tail = [0u8; 4];
    let ok = len >= 12 && {
        f.read_exact(&mut head).with_context(|| format!("cannot read {}", path.display()))?;
        f.seek(SeekFrom::End(-4)).with_context(|| format!("cannot read {}", path.display()))?;
        f.read_exact(&mut tail).with_context(|| format!("cannot read {}", path.display()))?;
        &head == b"PAR1" && &tail == b"PAR1"
    };
    if !ok {
        bail!("{}: not a Parquet file (no PAR1 magic at start and end; truncated or another format?)", path.display());
    }
    Ok(())
}

fn load_parquet(path: &Path, wanted: &[&str]) -> Result<RawTable> {
    check_parquet_magic(path)?;
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: cannot read Parquet metadata", path.display()))?;
    let schema = builder.schema().clone();
    let available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let indices: Vec<usize> =
        available.iter().enumerate().filter(|(_, n)| wanted.contains(&n.as_str())).map(|(i, _)| i).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .with_context(|| format!("{}: cannot read Parquet data", path.display()))?;
    let mut columns: BTreeMap<String, Vec<Cell>> =
        indices.iter().map(|&i| (available[i].clone(), Vec::new())).collect();
    let mut n_rows = 0;
    for batch in reader {
        let batch = batch.with_context(|| format!("{}: cannot decode Parquet data", path.display()))?;
        for (name, cells) in columns.iter_mut() {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| anyhow!("{}: column `{name}` vanished from a batch", path.display()))?;
            arrow_cells(array.as_ref(), n_rows, cells)
                .with_context(|| format!("{}: column `{name}`", path.display()))?;
        }
        n_rows += batch.num_rows();
    }
    Ok(RawTable { file: path.to_path_buf(), available, n_rows, columns, lines: None })
}

/// Appends one Arrow column's values as cells. `first_row` numbers rows in errors.
fn arrow_cells(array: &dyn Array, first_row: usize, out: &mut Vec<Cell>) -> Result<()> {
    let dt = array.data_type();
    if let Some(strings) = string_values(array, first_row)? {
        out.extend(strings.into_iter().map(|s| s.map_or(Cell::Null, Cell::Str)));
        return Ok(());
    }
    match dt {
        DataType::Null => out.extend((0..array.len()).map(|_| Cell::Null)),
        d if d.is_numeric() => {
            let cast = arrow::compute::cast(array, &DataType::Float64)?;
            let prim = cast.as_primitive::<arrow::datatypes::Float64Type>();
            out.extend((0..prim.len()).map(|i| if prim.is_null(i) { Cell::Null } else { Cell::Num(prim.value(i)) }));
        }
        DataType::List(_) => list_cells(array.as_list::<i32>(), first_row, out)?,
        DataType::LargeList(_) => list_cells(array.as_list::<i64>(), first_row, out)?,
        other => out.extend((0..array.len()).map(|_| Cell::Other(format!("Arrow type {other}")))),
    }
    Ok(())
}

/// Values of a string-like column (utf8 of any width, or binary that must hold UTF-8);
/// `None` when the column is not string-like.
fn string_values(array: &dyn Array, first_row: usize) -> Result<Option<Vec<Option<String>>>> {
    let get = |i: usize| !array.is_null(i);
    let values: Vec<Option<String>> = match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..a.len()).map(|i| get(i).then(|| a.value(i).to_string())).collect()
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            (0..a.len()).map(|i| get(i).then(|| a.value(i).to_string())).collect()
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            (0..a.len()).map(|i| get(i).then(|| a.value(i).to_string())).collect()
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let mut v = Vec::with_capacity(array.len());
            for i in 0..array.len() {
                if !get(i) {
                    v.push(None);
                    continue;
                }
                let bytes: &[u8] = match array.data_type() {
                    DataType::Binary => array.as_binary::<i32>().value(i),
                    DataType::LargeBinary => array.as_binary::<i64>().value(i),
                    _ => array.as_binary_view().value(i),
                };
                let s = std::str::from_utf8(bytes)
                    .map_err(|e| anyhow!("row {}: not valid UTF-8 (at byte {})", first_row + i, e.valid_up_to()))?;
                v.push(Some(s.to_string()));
            }
            v
        }
        _ => return Ok(None),
    };
    Ok(Some(values))
}

/// A list<struct<content, role>> column (Hugging Face chat messages) as `Cell::Messages`.
fn list_cells<O: arrow::array::OffsetSizeTrait>(
    list: &arrow::array::GenericListArray<O>,
    first_row: usize,
    out: &mut Vec<Cell>,
) -> Result<()> {
    let values = list.values();
    let DataType::Struct(fields) = values.data_type() else {
        out.extend((0..list.len()).map(|_| Cell::Other(format!("Arrow type {}", list.data_type()))));
        return Ok(());
    };
    let has = |n: &str| fields.iter().any(|f| f.name() == n);
    if !has("role") || !has("content") {
        out.extend(
            (0..list.len())
                .map(|_| Cell::Other(format!("list of structs without `role` and `content` ({})", list.data_type()))),
        );
        return Ok(());
    }
    let st = values.as_struct();
    let roles = string_values(st.column_by_name("role").expect("checked").as_ref(), 0)?;
    let contents = string_values(st.column_by_name("content").expect("checked").as_ref(), 0)?;
    let (Some(roles), Some(contents)) = (roles, contents) else {
        out.extend((0..list.len()).map(|_| Cell::Other("messages whose role/content are not strings".into())));
        return Ok(());
    };
    let offsets = list.value_offsets();
    for i in 0..list.len() {
        if list.is_null(i) {
            out.push(Cell::Null);
            continue;
        }
        let (start, end) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
        let mut msgs = Vec::with_capacity(end - start);
        for (m, j) in (start..end).enumerate() {
            let (Some(role), Some(content)) = (&roles[j], &contents[j]) else {
                bail!("row {}: message {m} has a null role or content", first_row + i);
            };
            msgs.push(Message { role: role.clone(), content: content.clone() });
        }
        out.push(Cell::Messages(msgs));
    }
    Ok(())
}

fn load_json(path: &Path, wanted: &[&str]) -> Result<RawTable> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let Some(&first) = first else {
        bail!("{}: file is empty (only whitespace)", path.display());
    };
    let mut objects: Vec<(usize, Value)> = Vec::new();
    if first == b'[' {
        // A .json file holding one array of row objects.
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            anyhow!("{}: line {line}: not valid UTF-8", path.display())
        })?;
        let rows: Vec<Value> =
            serde_json::from_str(text).with_context(|| format!("{}: invalid JSON", path.display()))?;
        objects.extend(rows.into_iter().map(|v| (0, v)));
    } else {
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let row = objects.len();
            let text = match std::str::from_utf8(raw) {
                Ok(t) => t,
                Err(e) => return Err(utf8_error(path, row, line_no, raw, e)),
            };
            let value: Value = serde_json::from_str(text)
                .with_context(|| format!("{}: row {row} (line {line_no}): invalid JSON", path.display()))?;
            objects.push((line_no, value));
        }
    }
    let mut available: Vec<String> = Vec::new();
    let mut columns: BTreeMap<String, Vec<Cell>> = BTreeMap::new();
    let mut lines = Vec::with_capacity(objects.len());
    let n_rows = objects.len();
    for (row, (line_no, value)) in objects.into_iter().enumerate() {
        let Value::Object(map) = value else {
            bail!("{}: row {row}{}: expected a JSON object of columns", path.display(), line_suffix(line_no));
        };
        for k in map.keys() {
            if !available.contains(k) {
                available.push(k.clone());
            }
        }
        for &name in wanted {
            if let Some(v) = map.get(name) {
                let col = columns.entry(name.to_string()).or_insert_with(|| vec![Cell::Null; row]);
                col.push(json_cell(v));
            } else if let Some(col) = columns.get_mut(name) {
                col.push(Cell::Null);
            }
        }
        lines.push(line_no);
    }
    for col in columns.values_mut() {
        col.resize(n_rows, Cell::Null);
    }
    let lines = if lines.iter().all(|&l| l > 0) { Some(lines) } else { None };
    Ok(RawTable { file: path.to_path_buf(), available, n_rows, columns, lines })
}

fn line_suffix(line_no: usize) -> String {
    if line_no > 0 {
        format!(" (line {line_no})")
    } else {
        String::new()
    }
}

/// Names the column holding the bad bytes when the rest of the line still parses (decoding
/// lossily and looking for replacement characters), so the user knows which field to fix.
fn utf8_error(path: &Path, row: usize, line_no: usize, raw: &[u8], e: std::str::Utf8Error) -> anyhow::Error {
    let lossy = String::from_utf8_lossy(raw);
    let column = serde_json::from_str::<Value>(&lossy).ok().and_then(|v| {
        v.as_object()?.iter().find(|(_, val)| val.to_string().contains('\u{FFFD}')).map(|(k, _)| k.clone())
    });
    match column {
        Some(c) => anyhow!(
            "{}: row {row} (line {line_no}), column `{c}`: text is not valid UTF-8 (byte {} of the line)",
            path.display(),
            e.valid_up_to()
        ),
        None => anyhow!(
            "{}: row {row} (line {line_no}): not valid UTF-8 (byte {} of the line)",
            path.display(),
            e.valid_up_to()
        ),
    }
}

fn json_cell(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::Null,
        Value::String(s) => Cell::Str(s.clone()),
        Value::Number(n) => n.as_f64().map_or(Cell::Other("number out of range".into()), Cell::Num),
        Value::Bool(_) => Cell::Other("a boolean".into()),
        Value::Object(_) => Cell::Other("an object".into()),
        Value::Array(items) => {
            let mut msgs = Vec::with_capacity(items.len());
            for (m, item) in items.iter().enumerate() {
                let role = item.get("role").and_then(Value::as_str);
                let content = item.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(r), Some(c)) => msgs.push(Message { role: r.to_string(), content: c.to_string() }),
                    _ => {
                        return Cell::Other(format!(
                            "a list whose item {m} is not a {{\"role\": string, \"content\": string}} message"
                        ))
                    }
                }
            }
            Cell::Messages(msgs)
        }
    }
}
