//! The noisy demonstrator and the dataset generator.
//!
//! Demonstrations are *mixed-quality* on purpose: each one draws a skill `q ~ U(0, 1)` that
//! sets how often it follows each constraint (topic, forbidden words, agreement, mood, no
//! repeats, length, ending). An SFT model imitating them learns a policy whose samples range
//! from careless to careful, which leaves room for RLHF to improve, as the paper's SFT model
//! does. Only `+ - * /`, `round` and comparisons touch floats here (no `exp`/`ln`), so the
//! output is bit-identical on every IEEE-754 platform.

use crate::judge::gold_score;
use crate::prompt::{Avoid, Spec};
use crate::tokenizer::{tokenizer_config, tokenizer_file};
use crate::vocab::{vocab, AdjClass, Kind, Mood, ARTICLES, CLOSERS, CONNECTORS, PREPOSITIONS, TOPICS, VERBS};
use anyhow::{bail, Context, Result};
use rto_data::dataset::SplitMix64;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Names the generator algorithm in manifests. Bump it whenever the output for a seed changes
/// (and regenerate data/toy); it is deliberately not the crate version, which changes for
/// unrelated reasons.
pub const GENERATOR: &str = "rto-task generator v1";
/// Default seed of the shipped `data/toy`.
pub const DEFAULT_SEED: u64 = 20261126;
/// Response lengths in words (the EOS token comes on top).
pub const MIN_RESPONSE_WORDS: usize = 16;
pub const MAX_RESPONSE_WORDS: usize = 48;

/// How many rows of each file to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sizes {
    pub sft: usize,
    pub rl_prompts: usize,
    pub eval_prompts: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes { sft: 4000, rl_prompts: 2000, eval_prompts: 256 }
    }
}

/// One SFT demonstration row of `sft.jsonl` (field order = JSON key order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftRow {
    pub prompt: String,
    pub response: String,
    pub gold_score: f64,
}

/// One row of `rl_prompts.jsonl` / `eval_prompts.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptRow {
    pub prompt: String,
}

/// Mean, standard deviation (population), min and max of a set of scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreStats {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl ScoreStats {
    pub fn of(scores: &[f64]) -> ScoreStats {
        let n = scores.len();
        let mean = scores.iter().sum::<f64>() / n.max(1) as f64;
        let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / n.max(1) as f64;
        let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        ScoreStats { n, mean, std: var.sqrt(), min: if n > 0 { min } else { 0.0 }, max: if n > 0 { max } else { 0.0 } }
    }

    /// Rounded to 4 decimals, for manifests that people read.
    fn rounded(self) -> ScoreStats {
        let r = |x: f64| (x * 1e4).round() / 1e4;
        ScoreStats { mean: r(self.mean), std: r(self.std), min: r(self.min), max: r(self.max), ..self }
    }
}

/// One noisy demonstration for `spec` (see the module docs).
pub fn demonstration(spec: &Spec, rng: &mut SplitMix64) -> Vec<String> {
    let skill = rng.next_f64();
    Demo { spec, rng, skill, words: Vec::new(), used: HashSet::new() }.run()
}

struct Demo<'a> {
    spec: &'a Spec,
    rng: &'a mut SplitMix64,
    /// 0 = ignores every constraint, 1 = follows them nearly always.
    skill: f64,
    words: Vec<String>,
    used: HashSet<&'static str>,
}

impl Demo<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.next_f64() < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len() as u64) as usize]
    }

    /// Picks a word; a skilled demonstrator prefers words it has not used yet.
    fn pick_word(&mut self, words: &[&'static str]) -> &'static str {
        let fresh: Vec<&'static str> = words.iter().copied().filter(|w| !self.used.contains(w)).collect();
        let w = if !fresh.is_empty() && self.chance(self.skill) { self.pick(&fresh) } else { self.pick(words) };
        self.used.insert(w);
        w
    }

    /// Roughly normal noise with mean 0 and standard deviation 1 (Irwin–Hall of 4 uniforms).
    fn noise(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.rng.next_f64()).sum();
        (s - 2.0) * 3.0f64.sqrt()
    }

    fn run(mut self) -> Vec<String> {
        let careless = 1.0 - self.skill;
        let wanted = self.spec.length.unwrap_or(24) as f64;
        let (lo, hi) = (MIN_RESPONSE_WORDS as i64, MAX_RESPONSE_WORDS as i64);
        let len = if self.chance(0.4 * careless) {
            lo + self.rng.below((hi - lo + 1) as u64) as i64
        } else {
            (wanted + self.noise() * (1.0 + 7.0 * careless)).round() as i64
        }
        .clamp(lo, hi) as usize;
        // The requested ending when followed; else some closer (often the wrong one) or none.
        let follow = self.chance(0.3 + 0.65 * self.skill);
        let closer: Option<String> = match &self.spec.end {
            Some(end) if follow => Some(end.clone()),
            _ if self.chance(0.4) => Some(self.pick(&CLOSERS).to_string()),
            _ => None,
        };
        let body = len - usize::from(closer.is_some());
        while self.words.len() < body {
            if !self.words.is_empty() {
                let c = self.pick(&CONNECTORS);
                self.words.push(c.into());
            }
            self.noun_phrase();
            let v = self.pick_word(&VERBS);
            self.words.push(v.into());
            if self.chance(0.6) {
                let p = self.pick(&PREPOSITIONS);
                self.words.push(p.into());
                self.noun_phrase();
            }
        }
        // Cutting mid-clause leaves dangling articles/adjectives now and then: more noise.
        self.words.truncate(body);
        self.words.extend(closer);
        self.words
    }

    fn noun_phrase(&mut self) {
        match self.rng.below(10) {
            0..=4 => self.words.push("the".into()),
            5 | 6 => self.words.push(ARTICLES[1].into()),
            _ => {}
        }
        let (noun, kind) = self.noun();
        if self.chance(0.6) {
            let adj = self.adjective(kind);
            self.words.push(adj.into());
        }
        self.words.push(noun.to_string());
    }

    fn noun(&mut self) -> (String, Kind) {
        let careless = 1.0 - self.skill;
        let topic = self.spec.topic.unwrap_or(0);
        let kind_of = |w: &str| match vocab().role(w) {
            Some(crate::vocab::Role::Noun { kind, .. }) => kind,
            _ => Kind::Object,
        };
        let used_nouns: Vec<&'static str> = self
            .used
            .iter()
            .copied()
            .filter(|w| matches!(vocab().role(w), Some(crate::vocab::Role::Noun { .. })))
            .collect();
        if !used_nouns.is_empty() && self.chance(0.25 * careless) {
            // Sort: HashSet order is random per process, the output must not be.
            let mut used_nouns = used_nouns;
            used_nouns.sort_unstable();
            let w = self.pick(&used_nouns);
            return (w.to_string(), kind_of(w));
        }
        if let Some(Avoid::Word(w)) = &self.spec.avoid {
            if self.chance(0.3 * careless) {
                return (w.clone(), kind_of(w));
            }
        }
        if self.chance(0.3 + 0.65 * self.skill) {
            let avoid = match &self.spec.avoid {
                Some(Avoid::Word(w)) => w.as_str(),
                _ => "",
            };
            let nouns: Vec<&'static str> = TOPICS[topic].all_nouns().map(|(w, _)| w).filter(|w| *w != avoid).collect();
            let w = self.pick_word(&nouns);
            return (w.to_string(), kind_of(w));
        }
        let other = (topic + 1 + self.rng.below(TOPICS.len() as u64 - 1) as usize) % TOPICS.len();
        let nouns: Vec<&'static str> = TOPICS[other].all_nouns().map(|(w, _)| w).collect();
        let w = self.pick_word(&nouns);
        (w.to_string(), kind_of(w))
    }

    fn adjective(&mut self, kind: Kind) -> &'static str {
        let careless = 1.0 - self.skill;
        let forbidden = match &self.spec.avoid {
            Some(Avoid::Class(c)) => Some(*c),
            _ => None,
        };
        if let Some(c) = forbidden {
            if self.chance(0.35 * careless) {
                return self.pick_word(c.words());
            }
        }
        let agreeing = self.chance(0.35 + 0.6 * self.skill);
        let classes: Vec<AdjClass> =
            AdjClass::ALL.into_iter().filter(|c| Some(*c) != forbidden && (!agreeing || c.agrees_with(kind))).collect();
        let mut class = self.pick(&classes);
        if let AdjClass::Mood(_) = class {
            let follow = self.chance(0.3 + 0.65 * self.skill);
            let family = match self.spec.mood {
                Some(m) if follow => m,
                _ => self.pick(&Mood::ALL),
            };
            class = AdjClass::Mood(family);
        }
        self.pick_word(class.words())
    }
}

/// Draws `n` prompts whose specs are not in `taken` (and adds them to it), so the splits
/// share no constraint combination: eval prompts are never seen in SFT or RL.
fn draw_prompts(n: usize, taken: &mut HashSet<Spec>, rng: &mut SplitMix64) -> Result<Vec<(Spec, String)>> {
    let mut out = Vec::with_capacity(n);
    let mut tries = 0usize;
    while out.len() < n {
        tries += 1;
        if tries > 100 * n + 1000 {
            bail!("cannot draw {n} distinct prompts: the prompt grammar is too small for these sizes");
        }
        let spec = Spec::sample(rng);
        if taken.insert(spec.clone()) {
            let text = spec.render(rng);
            out.push((spec, text));
        }
    }
    Ok(out)
}

/// One independent stream per purpose, so e.g. changing the SFT size leaves the eval prompts
/// unchanged.
fn stream(seed: u64, purpose: u64) -> SplitMix64 {
    SplitMix64::new(SplitMix64::new(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64())
}

fn jsonl<T: Serialize>(rows: &[T]) -> Result<String> {
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r)?);
        s.push('\n');
    }
    Ok(s)
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so an interrupted run
/// never leaves a half-written file under the final name.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[derive(Serialize)]
struct Manifest {
    generator: String,
    seed: u64,
    counts: BTreeMap<&'static str, usize>,
    sft_gold_score: ScoreStats,
    /// blake3 of each file's bytes.
    files: BTreeMap<String, String>,
}

/// The SFT rows for a seed (prompts and responses), without writing anything.
pub fn generate_sft(seed: u64, sizes: Sizes) -> Result<(Vec<SftRow>, Vec<PromptRow>, Vec<PromptRow>)> {
    let mut taken = HashSet::new();
    let rows = |v: Vec<(Spec, String)>| v.into_iter().map(|(_, prompt)| PromptRow { prompt }).collect::<Vec<_>>();
    let eval = rows(draw_prompts(sizes.eval_prompts, &mut taken, &mut stream(seed, 1))?);
    let rl = rows(draw_prompts(sizes.rl_prompts, &mut taken, &mut stream(seed, 2))?);
    let mut rng = stream(seed, 3);
    let sft_prompts = draw_prompts(sizes.sft, &mut taken, &mut rng)?;
    let sft = sft_prompts
        .into_iter()
        .map(|(spec, prompt)| {
            let response = demonstration(&spec, &mut rng).join(" ");
            let gold_score = gold_score(&prompt, &response);
            SftRow { prompt, response, gold_score }
        })
        .collect();
    Ok((sft, rl, eval))
}

/// Writes the whole task folder: tokenizer.json, tokenizer_config.json, sft.jsonl,
/// rl_prompts.jsonl, eval_prompts.jsonl and, last, manifest.json with every file's blake3.
/// The same seed and sizes give byte-identical files.
pub fn generate_dataset_with(seed: u64, sizes: Sizes, out_dir: &Path) -> Result<ScoreStats> {
    let (sft, rl, eval) = generate_sft(seed, sizes)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let config = serde_json::to_string_pretty(&tokenizer_config())? + "\n";
    let files: Vec<(&str, String)> = vec![
        ("tokenizer.json", tokenizer_file()? + "\n"),
        ("tokenizer_config.json", config),
        ("sft.jsonl", jsonl(&sft)?),
        ("rl_prompts.jsonl", jsonl(&rl)?),
        ("eval_prompts.jsonl", jsonl(&eval)?),
    ];
    let mut hashes = BTreeMap::new();
    for (name, text) in &files {
        write_atomic(out_dir, name, text.as_bytes())?;
        hashes.insert(name.to_string(), blake3::hash(text.as_bytes()).to_hex().to_string());
    }
    let scores: Vec<f64> = sft.iter().map(|r| r.gold_score).collect();
    let stats = ScoreStats::of(&scores);
    let manifest = Manifest {
        generator: GENERATOR.to_string(),
        seed,
        counts: BTreeMap::from([
            ("sft", sft.len()),
            ("rl_prompts", rl.len()),
            ("eval_prompts", eval.len()),
            ("vocab", vocab().len()),
        ]),
        sft_gold_score: stats.rounded(),
        files: hashes,
    };
    write_atomic(out_dir, "manifest.json", (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes())?;
    Ok(stats)
}

/// `generate_dataset_with` at the default sizes.
pub fn generate_dataset(seed: u64, out_dir: &Path) -> Result<ScoreStats> {
    generate_dataset_with(seed, Sizes::default(), out_dir)
}
