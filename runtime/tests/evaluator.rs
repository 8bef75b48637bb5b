//! The evaluator role as an operator runs it: `grail up` with `[roles.evaluator]` publishes a
//! signed held-out report for the base model (seq 0) and for an anchor checkpoint, the console
//! prints them, and `grail eval --checkpoint SEQ` — fetching and verifying the published
//! checkpoint as a miner does — reproduces the report's numbers exactly.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{grail, model_cluster_toml};

/// `grail up` in the background, its stdout lines on a channel; killed on drop.
struct Up {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(config: &Path) -> Up {
        let mut child = grail()
            .args(["up", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start grail up");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Up {
            child,
            lines,
            seen: vec![],
        }
    }

    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line.clone());
                if line.starts_with(prefix) {
                    return line;
                }
            }
        }
        panic!(
            "no line starting {prefix:?} within {timeout:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
            "[roles.clock]\ninstances = 1\n[roles.miner]\ninstances = 1\n\
         [roles.verifier]\ninstances = 1\n[roles.trainer]\ninstances = 1\n\
         [roles.publisher]\ninstances = 1\n[roles.scorer]\ninstances = 1\n\
         [roles.evaluator]\ninstances = 1\n\
         [evaluator]\nproblems = 6\nsamples = 2\nseed = 5\n",
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
