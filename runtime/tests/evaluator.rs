//! The evaluator role as an operator runs it: `grail up` with `[roles.evaluator]` publishes a
//! signed held-out report for the base model (seq 0) and for an anchor checkpoint, the console
//! prints them, and `grail eval --checkpoint SEQ` — fetching and verifying the published
//! checkpoint as a miner does — reproduces the report's numbers exactly.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{grail, model_cluster_toml, Up, EVERY_ROLE_ONCE};

fn run_json(args: &[&str], config: &Path) -> String {
    let out = grail().args(args).arg(config).output().expect("run grail");
    assert!(
        out.status.success(),
        "grail {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn evaluator_reports_are_signed_shown_and_reproducible_from_the_published_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        model_cluster_toml(
            2,
            &format!(
                "{EVERY_ROLE_ONCE}[roles.evaluator]\ninstances = 1\n\
                 [evaluator]\nproblems = 6\nsamples = 2\nseed = 5\n"
            ),
        ),
    )
    .unwrap();
    let mut up = Up::start(&config);
    let base = up.wait_for("held-out eval | ckpt #0 ", Duration::from_secs(90));
    assert!(
        base.contains("arith eval split, 6 problems"),
        "report line: {base}"
    );
    up.wait_for("held-out eval | ckpt #2 ", Duration::from_secs(120));
    up.wait_for("window ", Duration::from_secs(30));
    let window = up.wait_for("window ", Duration::from_secs(30));
    assert!(window.contains("| held-out "), "window line: {window}");

    // The reports as stored on GRAIL_EVAL: signed by the manifest's evaluator.
    let tail = run_json(
        &[
            "tail",
            "grail.eval.>",
            "--stream",
            "--limit",
            "2",
            "--config",
        ],
        &config,
    );
    let reports: Vec<serde_json::Value> = tail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].clone())
        .collect();
    assert_eq!(reports.len(), 2, "{tail}");
    let anchor = reports
        .iter()
        .find(|r| r["payload"]["seq"] == 2)
        .unwrap_or_else(|| panic!("no report for seq 2: {tail}"));
    assert_eq!(anchor["kind"], "eval_report");
    assert_eq!(anchor["signer"], anchor["payload"]["evaluator"]);
    let report = &anchor["payload"];
    assert_eq!(report["split"], "eval");
    assert_eq!(report["greedy"]["completions"], 6);
    assert_eq!(report["sampled"]["completions"], 12);

    // Anyone can re-run it from the published checkpoint and get the same numbers.
    let rerun = run_json(
        &[
            "eval",
            "--checkpoint",
            "2",
            "--env",
            "arith",
            "--limit",
            "6",
            "--samples",
            "2",
            "--seed",
            "5",
            "--max-new-tokens",
            "6",
            "--temperature",
            "1.0",
            "--json",
            "--config",
        ],
        &config,
    );
    let rerun: serde_json::Value = serde_json::from_str(&rerun).unwrap();
    assert!(
        rerun["model"]
            .as_str()
            .unwrap()
            .starts_with("checkpoint #2 "),
        "{rerun}"
    );
    for kind in ["greedy", "sampled"] {
        let (published, local) = (&report[kind], &rerun[kind]);
        let completions = local["completions"].as_f64().unwrap();
        assert_eq!(published["completions"].as_f64().unwrap(), completions);
        assert_eq!(
            published["successes"].as_f64().unwrap(),
            (local["pass_at_1"].as_f64().unwrap() * completions).round(),
            "{kind}"
        );
        let (a, b) = (
            published["mean_reward"].as_f64().unwrap(),
            local["mean_reward"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-6, "{kind} mean reward {a} vs {b}");
    }
    let missing = grail()
        .args(["eval", "--checkpoint", "999", "--env", "arith", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains("not announced") && stderr.contains("announced seqs"),
        "{stderr}"
    );
}
