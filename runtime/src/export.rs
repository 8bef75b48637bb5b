//! `grail export`: writes the base model, a local weight file over it, or a checkpoint the
//! network published (fetched and verified as miners do, [`crate::published`]) as a
//! Hugging Face model directory ([`policy::export`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use messages::{CheckpointKind, Hash32};
use policy::checkpoint::WeightSet;
use policy::export::{
    export_hf_dir, CardCheckpoint, ExportDtype, ExportModel, ExportSummary, ModelCard,
};
use policy::{LoadOptions, LoadedModel};

/// What to export and where.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub out: PathBuf,
    /// `tiny` (the deterministic tiny Qwen2 model), an HF model directory or a `.gguf` file.
    pub model: Option<String>,
    /// A weight file (safetensors, HF names: a trainer's staged checkpoint) to export over
    /// `--model`'s architecture and tokenizer.
    pub weights: Option<PathBuf>,
    /// A published checkpoint: `latest`, a seq or a weight-digest prefix.
    pub checkpoint: Option<String>,
    pub config: Option<PathBuf>,
    pub url: Option<String>,
    /// `None`: the weights' own dtype (bf16 when every tensor is bf16, as a bf16 network's
    /// checkpoints are; else f32), so nothing is rounded.
    pub dtype: Option<ExportDtype>,
    /// `grail eval --json` reports to put in the model card.
    pub eval_json: Vec<PathBuf>,
}

fn load_base(spec: &str) -> anyhow::Result<LoadedModel> {
    let tiny_dir;
    let path = if spec == "tiny" {
        tiny_dir = tempfile::tempdir().context("creating a directory for the tiny model")?;
        policy::write_tiny_model(tiny_dir.path(), policy::Arch::Qwen2, crate::eval::TINY_SEED)?;
        tiny_dir.path().to_path_buf()
    } else {
        PathBuf::from(spec)
    };
    // f32 on the CPU: the weights are written as they are, nothing is run.
    policy::load_model(&path, &LoadOptions::default()).with_context(|| {
        format!("--model {spec:?}: expected `tiny`, an HF model directory or a .gguf file")
    })
}

fn read_evals(files: &[PathBuf]) -> anyhow::Result<Vec<serde_json::Value>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--eval-json {}: cannot read", f.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "--eval-json {}: not JSON (write it with `grail eval --json > FILE`)",
                    f.display()
                )
            })?;
            anyhow::ensure!(
                value.get("env").is_some() && value.get("greedy").is_some(),
                "--eval-json {}: not a `grail eval --json` report (no `env`/`greedy`)",
                f.display()
            );
            Ok(value)
        })
        .collect()
}

fn digest_hex(weights: &WeightSet) -> anyhow::Result<String> {
    Ok(Hash32::from(policy::checkpoint::digest(weights)?).to_string())
}

/// Runs the export, printing what it does on stderr.
pub fn run(opts: &ExportOptions) -> anyhow::Result<ExportSummary> {
    let evals = read_evals(&opts.eval_json)?;
    match (&opts.checkpoint, &opts.model) {
        (Some(selector), None) => export_published(opts, selector, evals),
        (None, Some(spec)) => {
            let base = load_base(spec)?;
            let base_weights: WeightSet = base.weights.clone().into_iter().collect();
            let base_digest = digest_hex(&base_weights)?;
            let mut card = ModelCard {
                source: spec.clone(),
                base_model: Some(format!("{spec} (weight digest `{base_digest}`)")),
                evals,
                ..Default::default()
            };
            let weights = match &opts.weights {
                Some(file) => {
                    let w = policy::checkpoint::load_safetensors(file)
                        .with_context(|| format!("--weights {}", file.display()))?;
                    card.source = format!("{} over {spec}", file.display());
                    card.lineage = vec![
                        format!("base model {spec} (weight digest `{base_digest}`)"),
                        format!(
                            "weights {} (weight digest `{}`)",
                            file.display(),
                            digest_hex(&w)?
                        ),
                    ];
                    w
                }
                None => base_weights,
            };
            let model = ExportModel {
                config: &base.config,
                weights: &weights,
                tokenizer: &base.tokenizer,
                chat_template: base.chat_template.as_deref(),
                eos_ids: &base.eos_ids,
                pad_id: base.pad_id,
            };
            write(&opts.out, &model, opts.dtype, &card)
        }
        (Some(_), Some(_)) => anyhow::bail!(
            "give --model (a model on disk) or --checkpoint (a published one), not both"
        ),
        (None, None) => anyhow::bail!(
            "nothing to export: give --model tiny|DIR|FILE.gguf or --checkpoint latest|SEQ|DIGEST --config cluster.toml"
        ),
    }
}

fn write(
    out: &Path,
    model: &ExportModel<'_>,
    dtype: Option<ExportDtype>,
    card: &ModelCard,
) -> anyhow::Result<ExportSummary> {
    let all_bf16 = model
        .weights
        .values()
        .all(|t| t.dtype() == candle_core::DType::BF16);
    let dtype = dtype.unwrap_or(if all_bf16 {
        ExportDtype::Bf16
    } else {
        ExportDtype::F32
    });
    export_hf_dir(out, model, dtype, card)
        .with_context(|| format!("exporting to {} (--out)", out.display()))
}

fn export_published(
    opts: &ExportOptions,
    selector: &str,
    evals: Vec<serde_json::Value>,
) -> anyhow::Result<ExportSummary> {
    let config = opts.config.as_deref().context(
        "--checkpoint needs the network's cluster.toml (--config FILE): its owner, model and store",
    )?;
    anyhow::ensure!(
        opts.weights.is_none(),
        "--weights goes with --model, not --checkpoint"
    );
    let cfg = crate::config::ClusterConfig::load(config)?;
    let selector = selector
        .parse()
        .map_err(|e| anyhow::anyhow!("--checkpoint {e}"))?;
    let p = crate::published::fetch(
        &cfg,
        opts.url.as_deref(),
        &selector,
        policy::DeviceSpec::Cpu,
    )?;
    // The book verified the object and weight digests on load; check again what is written.
    let weights = &p.checkpoint.weights.0;
    let digest = Hash32::from(policy::checkpoint::digest(weights)?);
    anyhow::ensure!(
        digest == p.announce.checkpoint,
        "checkpoint #{} reconstructs to weight digest {digest}, but was announced as {}: refusing to export it",
        p.announce.seq,
        p.announce.checkpoint
    );
    let kind = match &p.announce.kind {
        CheckpointKind::Full => "full weights".to_string(),
        CheckpointKind::Delta { base, anchor } => {
            format!("delta on `{base}` (chain anchor `{anchor}`)")
        }
    };
    let mut lineage = Vec::new();
    if let Some(spec) = &p.manifest.model {
        lineage.push(format!(
            "base model {} (weight digest `{}`)",
            spec.source, spec.base_checkpoint
        ));
    }
    if let CheckpointKind::Delta { base, anchor } = &p.announce.kind {
        if anchor != base {
            lineage.push(format!("anchor checkpoint `{anchor}`"));
        }
        lineage.push(format!("parent checkpoint `{base}`"));
    }
    lineage.push(format!(
        "checkpoint #{} `{}`, valid from window {}",
        p.announce.seq, p.announce.checkpoint, p.announce.valid_from_window
    ));
    let card = ModelCard {
        source: format!(
            "checkpoint #{} of network {}",
            p.announce.seq, p.manifest.network_id
        ),
        network: Some(p.manifest.network_id.clone()),
        checkpoint: Some(CardCheckpoint {
            seq: p.announce.seq,
            digest: p.announce.checkpoint.to_string(),
            valid_from_window: p.announce.valid_from_window,
            kind,
        }),
        base_model: p
            .manifest
            .model
            .as_ref()
            .map(|m| format!("{} (weight digest `{}`)", m.source, m.base_checkpoint)),
        lineage,
        evals,
    };
    let base = &p.base;
    let model = ExportModel {
        config: &base.config,
        weights,
        tokenizer: &base.tokenizer,
        chat_template: base.chat_template.as_deref(),
        eos_ids: &base.eos_ids,
        pad_id: base.pad_id,
    };
    write(&opts.out, &model, opts.dtype, &card)
}
