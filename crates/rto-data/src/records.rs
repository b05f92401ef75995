//! Small column tables (evaluation results, generations) as Parquet, for the outputs that are
//! not token-reward tables. Written whole (they are one row per prompt), zstd, atomically.

use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// One column of a [`write_columns`] table.
pub enum Column {
    Text(Vec<String>),
    Float(Vec<f64>),
    Count(Vec<u32>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Text(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Count(v) => v.len(),
        }
    }

    fn to_arrow(&self) -> (DataType, ArrayRef) {
        match self {
            Column::Text(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
            Column::Float(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Column::Count(v) => (DataType::UInt32, Arc::new(UInt32Array::from(v.clone()))),
        }
    }
}

/// Writes named columns of equal length to `path` (via `path.partial`, renamed when complete).
pub fn write_columns(path: &Path, columns: &[(&str, Column)]) -> Result<()> {
    let rows = columns.first().map_or(0, |(_, c)| c.len());
    if let Some((name, _)) = columns.iter().find(|(_, c)| c.len() != rows) {
        bail!("{}: column `{name}` has a different length than the others", path.display());
    }
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns
        .iter()
        .map(|(name, column)| {
            let (dtype, array) = column.to_arrow();
            (Field::new(*name, dtype, false), array)
        })
        .unzip();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    let partial = path.with_extension("parquet.partial");
    let file = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    std::fs::rename(&partial, path).with_context(|| format!("renaming {} into place", partial.display()))
}

/// Reads a whole Parquet file written by [`write_columns`] (or anyone) as record batches.
pub fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?
        .build()?;
    reader.collect::<std::result::Result<Vec<_>, _>>().with_context(|| format!("reading {}", path.display()))
}
