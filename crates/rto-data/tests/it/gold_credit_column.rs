//! The optional `gold_credit` token column: written only when asked for, read back (by us and
//! by pyarrow), absent as `None` in tables without it, and checked like the other columns.

use crate::common::{chain, run_python};
use crate::token_table::{make_sample, mutate};
use rto_data::token_table::{read_table, SampleRecord, TableLayout, TableOptions, TokenRecord, TokenTableWriter};
use std::path::Path;

fn with_credit(mut tokens: Vec<TokenRecord>) -> Vec<TokenRecord> {
    tokens.iter_mut().enumerate().for_each(|(h, t)| t.gold_credit = Some(0.25 * h as f32 - 0.5));
    tokens
}

fn write(dir: &Path, gold_credit: bool) -> Vec<(SampleRecord, Vec<TokenRecord>)> {
    let options = TableOptions { gold_credit, row_group_tokens: 4, ..TableOptions::default() };
    let mut writer = TokenTableWriter::create(dir, options).unwrap();
    let mut all = Vec::new();
    for (i, n) in [3usize, 6].into_iter().enumerate() {
        let (sample, tokens) = make_sample(i as u64, n, TableLayout::default());
        let tokens = if gold_credit { with_credit(tokens) } else { tokens };
        writer.push_sample(sample.clone(), &tokens).unwrap();
        all.push((sample, tokens));
    }
    writer.finish().unwrap();
    all
}

const PYARROW: &str = r#"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1] + "/tokens.parquet")
print(t.schema.names[-1], t.schema.field("gold_credit").type, t.column("gold_credit").to_pylist())
"#;

#[test]
fn the_column_round_trips_and_pyarrow_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), true);
    assert_eq!(read_table(dir.path()).unwrap(), written);
    let out = run_python(PYARROW, &[dir.path().to_str().unwrap()]);
    assert_eq!(out.trim(), "gold_credit float [-0.5, -0.25, 0.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]");
}

#[test]
fn tables_without_the_column_read_as_none() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), false);
    let read = read_table(dir.path()).unwrap();
    assert!(read.iter().flat_map(|(_, tokens)| tokens).all(|t| t.gold_credit.is_none()));
}

#[test]
fn the_writer_wants_the_credit_on_every_token_exactly_when_the_table_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sample, tokens) = make_sample(0, 3, TableLayout::default());
    let options = TableOptions { gold_credit: true, ..TableOptions::default() };
    let mut with = TokenTableWriter::create(dir.path().join("with"), options).unwrap();
    let m = chain(&with.push_sample(sample.clone(), &tokens).unwrap_err());
    assert!(m.contains("token 0 must have a gold_credit") && m.contains("created with"), "{m}");
    let mut nan = with_credit(tokens.clone());
    nan[1].gold_credit = Some(f32::INFINITY);
    let m = chain(&with.push_sample(sample.clone(), &nan).unwrap_err());
    assert!(m.contains("gold_credit at position 1 is inf"), "{m}");

    let mut without = TokenTableWriter::create(dir.path().join("without"), TableOptions::default()).unwrap();
    let m = chain(&without.push_sample(sample, &with_credit(tokens)).unwrap_err());
    assert!(m.contains("must not have a gold_credit") && m.contains("without that column"), "{m}");
}

#[test]
fn a_gold_credit_of_the_wrong_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), true);
    let cast = "t = t.set_column(t.schema.get_field_index('gold_credit'), 'gold_credit', pc.cast(t['gold_credit'], pa.float64()))";
    mutate(&dir.path().join("tokens.parquet"), cast);
    let m = chain(&read_table(dir.path()).unwrap_err());
    assert!(m.contains("tokens.parquet") && m.contains("`gold_credit`") && m.contains("Float64"), "{m}");
}
