//! The gold judge on hand-written cases whose scores are computed by hand in the comments
//! (rules: see the docs of rto_task::judge), plus totality and prompt dependence.

use rto_task::{gold_score, score_breakdown, Breakdown};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// total == sum of parts == sum of word scores + sequence-level points.
fn check_sums(b: &Breakdown) {
    let parts = b.topic + b.avoid + b.mood + b.repeat + b.pairing + b.grammar + b.unknown + b.ending + b.length;
    assert!(close(parts, b.total), "{b:?}");
    // Per-word scores carry everything but the length term, except for an empty response,
    // whose missing-ending penalty has no word to sit on.
    if !b.words.is_empty() {
        let words: f64 = b.words.iter().map(|w| w.score).sum::<f64>() + b.sequence;
        assert!(close(words, b.total), "{b:?}");
    }
}

fn word_scores(b: &Breakdown) -> Vec<f64> {
    b.words.iter().map(|w| w.score).collect()
}

#[test]
fn a_good_response_with_one_slip() {
    let prompt = "write 16 words about the ocean in a calm mood avoid colors and end with tonight";
    let response = "the calm whale rests near the quiet reef and a small crab sleeps under the red boat tonight";
    let b = score_breakdown(prompt, response);
    // calm: requested mood +0.40 | whale: on topic +0.60, calm(mood)+creature agree +0.40
    // quiet: mood +0.40 | reef: topic +0.60, quiet+place agree +0.40
    // small: a size, not a mood, no mood credit; small+crab agree → crab: +0.60 +0.40
    // red: forbidden color −1.50 (and blocked, so red+boat earns no pairing)
    // boat: topic +0.60 | tonight: requested ending +2.00
    // 18 words for 16 requested: length −0.25·2 = −0.50
    // topic 2.40, avoid −1.50, mood 0.80, pairing 1.20, ending 2.00, length −0.50 → 4.40
    assert!(close(b.total, 4.40), "{b:?}");
    assert!(close(b.topic, 2.40) && close(b.avoid, -1.50) && close(b.mood, 0.80));
    assert!(close(b.pairing, 1.20) && close(b.ending, 2.00) && close(b.length, -0.50));
    assert_eq!(b.n_words, 18);
    assert_eq!(
        word_scores(&b),
        vec![0.0, 0.4, 1.0, 0.0, 0.0, 0.0, 0.4, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.5, 0.6, 2.0]
    );
    check_sums(&b);
}

#[test]
fn each_word_names_the_rules_behind_its_score() {
    // The case above, rule by rule (hand-computed there): whale topic +0.60 and pairing +0.40,
    // red only the forbidden class, tonight only the ending, `the` nothing.
    let prompt = "write 16 words about the ocean in a calm mood avoid colors and end with tonight";
    let response = "the calm whale rests near the quiet reef and a small crab sleeps under the red boat tonight";
    let b = score_breakdown(prompt, response);
    let rules = |i: usize| b.words[i].rules.iter().map(|(k, v)| (k.to_string(), *v)).collect::<Vec<_>>();
    assert_eq!(rules(0), vec![]);
    assert_eq!(rules(1), vec![("mood".to_string(), 0.4)]);
    assert_eq!(rules(2), vec![("pairing".to_string(), 0.4), ("topic".to_string(), 0.6)]);
    assert_eq!(rules(15), vec![("avoid".to_string(), -1.5)]);
    assert_eq!(rules(17), vec![("ending".to_string(), 2.0)]);
    // Every word's score is the sum of its rules.
    for w in &b.words {
        assert!(close(w.rules.values().sum::<f64>(), w.score), "{w:?}");
    }
}

#[test]
fn every_penalty_once() {
    let prompt = "give me 20 words about the forest with a happy tone use no sizes finish with soon";
    let response = "the the sad fox big owl owl zebra fox sings now soon";
    let b = score_breakdown(prompt, response);
    // the      article followed by an article: grammar −0.30
    // the sad  fine
    // sad      opposite of the requested happy mood −0.80 (not dangling: a noun follows)
    // fox      forest noun +0.60; sad(mood)+creature agree +0.40 → +1.00
    // big      sizes are forbidden −1.50, blocked
    // owl      topic +0.60; big+owl would agree but big is blocked → no pairing
    // owl      repeated −0.50 (no topic credit); noun after noun: grammar −0.30 → −0.80
    // zebra    not in the vocabulary −1.00
    // fox      repeated −0.50
    // sings    verb, neutral
    // now      a closer before the end: grammar −0.30
    // soon     the requested ending, last word +2.00
    // length   12 words for 20 requested: −0.25·8 = −2.00
    // parts: topic 1.20, avoid −1.50, mood −0.80, repeat −1.00, pairing 0.40,
    //        grammar −0.90, unknown −1.00, ending 2.00, length −2.00 → −3.60
    assert!(close(b.total, -3.60), "{b:?}");
    assert!(close(b.topic, 1.20) && close(b.avoid, -1.50) && close(b.mood, -0.80));
    assert!(close(b.repeat, -1.00) && close(b.pairing, 0.40) && close(b.grammar, -0.90));
    assert!(close(b.unknown, -1.00) && close(b.ending, 2.00) && close(b.length, -2.00));
    assert_eq!(word_scores(&b), vec![-0.3, 0.0, -0.8, 1.0, -1.5, 0.6, -0.8, -1.0, -0.5, 0.0, -0.3, 2.0]);
    check_sums(&b);
}

#[test]
fn missing_ending_dangling_adjective_off_topic_and_length_cap() {
    // 16 requested; "end with done" missed → −1.00 on the last word.
    // pine: forest noun under an ocean prompt −0.30; green+pine agree (color+plant) +0.40
    // wet: texture with nothing after it: dangling −0.30 (also the last word: ending −1.00)
    // 4 words: length −0.25·12 = −3.00. Total −0.30 +0.40 −0.30 −1.00 −3.00 = −4.20
    let prompt = "write 16 words about the ocean and end with done";
    let b = score_breakdown(prompt, "green pine rests wet");
    assert!(close(b.total, -4.20), "{b:?}");
    assert_eq!(word_scores(&b), vec![0.0, 0.1, 0.0, -1.3]);
    // 100 words, 84 too many, but the length term is capped at −6.00.
    let long = vec!["rests"; 100].join(" ");
    let b = score_breakdown("write 16 words", &long);
    assert!(close(b.length, -6.00) && close(b.repeat, -49.5), "{b:?}");
    check_sums(&b);
}

#[test]
fn the_same_word_scores_differently_under_two_prompts() {
    let response = "the red rose grows near the whale";
    let word = |prompt: &str, i: usize| score_breakdown(prompt, response).words[i].score;
    // `red` is a fine color adjective when sizes are forbidden, −1.50 when colors are.
    assert!(close(word("write 16 words about the garden avoid sizes", 1), 0.0));
    assert!(close(word("write 16 words about the garden avoid colors", 1), -1.5));
    // …and so `rose` earns its pairing bonus (+0.60 topic +0.40) only in the first case.
    assert!(close(word("write 16 words about the garden avoid sizes", 2), 1.0));
    assert!(close(word("write 16 words about the garden avoid colors", 2), 0.6));
    // `whale` is on topic at sea (+0.60), off topic in the garden (−0.30), and forbidden
    // when the prompt names it (−1.50, no topic credit).
    assert!(close(word("write 16 words about the ocean", 6), 0.6));
    assert!(close(word("write 16 words about the garden", 6), -0.3));
    assert!(close(word("write 16 words about the ocean avoid the word whale", 6), -1.5));
    // A closer is worth +2.00 only where the prompt asks for it.
    let r = "the whale sleeps tonight";
    assert!(close(score_breakdown("finish with tonight", r).ending, 2.0));
    assert!(close(score_breakdown("finish with done", r).ending, -1.0));
    assert!(close(score_breakdown("no ending asked", r).ending, 0.0));
}

#[test]
fn special_tokens_are_handled_like_a_decoder_would() {
    // No length in this prompt, so adding a word changes nothing but the word's own score.
    let p = "tell me about the ocean";
    let clean = gold_score(p, "the whale rests");
    assert_eq!(gold_score(p, "the whale rests </s> the fish"), clean, "cut at </s>");
    assert_eq!(gold_score(p, "the whale rests </s> <pad> <pad>"), clean);
    // Other special tokens inside a response are unknown words.
    assert!(close(gold_score(p, "the whale <user> rests") - clean, -1.0));
}

#[test]
fn any_input_scores_without_panicking() {
    let mut state = 0x1234_5678u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let pieces = [
        "the",
        "whale",
        "ocean",
        "avoid",
        "word",
        "end",
        "with",
        "é",
        "\u{0}",
        " ",
        "\n",
        "99999999999",
        "mood",
        "calm",
        "</s>",
        "<s>",
        "red",
        "done",
    ];
    for _ in 0..2000 {
        let mut p = String::new();
        let mut r = String::new();
        for _ in 0..(next() % 30) {
            p.push_str(pieces[next() as usize % pieces.len()]);
            p.push(if next() % 4 == 0 { '\t' } else { ' ' });
        }
        for _ in 0..(next() % 60) {
            r.push_str(pieces[next() as usize % pieces.len()]);
            r.push(' ');
        }
        let b = score_breakdown(&p, &r);
        assert!(b.total.is_finite());
        check_sums(&b);
    }
    assert_eq!(gold_score("", ""), 0.0);
    // An empty response misses a requested ending; no word carries that penalty.
    let b = score_breakdown("write 16 words and end with done", "");
    // length −0.25·16 = −4.00, ending −1.00.
    assert!(close(b.total, -5.0) && close(b.sequence, -5.0) && b.words.is_empty(), "{b:?}");
}
