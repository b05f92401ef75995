//! The gold judge: a deterministic score for any (prompt, response), the stand-in for the
//! GPT-4 judge of the paper's AlpacaEval / Arena-Hard evaluations.
//!
//! The score is a sum of per-word contributions plus one sequence-level length term, and
//! every contribution depends on the prompt or on neighbouring words, so a preference model
//! can learn it from comparisons but no single token reveals it. All arithmetic is in integer
//! hundredths, so scores are exact two-decimal numbers on every platform.
//!
//! Rules (points per word unless stated; "fresh" = the content word's first use):
//! - topic:   fresh noun of the prompt's topic +0.60; noun of another topic −0.30
//! - avoid:   word of the forbidden adjective class, or the forbidden word itself, −1.50
//!   (each use; a forbidden word earns no positive credit)
//! - mood:    fresh adjective of the requested mood +0.40; of the opposite mood −0.80
//! - repeat:  a content word (noun, adjective, verb) used before −0.50, and no positive credit
//! - pairing: adjective directly before a noun it agrees with +0.40 (both fresh), before a
//!   noun it does not agree with −0.40; an adjective not followed by a noun −0.30
//! - grammar: article not followed by adjective or noun, noun right after a noun, or a
//!   closer word anywhere but last, −0.30 each
//! - unknown: a word outside the task vocabulary (or a special token) −1.00
//! - ending:  requested end word as the last word +2.00, otherwise −1.00
//! - length:  −0.25 per word of distance to the requested length, at most −6.00
//!
//! Input hygiene: the response is cut at the first `</s>` and `<pad>` words are dropped, so
//! decoded generations score the same with or without special tokens.

use crate::prompt::{Avoid, Spec};
use crate::vocab::{vocab, AdjClass, Role};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

// Weights in hundredths of a point.
const TOPIC_ON: i64 = 60;
const TOPIC_OFF: i64 = -30;
const AVOID: i64 = -150;
const MOOD_MATCH: i64 = 40;
const MOOD_OPPOSITE: i64 = -80;
const REPEAT: i64 = -50;
const PAIR_AGREE: i64 = 40;
const PAIR_DISAGREE: i64 = -40;
const DANGLING_ADJ: i64 = -30;
const GRAMMAR: i64 = -30;
const UNKNOWN: i64 = -100;
const END_OK: i64 = 200;
const END_MISS: i64 = -100;
const LENGTH_PER_WORD: i64 = -25;
const LENGTH_CAP: i64 = -600;

/// One response word and everything attributed to it: `score` is the sum of `rules`, the
/// points of each rule that gave the word a nonzero part (by the rule names of the module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WordScore {
    pub word: String,
    pub score: f64,
    pub rules: BTreeMap<&'static str, f64>,
}

/// The gold score and its parts. `total` is the sum of the named parts, and also the sum of
/// `words[*].score` plus `sequence`, the part no single word carries (the length term, and
/// the missed-ending penalty of an empty response).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breakdown {
    pub total: f64,
    pub topic: f64,
    pub avoid: f64,
    pub mood: f64,
    pub repeat: f64,
    pub pairing: f64,
    pub grammar: f64,
    pub unknown: f64,
    pub ending: f64,
    pub length: f64,
    pub sequence: f64,
    pub n_words: usize,
    pub words: Vec<WordScore>,
}

/// Gold score of `response` to `prompt`. Total: never panics, any strings score.
pub fn gold_score(prompt: &str, response: &str) -> f64 {
    score_breakdown(prompt, response).total
}

/// Running sums in hundredths, per part and per word.
#[derive(Default)]
struct Tally {
    parts: [i64; 9],
    per_word: Vec<i64>,
    /// Per word, its points per part.
    per_word_parts: Vec<[i64; 9]>,
    /// Points attributed to no word.
    sequence: i64,
}

#[derive(Clone, Copy)]
enum Part {
    Topic,
    Avoid,
    Mood,
    Repeat,
    Pairing,
    Grammar,
    Unknown,
    Ending,
    Length,
}

const PARTS: [Part; 9] = [
    Part::Topic,
    Part::Avoid,
    Part::Mood,
    Part::Repeat,
    Part::Pairing,
    Part::Grammar,
    Part::Unknown,
    Part::Ending,
    Part::Length,
];

impl Part {
    /// The rule's name, as in the module docs and [`Breakdown`]'s fields.
    fn name(self) -> &'static str {
        match self {
            Part::Topic => "topic",
            Part::Avoid => "avoid",
            Part::Mood => "mood",
            Part::Repeat => "repeat",
            Part::Pairing => "pairing",
            Part::Grammar => "grammar",
            Part::Unknown => "unknown",
            Part::Ending => "ending",
            Part::Length => "length",
        }
    }
}

impl Tally {
    fn add(&mut self, part: Part, word: Option<usize>, points: i64) {
        self.parts[part as usize] += points;
        match word {
            Some(i) => {
                self.per_word[i] += points;
                self.per_word_parts[i][part as usize] += points;
            }
            None => self.sequence += points,
        }
    }

    /// Word `i`'s nonzero parts by rule name.
    fn word_rules(&self, i: usize) -> BTreeMap<&'static str, f64> {
        let parts = &self.per_word_parts[i];
        PARTS.iter().filter(|p| parts[**p as usize] != 0).map(|p| (p.name(), points(parts[*p as usize]))).collect()
    }
}

fn points(hundredths: i64) -> f64 {
    hundredths as f64 / 100.0
}

/// The response words the judge sees (cut at `</s>`, `<pad>` dropped).
pub fn response_words(response: &str) -> Vec<&str> {
    response_word_spans(response).into_iter().map(|span| &response[span]).collect()
}

/// Where in `response` each word of [`response_words`] lies, as byte ranges.
pub fn response_word_spans(response: &str) -> Vec<Range<usize>> {
    let offset = |word: &str| word.as_ptr() as usize - response.as_ptr() as usize;
    let words = response.split_whitespace().take_while(|w| *w != "</s>").filter(|w| *w != "<pad>");
    words.map(|w| offset(w)..offset(w) + w.len()).collect()
}

/// The gold score of `response` spread over its tokens, for the `gold_credit` column of a
/// token-reward table. Token i covers the bytes `token_ends[i-1]..token_ends[i]` of `response`
/// (token 0 starts at 0; `token_ends` must not decrease). Rule: a word's credit (its
/// [`WordScore::score`]) is shared equally by the tokens that cover any of its bytes, so a word
/// that is one token (the task tokenizer) puts its whole credit on that token; tokens that
/// cover no word (whitespace, `</s>`, `<pad>`) get 0. The sequence part ([`Breakdown::sequence`],
/// the length term) belongs to no word and sits on no token: when the tokens cover the whole
/// response, the credits sum to `total − sequence`.
pub fn token_credit(prompt: &str, response: &str, token_ends: &[usize]) -> (Breakdown, Vec<f64>) {
    let breakdown = score_breakdown(prompt, response);
    let starts: Vec<usize> = std::iter::once(0).chain(token_ends.iter().copied()).collect();
    let mut credit = vec![0.0; token_ends.len()];
    for (word, span) in breakdown.words.iter().zip(response_word_spans(response)) {
        // Token t overlaps the word iff start_t < span.end and span.start < end_t; both bounds
        // are monotone in t, so the overlapping tokens are one run.
        let first = token_ends.partition_point(|&end| end <= span.start);
        let last = starts[..token_ends.len()].partition_point(|&start| start < span.end);
        if first < last {
            let share = word.score / (last - first) as f64;
            credit[first..last].iter_mut().for_each(|c| *c += share);
        }
    }
    (breakdown, credit)
}

/// The gold score with its breakdown; see the module docs for the rules.
pub fn score_breakdown(prompt: &str, response: &str) -> Breakdown {
    let spec = Spec::parse(prompt);
    let words = response_words(response);
    let v = vocab();
    // Special tokens inside a response are treated like unknown words.
    let roles: Vec<Option<Role>> = words.iter().map(|w| v.role(w).filter(|r| *r != Role::Special)).collect();
    let mut t = Tally { per_word: vec![0; words.len()], per_word_parts: vec![[0; 9]; words.len()], ..Tally::default() };
    let mut seen: HashSet<&str> = HashSet::new();
    // Whether word i earned no positive credit (repeated or forbidden): pairing needs both
    // words of a pair to be creditable.
    let mut blocked = vec![false; words.len()];

    for (i, (&word, &role)) in words.iter().zip(&roles).enumerate() {
        let Some(role) = role else {
            t.add(Part::Unknown, Some(i), UNKNOWN);
            continue;
        };
        if role.is_content() && !seen.insert(word) {
            t.add(Part::Repeat, Some(i), REPEAT);
            blocked[i] = true;
        }
        let forbidden = match &spec.avoid {
            Some(Avoid::Word(w)) => w == word,
            Some(Avoid::Class(c)) => role == Role::Adjective(*c),
            None => false,
        };
        if forbidden {
            t.add(Part::Avoid, Some(i), AVOID);
            blocked[i] = true;
        }
        let next = roles.get(i + 1).copied().flatten();
        let last = i + 1 == words.len();
        match role {
            Role::Noun { topic, .. } => match spec.topic {
                Some(want) if want == topic && !blocked[i] => t.add(Part::Topic, Some(i), TOPIC_ON),
                Some(want) if want != topic => t.add(Part::Topic, Some(i), TOPIC_OFF),
                _ => {}
            },
            Role::Adjective(AdjClass::Mood(m)) => match spec.mood {
                Some(want) if want == m && !blocked[i] => t.add(Part::Mood, Some(i), MOOD_MATCH),
                Some(want) if want.opposite() == m => t.add(Part::Mood, Some(i), MOOD_OPPOSITE),
                _ => {}
            },
            _ => {}
        }
        match role {
            Role::Adjective(_) if !matches!(next, Some(Role::Noun { .. })) => {
                t.add(Part::Pairing, Some(i), DANGLING_ADJ)
            }
            Role::Article if !matches!(next, Some(Role::Noun { .. } | Role::Adjective(_))) => {
                t.add(Part::Grammar, Some(i), GRAMMAR)
            }
            Role::Closer if !last => t.add(Part::Grammar, Some(i), GRAMMAR),
            Role::Noun { kind, .. } => match i.checked_sub(1).and_then(|p| roles[p]) {
                // Credited to the noun: the pair is complete only once the noun is there.
                // An agreeing pair with a repeated/forbidden word earns nothing (not −0.40).
                Some(Role::Adjective(class)) if class.agrees_with(kind) => {
                    let creditable = !blocked[i] && !blocked[i - 1];
                    t.add(Part::Pairing, Some(i), if creditable { PAIR_AGREE } else { 0 })
                }
                Some(Role::Adjective(_)) => t.add(Part::Pairing, Some(i), PAIR_DISAGREE),
                Some(Role::Noun { .. }) => t.add(Part::Grammar, Some(i), GRAMMAR),
                _ => {}
            },
            _ => {}
        }
    }

    if let Some(end) = &spec.end {
        let ok = words.last() == Some(&end.as_str());
        t.add(Part::Ending, words.len().checked_sub(1), if ok { END_OK } else { END_MISS });
    }
    if let Some(n) = spec.length {
        let distance = (words.len() as i64 - n as i64).abs();
        t.add(Part::Length, None, (LENGTH_PER_WORD * distance).max(LENGTH_CAP));
    }

    let p = |part: Part| points(t.parts[part as usize]);
    Breakdown {
        total: points(t.parts.iter().sum()),
        topic: p(Part::Topic),
        avoid: p(Part::Avoid),
        mood: p(Part::Mood),
        repeat: p(Part::Repeat),
        pairing: p(Part::Pairing),
        grammar: p(Part::Grammar),
        unknown: p(Part::Unknown),
        ending: p(Part::Ending),
        length: p(Part::Length),
        sequence: points(t.sequence),
        n_words: words.len(),
        words: words
            .iter()
            .enumerate()
            .map(|(i, w)| WordScore { word: w.to_string(), score: points(t.per_word[i]), rules: t.word_rules(i) })
            .collect(),
    }
}
