//! The shipped data has the properties the replication needs: demonstrations of widely
//! varying gold score, stored scores that match the judge, lengths inside the model's budget,
//! and eval prompts that no training file contains.

use crate::common;

use rto_task::{gold_score, ScoreStats, Spec};
use std::collections::HashSet;

#[test]
fn demonstrations_have_a_wide_spread_of_gold_scores() {
    let rows = common::read_jsonl("sft.jsonl");
    let scores: Vec<f64> = rows.iter().map(|r| r["gold_score"].as_f64().unwrap()).collect();
    let s = ScoreStats::of(&scores);
    println!("SFT demo gold scores: {s:?}");
    assert_eq!(s.n, 4000);
    assert!(s.std > 2.0, "std {}", s.std);
    // Both tails are well populated: SFT imitates careless and careful demonstrators alike.
    let share = |f: &dyn Fn(f64) -> bool| scores.iter().filter(|&&x| f(x)).count() as f64 / s.n as f64;
    assert!(share(&|x| x > 5.0) > 0.1 && share(&|x| x < -5.0) > 0.1);
    // …and the mean sits far below what a careful response reaches, leaving room for RLHF.
    assert!(s.mean < s.max - 8.0);
}

#[test]
fn stored_scores_are_the_judges_and_lengths_fit() {
    for r in common::read_jsonl("sft.jsonl") {
        let (p, resp) = (r["prompt"].as_str().unwrap(), r["response"].as_str().unwrap());
        assert_eq!(r["gold_score"].as_f64().unwrap(), gold_score(p, resp), "{p} / {resp}");
        let n = resp.split_whitespace().count();
        assert!((16..=48).contains(&n), "{n} words: {resp}");
        assert_eq!(r.as_object().unwrap().keys().collect::<Vec<_>>(), ["gold_score", "prompt", "response"]);
    }
}

#[test]
fn splits_are_disjoint_down_to_the_constraint_set() {
    let eval = common::prompts("eval_prompts.jsonl");
    let rl = common::prompts("rl_prompts.jsonl");
    let sft = common::prompts("sft.jsonl");
    assert_eq!((eval.len(), rl.len(), sft.len()), (256, 2000, 4000));
    let specs = |v: &[String]| v.iter().map(|p| Spec::parse(p)).collect::<HashSet<_>>();
    let (e, r, s) = (specs(&eval), specs(&rl), specs(&sft));
    assert_eq!((e.len(), r.len(), s.len()), (256, 2000, 4000), "no duplicate prompts");
    assert!(e.is_disjoint(&r) && e.is_disjoint(&s) && r.is_disjoint(&s));
    // Every prompt states a topic and a length.
    assert!(e.iter().chain(&r).chain(&s).all(|x| x.topic.is_some() && x.length.is_some()));
}
