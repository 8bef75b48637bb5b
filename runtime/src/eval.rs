//! `grail eval`: scores a model on an environment's held-out eval split ([`envs::Split::Eval`]).
//!
//! For each of the first `limit` eval problems it generates one greedy completion (temperature
//! 0) and `samples` sampled ones (one batched group per problem, [`generate_group`], the
//! miners' seeded Gumbel-max rule under `temperature` with keys derived from `--seed`), scores
//! them with the environment and reports pass@1 (greedy and sampled), the unbiased pass@k
//! (Chen et al. 2021) for k = 1, 2, 4, … ≤ samples, mean reward and its components, and mean
//! completion length. Everything in the report is a function of (model, env + params, split,
//! limit, samples, seed, max new tokens, temperature): two runs print identical JSON. Wall time
//! goes to stderr and the table only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actors::compute::model::{sampling_params, ModelBase, SeededSampler};
use anyhow::Context;
use envs::{EnvSpec, Environment, Problem, Split};
use messages::SamplingSpec;
use policy::generate::{generate_group, GeneratedSequence, Greedy, GroupRequest, TokenSampler};
use policy::{LoadOptions, Model};
use serde::Serialize;

/// The tiny model `--model tiny` means: the one `grail up`'s default cluster trains.
pub const TINY_SEED: u64 = 7;

/// What to evaluate and how.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// `tiny` (the deterministic tiny Qwen2 model), an HF model directory or a `.gguf` file.
    pub model: String,
    pub env: String,
    /// `--param k=v` pairs (values parsed as JSON when they parse, else strings).
    pub params: Vec<String>,
    pub data_dir: Option<PathBuf>,
    /// Eval problems scored: the first `limit` of the split (0 = all of a data env's split).
    pub limit: u64,
    /// Sampled completions per problem (k of pass@k); 0 = greedy only.
    pub samples: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
    pub temperature: f32,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Print the first `show` problems' greedy completions on stderr (to see what it says).
    pub show: u64,
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

/// The `--json` report (fully deterministic: no timings).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub env: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub split: Split,
    /// Size of the eval split (`null` for procedural envs).
    pub split_size: Option<u64>,
    /// The configured training rows intersect the eval split (e.g. `humaneval`).
    pub train_overlaps_eval: bool,
    pub problems: u64,
    pub samples: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub greedy: Scores,
    /// `null` when `--samples 0`.
    pub sampled: Option<Scores>,
    /// Unbiased pass@k over the sampled completions, by k.
    pub pass_at_k: BTreeMap<String, f64>,
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

/// Parses `--param k=v` (the value as JSON when it parses: numbers, booleans; else a string).
pub fn parse_params(
    pairs: &[String],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut params = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').with_context(|| {
            format!("--param {pair:?}: write it as KEY=VALUE, e.g. --param split=train")
        })?;
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        params.insert(key.trim().to_string(), value);
    }
    Ok(params)
}

/// Loads the model `--model` names (writing the tiny one to a temporary directory).
fn load_model(spec: &str, device: &str) -> anyhow::Result<(ModelBase, Model)> {
    let (device, dtype) = crate::compute::device_of(device)?;
    let opts = LoadOptions { device, dtype };
    let tiny_dir;
    let path = if spec == "tiny" {
        tiny_dir = tempfile::tempdir().context("creating a directory for the tiny model")?;
        policy::write_tiny_model(tiny_dir.path(), policy::Arch::Qwen2, TINY_SEED)?;
        tiny_dir.path().to_path_buf()
    } else {
        PathBuf::from(spec)
    };
    let loaded = policy::load_model(&path, &opts).with_context(|| {
        format!("--model {spec:?}: expected `tiny`, an HF model directory or a .gguf file")
    })?;
    let model = loaded.model.clone();
    let base = ModelBase::from_loaded(loaded, dtype)?;
    Ok((base, model))
}

/// Runs the evaluation, printing progress on stderr.
pub fn run(opts: &EvalOptions) -> anyhow::Result<EvalReport> {
    let params = parse_params(&opts.params)?;
    let spec = EnvSpec {
        id: opts.env.clone(),
        data_dir: opts.data_dir.clone(),
        params: params.clone(),
    };
    let env: Arc<dyn Environment> = envs::build(&spec)
        .with_context(|| format!("--env {} (fix --param/--data-dir)", opts.env))?;
    anyhow::ensure!(
        opts.max_new_tokens > 0,
        "--max-new-tokens must be at least 1"
    );
    let problems = match (env.eval_len(), opts.limit) {
        (Some(len), 0) => len,
        (Some(len), limit) => limit.min(len),
        (None, 0) => anyhow::bail!(
            "--limit 0 means the whole split, but `{}` is procedural (unbounded): give --limit N",
            opts.env
        ),
        (None, limit) => limit,
    };
    let sampling = sampling_params(&SamplingSpec {
        temperature: opts.temperature,
        ..SamplingSpec::default()
    })
    .with_context(|| format!("--temperature {}", opts.temperature))?;
    let (base, model) = load_model(&opts.model, &opts.device)?;
    let open = protocol::randomness::prf("grail-rs/eval-sampling", &[&opts.seed.to_le_bytes()]);

    let started = Instant::now();
    let (mut greedy, mut sampled) = (Tally::default(), Tally::default());
    let ks = reported_ks(opts.samples);
    let mut pass_sums = vec![0.0f64; ks.len()];
    let every = (problems / 20).max(1);
    for index in 0..problems {
        let problem = env.eval_problem(index);
        let prompt = base.prompt_tokens(&problem)?;
        let generate = |group_size: usize, sampler: &mut dyn TokenSampler| {
            let request = GroupRequest {
                prompt: &prompt,
                group_size,
                max_new_tokens: opts.max_new_tokens,
                eos_ids: &base.eos_ids,
            };
            generate_group(&model, &request, sampler)
                .with_context(|| format!("generating for eval problem {}", problem.id))
        };
        for sequence in generate(1, &mut Greedy)? {
            let reward = score(env.as_ref(), &base, &problem, &sequence)?;
            if index < opts.show {
                eprintln!(
                    "eval {}: greedy completion: {:?} (success {}, reward {:.3})",
                    problem.id,
                    base.completion_text(sequence.completion())?,
                    reward.success,
                    reward.total
                );
            }
            greedy.add(&reward, &sequence);
        }
        if opts.samples > 0 {
            let mut sampler = SeededSampler::new(
                open,
                [0; 32],
                index as u32,
                prompt.len(),
                sampling,
                opts.samples,
                base.eos_ids.first().copied().unwrap_or(0),
            );
            let mut correct = 0;
            for sequence in generate(opts.samples, &mut sampler)? {
                let reward = score(env.as_ref(), &base, &problem, &sequence)?;
                correct += usize::from(reward.success);
                sampled.add(&reward, &sequence);
            }
            for (sum, k) in pass_sums.iter_mut().zip(&ks) {
                *sum += pass_at_k(opts.samples, correct, *k);
            }
        }
        if (index + 1) % every == 0 || index + 1 == problems {
            eprintln!(
                "eval {}: {}/{problems} problems, pass@1 greedy {:.3}{}, {:.1}s",
                opts.env,
                index + 1,
                greedy.scores().pass_at_1,
                if opts.samples > 0 {
                    format!(" sampled {:.3}", sampled.scores().pass_at_1)
                } else {
                    String::new()
                },
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(EvalReport {
        model: opts.model.clone(),
        env: opts.env.clone(),
        params,
        split: Split::Eval,
        split_size: env.eval_len(),
        train_overlaps_eval: env.train_overlaps_eval(),
        problems,
        samples: opts.samples,
        seed: opts.seed,
        max_new_tokens: opts.max_new_tokens,
        temperature: opts.temperature,
        greedy: greedy.scores(),
        sampled: (opts.samples > 0).then(|| sampled.scores()),
        pass_at_k: ks
            .iter()
            .zip(&pass_sums)
            .map(|(k, sum)| (k.to_string(), sum / problems.max(1) as f64))
            .collect(),
    })
}

fn score(
    env: &dyn Environment,
    base: &ModelBase,
    problem: &Problem,
    sequence: &GeneratedSequence,
) -> anyhow::Result<envs::Reward> {
    let text = base.completion_text(sequence.completion())?;
    Ok(env.score(problem, &text))
}

/// The human-readable table.
pub fn table(report: &EvalReport, wall_s: f64) -> String {
    let mut out = format!(
        "grail eval  model {}  env {} ({} split, {} of {} problems)  seed {}  max_new_tokens {}\n",
        report.model,
        report.env,
        report.split,
        report.problems,
        report
            .split_size
            .map_or("unbounded".to_string(), |n| n.to_string()),
        report.seed,
        report.max_new_tokens,
    );
    if report.train_overlaps_eval {
        out.push_str("warning: this environment's training rows overlap its eval split\n");
    }
    let mut rows = vec![("greedy (T=0)".to_string(), &report.greedy)];
    if let Some(sampled) = &report.sampled {
        rows.push((format!("sampled (T={})", report.temperature), sampled));
    }
    out.push_str(&format!(
        "{:<16} {:>11} {:>8} {:>11} {:>11} {:>9}  components\n",
        "", "completions", "pass@1", "mean reward", "mean tokens", "truncated"
    ));
    for (name, scores) in rows {
        let components: Vec<String> = scores
            .components
            .iter()
            .map(|(name, value)| format!("{name} {value:.3}"))
            .collect();
        out.push_str(&format!(
            "{name:<16} {:>11} {:>8.3} {:>11.3} {:>11.1} {:>9.3}  {}\n",
            scores.completions,
            scores.pass_at_1,
            scores.mean_reward,
            scores.mean_completion_tokens,
            scores.truncated,
            components.join(", ")
        ));
    }
    if !report.pass_at_k.is_empty() {
        let mut ks: Vec<(usize, f64)> = report
            .pass_at_k
            .iter()
            .map(|(k, v)| (k.parse().unwrap_or(0), *v))
            .collect();
        ks.sort_by_key(|(k, _)| *k);
        let shown: Vec<String> = ks.iter().map(|(k, v)| format!("pass@{k} {v:.3}")).collect();
        out.push_str(&format!("{}\n", shown.join("  ")));
    }
    out.push_str(&format!("wall time {wall_s:.1}s\n"));
    out
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

    #[test]
    fn params_parse_as_json_values_or_strings() {
        let params = parse_params(&["split=train".into(), "max_operand=99".into()]).unwrap();
        assert_eq!(params["split"], "train");
        assert_eq!(params["max_operand"], 99);
        let error = parse_params(&["split".into()]).unwrap_err().to_string();
        assert!(error.contains("KEY=VALUE"), "{error}");
    }
}
