//! `token_credit`: the gold score spread over a response's tokens (the `gold_credit` column),
//! against the judge's per-word scores worked out by hand in `judge::a_good_response_with_one_slip`.

use rto_task::token_credit;

const PROMPT: &str = "write 16 words about the ocean in a calm mood avoid colors and end with tonight";
const RESPONSE: &str = "the calm whale rests near the quiet reef and a small crab sleeps under the red boat tonight";
/// The judge's word scores of RESPONSE (hand-computed in judge.rs); the length term −0.50
/// (18 words for 16) is the sequence part. Total 4.40.
const WORDS: [f64; 18] = [0.0, 0.4, 1.0, 0.0, 0.0, 0.0, 0.4, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.5, 0.6, 2.0];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Byte offsets where each token ends, for tokens given as consecutive pieces of RESPONSE.
fn ends(pieces: &[&str]) -> Vec<usize> {
    assert_eq!(pieces.concat(), RESPONSE, "the pieces must spell the response");
    pieces
        .iter()
        .scan(0, |end, piece| {
            *end += piece.len();
            Some(*end)
        })
        .collect()
}

#[test]
fn one_token_per_word_carries_the_word_score_and_eos_nothing() {
    // The task tokenizer: one token per word, decoded with a space before each but the first;
    // `</s>` is dropped by the decoder, so it covers no byte (it ends where the text ends).
    let words: Vec<&str> = RESPONSE.split(' ').collect();
    let mut pieces = vec![words[0].to_string()];
    pieces.extend(words[1..].iter().map(|w| format!(" {w}")));
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let mut token_ends = ends(&refs);
    token_ends.push(RESPONSE.len());
    let (breakdown, credit) = token_credit(PROMPT, RESPONSE, &token_ends);
    let mut expected = WORDS.to_vec();
    expected.push(0.0);
    assert_eq!(credit.len(), 19);
    assert!(credit.iter().zip(&expected).all(|(c, e)| close(*c, *e)), "{credit:?}");
    assert!(close(breakdown.total, 4.40) && close(breakdown.sequence, -0.50), "{breakdown:?}");
    assert!(close(credit.iter().sum::<f64>(), 4.90), "Σ credit = gold score − length term");
}

#[test]
fn a_word_in_pieces_shares_its_credit_and_a_piece_of_two_words_gets_both() {
    // "whale" (+1.00) in three pieces: +1/3 each; "the calm" as one token: 0 + 0.40;
    // "reef and" ... as one piece with its leading space; "tonight" (+2.00) in two pieces.
    let pieces = [
        "the calm",
        " wh",
        "al",
        "e",
        " rests near the quiet",
        " reef and a",
        " small crab sleeps under the red boat",
        " tonig",
        "ht",
    ];
    let (breakdown, credit) = token_credit(PROMPT, RESPONSE, &ends(&pieces));
    let third = 1.0 / 3.0;
    // quiet +0.40 | reef +1.00 | crab +1.00, red −1.50, boat +0.60 → +0.10
    let expected = [0.4, third, third, third, 0.4, 1.0, 0.1, 1.0, 1.0];
    assert!(credit.iter().zip(&expected).all(|(c, e)| close(*c, *e)), "{credit:?}");
    assert!(close(credit.iter().sum::<f64>(), breakdown.total - breakdown.sequence));
}

#[test]
fn tokens_that_miss_part_of_the_response_leave_that_credit_out() {
    // A response cut after "whale": the rest of the words have no token and no credit.
    let token_ends = [3, 8, 14];
    let (_, credit) = token_credit(PROMPT, RESPONSE, &token_ends);
    assert!(credit.iter().zip([0.0, 0.4, 1.0]).all(|(c, e)| close(*c, e)), "{credit:?}");
    let (_, none) = token_credit(PROMPT, RESPONSE, &[]);
    assert!(none.is_empty());
}
