//! Token-reward tables: round trip, pyarrow as an independent reader, writer checks, and
//! schema errors on bad files.

use crate::common::{chain, run_python};
use rto_data::token_table::{
    read_metadata, read_samples, read_table, read_tokens, sum_dpo_rewards, sum_rewards, SampleRecord, TableLayout,
    TableOptions, TokenRecord, TokenTableReader, TokenTableWriter,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// A sample built with the RTO formula of DESIGN.md §4 (β1 = 0.05, c = 0.05, β2 = 0.01).
pub(crate) fn make_sample(i: u64, n: usize, layout: TableLayout) -> (SampleRecord, Vec<TokenRecord>) {
    let pieces = ["▁the", "▁café", "ü", "!", "▁日本", "</s>"];
    let tokens: Vec<TokenRecord> = (0..n)
        .map(|h| {
            let lp_ref = -0.3 - 0.11 * h as f32 - 0.07 * i as f32;
            let lp_dpo = lp_ref + 0.9 * ((h as f32 * 1.7 + i as f32).sin());
            let lp_pol = lp_ref + 0.013 * h as f32;
            let dpo = (0.05 * (lp_dpo - lp_ref)).clamp(-0.05, 0.05);
            let kl = -0.01 * (lp_pol - lp_ref);
            let sent = if h + 1 == n { 0.37 * i as f32 - 1.0 } else { 0.0 };
            TokenRecord {
                position: h as u32,
                token_id: (1000 * i as u32 + h as u32) % 32000,
                token: pieces[h % pieces.len()].to_string(),
                logp_ref: Some(lp_ref),
                logp_dpo: if i % 3 == 2 { None } else { Some(lp_dpo) },
                logp_policy: Some(lp_pol),
                dpo_reward: if i % 3 == 2 { None } else { Some(dpo) },
                kl_penalty: Some(kl),
                sentence_reward: Some(sent),
                reward: if i % 3 == 2 { kl + sent } else { dpo + kl + sent },
                gold_credit: None,
                advantage: layout.advantage.then_some(0.25 * h as f32 - 0.5 * i as f32),
            }
        })
        .collect();
    let sample = SampleRecord {
        sample_id: u64::MAX - i,
        prompt_id: format!("p{}", i / 2),
        prompt: format!("prompt «{i}»"),
        response: tokens.iter().map(|t| t.token.as_str()).collect(),
        n_tokens: n as u32,
        dpo_return: sum_dpo_rewards(&tokens),
        sentence_reward: tokens.last().and_then(|t| t.sentence_reward),
        ret: sum_rewards(&tokens),
        gold_score: if layout.gold_score && i != 1 { Some(i as f64 * 0.1 + 1e-12) } else { None },
        iteration: layout.iteration.then_some(i as u32 / 2),
        side: layout.side.then(|| if i.is_multiple_of(2) { "chosen".to_string() } else { "rejected".to_string() }),
        group: layout.group.then_some(i as u32 / 2),
    };
    (sample, tokens)
}

fn write_table(dir: &Path, layout: TableLayout, lengths: &[usize]) -> Vec<(SampleRecord, Vec<TokenRecord>)> {
    let mut metadata = BTreeMap::new();
    metadata.insert("rto.beta1".to_string(), "0.05".to_string());
    metadata.insert("rto.clip".to_string(), "0.05".to_string());
    metadata.insert("rto.dpo_model".to_string(), "ab".repeat(32));
    let mut w =
        TokenTableWriter::create(dir, TableOptions { layout, row_group_tokens: 8, metadata, gold_credit: false })
            .unwrap();
    let mut all = Vec::new();
    for (i, &n) in lengths.iter().enumerate() {
        let (s, t) = make_sample(i as u64, n, layout);
        w.push_sample(s.clone(), &t).unwrap();
        all.push((s, t));
    }
    let summary = w.finish().unwrap();
    assert_eq!(summary.samples, lengths.len() as u64);
    assert_eq!(summary.tokens, lengths.iter().sum::<usize>() as u64);
    all
}

#[test]
fn round_trip_with_row_groups_and_no_partial_files() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = TableLayout { iteration: true, side: false, gold_score: true, group: true, advantage: true };
    let written = write_table(tmp.path(), layout, &[3, 1, 13, 6, 9, 2]);
    let mut names: Vec<String> =
        fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["samples.parquet", "tokens.parquet"]);

    let read = read_table(tmp.path()).unwrap();
    assert_eq!(read, written);
    assert_eq!(read_samples(&tmp.path().join("samples.parquet")).unwrap().len(), 6);
    let tokens = read_tokens(&tmp.path().join("tokens.parquet")).unwrap();
    assert_eq!(tokens.len(), 34);
    assert_eq!(tokens[0].0, u64::MAX);

    let reader = TokenTableReader::open(tmp.path()).unwrap();
    assert_eq!(reader.layout(), layout);
    let meta = read_metadata(tmp.path()).unwrap();
    assert_eq!(meta["rto.schema_version"], "1");
    assert_eq!(meta["rto.table"], "tokens");
    assert_eq!(meta["rto.beta1"], "0.05");
}

const PYARROW_DUMP: &str = r#"
import sys, json, struct, pyarrow as pa, pyarrow.parquet as pq
d = sys.argv[1]
out = {}
for name in ["tokens", "samples"]:
    f = pq.ParquetFile(f"{d}/{name}.parquet")
    t = f.read()
    kv = {k.decode(): v.decode() for k, v in (f.metadata.metadata or {}).items() if k != b"ARROW:schema"}
    cols, types = {}, {}
    for field in t.schema:
        types[field.name] = str(field.type)
        vals = t.column(field.name).to_pylist()
        if pa.types.is_float32(field.type):
            vals = [None if v is None else struct.unpack("<I", struct.pack("<f", v))[0] for v in vals]
        elif pa.types.is_float64(field.type):
            vals = [None if v is None else struct.unpack("<Q", struct.pack("<d", v))[0] for v in vals]
        cols[field.name] = vals
    md = f.metadata
    comp = sorted({md.row_group(g).column(c).compression for g in range(md.num_row_groups) for c in range(md.num_columns)})
    out[name] = dict(kv=kv, types=types, cols=cols, row_groups=md.num_row_groups, compression=comp,
                     schema_md={k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()})
t = pq.read_table(f"{d}/tokens.parquet")
g = t.group_by("sample_id").aggregate([("reward", "sum")])
out["sums"] = {str(k): v for k, v in zip(g.column("sample_id").to_pylist(), g.column("reward_sum").to_pylist())}
print(json.dumps(out))
"#;

fn f32_bits(v: Option<f32>) -> Value {
    v.map_or(Value::Null, |x| Value::from(x.to_bits()))
}

#[test]
fn pyarrow_reads_the_same_values_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = TableLayout { iteration: true, side: true, gold_score: true, group: true, advantage: true };
    let written = write_table(tmp.path(), layout, &[4, 7, 1, 12, 5]);
    let dump: Value = serde_json::from_str(&run_python(PYARROW_DUMP, &[tmp.path().to_str().unwrap()])).unwrap();

    let tok = &dump["tokens"];
    let expect_types = [
        ("sample_id", "uint64"),
        ("prompt_id", "string"),
        ("position", "uint32"),
        ("token_id", "uint32"),
        ("token", "string"),
        ("logp_ref", "float"),
        ("logp_dpo", "float"),
        ("logp_policy", "float"),
        ("dpo_reward", "float"),
        ("kl_penalty", "float"),
        ("sentence_reward", "float"),
        ("reward", "float"),
        ("iteration", "uint32"),
        ("side", "string"),
        ("group", "uint32"),
        ("advantage", "float"),
    ];
    let types = tok["types"].as_object().unwrap();
    assert_eq!(types.len(), expect_types.len(), "{types:?}");
    for (name, ty) in expect_types {
        assert_eq!(types[name], ty, "tokens column {name}");
    }
    let stypes = dump["samples"]["types"].as_object().unwrap();
    for (name, ty) in [
        ("sample_id", "uint64"),
        ("prompt_id", "string"),
        ("prompt", "string"),
        ("response", "string"),
        ("n_tokens", "uint32"),
        ("dpo_return", "float"),
        ("sentence_reward", "float"),
        ("return", "float"),
        ("gold_score", "double"),
        ("iteration", "uint32"),
        ("side", "string"),
        ("group", "uint32"),
    ] {
        assert_eq!(stypes[name], ty, "samples column {name}");
    }
    assert!(!stypes.contains_key("advantage"), "advantages are per token");

    // Metadata, compression, row groups (8 tokens per group → several).
    for name in ["tokens", "samples"] {
        let kv = &dump[name]["kv"];
        assert_eq!(kv["rto.schema_version"], "1");
        assert_eq!(kv["rto.table"], name);
        assert_eq!(kv["rto.beta1"], "0.05");
        assert_eq!(kv["rto.dpo_model"], "ab".repeat(32));
        assert_eq!(dump[name]["schema_md"]["rto.clip"], "0.05", "visible as pyarrow schema metadata too");
        assert_eq!(dump[name]["compression"], serde_json::json!(["ZSTD"]));
    }
    assert!(tok["row_groups"].as_u64().unwrap() >= 3, "{}", tok["row_groups"]);

    // Every token value, exactly (floats compared bit for bit).
    let cols = &tok["cols"];
    let mut row = 0;
    for (s, tokens) in &written {
        for t in tokens {
            assert_eq!(cols["sample_id"][row].as_u64(), Some(s.sample_id));
            assert_eq!(cols["prompt_id"][row], s.prompt_id.as_str());
            assert_eq!(cols["position"][row], t.position);
            assert_eq!(cols["token_id"][row], t.token_id);
            assert_eq!(cols["token"][row], t.token.as_str());
            assert_eq!(cols["logp_ref"][row], f32_bits(t.logp_ref));
            assert_eq!(cols["logp_dpo"][row], f32_bits(t.logp_dpo));
            assert_eq!(cols["logp_policy"][row], f32_bits(t.logp_policy));
            assert_eq!(cols["dpo_reward"][row], f32_bits(t.dpo_reward));
            assert_eq!(cols["kl_penalty"][row], f32_bits(t.kl_penalty));
            assert_eq!(cols["sentence_reward"][row], f32_bits(t.sentence_reward));
            assert_eq!(cols["reward"][row], f32_bits(Some(t.reward)));
            assert_eq!(cols["iteration"][row], s.iteration.unwrap());
            assert_eq!(cols["side"][row], s.side.as_deref().unwrap());
            assert_eq!(cols["group"][row], s.group.unwrap());
            assert_eq!(cols["advantage"][row], f32_bits(t.advantage));
            row += 1;
        }
    }
    assert_eq!(cols["reward"].as_array().unwrap().len(), row);

    let sc = &dump["samples"]["cols"];
    for (i, (s, _)) in written.iter().enumerate() {
        assert_eq!(sc["sample_id"][i].as_u64(), Some(s.sample_id));
        assert_eq!(sc["prompt"][i], s.prompt.as_str());
        assert_eq!(sc["response"][i], s.response.as_str());
        assert_eq!(sc["n_tokens"][i], s.n_tokens);
        assert_eq!(sc["dpo_return"][i], f32_bits(s.dpo_return));
        assert_eq!(sc["sentence_reward"][i], f32_bits(s.sentence_reward));
        assert_eq!(sc["return"][i], f32_bits(Some(s.ret)));
        assert_eq!(sc["gold_score"][i], s.gold_score.map_or(Value::Null, |g| Value::from(g.to_bits())));
        assert_eq!(sc["group"][i], s.group.unwrap());
        // Per-sample Σ tokens.reward, computed by pyarrow, equals samples.return.
        let py_sum = dump["sums"][s.sample_id.to_string()].as_f64().unwrap();
        assert!((py_sum - s.ret as f64).abs() <= 1e-5 * (s.ret.abs() as f64).max(1.0), "{py_sum} vs {}", s.ret);
    }
}

#[test]
fn writer_rejects_inconsistent_samples_and_leaves_nothing_when_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = TableLayout::default();
    let mut w = TokenTableWriter::create(tmp.path(), TableOptions::default()).unwrap();
    let (s, t) = make_sample(0, 4, layout);

    let bad = SampleRecord { n_tokens: 3, ..s.clone() };
    assert!(chain(&w.push_sample(bad, &t).unwrap_err()).contains("n_tokens"));
    let bad = SampleRecord { ret: s.ret + 1.0, ..s.clone() };
    assert!(chain(&w.push_sample(bad, &t).unwrap_err()).contains("sum of its token rewards"));
    let mut nan = t.clone();
    nan[2].reward = f32::NAN;
    assert!(chain(&w.push_sample(s.clone(), &nan).unwrap_err()).contains("NaN"));
    let mut shuffled = t.clone();
    shuffled.swap(0, 1);
    assert!(chain(&w.push_sample(s.clone(), &shuffled).unwrap_err()).contains("position"));
    let bad = SampleRecord { iteration: Some(1), ..s.clone() };
    assert!(chain(&w.push_sample(bad, &t).unwrap_err()).contains("iteration"));
    let bad = SampleRecord { group: Some(0), ..s.clone() };
    assert!(chain(&w.push_sample(bad, &t).unwrap_err()).contains("`group` must be set exactly"));
    let mut with_advantage = t.clone();
    with_advantage[1].advantage = Some(0.5);
    assert!(chain(&w.push_sample(s.clone(), &with_advantage).unwrap_err()).contains("`advantage` at position 1"));
    w.push_sample(s.clone(), &t).unwrap();
    assert!(chain(&w.push_sample(s.clone(), &t).unwrap_err()).contains("already written"));

    assert!(tmp.path().join("tokens.parquet.partial").exists());
    drop(w);
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0, "an unfinished table leaves no files");

    let mut md = BTreeMap::new();
    md.insert("rto.schema_version".to_string(), "9".to_string());
    assert!(TokenTableWriter::create(tmp.path(), TableOptions { metadata: md, ..Default::default() }).is_err());
}

#[test]
fn rollout_columns_must_be_complete_and_finite() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = TableLayout { iteration: true, group: true, advantage: true, ..TableLayout::default() };
    let mut w = TokenTableWriter::create(tmp.path(), TableOptions { layout, ..Default::default() }).unwrap();
    let (s, t) = make_sample(0, 3, layout);
    let mut missing = t.clone();
    missing[2].advantage = None;
    assert!(chain(&w.push_sample(s.clone(), &missing).unwrap_err()).contains("`advantage` at position 2"));
    let mut nan = t.clone();
    nan[0].advantage = Some(f32::NAN);
    assert!(chain(&w.push_sample(s.clone(), &nan).unwrap_err()).contains("advantage at position 0 is Some(NaN)"));
    let bad = SampleRecord { group: None, ..s.clone() };
    assert!(chain(&w.push_sample(bad, &t).unwrap_err()).contains("`group` must be set exactly"));
    w.push_sample(s, &t).unwrap();
    w.finish().unwrap();
    let read = read_table(tmp.path()).unwrap();
    assert_eq!(read[0].0.group, Some(0));
    let advantages: Vec<Option<f32>> = read[0].1.iter().map(|t| t.advantage).collect();
    assert_eq!(advantages, [Some(0.0), Some(0.25), Some(0.5)]);
}

#[test]
fn empty_table_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let w = TokenTableWriter::create(tmp.path(), TableOptions::default()).unwrap();
    assert_eq!(w.finish().unwrap().samples, 0);
    assert!(read_table(tmp.path()).unwrap().is_empty());
}

/// Rewrites one of our files through pyarrow with a change, keeping the metadata.
pub(crate) fn mutate(path: &Path, code: &str) {
    let script = format!(
        "import sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc\n\
         p = sys.argv[1]\nt = pq.read_table(p)\n{code}\npq.write_table(t, p)\n"
    );
    run_python(&script, &[path.to_str().unwrap()]);
}

#[test]
fn bad_tables_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let d = tmp.path().join(name);
        write_table(&d, TableLayout::default(), &[3, 5]);
        d
    };

    let d = fresh("missing");
    mutate(&d.join("tokens.parquet"), "t = t.drop_columns(['reward'])");
    let m = chain(&read_table(&d).unwrap_err());
    assert!(m.contains("tokens.parquet") && m.contains("missing column `reward`"), "{m}");

    let d = fresh("wrongtype");
    mutate(
        &d.join("samples.parquet"),
        "t = t.set_column(t.schema.get_field_index('n_tokens'), 'n_tokens', pc.cast(t['n_tokens'], pa.int64()))",
    );
    let m = chain(&read_table(&d).unwrap_err());
    assert!(
        m.contains("samples.parquet") && m.contains("`n_tokens`") && m.contains("Int64") && m.contains("UInt32"),
        "{m}"
    );

    let d = fresh("order");
    mutate(&d.join("tokens.parquet"), "t = t.take(list(range(t.num_rows))[::-1])");
    let m = chain(&read_table(&d).unwrap_err());
    assert!(m.contains("tokens.parquet") && m.contains("belongs to sample"), "{m}");

    let d = fresh("nometa");
    mutate(&d.join("tokens.parquet"), "t = t.replace_schema_metadata(None)");
    let m = chain(&read_tokens(&d).unwrap_err());
    assert!(m.contains("tokens.parquet") && m.contains("rto.schema_version"), "{m}");

    let d = fresh("empty");
    fs::write(d.join("tokens.parquet"), b"").unwrap();
    let m = chain(&read_tokens(&d).unwrap_err());
    assert!(m.contains("tokens.parquet") && m.contains("empty"), "{m}");

    let d = fresh("notparquet");
    fs::write(d.join("samples.parquet"), b"sample_id,return\n1,0.5\n").unwrap();
    let m = chain(&read_samples(&d).unwrap_err());
    assert!(m.contains("samples.parquet") && m.contains("Parquet"), "{m}");

    let m = chain(&read_samples(&tmp.path().join("nowhere")).unwrap_err());
    assert!(m.contains("nowhere"), "{m}");
}
