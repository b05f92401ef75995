//! `token-reward-annotate --judge toy`: the gold judge's credit per token (`gold_credit`) and
//! the judge's `gold_score`, on tiny random models with the toy task's word-level tokenizer
//! (credits worked out by hand) and with a byte-level BPE tokenizer (words in pieces).

use crate::annotate_common::{model, output, run_cli, write_jsonl, Models};
use rto_data::token_table::{read_table, SampleRecord, TokenRecord};
use rto_model::Head;
use rto_stages::annotate::AnnotateSettings;
use serde_json::json;
use std::path::Path;

const PROMPT: &str = "write 16 words about the ocean in a calm mood avoid colors and end with tonight";
const CHOSEN: &str = "the calm whale rests near the quiet reef and a small crab sleeps under the red boat tonight";
const REJECTED: &str = "red boat tonight";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

fn annotate(
    root: &Path,
    reference: &Path,
    dpo: &Path,
    rows: &[serde_json::Value],
) -> Vec<(SampleRecord, Vec<TokenRecord>)> {
    let (data, store) = (root.join("pairs.jsonl"), root.join("store"));
    write_jsonl(&data, rows);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let args = ["--ref", &path(reference), "--dpo", &path(dpo), "--data", &path(&data), "--store", &path(&store)];
    run_cli(&[&args[..], &["--judge", "toy"]].concat()).unwrap();
    read_table(&output(&store)).unwrap()
}

fn credits(tokens: &[TokenRecord]) -> Vec<f64> {
    tokens.iter().map(|t| f64::from(t.gold_credit.expect("every token has a credit"))).collect()
}

#[test]
fn toy_tokens_carry_their_words_credit_and_sum_to_the_gold_score_without_the_length_term() {
    let root = tempfile::tempdir().unwrap();
    let toy = rto_test_support::repo_root().join("data/toy");
    let (reference, dpo) = (root.path().join("ref"), root.path().join("dpo"));
    model(&reference, &toy, Head::LanguageModel, 1, 256);
    model(&dpo, &toy, Head::LanguageModel, 2, 256);
    let table =
        annotate(root.path(), &reference, &dpo, &[json!({"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED})]);
    let [(chosen, chosen_tokens), (rejected, rejected_tokens)] = &table[..] else { panic!("one pair: {table:?}") };

    // rto_task's judge test works these out word by word; `</s>` earns nothing. The length
    // term (18 words for 16: −0.50) sits on no token: Σ credit 4.90, gold score 4.40.
    let words = [0.0, 0.4, 1.0, 0.0, 0.0, 0.0, 0.4, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.5, 0.6, 2.0, 0.0];
    let got = credits(chosen_tokens);
    assert!(got.len() == words.len() && got.iter().zip(words).all(|(g, w)| close(*g, w)), "{got:?}");
    assert!(close(chosen.gold_score.unwrap(), 4.40) && close(got.iter().sum(), 4.90), "{chosen:?}");
    // red: forbidden colour −1.50 (so red+boat earns no pairing) | boat: on topic +0.60 |
    // tonight: the ending +2.00 | 3 words for 16: length −3.25 → 1.10 on tokens, −2.15 in all.
    let got = credits(rejected_tokens);
    assert!(got.iter().zip([-1.5, 0.6, 2.0, 0.0]).all(|(g, w)| close(*g, w)) && got.len() == 4, "{got:?}");
    assert!(close(rejected.gold_score.unwrap(), -2.15), "{rejected:?}");
}

#[test]
fn words_split_into_byte_level_pieces_share_their_credit() {
    // Outside the toy vocabulary every word is unknown (−1.00) and nothing else applies, so
    // the gold score is −(number of words) and the pieces of each word sum to −1.
    let models = Models::new();
    let rows = [json!({"prompt": "hello there", "chosen": "quick dense foxes jump", "rejected": "lazy dogs"})];
    let table = annotate(models.root.path(), &models.dir("ref"), &models.dir("dpo"), &rows);
    for ((sample, tokens), n_words) in table.iter().zip([4, 2]) {
        assert!(close(sample.gold_score.unwrap(), -(n_words as f64)), "{sample:?}");
        assert!(close(credits(tokens).iter().sum(), -(n_words as f64)), "{tokens:?}");
        // A word starts at a piece with a leading space (or the first piece); `</s>` is last.
        let (eos, pieces) = tokens.split_last().unwrap();
        assert_eq!((eos.token.as_str(), eos.gold_credit), ("</s>", Some(0.0)));
        let mut word_sums: Vec<f64> = Vec::new();
        for (i, t) in pieces.iter().enumerate() {
            if i == 0 || t.token.starts_with(' ') {
                word_sums.push(0.0);
            }
            *word_sums.last_mut().unwrap() += f64::from(t.gold_credit.unwrap());
        }
        assert!(word_sums.len() == n_words && word_sums.iter().all(|s| close(*s, -1.0)), "{tokens:?}");
        assert!(pieces.len() > n_words, "the BPE splits some word: {tokens:?}");
    }
}

#[test]
fn judge_flag_is_checked_and_stays_out_of_the_key_when_unset() {
    let err = run_cli(&["--ref", "r", "--dpo", "d", "--data", "x.jsonl", "--judge", "gpt4"]).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("--judge \"gpt4\"") && err.contains("`toy`"), "{err}");
    let parse = |extra: &[&str]| {
        let argv = ["token-reward-annotate", "--ref", "r", "--dpo", "d", "--data", "x.jsonl"];
        let argv: Vec<std::ffi::OsString> = argv.iter().chain(extra).map(Into::into).collect();
        match rto_data::cli::parse_with_config_from::<rto_stages::annotate::AnnotateCli>(argv).unwrap() {
            rto_stages::annotate::AnnotateCli::Annotate(args) => args.settings,
            other => panic!("{other:?}"),
        }
    };
    let settings = |s: AnnotateSettings| serde_json::to_value(s).unwrap();
    assert!(settings(parse(&[])).get("judge").is_none(), "no judge: the settings (and key) of before");
    assert_eq!(settings(parse(&["--judge", "toy"]))["judge"], "toy");
}
