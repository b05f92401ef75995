//! Bradley–Terry labelling and win rates.

use rto_data::dataset::{read_preference_pairs, ColumnNames, SplitMix64};
use rto_task::{demonstration, label_pair, label_samples, preference_probability, win_rate, write_pairs_jsonl, Spec};

/// Two demonstrations for each of `n` random prompts: (prompt, response) rows, as a sampler
/// writing two samples per prompt would.
fn two_samples_per_prompt(n: usize) -> Vec<(String, String)> {
    let mut rng = SplitMix64::new(99);
    let mut rows = Vec::new();
    for _ in 0..n {
        let spec = Spec::sample(&mut rng);
        let prompt = spec.render(&mut rng);
        for _ in 0..2 {
            rows.push((prompt.clone(), demonstration(&spec, &mut rng).join(" ")));
        }
    }
    rows
}

#[test]
fn bradley_terry_probabilities() {
    // σ(1) = 0.7311, σ(3) = 0.9526, σ(0) = 0.5; τ scales the gap.
    assert!((preference_probability(1.0, 0.0, 1.0) - 0.731_058_6).abs() < 1e-6);
    assert!((preference_probability(3.0, 0.0, 1.0) - 0.952_574_1).abs() < 1e-6);
    assert_eq!(preference_probability(2.0, 2.0, 1.0), 0.5);
    assert!((preference_probability(2.0, 0.0, 2.0) - 0.731_058_6).abs() < 1e-6);
}

#[test]
fn labels_are_reproducible_and_mostly_follow_large_gaps() {
    let rows = two_samples_per_prompt(1000);
    let (a, stats) = label_samples(&rows, 1.0, 7);
    let (b, _) = label_samples(&rows, 1.0, 7);
    let (c, _) = label_samples(&rows, 1.0, 8);
    assert_eq!(a, b, "same seed, same labels");
    assert_ne!(a, c, "another seed draws other labels");
    // Prompts are grouped by text, and the generator can repeat a prompt text (a repeated
    // prompt then has four responses, i.e. two pairs).
    assert_eq!((stats.samples, stats.unpaired), (2000, 0));
    assert!(stats.prompts <= 1000 && stats.prompts > 950, "{stats:?}");
    assert_eq!(stats.pairs + stats.skipped_identical, 1000);
    println!("{stats:?}");

    let big: Vec<_> = a.iter().filter(|p| (p.score_chosen - p.score_rejected).abs() >= 3.0).collect();
    let right = big.iter().filter(|p| p.score_chosen > p.score_rejected).count();
    assert!(big.len() > 300, "{} pairs with a gap ≥ 3", big.len());
    // Expected ≥ 95% (σ(3)); labels are noisy, but not that noisy.
    assert!(right as f64 > 0.9 * big.len() as f64, "{right}/{}", big.len());
    // Some small-gap pairs go the "wrong" way: the labels are noisy like human judgements.
    let wrong = a.iter().filter(|p| p.score_chosen < p.score_rejected).count();
    assert!(wrong > 20, "{wrong} pairs labelled against the gold score");
    assert!(stats.agree_with_gold > 0.75 && stats.agree_with_gold < 0.98, "{}", stats.agree_with_gold);
}

#[test]
fn single_pair_labelling_keeps_texts_and_scores_together() {
    let prompt = "write 16 words about the ocean";
    let good = "the calm whale rests near the quiet reef and a small crab sleeps under the white boat";
    let bad = "zebra zebra zebra";
    let mut rng = SplitMix64::new(3);
    let p = label_pair(prompt, good, bad, 1.0, &mut rng);
    // A ~16-point gap: the good one wins with probability 1 − 1e-7.
    assert_eq!((p.chosen.as_str(), p.rejected.as_str()), (good, bad));
    assert_eq!(p.score_chosen, rto_task::gold_score(prompt, good));
    assert_eq!(p.score_rejected, rto_task::gold_score(prompt, bad));
}

#[test]
fn rto_data_reads_the_pairs_we_write() {
    let rows = two_samples_per_prompt(20);
    let (pairs, _) = label_samples(&rows, 1.0, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    write_pairs_jsonl(&path, &pairs).unwrap();
    let read = read_preference_pairs(&path, &ColumnNames::default()).unwrap();
    assert_eq!(read.len(), pairs.len());
    for (r, p) in read.iter().zip(&pairs) {
        assert_eq!(r.prompt.display_text(), p.prompt);
        assert_eq!((&r.chosen, &r.rejected), (&p.chosen, &p.rejected));
        assert_eq!((r.score_chosen, r.score_rejected), (Some(p.score_chosen), Some(p.score_rejected)));
    }
}

#[test]
fn win_rate_counts_ties_as_half() {
    // win, tie, loss, win → (1 + 0.5 + 0 + 1) / 4
    assert_eq!(win_rate(&[2.0, 1.0, 0.0, 5.0], &[1.0, 1.0, 3.0, -5.0]).unwrap(), 0.625);
    assert_eq!(win_rate(&[1.0], &[1.0]).unwrap(), 0.5);
    assert!(win_rate(&[1.0], &[1.0, 2.0]).unwrap_err().to_string().contains("paired"));
    assert!(win_rate(&[], &[]).is_err());
    assert!(win_rate(&[f64::NAN], &[0.0]).unwrap_err().to_string().contains("NaN"));
}
