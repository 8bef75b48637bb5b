//! Held-out evaluation: one model on the first `problems` problems of an environment's eval
//! split ([`envs::Split::Eval`]). Shared by `grail eval` and the evaluator role, so a report
//! published on the bus can be re-run by anyone with the same numbers.
//!
//! Per problem: one greedy completion (temperature 0) and `samples` sampled ones (one batched
//! group, the miners' seeded Gumbel-max rule under `temperature`, keys derived from `seed`).
//! Everything returned is a function of (weights, env + params, plan): no timings.

use std::collections::BTreeMap;

use envs::{Environment, Problem};
use messages::SamplingSpec;
use policy::generate::{generate_group, GeneratedSequence, Greedy, GroupRequest, TokenSampler};
use policy::Model;
use serde::Serialize;

use super::{sampling_params, ModelBase, ModelComputeError, SeededSampler};

/// What to evaluate: which problems, how many samples, which seed.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPlan {
    /// The first `problems` problems of the eval split.
    pub problems: u64,
    /// Sampled completions per problem (k of pass@k); 0 = greedy only.
    pub samples: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
    pub temperature: f32,
}

/// Means over one kind of completion (greedy or sampled).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scores {
    pub completions: u64,
    /// Fraction of completions with `success` (exact answer / all tests pass).
    pub pass_at_1: f64,
    pub mean_reward: f64,
    /// Mean of each reward component the environment reports, by name.
    pub components: BTreeMap<String, f64>,
    /// Mean completion length in tokens (EOS included when emitted).
    pub mean_completion_tokens: f64,
    /// Fraction of completions cut at `max_new_tokens` without an EOS.
    pub truncated: f64,
}

impl Scores {
    /// The wire form (counts and means) of these scores.
    pub fn to_wire(&self) -> messages::EvalScores {
        messages::EvalScores {
            completions: self.completions as u32,
            successes: (self.pass_at_1 * self.completions as f64).round() as u32,
            mean_reward: self.mean_reward as f32,
            mean_completion_tokens: self.mean_completion_tokens as f32,
        }
    }
}

/// The result of one [`evaluate`] run.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub problems: u64,
    pub greedy: Scores,
    /// None when the plan has no samples.
    pub sampled: Option<Scores>,
    /// Unbiased pass@k over the sampled completions, by k (ascending).
    pub pass_at_k: Vec<(usize, f64)>,
}

/// One problem done, for progress output.
pub struct ProblemDone<'a> {
    pub index: u64,
    pub problem: &'a Problem,
    pub greedy_text: &'a str,
    pub greedy: &'a envs::Reward,
    pub greedy_so_far: &'a Scores,
    pub sampled_so_far: Option<&'a Scores>,
}

/// Sums behind [`Scores`].
#[derive(Default)]
struct Tally {
    completions: u64,
    successes: u64,
    reward: f64,
    components: BTreeMap<String, f64>,
    tokens: u64,
    truncated: u64,
}

impl Tally {
    fn add(&mut self, reward: &envs::Reward, sequence: &GeneratedSequence) {
        self.completions += 1;
        self.successes += u64::from(reward.success);
        self.reward += f64::from(reward.total);
        for (name, value) in &reward.components {
            *self.components.entry(name.clone()).or_default() += f64::from(*value);
        }
        self.tokens += sequence.completion_len as u64;
        self.truncated += u64::from(!sequence.ended_with_eos);
    }

    fn scores(&self) -> Scores {
        let n = self.completions.max(1) as f64;
        Scores {
            completions: self.completions,
            pass_at_1: self.successes as f64 / n,
            mean_reward: self.reward / n,
            components: self
                .components
                .iter()
                .map(|(name, sum)| (name.clone(), sum / n))
                .collect(),
            mean_completion_tokens: self.tokens as f64 / n,
            truncated: self.truncated as f64 / n,
        }
    }
}

/// Unbiased pass@k for `n` samples of which `c` are correct: `1 - C(n-c, k) / C(n, k)`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if k == 0 || k > n {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    // C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// The ks reported: 1, 2, 4, … below `samples`, and `samples` itself.
pub fn reported_ks(samples: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|k| *k < samples)
        .collect();
    if samples > 0 {
        ks.push(samples);
    }
    ks
}

/// Scores `model` (built on `base`) on `env`'s eval split; `on_problem` sees each problem as
/// it finishes. Compute-bound: call it on a worker thread.
pub fn evaluate(
    base: &ModelBase,
    model: &Model,
    env: &dyn Environment,
    plan: &EvalPlan,
    on_problem: &mut dyn FnMut(ProblemDone<'_>),
) -> Result<Evaluation, ModelComputeError> {
    let sampling = sampling_params(&SamplingSpec {
        temperature: plan.temperature,
        ..SamplingSpec::default()
    })?;
    let open = protocol::randomness::prf("grail-rs/eval-sampling", &[&plan.seed.to_le_bytes()]);
    let (mut greedy, mut sampled) = (Tally::default(), Tally::default());
    let ks = reported_ks(plan.samples);
    let mut pass_sums = vec![0.0f64; ks.len()];
    for index in 0..plan.problems {
        let problem = env.eval_problem(index);
        let prompt = base.prompt_tokens(&problem)?;
        let generate = |group_size: usize, sampler: &mut dyn TokenSampler| {
            let request = GroupRequest {
                prompt: &prompt,
                group_size,
                max_new_tokens: plan.max_new_tokens,
                eos_ids: &base.eos_ids,
            };
            generate_group(model, &request, sampler)
        };
        let sequence = generate(1, &mut Greedy)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ModelComputeError::Sampler("greedy generation returned nothing".into())
            })?;
        let greedy_text = base.completion_text(sequence.completion())?;
        let greedy_reward = env.score(&problem, &greedy_text);
        greedy.add(&greedy_reward, &sequence);
        if plan.samples > 0 {
            let mut sampler = SeededSampler::new(
                open,
                [0; 32],
                index as u32,
                prompt.len(),
                sampling,
                plan.samples,
                base.eos_ids.first().copied().unwrap_or(0),
            );
            let mut correct = 0;
            for sequence in generate(plan.samples, &mut sampler)? {
                let text = base.completion_text(sequence.completion())?;
                let reward = env.score(&problem, &text);
                correct += usize::from(reward.success);
                sampled.add(&reward, &sequence);
            }
            for (sum, k) in pass_sums.iter_mut().zip(&ks) {
                *sum += pass_at_k(plan.samples, correct, *k);
            }
        }
        let (greedy_so_far, sampled_so_far) = (greedy.scores(), sampled.scores());
        on_problem(ProblemDone {
            index,
            problem: &problem,
            greedy_text: &greedy_text,
            greedy: &greedy_reward,
            greedy_so_far: &greedy_so_far,
            sampled_so_far: (plan.samples > 0).then_some(&sampled_so_far),
        });
    }
    Ok(Evaluation {
        problems: plan.problems,
        greedy: greedy.scores(),
        sampled: (plan.samples > 0).then(|| sampled.scores()),
        pass_at_k: ks
            .iter()
            .zip(&pass_sums)
            .map(|(k, sum)| (*k, sum / plan.problems.max(1) as f64))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_the_closed_form() {
        assert_eq!(pass_at_k(4, 0, 1), 0.0);
        assert_eq!(pass_at_k(4, 4, 4), 1.0);
        assert!((pass_at_k(4, 1, 1) - 0.25).abs() < 1e-12);
        // 1 - C(2,2)/C(4,2) = 1 - 1/6
        assert!((pass_at_k(4, 2, 2) - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 3, 2), 1.0);
        assert_eq!(reported_ks(8), vec![1, 2, 4, 8]);
        assert_eq!(reported_ks(6), vec![1, 2, 4, 6]);
        assert!(reported_ks(0).is_empty());
    }
}
