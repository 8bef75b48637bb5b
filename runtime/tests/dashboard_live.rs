//! Every panel of the Grafana dashboard shows data, checked against a real Prometheus:
//! `grail up` runs the default cluster (`cluster.toml`: tiny model, every role, evaluator on,
//! with short windows and a small eval set for speed), Prometheus 2.42
//! (`scripts/install-prometheus.sh`) scrapes its /metrics every second under a job name other
//! than `grail`, and each panel must have a target that returns at least one finite sample
//! through `/api/v1/query`, with Grafana's variables substituted as "all".

mod common;

#[path = "dashboard/panels.rs"]
mod panels;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Up};
use panels::{dashboard, panel_queries};
use serde_json::Value;

/// Targets that cannot show data in the default cluster: (panel title, a piece of the target's
/// expression, why). Empty today: every target of every panel draws something. A target listed
/// here that does show data fails the test, so the list cannot go stale.
const NO_DATA_EXPECTED: &[(&str, &str, &str)] = &[];

/// What Grafana's variables stand for when everything is selected, and the rate window
/// (4 scrapes at least at the 1 s interval below).
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("$__rate_interval", "30s"),
    ("$instance", ".*"),
    ("$job", ".*"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's `cluster.toml` with only what makes it fast and private changed.
fn default_cluster_fast(metrics: &str) -> String {
    let path = repo().join("cluster.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut c: toml::Table = text.parse().expect("cluster.toml is TOML");
    let mut set = |section: &str, key: &str, value: toml::Value| {
        c[section]
            .as_table_mut()
            .unwrap_or_else(|| panic!("cluster.toml has no [{section}]"))
            .insert(key.into(), value);
    };
    set("window", "length_secs", 3.0.into());
    set("metrics", "listen", metrics.into());
    set("sampling", "max_new_tokens", 6.into());
    // An anchor every 2nd checkpoint, so the evaluator scores one within a few windows.
    set("checkpoints", "anchor_every", 2.into());
    set("evaluator", "problems", 6.into());
    set("evaluator", "samples", 2.into());
    assert!(
        c["roles"].get("evaluator").is_some(),
        "cluster.toml lost its evaluator"
    );
    toml::to_string(&c).unwrap()
}

/// A Prometheus server scraping one target every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn binary() -> PathBuf {
        let path = std::env::var_os("PROMETHEUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".tools/prometheus/prometheus"));
        assert!(
            path.is_file(),
            "no Prometheus at {}: run scripts/install-prometheus.sh (or set PROMETHEUS to a binary)",
            path.display()
        );
        path
    }

    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: live-check\n    static_configs:\n\
                 \x20     - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(Self::binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prom = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let start = Instant::now();
        while !get(&prom.addr, "/-/ready").is_some_and(|r| r.starts_with("HTTP/1.0 200")) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "prometheus not ready on {} within 30 s",
                prom.addr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prom
    }

    /// The instant vector `expr` evaluates to now.
    fn query(&self, expr: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let response = get(&self.addr, &path).expect("prometheus answers");
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("`{expr}`: not JSON ({e}): {response}"));
        assert_eq!(json["status"], "success", "`{expr}`: {json}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.0 (so the answer is never chunked): the whole response, or None
/// when nothing listens yet.
fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn substitute(expr: &str) -> String {
    SUBSTITUTIONS
        .iter()
        .fold(expr.to_string(), |e, (var, value)| e.replace(var, value))
}

/// A sample Grafana draws: a finite number (histogram_quantile of nothing is NaN).
fn finite(sample: &Value) -> bool {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// One panel target as Prometheus answers it.
#[derive(Clone)]
struct Target {
    panel: String,
    expr: String,
    series: usize,
    /// Some sample is a finite number.
    shows: bool,
}

impl Target {
    fn expected_empty(&self) -> bool {
        NO_DATA_EXPECTED
            .iter()
            .any(|(panel, piece, _)| self.panel == *panel && self.expr.contains(piece))
    }
}

/// Every target of every panel, in dashboard order.
fn evaluate(prom: &Prometheus) -> Vec<Target> {
    panel_queries(&dashboard())
        .into_iter()
        .map(|(panel, expr)| {
            let expr = substitute(&expr);
            let result = prom.query(&expr);
            Target {
                panel,
                series: result.len(),
                shows: result.iter().any(finite),
                expr,
            }
        })
        .collect()
}

#[test]
fn every_dashboard_panel_shows_data_from_a_real_prometheus_scraping_the_default_cluster() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, default_cluster_fast(&metrics)).unwrap();
    let prom = Prometheus::start(&metrics);
    let mut up = Up::start(&config);

    // The base model's report and an anchor's, which needs trained checkpoints handed over.
    up.wait_for("held-out eval | ckpt #0 ", Duration::from_secs(120));
    up.wait_for("held-out eval | ckpt #2 ", Duration::from_secs(180));
    up.wait_for("window ", Duration::from_secs(30));
    let up_at = started.elapsed();
    let target_up = prom.query(r#"up{job="live-check"} == 1"#);
    assert_eq!(target_up.len(), 1, "prometheus does not scrape {metrics}");

    // Rates need a few scrapes after the last first-time series: poll for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let targets = loop {
        let targets = evaluate(&prom);
        assert!(targets.len() >= 40, "only {} panel targets", targets.len());
        let stale: Vec<&Target> = targets
            .iter()
            .filter(|t| t.shows && t.expected_empty())
            .collect();
        assert!(
            stale.is_empty(),
            "targets listed in NO_DATA_EXPECTED show data now; remove them: {:?}",
            stale.iter().map(|t| &t.expr).collect::<Vec<_>>()
        );
        let done = targets.iter().all(|t| t.shows || t.expected_empty());
        if done || Instant::now() > deadline {
            break targets;
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    for t in &targets {
        eprintln!("  {:?}: {} series: {}", t.panel, t.series, t.expr);
    }
    let missing: Vec<String> = targets
        .iter()
        .filter(|t| !t.shows && !t.expected_empty())
        .map(|t| format!("panel {:?}: {}", t.panel, t.expr))
        .collect();
    assert!(
        missing.is_empty(),
        "{} panel targets return no data from Prometheus after {:?}:\n{}",
        missing.len(),
        started.elapsed(),
        missing.join("\n")
    );
    eprintln!(
        "every panel target shows data: cluster ready after {up_at:?}, checked after {:?}",
        started.elapsed()
    );
}
