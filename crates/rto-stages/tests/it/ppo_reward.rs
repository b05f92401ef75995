//! The reward as ppo-train computes it: per-token rewards through the rollout path equal the
//! DESIGN.md §4 formula for every mode (and `rto_algo::compose`, which annotate shares), the
//! sentence reward sits on the last token only, padding gets nothing, and the rollout table
//! holds exactly the rewards PPO trains on.

use crate::ppo_common::*;
use rto_algo::{compose, GroupEstimator, RewardMode, RewardWeights, TokenRewardInputs};
use rto_data::token_table::read_table;
use rto_model::packing::ForwardBatch;
use rto_model::{response_logprobs, sequence_scores, CausalLm, Head, SamplingConfig, SequenceBatch, TextTokenizer};
use rto_stages::rollout::{
    collect, score_responses, AdvantageEstimator, EncodedPrompt, RolloutConfig, RolloutModels, RolloutTable,
};
use rto_stages::token_scoring::{RewardModels, Sources};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

struct Loaded {
    scorers: RewardModels,
    policy: CausalLm,
    critic: CausalLm,
    tokenizer: TextTokenizer,
}

/// The fixture with a policy whose weights are scaled up, so log-probs differ per token.
fn load(dir: &Path) -> Loaded {
    let policy_dir = policy(&dir.join("policy"), 11, 25.0);
    let dpo = dpo_model(&dir.join("dpo"));
    let rm = reward_model(&dir.join("rm"));
    Loaded {
        scorers: RewardModels::load(&policy_dir, Some(&dpo), Some(&rm), Device::Cpu, tch::Kind::Float).unwrap(),
        policy: CausalLm::load(&policy_dir, Head::LanguageModel, Device::Cpu, Kind::Float).unwrap(),
        critic: CausalLm::load_as_value_model(&rm, Device::Cpu, tch::Kind::Float).unwrap(),
        tokenizer: TextTokenizer::from_dir(&policy_dir).unwrap(),
    }
}

impl Loaded {
    fn models(&self) -> RolloutModels<'_> {
        RolloutModels {
            policy: &self.policy,
            critic: Some(&self.critic),
            scorers: &self.scorers,
            tokenizer: &self.tokenizer,
        }
    }
}

fn host(t: &Tensor) -> Vec<Vec<f64>> {
    Vec::<Vec<f64>>::try_from(&t.to_kind(Kind::Double)).unwrap()
}

/// DESIGN.md §4 by hand, for one row of length `len`.
fn expected_row(mode: RewardMode, w: &RewardWeights, lp: [&[f64]; 3], score: f64, len: usize) -> Vec<f64> {
    let [policy, reference, dpo] = lp;
    let beta1 = if mode == RewardMode::Ppo { 0.0 } else { w.beta1 };
    let beta3 = if mode == RewardMode::DpoOnly { 0.0 } else { w.beta3 };
    let dpo_token: Vec<f64> = (0..len).map(|h| (beta1 * (dpo[h] - reference[h])).clamp(-w.clip, w.clip)).collect();
    let total: f64 = dpo_token.iter().sum();
    (0..len)
        .map(|h| {
            let last = if h + 1 == len { 1.0 } else { 0.0 };
            let dpo_part = match mode {
                RewardMode::Ddpo => last * total,
                RewardMode::RsPpo => dpo_token[h] - last * total,
                _ => dpo_token[h],
            };
            dpo_part - w.beta2 * (policy[h] - reference[h]) + last * beta3 * score.clamp(-w.rm_clamp, w.rm_clamp)
        })
        .collect()
}

#[test]
fn token_rewards_follow_the_formula_for_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path());
    // Row 1 is shorter: its columns 1 and 2 are padding.
    let batch =
        SequenceBatch::new(&[vec![20, 21, 22], vec![23, 24]], &[vec![TARGET, 30, EOS], vec![31]], 0, Device::Cpu)
            .unwrap();
    let weights = RewardWeights { beta2: 0.1, ..RewardWeights::default() };
    let lp = |m: &CausalLm| host(&response_logprobs(m, &batch, false).logprobs);
    let (lp_policy, lp_ref, lp_dpo) =
        (lp(&loaded.policy), lp(&loaded.scorers.reference), lp(loaded.scorers.dpo.as_ref().unwrap()));
    let scores = Vec::<f64>::try_from(
        &sequence_scores(loaded.scorers.reward_model.as_ref().unwrap(), &batch).to_kind(Kind::Double),
    )
    .unwrap();
    assert!((lp_dpo[0][0] - lp_ref[0][0]) * 0.05 > 0.05, "the fixture's DPO model should favor TARGET");
    for mode in RewardMode::ALL {
        let scored = score_responses(&loaded.models(), &(&batch).into(), None, mode, &weights).unwrap();
        let rewards = &scored.scores.rewards;
        let reward = host(&rewards.reward);
        for (row, &len) in batch.response_lengths.iter().enumerate() {
            let expected =
                expected_row(mode, &weights, [&lp_policy[row], &lp_ref[row], &lp_dpo[row]], scores[row], len as usize);
            for (h, e) in expected.iter().enumerate() {
                assert!((reward[row][h] - e).abs() < 1e-6, "{mode} row {row} token {h}: {} vs {e}", reward[row][h]);
            }
        }
        assert_eq!(reward[1][1..], [0.0, 0.0], "{mode}: padding must earn nothing");
        let inputs = TokenRewardInputs {
            logp_ref: &scored.scores.logp_ref,
            logp_dpo: scored.scores.logp_dpo.as_ref(),
            logp_policy: scored.scores.logp_policy.as_ref(),
            sentence_reward: scored.scores.sentence_reward.as_ref(),
            mask: &batch.response_mask,
        };
        let composed = compose(mode, &weights, &inputs).unwrap();
        assert!(composed.reward.equal(&rewards.reward), "{mode}: ppo's reward differs from rto_algo::compose");
        let sentence = host(&rewards.sentence_reward);
        let s = if mode == RewardMode::DpoOnly { [0.0, 0.0] } else { [scores[0], scores[1]] };
        assert_eq!(
            sentence,
            vec![vec![0.0, 0.0, s[0] as f32 as f64], vec![s[1] as f32 as f64, 0.0, 0.0]],
            "{mode}: sentence reward on the last token only"
        );
    }
    let padded = score_responses(&loaded.models(), &(&batch).into(), None, RewardMode::Rto, &weights).unwrap();
    let values = host(padded.values.as_ref().unwrap());
    assert_eq!(values[1][1..], [0.0, 0.0], "padding has no value");
    // --packing-samples: the same rewards, values and entropies within float rounding, and
    // every model's forward timed.
    let forward = ForwardBatch::new(&batch, true, 0).unwrap();
    let packed = score_responses(&loaded.models(), &forward, None, RewardMode::Rto, &weights).unwrap();
    for (what, a, b) in [
        ("reward", &packed.scores.rewards.reward, &padded.scores.rewards.reward),
        ("values", packed.values.as_ref().unwrap(), padded.values.as_ref().unwrap()),
        ("entropy", &packed.entropy, &padded.entropy),
    ] {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "packed {what} differs from padded by {diff:e}");
    }
    let timed: Vec<&str> = packed.times.seconds.keys().copied().collect();
    assert_eq!(timed, ["critic", "dpo", "policy", "reference", "reward_model"]);
}

const SOURCES: Sources = Sources { dpo: true, policy: true, reward_model: true };

fn rollout_config(sampling: SamplingConfig, samples_per_prompt: usize) -> RolloutConfig {
    RolloutConfig {
        sampling,
        generation_batch: 4,
        forward_batch: 4,
        samples_per_prompt,
        mode: RewardMode::Rto,
        weights: RewardWeights::default(),
        pad_id: 0,
        seed: 5,
        packing: false,
        sampler_logprobs: false,
    }
}

fn prompts(n: usize) -> Vec<EncodedPrompt> {
    (0..n)
        .map(|i| EncodedPrompt {
            id: format!("p{i}"),
            text: format!("w{}", 20 + i),
            ids: vec![20 + i as i64, 40 + i as i64],
        })
        .collect()
}

#[test]
fn rollout_table_holds_the_rewards_ppo_trains_on() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path());
    let sampling = SamplingConfig { max_new_tokens: 6, stop_ids: vec![EOS], ..SamplingConfig::default() };
    let config = rollout_config(sampling, 1);
    let table_dir = dir.path().join("rollouts");
    let mut table =
        RolloutTable::create(&table_dir, &loaded.tokenizer, SOURCES, 3, 100, false, BTreeMap::new()).unwrap();
    let (mut experience, _) = collect(&loaded.models(), prompts(6), &config, Some(&mut table), None).unwrap();
    experience.compute_advantages(AdvantageEstimator::Gae { gamma: 1.0, lambda: 0.95 }, Device::Cpu).unwrap();
    table.finish(&experience).unwrap();
    let rows = read_table(&table_dir).unwrap();
    assert_eq!(rows.len(), 6);
    for (i, (sample, tokens)) in rows.iter().enumerate() {
        let ours = &experience.samples[i];
        assert_eq!(
            (sample.sample_id, sample.iteration, sample.prompt_id.as_str(), sample.group),
            (100 + i as u64, Some(3), format!("p{i}").as_str(), Some(i as u32))
        );
        let advantages: Vec<f32> = tokens.iter().map(|t| t.advantage.unwrap()).collect();
        assert_eq!(advantages, ours.advantages, "sample {i}: table advantage != trained advantage");
        assert_eq!(tokens.iter().map(|t| t.token_id as i64).collect::<Vec<_>>(), ours.response);
        assert_eq!(
            tokens.iter().map(|t| t.reward).collect::<Vec<_>>(),
            ours.rewards,
            "sample {i}: table reward != trained reward"
        );
        assert_eq!(tokens.iter().map(|t| t.logp_policy.unwrap()).collect::<Vec<_>>(), ours.logp_old);
        let (last, rest) = tokens.split_last().unwrap();
        assert!(
            rest.iter().all(|t| t.sentence_reward == Some(0.0)),
            "sample {i}: sentence reward before the last token"
        );
        assert_eq!(sample.sentence_reward, last.sentence_reward);
        assert_eq!(ours.finished, last.token_id as i64 == EOS, "sample {i}: EOS ends a finished response");
    }
    // Same seed, same responses: what a resumed run relies on.
    let (again, _) = collect(&loaded.models(), prompts(6), &config, None, None).unwrap();
    assert!(again.samples.iter().zip(&experience.samples).all(|(a, b)| a.response == b.response));
    let advantages: Vec<f64> = experience.samples.iter().flat_map(|s| s.advantages.iter().map(|&a| a as f64)).collect();
    let mean = advantages.iter().sum::<f64>() / advantages.len() as f64;
    let var = advantages.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / advantages.len() as f64;
    assert!(
        mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
        "advantages whitened over the buffer: mean {mean}, var {var}"
    );
    for s in &experience.samples {
        assert_eq!((s.returns.len(), s.advantages.len()), (s.response.len(), s.response.len()));
    }
}

#[test]
fn k_responses_per_prompt_form_groups_in_the_rollout_and_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path());
    let sampling = SamplingConfig { max_new_tokens: 6, stop_ids: vec![EOS], ..SamplingConfig::default() };
    // 3 prompts × K = 2, generated 4 prompts (8 rows) per call: one call.
    let config = rollout_config(sampling, 2);
    let table_dir = dir.path().join("rollouts");
    let mut table = RolloutTable::create(&table_dir, &loaded.tokenizer, SOURCES, 1, 0, false, BTreeMap::new()).unwrap();
    let (mut experience, _) = collect(&loaded.models(), prompts(3), &config, Some(&mut table), None).unwrap();
    assert_eq!(experience.len(), 6);
    let groups: Vec<usize> = experience.samples.iter().map(|s| s.prompt).collect();
    assert_eq!(groups, [0, 0, 1, 1, 2, 2], "the K responses to a prompt are consecutive");
    assert!(
        experience.samples.chunks(2).any(|g| g[0].response != g[1].response),
        "the K rows of a prompt draw their own tokens"
    );
    let estimator = AdvantageEstimator::Group { estimator: GroupEstimator::Rloo, gamma: 1.0 };
    let metrics = experience.compute_advantages(estimator, Device::Cpu).unwrap();
    assert!(metrics.contains_key("group_return_std") && metrics.contains_key("flat_groups"), "{metrics:?}");
    // The advantages are rto_algo's RLOO on the padded buffer, in rollout order.
    let outcome = Tensor::from_slice(&experience.samples.iter().map(|s| s.outcome).collect::<Vec<f32>>());
    let want = GroupEstimator::Rloo
        .advantages(&experience.padded(|s| &s.rewards, Device::Cpu), &outcome, &experience.mask(Device::Cpu), 2, 1.0)
        .unwrap();
    let want = Vec::<Vec<f32>>::try_from(&want).unwrap();
    table.finish(&experience).unwrap();
    for (i, (sample, tokens)) in read_table(&table_dir).unwrap().iter().enumerate() {
        assert_eq!((sample.group, sample.prompt_id.as_str()), (Some(i as u32 / 2), format!("p{}", i / 2).as_str()));
        let advantages: Vec<f32> = tokens.iter().map(|t| t.advantage.unwrap()).collect();
        assert_eq!(advantages, want[i][..tokens.len()], "sample {i}");
        let outcome = experience.samples[i].outcome;
        assert_eq!(tokens.last().unwrap().sentence_reward, Some(outcome), "sample {i}: outcome = last sentence reward");
    }
}

#[test]
fn a_forward_batch_of_several_generation_batches_samples_and_scores_what_one_at_a_time_does() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(dir.path());
    let sampling = SamplingConfig { max_new_tokens: 6, stop_ids: vec![EOS], ..SamplingConfig::default() };
    // 10 prompts × K 2 in generation batches of 4 prompts (4, 4, 2): one forward per generation
    // batch, against forwards of 8 prompts (two generation batches, then the last one).
    let one_at_a_time = rollout_config(sampling.clone(), 2);
    let grouped = RolloutConfig { forward_batch: 8, ..rollout_config(sampling, 2) };
    let (a, stats_a) = collect(&loaded.models(), prompts(10), &one_at_a_time, None, None).unwrap();
    let (b, stats_b) = collect(&loaded.models(), prompts(10), &grouped, None, None).unwrap();
    assert_eq!((stats_a.forward_batches(), stats_b.forward_batches()), (3, 2), "forwards per rollout");
    assert_eq!(a.samples.len(), 20);
    let close = |x: &[f32], y: &[f32]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-5);
    for (i, (x, y)) in a.samples.iter().zip(&b.samples).enumerate() {
        // Each generation batch keeps the seed of its index: the very same tokens.
        assert_eq!((x.prompt, &x.response, x.finished), (y.prompt, &y.response, y.finished), "sample {i}");
        assert!(close(&x.rewards, &y.rewards), "sample {i}: rewards {:?} vs {:?}", x.rewards, y.rewards);
        assert!(close(&x.values, &y.values), "sample {i}: values");
        assert!(close(&x.logp_old, &y.logp_old), "sample {i}: old log-probs");
    }
    // The metrics are the same sums (of 2 instead of 3 batches).
    let (ma, mb) = (stats_a.metrics(), stats_b.metrics());
    for key in ["reward", "kl", "entropy", "response_length"] {
        assert!((ma[key] - mb[key]).abs() <= 1e-5, "{key}: {} vs {}", ma[key], mb[key]);
    }
}
