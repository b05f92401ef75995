//! Prompts: the constraint set (`Spec`) a prompt expresses, the small grammar that renders a
//! spec as text in several surface forms, and the parser the judge uses to read a spec back
//! from any text. Parsing is total: words it does not understand are ignored and missing
//! constraints are simply absent, so the judge can score arbitrary prompts.

use crate::vocab::{AdjClass, Mood, Topic, AVOIDABLE, CLOSERS, LENGTHS, TOPICS};
use rto_data::dataset::SplitMix64;

/// What a prompt may forbid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Avoid {
    /// An adjective class ("avoid colors", "use no sizes").
    Class(AdjClass),
    /// One word ("avoid the word whale"); any string, so it may even be unknown.
    Word(String),
}

/// The constraints of one prompt. Every field is optional so that any text parses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Spec {
    /// Requested number of words.
    pub length: Option<u32>,
    /// Index into `TOPICS`.
    pub topic: Option<usize>,
    pub mood: Option<Mood>,
    pub avoid: Option<Avoid>,
    /// The word the response must end with.
    pub end: Option<String>,
}

impl Spec {
    /// Parses a prompt. Recognised patterns (anywhere, in any order):
    /// `<number>` → length; a topic name → topic (first wins); `<mood> mood|tone` → mood;
    /// `avoid|no <colors|sizes|textures>` → class; `word <w>` → avoided word;
    /// `end|finish with <w>` → end word.
    pub fn parse(prompt: &str) -> Spec {
        let w: Vec<&str> = prompt.split_whitespace().collect();
        let mut spec = Spec::default();
        for (i, &word) in w.iter().enumerate() {
            let next = w.get(i + 1).copied();
            if spec.length.is_none() {
                // Any plain integer counts, not only LENGTHS: hand-written prompts may ask for 30.
                if let Ok(n) = word.parse::<u32>() {
                    spec.length = Some(n);
                }
            }
            if spec.topic.is_none() {
                spec.topic = Topic::index_of(word);
            }
            if spec.mood.is_none() && matches!(next, Some("mood" | "tone")) {
                spec.mood = Mood::from_name(word);
            }
            if spec.avoid.is_none() {
                if matches!(word, "avoid" | "no") {
                    if let Some((class, _)) = AVOIDABLE.iter().find(|(_, n)| Some(*n) == next) {
                        spec.avoid = Some(Avoid::Class(*class));
                    }
                } else if word == "word" {
                    spec.avoid = next.map(|n| Avoid::Word(n.to_string()));
                }
            }
            if spec.end.is_none() && word == "with" && i > 0 && matches!(w[i - 1], "end" | "finish") {
                spec.end = next.map(str::to_string);
            }
        }
        spec
    }

    /// Renders the spec as a prompt, choosing among equivalent phrasings with `rng` so that
    /// a model has to read the constraints rather than memorise one sentence shape. The main
    /// clause comes first; optional clauses follow in random order. At most 19 words.
    pub fn render(&self, rng: &mut SplitMix64) -> String {
        let topic = self.topic.map_or("things", |t| TOPICS[t].name);
        let length = self.length.unwrap_or(24);
        let mut text = match rng.below(3) {
            0 => format!("write {length} words about the {topic}"),
            1 => format!("compose {length} words about the {topic}"),
            _ => format!("give me {length} words about the {topic}"),
        };
        let mut clauses: Vec<String> = Vec::new();
        if let Some(m) = self.mood {
            clauses.push(match rng.below(2) {
                0 => format!("in a {} mood", m.name()),
                _ => format!("with a {} tone", m.name()),
            });
        }
        match &self.avoid {
            Some(Avoid::Class(c)) => {
                let name = AVOIDABLE.iter().find(|(k, _)| k == c).map_or("colors", |(_, n)| n);
                clauses.push(match rng.below(2) {
                    0 => format!("avoid {name}"),
                    _ => format!("use no {name}"),
                });
            }
            Some(Avoid::Word(word)) => clauses.push(format!("avoid the word {word}")),
            None => {}
        }
        if let Some(end) = &self.end {
            clauses.push(match rng.below(2) {
                0 => format!("and end with {end}"),
                _ => format!("finish with {end}"),
            });
        }
        rto_data::dataset::shuffle(&mut clauses, rng.next_u64());
        for c in clauses {
            text.push(' ');
            text.push_str(&c);
        }
        text
    }

    /// Draws a random spec: every topic, mood (or none), forbidden class or on-topic word (or
    /// none), closer (or none) and length is possible, so prompts cover the whole grammar.
    pub fn sample(rng: &mut SplitMix64) -> Spec {
        let topic = rng.below(TOPICS.len() as u64) as usize;
        let mood = match rng.below(5) {
            4 => None,
            m => Some(Mood::ALL[m as usize]),
        };
        let avoid = match rng.below(20) {
            0..=2 => None,
            3..=12 => Some(Avoid::Class(AVOIDABLE[rng.below(3) as usize].0)),
            _ => {
                let nouns: Vec<&str> = TOPICS[topic].all_nouns().map(|(w, _)| w).collect();
                Some(Avoid::Word(nouns[rng.below(nouns.len() as u64) as usize].to_string()))
            }
        };
        let end = match rng.below(10) {
            0 | 1 => None,
            _ => Some(CLOSERS[rng.below(CLOSERS.len() as u64) as usize].to_string()),
        };
        let length = Some(LENGTHS[rng.below(LENGTHS.len() as u64) as usize]);
        Spec { length, topic: Some(topic), mood, avoid, end }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_prompts_parse_back_to_their_spec() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..2000 {
            let spec = Spec::sample(&mut rng);
            let text = spec.render(&mut rng);
            assert_eq!(Spec::parse(&text), spec, "{text}");
            assert!(text.split_whitespace().count() <= 19, "{text}");
        }
    }

    #[test]
    fn garbage_parses_to_partial_specs() {
        assert_eq!(Spec::parse(""), Spec::default());
        let s = Spec::parse("ocean ocean 30 finish with  ");
        assert_eq!((s.topic, s.length, s.end), (Some(0), Some(30), None));
        assert_eq!(Spec::parse("the word").avoid, None);
    }
}
