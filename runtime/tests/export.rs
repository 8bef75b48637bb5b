//! `grail export` as a user runs it: the tiny base model, a weight file over it and a checkpoint
//! a running network published (fetched and verified like a miner does) come out as HF
//! directories that grail's own loader reads back with bit-identical logits and weights.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use common::{grail, model_cluster_toml, Up, EVERY_ROLE_ONCE};
use policy::checkpoint::{digest, load_safetensors, save_safetensors, WeightSet};
use policy::{load_model, write_tiny_model, Arch, LoadOptions, LoadedModel};

fn export(args: &[&str], out: &Path) -> Output {
    grail()
        .arg("export")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run grail export")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "grail export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn logit_bits(m: &LoadedModel) -> Vec<u32> {
    let ids: Vec<u32> = (0..24u32).map(|i| (i * 31 + 7) % 259).collect();
    let input = Tensor::new(ids.as_slice(), &m.device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let hidden = m.model.forward_hidden(&input).unwrap();
    let logits = m.model.logits(&hidden).unwrap();
    let flat: Vec<f32> = logits
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    flat.into_iter().map(f32::to_bits).collect()
}

fn weights_of(m: &LoadedModel) -> WeightSet {
    m.weights.clone().into_iter().collect()
}

#[test]
fn tiny_base_and_a_weight_file_export_and_load_back_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    // `--model tiny` is the tiny Qwen2 model with the seed `grail up` trains.
    let tiny = dir.path().join("tiny");
    write_tiny_model(&tiny, Arch::Qwen2, grail_runtime::eval::TINY_SEED).unwrap();
    let source = load_model(&tiny, &LoadOptions::default()).unwrap();

    let out = dir.path().join("base");
    let printed = ok(export(&["--model", "tiny"], &out));
    assert!(printed.contains("model.safetensors"), "{printed}");
    let exported = load_model(&out, &LoadOptions::default()).unwrap();
    assert!(logit_bits(&exported) == logit_bits(&source));
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    let base_digest = messages::Hash32::from(digest(&weights_of(&source)).unwrap()).to_string();
    assert!(card.contains("Not evaluated."), "{card}");
    assert!(card.contains(&base_digest[..16]), "base digest in {card}");

    // A trained weight set saved to a file, with an eval report for the card.
    let trained: WeightSet = weights_of(&source)
        .into_iter()
        .map(|(n, t)| {
            let moved = (&t + t.affine(0.05, 0.001).unwrap().cos().unwrap()).unwrap();
            (n, moved)
        })
        .collect();
    let file = dir.path().join("step.safetensors");
    save_safetensors(&trained, &file).unwrap();
    let eval = dir.path().join("eval.json");
    std::fs::write(
        &eval,
        serde_json::json!({"model": "tiny", "env": "arith", "problems": 4, "samples": 0,
            "seed": 0, "temperature": 1.0, "max_new_tokens": 8,
            "greedy": {"completions": 4, "pass_at_1": 0.25, "mean_reward": 0.5,
                       "mean_completion_tokens": 7.5},
            "sampled": null, "pass_at_k": {}})
        .to_string(),
    )
    .unwrap();
    let out = dir.path().join("trained");
    let file_arg = file.to_str().unwrap();
    let eval_arg = eval.to_str().unwrap();
    ok(export(
        &[
            "--model",
            "tiny",
            "--weights",
            file_arg,
            "--dtype",
            "f32",
            "--eval-json",
            eval_arg,
        ],
        &out,
    ));
    let exported = load_model(&out, &LoadOptions::default()).unwrap();
    assert_eq!(
        digest(&weights_of(&exported)).unwrap(),
        digest(&trained).unwrap()
    );
    assert!(logit_bits(&exported) != logit_bits(&source));
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains("`arith`") && card.contains("pass@1 0.2500"),
        "{card}"
    );
    assert!(card.contains("step.safetensors"), "{card}");

    let out = dir.path().join("bf16");
    ok(export(&["--model", "tiny", "--dtype", "bf16"], &out));
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("\"torch_dtype\": \"bfloat16\""), "{config}");

    // Errors name the flag at fault.
    let bad = export(&["--model", "tiny", "--dtype", "f8"], &dir.path().join("x"));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--dtype"));
    let bad = export(
        &["--model", "tiny", "--eval-json", file_arg],
        &dir.path().join("y"),
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--eval-json"));
}

#[test]
fn a_published_checkpoint_exports_with_its_announced_digest() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, model_cluster_toml(2, EVERY_ROLE_ONCE)).unwrap();
    let _up = Up::start(&config);
    let config_arg = config.to_str().unwrap();
    let out = dir.path().join("ckpt2");
    // Checkpoint #2 (an anchor after a delta) appears once the network has trained twice.
    let started = Instant::now();
    let printed = loop {
        let run = export(&["--checkpoint", "2", "--config", config_arg], &out);
        if run.status.success() {
            break String::from_utf8(run.stdout).unwrap();
        }
        let stderr = String::from_utf8_lossy(&run.stderr).to_string();
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "checkpoint 2 not exported within 240 s: {stderr}"
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    assert!(printed.contains("wrote"), "{printed}");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("checkpoint #2"), "{card}");
    let announced = card
        .lines()
        .find_map(|l| l.strip_prefix("- weight digest: `"))
        .and_then(|l| l.strip_suffix('`'))
        .unwrap_or_else(|| panic!("no digest line in {card}"))
        .to_string();
    // The file holds exactly the announced weights: its digest is the announced one.
    let written = load_safetensors(&out.join("model.safetensors")).unwrap();
    assert_eq!(
        messages::Hash32::from(digest(&written).unwrap()).to_string(),
        announced
    );
    let exported = load_model(&out, &LoadOptions::default()).unwrap();
    let base = load_model(
        &{
            let tiny = dir.path().join("tiny");
            write_tiny_model(&tiny, Arch::Qwen2, grail_runtime::eval::TINY_SEED).unwrap();
            tiny
        },
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(
        logit_bits(&exported) != logit_bits(&base),
        "checkpoint #2 is trained"
    );

    let missing = export(
        &["--checkpoint", "999", "--config", config_arg],
        &dir.path().join("none"),
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("not announced"), "{stderr}");
}
