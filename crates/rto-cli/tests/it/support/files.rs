//! Writers of deliberately broken inputs for the bad-input and tampering tests.

use arrow::array::{Array, ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::fs;
use std::path::Path;
use std::sync::Arc;

/// Writes one record batch as a Parquet file.
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// A Parquet file whose `prompt` column holds integers instead of strings (`response` is fine).
pub fn int_prompt_parquet(path: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt", DataType::Int64, false),
        Field::new("response", DataType::Utf8, false),
    ]));
    let prompt: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let response: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
    write_parquet(path, &RecordBatch::try_new(schema, vec![prompt, response]).unwrap());
}

/// Four preference pairs as Parquet with a `score_chosen` column holding `score` at row 2.
pub fn pairs_parquet_with_score(path: &Path, score: f64) {
    let text = |v: [&str; 4]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let fields = ["prompt", "chosen", "rejected"].map(|n| Field::new(n, DataType::Utf8, false));
    let mut fields = fields.to_vec();
    fields.push(Field::new("score_chosen", DataType::Float64, true));
    let scores: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, score, 3.0]));
    let cols = vec![
        text(["give me 8 words about the farm"; 4]),
        text(["the cat sleeps near the red barn now"; 4]),
        text(["cat"; 4]),
        scores,
    ];
    write_parquet(path, &RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap());
}

/// Copies the Parquet file `src` to `dest` with `f32` column `column` set to `value` at `row`,
/// keeping the file's key-value metadata (schema version, reward weights) so only the value
/// differs.
pub fn with_f32_cell(src: &Path, dest: &Path, column: &str, row: usize, value: f32) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(src).unwrap()).unwrap();
    let kv = builder.metadata().file_metadata().key_value_metadata().cloned();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    let batch = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let idx = schema.index_of(column).unwrap();
    let old = batch.column(idx).as_any().downcast_ref::<Float32Array>().unwrap();
    let new: Float32Array = (0..old.len())
        .map(|i| {
            if i == row {
                Some(value)
            } else if old.is_null(i) {
                None
            } else {
                Some(old.value(i))
            }
        })
        .collect();
    let mut cols = batch.columns().to_vec();
    cols[idx] = Arc::new(new);
    let props = WriterProperties::builder().set_key_value_metadata(kv).build();
    let mut writer = ArrowWriter::try_new(fs::File::create(dest).unwrap(), schema.clone(), Some(props)).unwrap();
    writer.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
    writer.close().unwrap();
}

/// Keeps the first half of a file (a download cut short).
pub fn truncate_half(src: &Path, dest: &Path) {
    let bytes = fs::read(src).unwrap();
    fs::write(dest, &bytes[..bytes.len() / 2]).unwrap();
}

/// Flips one byte in the middle of a file in place (bit rot or a stray edit).
pub fn flip_middle_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

/// Rewrites a model folder's `model.safetensors` with tensor `name` dropped (`reshape` None) or
/// given the shape `reshape` (same element count, so only the shape check can catch it).
pub fn edit_checkpoint(model_dir: &Path, name: &str, reshape: Option<Vec<usize>>) {
    use safetensors::tensor::{SafeTensors, TensorView};
    let path = model_dir.join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, TensorView)> = Vec::new();
    let mut found = false;
    for (n, view) in st.tensors() {
        if n != name {
            kept.push((n, view));
            continue;
        }
        found = true;
        if let Some(shape) = &reshape {
            kept.push((n, TensorView::new(view.dtype(), shape.clone(), view.data()).unwrap()));
        }
    }
    assert!(found, "{name} is not in {}", path.display());
    let out = safetensors::tensor::serialize(kept, &None).unwrap();
    fs::write(&path, out).unwrap();
}
