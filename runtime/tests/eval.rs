//! `grail eval` as a user runs it: the tiny model on arith's eval split, JSON fields, the table,
//! determinism (two runs print identical JSON), and errors that name the flag at fault.

mod common;

use std::process::{Command, Output};

fn grail_eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grail"))
        .arg("eval")
        .args(args)
        .output()
        .expect("run grail eval")
}

fn json_of(args: &[&str]) -> (String, serde_json::Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = grail_eval(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grail eval {args:?} failed: {stderr}");
    assert!(
        stderr.contains("problems, pass@1 greedy"),
        "progress: {stderr}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (text, value)
}

const ARITH: &[&str] = &[
    "--model",
    "tiny",
    "--env",
    "arith",
    "--limit",
    "6",
    "--samples",
    "4",
    "--seed",
    "3",
    "--max-new-tokens",
    "12",
];

#[test]
fn tiny_model_on_arith_reports_every_field_and_is_deterministic() {
    let (first, report) = json_of(ARITH);
    let (second, _) = json_of(ARITH);
    assert_eq!(first, second, "two runs must print identical JSON");

    assert_eq!(report["env"], "arith");
    assert_eq!(report["split"], "eval");
    assert_eq!(report["split_size"], serde_json::Value::Null);
    assert_eq!(report["train_overlaps_eval"], false);
    assert_eq!(report["problems"], 6);
    assert_eq!(report["samples"], 4);
    assert_eq!(report["greedy"]["completions"], 6);
    assert_eq!(report["sampled"]["completions"], 24);
    for scores in [&report["greedy"], &report["sampled"]] {
        for field in [
            "pass_at_1",
            "mean_reward",
            "mean_completion_tokens",
            "truncated",
        ] {
            let value = scores[field].as_f64().unwrap_or_else(|| panic!("{field}"));
            assert!(value >= 0.0, "{field} = {value}");
        }
        assert!(scores["mean_completion_tokens"].as_f64().unwrap() <= 12.0);
        let components = scores["components"].as_object().unwrap();
        let names: Vec<&str> = components.keys().map(String::as_str).collect();
        assert_eq!(names, ["digits", "length", "match", "value"]);
        let sum: f64 = components.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - scores["mean_reward"].as_f64().unwrap()).abs() < 1e-5);
    }
    let ks: Vec<&str> = report["pass_at_k"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ks, ["1", "2", "4"]);
    assert_eq!(
        report["pass_at_k"]["1"], report["sampled"]["pass_at_1"],
        "pass@1 estimated from k samples is the sampled success rate"
    );

    // Another seed changes only the sampled completions; greedy is the model's alone.
    let mut reseeded = ARITH.to_vec();
    reseeded[9] = "4";
    let (_, other) = json_of(&reseeded);
    assert_eq!(other["greedy"], report["greedy"]);
    assert_eq!(other["seed"], 4);
}

#[test]
fn table_for_people_and_greedy_only() {
    let out = grail_eval(&[
        "--model",
        "tiny",
        "--env",
        "sat",
        "--limit",
        "2",
        "--samples",
        "0",
        "--max-new-tokens",
        "4",
        "--show",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("greedy completion:").count(), 1, "{stderr}");
    assert!(
        stderr.contains("eval sat/eval/0: greedy completion:"),
        "{stderr}"
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("env sat (eval split, 2 of unbounded problems)"),
        "{table}"
    );
    assert!(
        table.contains("greedy (T=0)") && !table.contains("sampled ("),
        "{table}"
    );
    assert!(table.contains("wall time"), "{table}");
}

#[test]
fn errors_name_the_flag_at_fault() {
    let cases: &[(&[&str], &str)] = &[
        (&["--model", "tiny", "--env", "nope"], "--env nope"),
        (
            &["--model", "tiny", "--env", "arith", "--limit", "0"],
            "--limit",
        ),
        (
            &["--model", "tiny", "--env", "arith", "--param", "mode"],
            "KEY=VALUE",
        ),
        (
            &["--model", "/nonexistent/model", "--env", "arith"],
            "--model",
        ),
        // Parsed by the same DeviceSpec as cluster.toml: the flag and the accepted values.
        (&["--model", "tiny", "--device", "gpu"], "--device"),
        (&["--model", "tiny", "--device", "gpu"], "\"cuda:N\""),
    ];
    for (args, needle) in cases {
        let out = grail_eval(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

use common::shared_datasets as datasets;

#[test]
fn gsm8k_eval_reads_the_test_split() {
    let data = datasets();
    let (_, report) = json_of(&[
        "--model",
        "tiny",
        "--env",
        "gsm8k",
        "--data-dir",
        data.to_str().unwrap(),
        "--limit",
        "2",
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
    ]);
    assert_eq!(report["split_size"], 1319);
    assert_eq!(report["problems"], 2);
    assert_eq!(report["train_overlaps_eval"], false);
    let names: Vec<&str> = report["greedy"]["components"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["correct", "format"]);
}
