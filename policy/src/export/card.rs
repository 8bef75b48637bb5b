//! The `README.md` model card: what the model is, where it came from and how it scored.

use std::fmt::Write;

use super::ExportDtype;
use crate::config::ModelConfig;

/// The published checkpoint an export holds.
#[derive(Clone, Debug, Default)]
pub struct CardCheckpoint {
    pub seq: u64,
    /// Hex of the canonical weight digest (what the network announced and miners verify).
    pub digest: String,
    pub valid_from_window: u64,
    /// `anchor` or `delta`.
    pub kind: String,
}

/// What the model card says beyond the architecture.
#[derive(Clone, Debug, Default)]
pub struct ModelCard {
    /// Where the weights came from (`--model` spec or checkpoint label).
    pub source: String,
    /// The network id, for a published checkpoint.
    pub network: Option<String>,
    pub checkpoint: Option<CardCheckpoint>,
    /// The base model the network trains (its path/description and digest), if known.
    pub base_model: Option<String>,
    /// Lineage lines, oldest first (e.g. base model → anchors → this checkpoint).
    pub lineage: Vec<String>,
    /// `grail eval --json` reports; empty = not evaluated.
    pub evals: Vec<serde_json::Value>,
}

fn number(v: &serde_json::Value) -> Option<String> {
    v.as_f64().map(|x| {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{x:.0}")
        } else {
            format!("{x:.4}")
        }
    })
}

/// One `grail eval --json` report as markdown lines.
fn render_eval(out: &mut String, report: &serde_json::Value) {
    let s = |k: &str| {
        report
            .get(k)
            .and_then(|v| v.as_str().map(str::to_string).or_else(|| number(v)))
            .unwrap_or_else(|| "?".into())
    };
    let _ = writeln!(
        out,
        "- `{}` (model {}): {} problems, {} samples each, seed {}, temperature {}, max {} new tokens",
        s("env"),
        s("model"),
        s("problems"),
        s("samples"),
        s("seed"),
        s("temperature"),
        s("max_new_tokens"),
    );
    for kind in ["greedy", "sampled"] {
        let Some(scores) = report.get(kind).filter(|v| v.is_object()) else {
            continue;
        };
        let field = |k: &str| scores.get(k).and_then(number).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "  - {kind}: pass@1 {}, mean reward {}, mean completion tokens {}",
            field("pass_at_1"),
            field("mean_reward"),
            field("mean_completion_tokens"),
        );
    }
    if let Some(ks) = report.get("pass_at_k").and_then(|v| v.as_object()) {
        let parts: Vec<String> = ks
            .iter()
            .filter_map(|(k, v)| number(v).map(|v| format!("pass@{k} {v}")))
            .collect();
        if !parts.is_empty() {
            let _ = writeln!(out, "  - {}", parts.join(", "));
        }
    }
}

impl ModelCard {
    /// The card's markdown (with the front matter the Hub reads).
    pub fn render(&self, cfg: &ModelConfig, dtype: ExportDtype, parameters: usize) -> String {
        let mut out = String::new();
        out.push_str("---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n- grail\n---\n\n");
        let title = match (&self.network, &self.checkpoint) {
            (Some(net), Some(c)) => format!("grail network `{net}`, checkpoint #{}", c.seq),
            (None, Some(c)) => format!("grail checkpoint #{}", c.seq),
            _ => format!("grail export of {}", self.source),
        };
        let _ = writeln!(out, "# {title}\n");
        let _ = writeln!(
            out,
            "{} ({}) with {} parameters: hidden {}, {} layers, {} heads ({} kv), vocabulary {}, \
             {} embeddings. Weights in {}. Exported by `grail export` from {}.\n",
            cfg.arch.hf_architecture(),
            cfg.arch.hf_model_type(),
            parameters,
            cfg.hidden_size,
            cfg.num_hidden_layers,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.vocab_size,
            if cfg.tie_word_embeddings {
                "tied"
            } else {
                "untied"
            },
            dtype.torch_name(),
            self.source,
        );
        out.push_str("## Provenance\n\n");
        if let Some(net) = &self.network {
            let _ = writeln!(out, "- network: `{net}`");
        }
        match &self.checkpoint {
            Some(c) => {
                let _ = writeln!(out, "- checkpoint seq: {}", c.seq);
                let _ = writeln!(out, "- weight digest: `{}`", c.digest);
                let _ = writeln!(out, "- valid from window: {}", c.valid_from_window);
                let _ = writeln!(out, "- stored as: {}", c.kind);
            }
            None => out.push_str("- checkpoint: none (base model weights)\n"),
        }
        if let Some(base) = &self.base_model {
            let _ = writeln!(out, "- base model: {base}");
        }
        if !self.lineage.is_empty() {
            out.push_str("\n## Lineage\n\n");
            for line in &self.lineage {
                let _ = writeln!(out, "- {line}");
            }
        }
        out.push_str("\n## Evaluation\n\n");
        if self.evals.is_empty() {
            out.push_str("Not evaluated.\n");
        } else {
            for report in &self.evals {
                render_eval(&mut out, report);
            }
        }
        out
    }
}
