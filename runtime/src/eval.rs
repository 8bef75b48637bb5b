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

pub use actors::compute::model::evaluate::{pass_at_k, reported_ks, Scores};

use actors::compute::model::evaluate::{evaluate, EvalPlan};
use actors::compute::model::ModelBase;
use anyhow::Context;
use envs::{EnvSpec, Environment, Split};
use policy::{DeviceSpec, Model};
use serde::Serialize;

/// The tiny model `--model tiny` means: the one `grail up`'s default cluster trains.
pub const TINY_SEED: u64 = 7;

/// What to evaluate and how.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// `tiny` (the deterministic tiny Qwen2 model), an HF model directory or a `.gguf` file.
    pub model: Option<String>,
    /// A published checkpoint instead (`latest`, a seq or a digest prefix), fetched and
    /// verified from the network `config` describes (at `url`, or the running `grail up`'s).
    pub checkpoint: Option<String>,
    pub config: Option<PathBuf>,
    pub url: Option<String>,
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
    pub device: DeviceSpec,
    /// Print the first `show` problems' greedy completions on stderr (to see what it says).
    pub show: u64,
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
fn load_model(spec: &str, device: DeviceSpec) -> anyhow::Result<(ModelBase, Model)> {
    let opts = device.load_options()?;
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
    let base = ModelBase::from_loaded(loaded, opts.dtype)?;
    Ok((base, model))
}

/// The model to score: built from `--model`, or a published checkpoint (`--checkpoint`).
struct Scored {
    label: String,
    base: Arc<ModelBase>,
    model: Model,
}

fn scored_model(opts: &EvalOptions) -> anyhow::Result<Scored> {
    match (&opts.checkpoint, &opts.model) {
        (Some(selector), None) => {
            let config = opts.config.as_deref().context(
                "--checkpoint needs the network's cluster.toml (--config FILE): its owner, model and store",
            )?;
            let cfg = crate::config::ClusterConfig::load(config)?;
            let selector = selector
                .parse()
                .map_err(|e| anyhow::anyhow!("--checkpoint {e}"))?;
            let p = crate::published::fetch(&cfg, opts.url.as_deref(), &selector, opts.device)?;
            let label = format!(
                "checkpoint #{} {} of network {}",
                p.announce.seq, p.announce.checkpoint, p.manifest.network_id
            );
            let model = p.base.build_model(&p.checkpoint.weights.0, &label)?;
            Ok(Scored {
                label,
                base: p.base,
                model,
            })
        }
        (None, Some(spec)) => {
            let (base, model) = load_model(spec, opts.device)?;
            Ok(Scored {
                label: spec.clone(),
                base: Arc::new(base),
                model,
            })
        }
        (Some(_), Some(_)) => anyhow::bail!(
            "give --model (a model on disk) or --checkpoint (a published one), not both"
        ),
        (None, None) => anyhow::bail!(
            "nothing to evaluate: give --model tiny|DIR|FILE.gguf or --checkpoint latest|SEQ|DIGEST --config cluster.toml"
        ),
    }
}

/// Runs the evaluation, printing progress on stderr.
pub fn run(opts: &EvalOptions) -> anyhow::Result<EvalReport> {
    let params = parse_params(&opts.params)?;
    let cfg = match (&opts.data_dir, &opts.config) {
        (None, Some(config)) => Some(crate::config::ClusterConfig::load(config)?),
        _ => None,
    };
    let spec = EnvSpec {
        id: opts.env.clone(),
        data_dir: Some(crate::datasets::data_dir(
            opts.data_dir.as_deref(),
            cfg.as_ref(),
        )),
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
    let plan = EvalPlan {
        problems,
        samples: opts.samples,
        seed: opts.seed,
        max_new_tokens: opts.max_new_tokens,
        temperature: opts.temperature,
    };
    let scored = scored_model(opts)?;
    let started = Instant::now();
    let every = (problems / 20).max(1);
    let evaluation = evaluate(
        &scored.base,
        &scored.model,
        env.as_ref(),
        &plan,
        &mut |done| {
            if done.index < opts.show {
                eprintln!(
                    "eval {}: greedy completion: {:?} (success {}, reward {:.3})",
                    done.problem.id, done.greedy_text, done.greedy.success, done.greedy.total
                );
            }
            if (done.index + 1) % every == 0 || done.index + 1 == problems {
                eprintln!(
                    "eval {}: {}/{problems} problems, pass@1 greedy {:.3}{}, {:.1}s",
                    opts.env,
                    done.index + 1,
                    done.greedy_so_far.pass_at_1,
                    done.sampled_so_far
                        .map(|s| format!(" sampled {:.3}", s.pass_at_1))
                        .unwrap_or_default(),
                    started.elapsed().as_secs_f64()
                );
            }
        },
    )
    .with_context(|| format!("evaluating {}", scored.label))?;
    Ok(EvalReport {
        model: scored.label,
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
        greedy: evaluation.greedy,
        sampled: evaluation.sampled,
        pass_at_k: evaluation
            .pass_at_k
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
    })
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
    fn params_parse_as_json_values_or_strings() {
        let params = parse_params(&["split=train".into(), "max_operand=99".into()]).unwrap();
        assert_eq!(params["split"], "train");
        assert_eq!(params["max_operand"], 99);
        let error = parse_params(&["split".into()]).unwrap_err().to_string();
        assert!(error.contains("KEY=VALUE"), "{error}");
    }
}
