//! The rules the token views share, on hand-made tables with hand-computed expectations: the
//! colour scale (clip for dpo_reward, the 98th percentile otherwise), the sentence-reward
//! badge, token boundaries for the three tokenizer styles, `--color-by` a missing column, the
//! filters' data, and a folder of rollout tables read as one.

use crate::annotate_inspect::page_data;
use rto_data::token_table::{SampleRecord, TableLayout, TableOptions, TokenRecord, TokenTableWriter};
use rto_stages::inspect::piece::Piece;
use rto_stages::inspect::scale::{fit, percentile_abs, Scale, ScaleRule, ValueColumn};
use rto_stages::inspect::{html, select, terminal, ShowArgs};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// A token with dpo_reward `dpo`, no policy, and `sentence` on it (reward = dpo + sentence).
fn token(position: u32, text: &str, dpo: f32, sentence: f32) -> TokenRecord {
    TokenRecord {
        position,
        token_id: position,
        token: text.into(),
        logp_ref: Some(-1.0),
        logp_dpo: Some(-1.0 + dpo / 0.05),
        logp_policy: None,
        dpo_reward: Some(dpo),
        kl_penalty: None,
        sentence_reward: Some(sentence),
        reward: dpo + sentence,
        gold_credit: None,
        advantage: None,
    }
}

fn sample(id: u64, tokens: &[TokenRecord], iteration: Option<u32>, side: Option<&str>) -> SampleRecord {
    SampleRecord {
        sample_id: id,
        prompt_id: format!("p{}", id / 2),
        prompt: format!("prompt of pair {}", id / 2),
        response: format!("response {id}"),
        n_tokens: tokens.len() as u32,
        dpo_return: tokens.iter().map(|t| t.dpo_reward).sum(),
        sentence_reward: tokens.last().and_then(|t| t.sentence_reward),
        ret: tokens.iter().map(|t| t.reward).sum(),
        gold_score: None,
        iteration,
        side: side.map(Into::into),
        group: None,
    }
}

/// Table metadata as annotate writes it, with clip `clip`.
fn metadata(clip: &str) -> BTreeMap<String, String> {
    let mut kv: BTreeMap<String, String> = [
        ("rto.stage", "annotate"),
        ("rto.mode", "rto"),
        ("rto.beta1", "0.05"),
        ("rto.beta2", "0.01"),
        ("rto.beta3", "1"),
        ("rto.rm_clamp", "10"),
        ("rto.tokenizer", "ab"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    kv.insert("rto.clip".into(), clip.into());
    kv
}

/// Two pairs (ids 0–3): dense DPO rewards of at most 0.03 in size, and a sentence reward of
/// ±2 / ±1 on each last token.
fn write_pairs(dir: &Path, clip: &str) {
    let layout = TableLayout { side: true, ..Default::default() };
    let options = TableOptions { layout, metadata: metadata(clip), ..Default::default() };
    let mut writer = TokenTableWriter::create(dir, options).unwrap();
    let rows = [
        vec![token(0, "Ġthe", 0.01, 0.0), token(1, "Ġcat", 0.03, 0.0), token(2, "</s>", 0.0, 2.0)],
        vec![token(0, "▁a", -0.02, 0.0), token(1, "▁dog", -0.01, 0.0), token(2, "</s>", 0.0, -2.0)],
        vec![token(0, "pine", 0.02, 0.0), token(1, "sings", -0.03, 0.0), token(2, "</s>", 0.0, 1.0)],
        vec![token(0, " wh", 0.005, 0.0), token(1, "ale", 0.0, 0.0), token(2, "</s>", 0.0, -1.0)],
    ];
    for (id, tokens) in rows.iter().enumerate() {
        let side = if id % 2 == 0 { "chosen" } else { "rejected" };
        writer.push_sample(sample(id as u64, tokens, None, Some(side)), tokens).unwrap();
    }
    writer.finish().unwrap();
}

fn args(folder: &Path, color_by: Option<ValueColumn>, html: bool) -> ShowArgs {
    let html = html.then(|| folder.join("page.html"));
    ShowArgs { folder: folder.to_path_buf(), sample: None, html, max_samples: 100, color_by }
}

#[test]
fn the_percentile_is_the_nearest_rank_of_the_absolute_values() {
    let hundred: Vec<f32> = (1..=100).map(|i| if i % 2 == 0 { i as f32 } else { -(i as f32) }).collect();
    assert_eq!(percentile_abs(&hundred, 0.98), 98.0, "⌈0.98·100⌉ = 98th smallest |x|");
    let fifty: Vec<f32> = (1..=50).map(|i| i as f32).collect();
    assert_eq!(percentile_abs(&fifty, 0.98), 49.0, "⌈0.98·50⌉ = 49");
    assert_eq!(percentile_abs(&[-5.0, 1.0, 2.0, 3.0, 4.0], 0.98), 5.0, "⌈4.9⌉ = 5: the largest of five");
    assert_eq!(percentile_abs(&[], 0.98), 0.0);

    // One outlier among 100 values does not set the scale; the clip does for dpo_reward.
    let mut values = vec![0.01f32; 99];
    values.push(-3.0);
    assert_eq!(fit(&values, None), Scale { value: 0.01, rule: ScaleRule::Percentile(100) });
    assert_eq!(fit(&values, Some(0.05)), Scale { value: 0.05, rule: ScaleRule::Clip });
    assert_eq!(fit(&values, Some(f64::INFINITY)).rule, ScaleRule::Percentile(100), "no finite clip: percentile");
    // Mostly zero: the percentile is 0, so the largest |value| is the scale; all zero: 0.
    let sparse: Vec<f32> = (0..100).map(|i| if i == 7 { -0.4 } else { 0.0 }).collect();
    assert_eq!(fit(&sparse, None), Scale { value: 0.4, rule: ScaleRule::Max(100) });
    assert_eq!(fit(&[0.0; 4], None).value, 0.0);
}

#[test]
fn dpo_reward_runs_on_the_clip_and_reward_on_its_dense_part() {
    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path(), "0.05");
    let selection = select(&args(dir.path(), None, false)).unwrap();
    assert_eq!(selection.column, ValueColumn::DpoReward, "the default where the table has dpo_reward");
    assert_eq!(selection.scales.columns[&ValueColumn::DpoReward], Scale { value: 0.05, rule: ScaleRule::Clip });
    // reward − sentence_reward = the DPO rewards: |.| of the 12 tokens sorted
    // 0 0 0 0 .005 .01 .01 .02 .02 .03 .03 → the ⌈0.98·12⌉ = 12th is 0.03 (the ±2 are left out).
    let reward = selection.scales.columns[&ValueColumn::Reward];
    assert!((reward.value - 0.03).abs() < 1e-7 && reward.rule == ScaleRule::Percentile(12), "{reward:?}");
    // The badge: sentence rewards 2, −2, 1, −1 → the 4th smallest |.| is 2.
    assert_eq!(selection.scales.sentence.map(|s| s.value), Some(2.0));
    let available: Vec<&str> = selection.scales.available().into_iter().map(ValueColumn::name).collect();
    assert_eq!(available, ["reward", "dpo_reward"], "no policy, no judge");

    // Without a clip in the metadata dpo_reward falls back to the percentile: 0.03.
    let unclipped = tempfile::tempdir().unwrap();
    write_pairs(unclipped.path(), "inf");
    let selection = select(&args(unclipped.path(), None, false)).unwrap();
    assert_eq!(selection.scales.columns[&ValueColumn::DpoReward].rule, ScaleRule::Percentile(12));
}

#[test]
fn the_sentence_reward_is_a_badge_not_a_token_colour() {
    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path(), "0.05");
    let selection = select(&args(dir.path(), Some(ValueColumn::Reward), false)).unwrap();
    let (sample, tokens) = &selection.samples[0];
    assert_eq!(terminal::badges(sample, tokens, &selection), vec![("sentence_reward", 2.0, 2.0)]);
    let text = terminal::coloured(sample, tokens, &selection);
    // `</s>` has reward 2 but is coloured by 0 (white); the badge is full green on its scale.
    assert!(text.contains("\x1b[48;2;255;255;255m\x1b[38;2;0;0;0m</s>"), "{text:?}");
    assert!(text.contains("\x1b[48;2;26;150;65m\x1b[38;2;255;255;255m sentence_reward +2.00000 "), "{text:?}");
    // "cat" (0.03 = the scale) is full green like the badge, on the other scale.
    assert!(text.contains("\x1b[48;2;26;150;65m\x1b[38;2;255;255;255m·cat"), "{text:?}");

    let data = page_data(&html::page(&select(&args(dir.path(), Some(ValueColumn::Reward), true)).unwrap()));
    assert_eq!((data["badge"].clone(), data["initial"].clone()), (json!(2.0), json!("reward")));
    assert_eq!(data["samples"][0]["sr"], json!(2.0));
    assert_eq!(data["samples"][0]["c"]["reward"], json!([0.01, 0.03, 0.0]), "the colour values leave it out");
    assert_eq!(data["samples"][0]["v"]["reward"], json!([0.01, 0.03, 2.0]), "the tooltip shows the total");
}

#[test]
fn token_boundaries_show_for_word_level_byte_level_and_sentencepiece_pieces() {
    let piece = |raw: &str| Piece::of(raw);
    let word = |space: bool, text: &str| Piece { space, text: text.into(), newline: false };
    assert_eq!(piece("pine"), word(false, "pine"), "word level: no marker, the box is the boundary");
    assert_eq!(piece("Ġpine"), word(true, "pine"), "byte-level BPE");
    assert_eq!(piece(" pine"), word(true, "pine"), "byte-level, decoded");
    assert_eq!(piece("▁pine"), word(true, "pine"), "SentencePiece");
    assert_eq!(piece("ale"), word(false, "ale"), "a word's continuation");
    assert_eq!(piece("Ġ"), word(true, ""), "a lone space still shows its marker");
    assert_eq!(piece("\n"), Piece { space: false, text: "↵".into(), newline: true });
    assert_eq!(piece(""), word(false, "∅"));
    assert_eq!(piece("▁pine").shown(), "·pine");

    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path(), "0.05");
    let selection = select(&args(dir.path(), None, true)).unwrap();
    let data = page_data(&html::page(&selection));
    let flags: Vec<&str> = (0..4).map(|i| data["samples"][i]["f"].as_str().unwrap()).collect();
    assert_eq!(flags, ["110", "110", "000", "100"]);
    assert_eq!(data["samples"][3]["tok"], json!(["wh", "ale", "</s>"]));
    assert!(html::page(&selection).contains(".t{display:inline-block"), "each token is its own box");
    let (sample, tokens) = &selection.samples[2];
    let text = terminal::coloured(sample, tokens, &selection);
    assert!(text.contains("pine\x1b[0m\x1b[2m│\x1b[0m"), "a │ after each token but the last: {text:?}");
    assert_eq!(text.matches('│').count(), 2);
}

#[test]
fn color_by_a_column_the_table_lacks_names_the_ones_it_has() {
    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path(), "0.05");
    for (column, hint) in [
        (ValueColumn::KlPenalty, "annotate with --policy"),
        (ValueColumn::PolicyLogRatio, "annotate with --policy"),
        (ValueColumn::GoldCredit, "annotate with --judge toy"),
    ] {
        let err = format!("{:#}", select(&args(dir.path(), Some(column), false)).err().unwrap());
        assert!(err.contains(&format!("--color-by {}", column.name())), "{err}");
        assert!(err.contains(hint) && err.contains("it can be coloured by: reward, dpo_reward"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}

#[test]
fn the_page_carries_what_the_filters_need() {
    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path(), "0.05");
    let page = html::page(&select(&args(dir.path(), None, true)).unwrap());
    for control in ["id=\"side\"", "id=\"pairs\"", "id=\"iter\"", "id=\"q\"", "id=\"min\"", "id=\"max\"", "id=\"sort\""]
    {
        assert!(page.contains(control), "{control} missing");
    }
    let data = page_data(&page);
    let s = &data["samples"];
    assert_eq!((s[0]["side"].clone(), s[1]["side"].clone()), (json!("chosen"), json!("rejected")));
    assert_eq!((s[1]["id"].clone(), s[1]["p"].clone(), s[2]["p"].clone()), (json!(1), json!(0), json!(1)));
    assert_eq!(data["prompts"], json!(["prompt of pair 0", "prompt of pair 1"]));
    assert_eq!((s[3]["resp"].clone(), s[3]["ret"].clone()), (json!("response 3"), json!(-0.995)));
    assert_eq!(s[0]["dret"], json!(0.04));
}

#[test]
fn a_folder_of_rollout_tables_is_read_as_one_table_with_its_iterations() {
    let root = tempfile::tempdir().unwrap();
    for iteration in [1u32, 2] {
        let dir = root.path().join(format!("iter-{iteration:06}"));
        let mut kv = metadata("0.05");
        kv.insert("rto.iteration".into(), iteration.to_string());
        let layout = TableLayout { iteration: true, ..Default::default() };
        let mut writer =
            TokenTableWriter::create(&dir, TableOptions { layout, metadata: kv, ..Default::default() }).unwrap();
        let tokens = [token(0, "Ġok", 0.01 * iteration as f32, 0.5)];
        writer.push_sample(sample(u64::from(iteration), &tokens, Some(iteration), None), &tokens).unwrap();
        writer.finish().unwrap();
    }
    let selection = select(&args(root.path(), None, true)).unwrap();
    assert_eq!((selection.table_samples, selection.samples.len()), (2, 2));
    assert_eq!(selection.reward.as_ref().unwrap().iteration, None, "one iteration does not describe two tables");
    let data = page_data(&html::page(&selection));
    assert_eq!((data["samples"][0]["it"].clone(), data["samples"][1]["it"].clone()), (json!(1), json!(2)));
}

/// A Chromium on PATH, to run the page's script for real.
fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    let names = ["chromium", "chromium-browser", "google-chrome"];
    std::env::split_paths(&path).flat_map(|dir| names.map(|n| dir.join(n))).find(|p| p.is_file())
}

#[test]
fn the_page_script_draws_a_box_per_token_and_the_badges_in_a_browser() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no chromium on PATH (apt-get install chromium) to run the page's script");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path(), "0.05");
    let path = dir.path().join("page.html");
    html::write(&path, &select(&args(dir.path(), None, true)).unwrap()).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", path.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert_eq!(dom.matches("<span class=\"t\"").count(), 12, "4 samples of 3 tokens on the first page: {dom}");
    // "Ġcat" (0.03 on the clip 0.05: 60% green) as its own box with its space mark.
    let cat = "data-t=\"1\" style=\"background: rgb(118, 192, 141);\"><span class=\"sp\">·</span>cat</span>";
    assert!(dom.contains(cat), "{dom}");
    assert_eq!(dom.matches("<span class=\"badge\"").count(), 4, "one sentence-reward badge per sample");
    assert!(dom.contains("sentence reward +2.00000") && dom.contains("samples 1–4 of 4 matching"), "{dom}");
}
