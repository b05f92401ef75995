//! `token-reward-annotate --judge toy`: the gold judge's credit of every token, the
//! `gold_credit` column, so a view can show where the DPO token reward agrees with the truth.
//!
//! The judge reads what ppo-train's judge reads: the prompt's last user turn and the response
//! decoded without special tokens. Its score is a sum over words plus a length term
//! (`rto_task::judge`); `rto_task::token_credit` shares each word's part equally among the
//! tokens that spell it and puts the length term on no token, so per sample
//! Σ gold_credit = gold_score − length term (shown by `show` as "gold not on tokens").

use anyhow::Result;
use rto_data::token_table::{SampleRecord, TokenRecord};
use rto_model::TextTokenizer;

/// `--judge NAME` must name a judge ppo-train and rto-eval know, and one whose score splits
/// over words: the toy judge is both (and the only judge there is).
pub(super) fn check_judge(name: &str) -> Result<()> {
    crate::rollout::judge_named(name).map(|_| ())
}

/// Sets the sample's gold score and each token's gold credit.
pub(super) fn add_credit(
    tokenizer: &TextTokenizer,
    prompt: &str,
    ids: &[i64],
    sample: &mut SampleRecord,
    tokens: &mut [TokenRecord],
) -> Result<()> {
    let text = tokenizer.decode(ids, true)?;
    let ends = token_ends(tokenizer, ids, &text)?;
    let (breakdown, credit) = rto_task::token_credit(prompt, &text, &ends);
    sample.gold_score = Some(breakdown.total);
    for (token, credit) in tokens.iter_mut().zip(credit) {
        token.gold_credit = Some(credit as f32);
    }
    Ok(())
}

/// Where each token's text ends in `text`, the decoded response: token i ends where the
/// decoded first i + 1 tokens stop agreeing with `text`. Decoding prefixes (not single tokens)
/// is what makes this right for every tokenizer: a word-level decoder's joining spaces, a
/// SentencePiece leading space and a UTF-8 character split over byte tokens all come out as
/// in the full text. A prefix that ends inside a character leaves its token empty; ends never
/// decrease.
pub fn token_ends(tokenizer: &TextTokenizer, ids: &[i64], text: &str) -> Result<Vec<usize>> {
    let mut ends = Vec::with_capacity(ids.len());
    let mut end = 0;
    for i in 1..=ids.len() {
        let prefix = tokenizer.decode(&ids[..i], true)?;
        end = end.max(common_prefix_len(&prefix, text));
        ends.push(end);
    }
    Ok(ends)
}

/// Bytes of the longest common prefix of `a` and `b`, on a character boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).map(|(x, _)| x.len_utf8()).sum()
}
