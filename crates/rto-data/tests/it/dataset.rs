//! Datasets: Hugging Face shapes written by pyarrow, JSON lines, errors, seeded splits.

use crate::common::{chain, run_python};
use rto_data::dataset::{
    read_preference_pairs, read_prompts, read_responses, shuffle, split, ColumnNames, DatasetStats, EvalSize, Message,
    Prompt, SplitMix64,
};
use std::fs;
use std::path::{Path, PathBuf};

fn msg(role: &str, content: &str) -> Message {
    Message { role: role.into(), content: content.into() }
}

/// Rows in the shape of HuggingFaceH4/ultrafeedback_binarized, written by pyarrow with its
/// default compression (snappy, as on the Hub).
fn write_ultrafeedback(path: &Path) {
    let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
msg = pa.struct([("content", pa.string()), ("role", pa.string())])
rows = [
    ("What is 2+2?", "p0", "4", "5", 9.0, 3.5),
    ("Name a colour.", "p1", "Blue.", "Seven.", 8.0, None),
    ("Say hi in French.", "p2", "Bonjour ! \u00e9\u00e8", "Hola", 10.0, 2.0),
]
def conv(p, a): return [{"content": p, "role": "user"}, {"content": a, "role": "assistant"}]
t = pa.table({
    "prompt": pa.array([r[0] for r in rows]),
    "prompt_id": pa.array([r[1] for r in rows]),
    "chosen": pa.array([conv(r[0], r[2]) for r in rows], type=pa.list_(msg)),
    "rejected": pa.array([conv(r[0], r[3]) for r in rows], type=pa.list_(msg)),
    "messages": pa.array([conv(r[0], r[2]) for r in rows], type=pa.list_(msg)),
    "score_chosen": pa.array([r[4] for r in rows], type=pa.float64()),
    "score_rejected": pa.array([r[5] for r in rows], type=pa.float64()),
})
pq.write_table(t, sys.argv[1])
"#;
    run_python(script, &[path.to_str().unwrap()]);
}

#[test]
fn ultrafeedback_shape_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("train_prefs.parquet");
    write_ultrafeedback(&path);
    let pairs = read_preference_pairs(&path, &ColumnNames::default()).unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(pairs[0].row, 0);
    assert_eq!(pairs[0].prompt, Prompt::Messages(vec![msg("user", "What is 2+2?")]));
    assert_eq!(pairs[0].chosen, "4");
    assert_eq!(pairs[0].rejected, "5");
    assert_eq!(pairs[0].score_chosen, Some(9.0));
    assert_eq!(pairs[0].score_rejected, Some(3.5));
    assert_eq!(pairs[1].score_rejected, None);
    assert_eq!(pairs[2].chosen, "Bonjour ! éè");
    assert_eq!(pairs[2].prompt.display_text(), "Say hi in French.");

    // The same file as a prompt source uses its string `prompt` column.
    let prompts = read_prompts(&path, &ColumnNames::default()).unwrap();
    assert_eq!(prompts[1].prompt, Prompt::Text("Name a colour.".into()));
    assert_eq!(prompts[1].reference, None);

    // And as (prompt, response) rows with a renamed response column.
    let cols = ColumnNames { response: "messages".into(), ..ColumnNames::default() };
    let responses = read_responses(&path, &cols).unwrap();
    assert_eq!(responses[2].response, "Bonjour ! éè");
    assert_eq!(responses[2].prompt, Prompt::Messages(vec![msg("user", "Say hi in French.")]));
}

#[test]
fn ultra_train_context_messages_and_multi_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts_path = tmp.path().join("ultra_train.parquet");
    let pairs_path = tmp.path().join("multi.parquet");
    let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
msg = pa.struct([("content", pa.string()), ("role", pa.string())])
t = pa.table({
    "context_messages": pa.array([[{"content": "Write a haiku.", "role": "user"}],
                                  [{"content": "Be brief.", "role": "system"}, {"content": "Why?", "role": "user"}]],
                                 type=pa.large_list(msg)),
    "idx": pa.array([0, 1]),
})
pq.write_table(t, sys.argv[1], compression="zstd")
conv = [{"content": "hi", "role": "user"}, {"content": "hello", "role": "assistant"}, {"content": "and?", "role": "user"}]
t = pa.table({
    "chosen": pa.array([conv + [{"content": "good", "role": "assistant"}]], type=pa.list_(msg)),
    "rejected": pa.array([conv + [{"content": "bad", "role": "assistant"}]], type=pa.list_(msg)),
})
pq.write_table(t, sys.argv[2], compression="none")
"#;
    run_python(script, &[prompts_path.to_str().unwrap(), pairs_path.to_str().unwrap()]);
    let prompts = read_prompts(&prompts_path, &ColumnNames::default()).unwrap();
    assert_eq!(prompts.len(), 2);
    assert_eq!(prompts[0].prompt, Prompt::Messages(vec![msg("user", "Write a haiku.")]));
    assert_eq!(prompts[1].prompt.to_messages(), vec![msg("system", "Be brief."), msg("user", "Why?")]);
    assert_eq!(prompts[1].prompt.display_text(), "Why?");

    let pairs = read_preference_pairs(&pairs_path, &ColumnNames::default()).unwrap();
    assert_eq!(
        pairs[0].prompt,
        Prompt::Messages(vec![msg("user", "hi"), msg("assistant", "hello"), msg("user", "and?")])
    );
    assert_eq!((pairs[0].chosen.as_str(), pairs[0].rejected.as_str()), ("good", "bad"));
}

#[test]
fn jsonl_plain_strings_and_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("prefs.jsonl");
    fs::write(
        &path,
        "{\"prompt\": \"p0\", \"chosen\": \"a\", \"rejected\": \"b\", \"score_chosen\": 3}\r\n\n\
         {\"prompt\": \"p1\", \"chosen\": [{\"role\":\"assistant\",\"content\":\"c\"}], \"rejected\": \"d\", \"extra\": true}\n",
    )
    .unwrap();
    let pairs = read_preference_pairs(&path, &ColumnNames::default()).unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].prompt, Prompt::Text("p0".into()));
    assert_eq!(pairs[0].score_chosen, Some(3.0));
    assert_eq!(pairs[0].score_rejected, None);
    assert_eq!(pairs[1].row, 1);
    assert_eq!(pairs[1].chosen, "c");
    assert_eq!(pairs[1].prompt, Prompt::Text("p1".into()));

    let arr = tmp.path().join("prompts.json");
    fs::write(&arr, r#"[{"prompt": "x", "reference": "y"}, {"prompt": "z"}]"#).unwrap();
    let prompts = read_prompts(&arr, &ColumnNames::default()).unwrap();
    assert_eq!(prompts[0].reference.as_deref(), Some("y"));
    assert_eq!(prompts[1].reference, None);
    assert_eq!(prompts[1].prompt, Prompt::Text("z".into()));
}

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    chain(&r.unwrap_err())
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn bad_inputs_name_file_row_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let cols = ColumnNames::default();
    let d = tmp.path();

    // Missing column: lists what the file has.
    let p = write_bytes(d, "nochosen.jsonl", b"{\"prompt\": \"p\", \"answer\": \"a\", \"rejected\": \"b\"}\n");
    let m = err_of(read_preference_pairs(&p, &cols));
    assert!(m.contains("nochosen.jsonl") && m.contains("`chosen`") && m.contains("answer"), "{m}");

    // Wrong type in JSON lines.
    let p = write_bytes(d, "wrongtype.jsonl", b"{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"p\", \"chosen\": 5, \"rejected\": \"b\"}\n");
    let m = err_of(read_preference_pairs(&p, &cols));
    assert!(
        m.contains("wrongtype.jsonl")
            && m.contains("row 1")
            && m.contains("line 2")
            && m.contains("`chosen`")
            && m.contains("number"),
        "{m}"
    );

    // Non-UTF-8 text.
    let p = write_bytes(d, "latin1.jsonl", b"{\"prompt\": \"ok\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"caf\xe9\", \"chosen\": \"a\", \"rejected\": \"b\"}\n");
    let m = err_of(read_preference_pairs(&p, &cols));
    assert!(m.contains("latin1.jsonl") && m.contains("row 1") && m.contains("`prompt`") && m.contains("UTF-8"), "{m}");

    // Empty files.
    for name in ["empty.parquet", "empty.jsonl"] {
        let p = write_bytes(d, name, b"");
        let m = err_of(read_prompts(&p, &cols));
        assert!(m.contains(name) && m.contains("empty"), "{m}");
    }

    // Not a Parquet file.
    let p = write_bytes(d, "fake.parquet", b"prompt,chosen,rejected\nx,y,z\n");
    let m = err_of(read_preference_pairs(&p, &cols));
    assert!(m.contains("fake.parquet") && m.contains("not a Parquet file"), "{m}");

    // Unknown extension.
    let p = write_bytes(d, "data.csv", b"a,b\n");
    assert!(err_of(read_prompts(&p, &cols)).contains(".csv"));

    // A last message that is not the assistant's.
    let p = write_bytes(
        d,
        "turns.jsonl",
        b"{\"chosen\": [{\"role\":\"user\",\"content\":\"q\"}], \"rejected\": \"b\", \"prompt\": \"q\"}\n",
    );
    let m = err_of(read_preference_pairs(&p, &cols));
    assert!(m.contains("row 0") && m.contains("`chosen`") && m.contains("assistant"), "{m}");

    // Parquet: wrong column type, zero rows, binary columns that are not UTF-8.
    let wrong = d.join("wrong.parquet");
    let zero = d.join("zero.parquet");
    let binary = d.join("binary.parquet");
    let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({"prompt": ["a", "b"], "chosen": pa.array([1, 2], type=pa.int64()), "rejected": ["x", "y"]}), sys.argv[1])
pq.write_table(pa.table({"prompt": pa.array([], type=pa.string())}), sys.argv[2])
pq.write_table(pa.table({"prompt": pa.array([b"ok", b"caf\xe9"], type=pa.binary())}), sys.argv[3])
"#;
    run_python(script, &[wrong.to_str().unwrap(), zero.to_str().unwrap(), binary.to_str().unwrap()]);
    let m = err_of(read_preference_pairs(&wrong, &cols));
    assert!(
        m.contains("wrong.parquet") && m.contains("row 0") && m.contains("`chosen`") && m.contains("found a number"),
        "{m}"
    );
    let m = err_of(read_prompts(&zero, &cols));
    assert!(m.contains("zero.parquet") && m.contains("no rows"), "{m}");
    let m = err_of(read_prompts(&binary, &cols));
    assert!(
        m.contains("binary.parquet") && m.contains("`prompt`") && m.contains("row 1") && m.contains("UTF-8"),
        "{m}"
    );

    // Prompt-only data without either prompt column.
    let p = write_bytes(d, "noprompt.jsonl", b"{\"text\": \"x\"}\n");
    let m = err_of(read_prompts(&p, &cols));
    assert!(m.contains("context_messages") && m.contains("`prompt`") && m.contains("text"), "{m}");
}

#[test]
fn splitmix_matches_reference_and_split_is_reproducible() {
    // First output of SplitMix64 seeded with 0 (Vigna's reference implementation).
    assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);

    let items: Vec<u32> = (0..100).collect();
    let (train, eval) = split(items.clone(), EvalSize::Fraction(0.1), 42).unwrap();
    assert_eq!((train.len(), eval.len()), (90, 10));
    let (train2, eval2) = split(items.clone(), EvalSize::Fraction(0.1), 42).unwrap();
    assert_eq!((&train, &eval), (&train2, &eval2), "same seed, same split");
    let (_, eval3) = split(items.clone(), EvalSize::Fraction(0.1), 43).unwrap();
    assert_ne!(eval, eval3, "another seed, another split");
    let mut all: Vec<u32> = train.iter().chain(&eval).copied().collect();
    all.sort();
    assert_eq!(all, items, "a split is a partition");

    let (t, e) = split(items.clone(), EvalSize::Count(7), 1).unwrap();
    assert_eq!((t.len(), e.len()), (93, 7));
    let (t, e) = split(vec![1, 2, 3], EvalSize::Fraction(0.01), 1).unwrap();
    assert_eq!((t.len(), e.len()), (2, 1), "a positive fraction holds out at least one row");
    assert!(split(vec![1, 2], EvalSize::Count(2), 1).is_err());
    assert!(split(vec![1, 2], EvalSize::Fraction(1.0), 1).is_err());

    let mut a: Vec<u32> = (0..10).collect();
    shuffle(&mut a, 42);
    let mut b: Vec<u32> = (0..10).collect();
    shuffle(&mut b, 42);
    assert_eq!(a, b);
    assert_ne!(a, (0..10).collect::<Vec<_>>());
}

#[test]
fn stats_and_prompt_ids() {
    let mut s = DatasetStats::new(10);
    s.skip("prompt too long");
    s.skip("prompt too long");
    s.skip("empty response");
    s.truncated_response = 4;
    assert_eq!(s.kept(), 7);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["skipped"]["prompt too long"], 2);
    assert_eq!(serde_json::from_value::<DatasetStats>(v).unwrap(), s);

    let a = Prompt::Text("hi".into());
    let b = Prompt::Messages(vec![msg("user", "hi")]);
    assert_eq!(a.id(), Prompt::Text("hi".into()).id());
    assert_ne!(a.id(), b.id());
    assert_eq!(a.id().len(), 16);
    assert_eq!(serde_json::to_string(&b).unwrap(), r#"[{"role":"user","content":"hi"}]"#);
}
