//! `token-reward-annotate show`: terminal, plain text and HTML views of a hand-written table,
//! and the command line (annotate by default, `show` as a subcommand).

use crate::annotate_common::run_cli;
use rto_data::token_table::{SampleRecord, TableLayout, TableOptions, TokenRecord, TokenTableWriter};
use rto_stages::annotate::AnnotateCli;
use rto_stages::inspect::{colour, html, select, terminal, ShowArgs};
use std::path::{Path, PathBuf};

fn token(position: u32, text: &str, reward: f32) -> TokenRecord {
    TokenRecord {
        position,
        token_id: 10 + position,
        token: text.to_string(),
        logp_ref: Some(-2.0),
        logp_dpo: Some(-1.5),
        logp_policy: None,
        dpo_reward: Some(reward),
        kl_penalty: None,
        sentence_reward: Some(0.0),
        reward,
        gold_credit: None,
        advantage: None,
    }
}

fn sample(id: u64, side: &str, tokens: &[TokenRecord]) -> SampleRecord {
    SampleRecord {
        sample_id: id,
        prompt_id: "p0".into(),
        prompt: "<s>Say \"hi\" & <b>bye</b>".into(),
        response: "hi".into(),
        n_tokens: tokens.len() as u32,
        dpo_return: Some(tokens.iter().map(|t| t.reward).sum()),
        sentence_reward: Some(0.0),
        ret: tokens.iter().map(|t| t.reward).sum(),
        gold_score: None,
        iteration: None,
        side: Some(side.into()),
        group: None,
    }
}

/// Three samples; tokens with markup, a quote, a newline and a terminal escape sequence.
fn write_table(dir: &Path) {
    let options = TableOptions { layout: TableLayout { side: true, ..Default::default() }, ..Default::default() };
    let mut writer = TokenTableWriter::create(dir, options).unwrap();
    let rows = [
        vec![token(0, "<script>alert(1)</script>", 0.05), token(1, " it's \"q\"", -0.02), token(2, "\n", 0.0)],
        vec![token(0, "\x1b[31mred", -0.05), token(1, "", 0.01)],
        vec![token(0, " fine", 0.03)],
    ];
    for (id, tokens) in rows.iter().enumerate() {
        let side = if id % 2 == 0 { "chosen" } else { "rejected" };
        writer.push_sample(sample(id as u64, side, tokens), tokens).unwrap();
    }
    writer.finish().unwrap();
}

fn show_args(folder: &Path, sample: Option<u64>, html: Option<PathBuf>) -> ShowArgs {
    ShowArgs { folder: folder.to_path_buf(), sample, html, max_samples: 200, color_by: None }
}

/// The JSON the page carries (between its data script tags).
pub fn page_data(page: &str) -> serde_json::Value {
    let start = page.find("id=\"data\">").expect("the page has a data script") + "id=\"data\">".len();
    let end = start + page[start..].find("</script>").unwrap();
    serde_json::from_str(&page[start..end]).unwrap()
}

#[test]
fn html_page_is_self_contained_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path());
    let selection = select(&show_args(dir.path(), None, Some(dir.path().join("x.html")))).unwrap();
    assert_eq!(selection.samples.len(), 3);
    // dpo_reward by default; |values| 0, .01, .02, .03, .05, .05: the ⌈0.98·6⌉ = 6th is 0.05.
    assert_eq!((selection.column.name(), selection.scale()), ("dpo_reward", 0.05));
    let page = html::page(&selection);
    for external in ["http://", "https://", " src=", "<link", "@import"] {
        assert!(!page.contains(external), "external reference {external:?} in the page");
    }
    // Text reaches the page only inside the JSON, with every `<` escaped, and is drawn with
    // textContent: markup in a token or prompt can neither close the script nor run.
    assert!(page.contains("\\u003cscript>alert(1)\\u003c/script>") && !page.contains("<script>alert"));
    assert!(page.contains("\\u003cb>bye\\u003c/b>") && !page.contains("<b>bye"));
    assert!(!page.contains('\x1b'), "raw escape character in the page");
    assert_eq!(page.matches("<script").count(), 2, "the data and the script, nothing else");
    let data = page_data(&page);
    let samples = data["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0]["tok"], serde_json::json!(["<script>alert(1)</script>", "it's \"q\"", "↵"]));
    assert_eq!(samples[0]["f"], "012", "a leading space, then a newline token that breaks the line");
    assert_eq!(samples[1]["tok"], serde_json::json!(["\\u{1b}[31mred", "∅"]), "escapes shown, not executed");
    assert_eq!(data["prompts"].as_array().unwrap().len(), 1, "one prompt shared by the three samples");
    assert_eq!(samples[0]["v"]["logp_dpo"], serde_json::json!([-1.5, -1.5, -1.5]), "tooltip values");
    assert_eq!(samples[2]["c"]["dpo_reward"], serde_json::json!([0.03]));
    let palette = data["palette"].as_array().unwrap();
    assert_eq!(palette.len(), 201);
    assert_eq!(
        (palette[0][0].as_str(), palette[100][0].as_str(), palette[200][0].as_str()),
        (Some("#d73027"), Some("#ffffff"), Some("#1a9641")),
        "full red, white at 0, full green"
    );
}

#[test]
fn terminal_and_plain_views_show_the_values() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path());
    let selection = select(&show_args(dir.path(), Some(1), None)).unwrap();
    let (sample, tokens) = &selection.samples[0];
    assert_eq!(sample.sample_id, 1);

    let plain = terminal::plain(sample, tokens);
    assert!(
        plain.contains("sample 1 (rejected)") && plain.contains("-0.05000") && plain.contains("+0.01000"),
        "{plain}"
    );
    assert!(!plain.contains('\x1b'), "no escape codes in plain text");

    let coloured = terminal::coloured(sample, tokens, &selection);
    assert!(coloured.contains("\x1b[48;2;215;48;39m"), "full red background for the most negative token");
    assert!(coloured.contains("│"), "a boundary between the two tokens");
    assert!(coloured.contains("\\u{1b}[31mred"), "the token's own escape sequence is shown, not executed");

    let err = select(&show_args(dir.path(), Some(99), None)).err().unwrap().to_string();
    assert!(err.contains("no sample_id 99") && err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn colours_scale_from_white_to_green_and_red() {
    assert_eq!(colour(0.0, 0.05), (255, 255, 255));
    assert_eq!(colour(0.05, 0.05), (26, 150, 65));
    assert_eq!(colour(-1.0, 0.05), (215, 48, 39), "beyond the scale saturates");
    let (r, g, b) = colour(0.025, 0.05);
    assert!(g > r && g > b && r < 255, "half green: {r},{g},{b}");
    assert_eq!(colour(0.3, 0.0), (255, 255, 255), "an all-zero table stays white");
}

#[test]
fn command_line_annotates_by_default_and_shows_as_subcommand() {
    let argv = |args: &[&str]| {
        std::iter::once("token-reward-annotate").chain(args.iter().copied()).map(Into::into).collect::<Vec<_>>()
    };
    let parse = |args: &[&str]| rto_data::cli::parse_with_config_from::<AnnotateCli>(argv(args));

    let AnnotateCli::Annotate(annotate) =
        parse(&["--ref", "r", "--dpo", "d", "--data", "x.jsonl", "--clip", "inf", "--mode", "dpo-only"]).unwrap()
    else {
        panic!("expected the default (annotate) command")
    };
    assert_eq!(annotate.ref_model, PathBuf::from("r"));
    assert!(annotate.settings.reward.dpo_clip.is_infinite());
    assert_eq!(annotate.settings.reward.mode, rto_algo::RewardMode::DpoOnly);
    assert_eq!(
        (annotate.settings.reward.beta1, annotate.settings.reward.kl_coef, annotate.settings.reward.beta3),
        (0.05, 0.01, 1.0)
    );

    match parse(&["show", "some/folder", "--sample", "7", "--html", "p.html"]).unwrap() {
        AnnotateCli::Show(show) => {
            assert_eq!(
                (show.folder, show.sample, show.html),
                (PathBuf::from("some/folder"), Some(7), Some(PathBuf::from("p.html")))
            );
        }
        other => panic!("expected show, got {other:?}"),
    }
    assert!(parse(&["--ref", "r", "--dpo", "d"]).is_err(), "--data is required to annotate");
    assert!(parse(&["show"]).is_err(), "show needs a folder");
    assert!(parse(&["--ref", "r", "show", "f"]).is_err(), "annotate flags and show do not mix");
    let err = run_cli(&[]).unwrap_err().to_string();
    assert!(err.contains("--ref"), "{err}");
}
