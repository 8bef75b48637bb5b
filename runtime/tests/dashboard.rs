//! The Grafana dashboard, Prometheus config and operations doc against the metrics the code
//! really exports (`actors::metrics::FAMILIES`): every panel query may only name exported
//! series (with `_bucket`/`_sum`/`_count` only on histograms), only use labels those series
//! carry, never `rate()` a gauge, and every grail metric must have a panel and a doc entry.
//! PromQL is read by `dashboard/promql.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use actors::metrics::{exported_names, MetricKind, FAMILIES, PROCESS_FAMILIES};
use grail_runtime::config::ClusterConfig;

#[path = "dashboard/panels.rs"]
mod panels;
#[path = "dashboard/promql.rs"]
mod promql;

use panels::{dashboard, panel_queries, panels, template_queries};
use promql::{extract, is_one_of, COUNTER_FUNCTIONS};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// What the code exports, and what Prometheus adds.

#[derive(Debug, Clone)]
struct Series {
    family: &'static str,
    kind: MetricKind,
    /// Counters and a histogram's `_bucket`/`_sum`/`_count` only grow: fit for `rate()`.
    counts: bool,
    labels: BTreeSet<String>,
}

struct Catalogue {
    series: BTreeMap<String, Series>,
    /// Labels Prometheus attaches to every scraped series (job, instance, static labels).
    target_labels: BTreeSet<String>,
    jobs: BTreeSet<String>,
}

impl Catalogue {
    fn new(scrape: &Scrape) -> Self {
        let mut series = BTreeMap::new();
        for f in FAMILIES {
            let labels: BTreeSet<String> = f.labels.iter().map(|l| l.to_string()).collect();
            for name in f.series_names() {
                let mut labels = labels.clone();
                if name.ends_with("_bucket") {
                    labels.insert("le".into());
                }
                let counts = matches!(f.kind, MetricKind::Counter | MetricKind::Histogram);
                series.insert(
                    name,
                    Series {
                        family: f.name,
                        kind: f.kind,
                        counts,
                        labels,
                    },
                );
            }
        }
        for (name, kind) in PROCESS_FAMILIES {
            series.insert(
                name.to_string(),
                Series {
                    family: name,
                    kind: *kind,
                    counts: *kind == MetricKind::Counter,
                    labels: BTreeSet::new(),
                },
            );
        }
        let mut target_labels: BTreeSet<String> = ["job", "instance"].map(String::from).into();
        target_labels.extend(scrape.labels.iter().cloned());
        Self {
            series,
            target_labels,
            jobs: scrape.jobs.iter().cloned().collect(),
        }
    }

    /// Problems with one PromQL expression; empty when every name and label is real.
    fn check(&self, expr: &str) -> Vec<String> {
        let refs = match extract(expr) {
            Ok(r) => r,
            Err(e) => return vec![format!("cannot read `{expr}`: {e}")],
        };
        let mut problems = Vec::new();
        let mut available = self.target_labels.clone();
        for sel in &refs.selectors {
            let Some(series) = self.series.get(&sel.metric) else {
                problems.push(format!(
                    "`{}` is not exported by actors::metrics (exported: {})",
                    sel.metric,
                    exported_names().join(", ")
                ));
                continue;
            };
            available.extend(series.labels.iter().cloned());
            for (label, value) in &sel.matchers {
                if !series.labels.contains(label) && !self.target_labels.contains(label) {
                    problems.push(format!("`{}` has no label `{label}`", sel.metric));
                }
                if label == "job" && !value.contains('$') && !self.jobs.contains(value) {
                    problems.push(format!(
                        "job {value:?} is not a job_name of scripts/prometheus.yml"
                    ));
                }
            }
            if let Some(f) = &sel.inside {
                if is_one_of(COUNTER_FUNCTIONS, f) && !series.counts {
                    problems.push(format!(
                        "{f}() over `{}`, a {:?} series: use it directly (or *_over_time)",
                        sel.metric, series.kind
                    ));
                }
            }
        }
        if refs.selectors.is_empty() {
            problems.push(format!("`{expr}` queries no metric"));
        }
        for label in &refs.grouping {
            if !available.contains(label) {
                problems.push(format!(
                    "grouping by `{label}`, which no series of `{expr}` has"
                ));
            }
        }
        problems
    }

    /// Grafana's `label_values(selector, label)` template query.
    fn check_label_values(&self, query: &str) -> Vec<String> {
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'));
        let Some((selector, label)) = inner.and_then(|q| q.rsplit_once(',')) else {
            return vec![format!(
                "template query `{query}` is not label_values(selector, label)"
            )];
        };
        let mut problems = self.check(selector);
        let label = label.trim();
        let has = extract(selector).ok().is_some_and(|r| {
            r.selectors.iter().any(|s| {
                self.series
                    .get(&s.metric)
                    .is_some_and(|series| series.labels.contains(label))
            })
        });
        if !has && !self.target_labels.contains(label) {
            problems.push(format!("template query `{query}`: no label `{label}`"));
        }
        problems
    }
}

// ---------------------------------------------------------------------------------------------
// The files under test. The YAML files are flat and simple; these readers take `key: value`
// lines and one-line `[a, b]` lists, which is all they use.

fn yaml_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().filter_map(|l| {
        let content = l.split(" #").next().unwrap_or("").trim_end();
        let trimmed = content.trim_start();
        (!trimmed.is_empty() && !trimmed.starts_with('#')).then(|| {
            (
                content.len() - trimmed.len(),
                trimmed.trim_start_matches("- "),
            )
        })
    })
}

fn yaml_values(text: &str, key: &str) -> Vec<String> {
    yaml_lines(text)
        .filter_map(|(_, l)| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().trim_matches('"').to_string())
        .collect()
}

#[derive(Debug, Default)]
struct Scrape {
    jobs: Vec<String>,
    targets: Vec<String>,
    labels: Vec<String>,
    interval: Option<String>,
}

fn read_scrape(text: &str) -> Scrape {
    let mut scrape = Scrape {
        jobs: yaml_values(text, "job_name"),
        interval: yaml_values(text, "scrape_interval").into_iter().next(),
        ..Default::default()
    };
    for list in yaml_values(text, "targets") {
        let list = list.trim_start_matches('[').trim_end_matches(']');
        scrape.targets.extend(
            list.split(',')
                .map(|t| t.trim().trim_matches('"').to_string()),
        );
    }
    let mut labels_indent = None;
    for (indent, line) in yaml_lines(text) {
        match labels_indent {
            Some(i) if indent > i => {
                if let Some((key, _)) = line.split_once(':') {
                    scrape.labels.push(key.trim().to_string());
                }
            }
            _ => labels_indent = (line == "labels:").then_some(indent),
        }
    }
    scrape
}

fn catalogue() -> Catalogue {
    Catalogue::new(&read_scrape(&read("scripts/prometheus.yml")))
}

// ---------------------------------------------------------------------------------------------

#[test]
fn every_dashboard_query_uses_exported_metrics_and_their_labels() {
    let cat = catalogue();
    let dash = dashboard();
    let queries = panel_queries(&dash);
    assert!(queries.len() >= 30, "only {} panel queries", queries.len());
    let mut problems = Vec::new();
    for (title, expr) in &queries {
        for p in cat.check(expr) {
            problems.push(format!("panel {title:?}: {p}"));
        }
    }
    let templates = template_queries(&dash);
    assert!(
        !templates.is_empty(),
        "the dashboard lost its instance variable"
    );
    for q in &templates {
        problems.extend(cat.check_label_values(q));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_grail_metric_has_a_panel() {
    let cat = catalogue();
    let dash = dashboard();
    let used: BTreeSet<&str> = panel_queries(&dash)
        .iter()
        .flat_map(|(_, expr)| extract(expr).unwrap().selectors)
        .filter_map(|s| cat.series.get(&s.metric).map(|series| series.family))
        .collect();
    let missing: Vec<&str> = FAMILIES
        .iter()
        .map(|f| f.name)
        .filter(|n| !used.contains(n))
        .collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");
}

#[test]
fn the_check_rejects_made_up_names_wrong_labels_and_misused_types() {
    let cat = catalogue();
    let bad = [
        ("rate(grail_made_up_total[5m])", "grail_made_up_total"),
        ("grail_verify_seconds", "grail_verify_seconds"),
        (
            "rate(grail_train_loss_bucket[5m])",
            "grail_train_loss_bucket",
        ),
        (
            "rate(grail_train_loss[5m])",
            "rate() over `grail_train_loss`",
        ),
        (r#"grail_window{phase="x"}"#, "no label `phase`"),
        (
            "sum by (reason) (rate(grail_window_phase_seconds_count[5m]))",
            "grouping by `reason`",
        ),
        (r#"process_threads{job="prometheus"}"#, "job \"prometheus\""),
        (
            "rat(grail_train_steps_total[5m])",
            "unknown PromQL function rat()",
        ),
        (r#"{__name__="grail_window"}"#, "without a metric name"),
        ("sum(rate(grail_train_steps_total[5m])", "unbalanced"),
    ];
    for (expr, expected) in bad {
        let problems = cat.check(expr);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "`{expr}` should be refused with {expected:?}, got {problems:?}"
        );
    }
    let good = [
        "rate(grail_groups_published_total[5m])",
        "histogram_quantile(0.95, sum by (le) (rate(grail_verify_seconds_bucket[5m])))",
        r#"histogram_quantile(0.5, sum by (le, phase) (rate(grail_window_phase_seconds_bucket{phase=~"train.*"}[$__rate_interval])))"#,
        r#"sum(rate(grail_groups_verified_total{result="rejected", reason!="none"}[5m])) by (reason)"#,
        "rate(grail_verify_seconds_sum[5m]) / rate(grail_verify_seconds_count[5m])",
        r#"grail_reward_mean{role="trainer", instance=~"$instance", machine="local"} offset 1m"#,
    ];
    for expr in good {
        assert_eq!(cat.check(expr), Vec::<String>::new(), "`{expr}`");
    }
    assert!(cat
        .check_label_values("label_values(grail_made_up, instance)")
        .iter()
        .any(|p| p.contains("grail_made_up")));
    assert!(!cat
        .check_label_values("label_values(grail_window, phase)")
        .is_empty());
}

#[test]
fn prometheus_scrapes_the_address_cluster_toml_serves() {
    let scrape = read_scrape(&read("scripts/prometheus.yml"));
    assert_eq!(scrape.jobs, ["grail"]);
    let local = ClusterConfig::load(&repo().join("cluster.toml")).unwrap();
    let listen = local.metrics.listen.expect("cluster.toml serves /metrics");
    assert!(
        scrape.targets.contains(&listen),
        "scripts/prometheus.yml targets {:?} miss cluster.toml's [metrics] listen {listen}",
        scrape.targets
    );
    // Farm machines listen on all interfaces with the same port the examples use.
    let farm = ClusterConfig::load(&repo().join("docs/cluster.farm.toml")).unwrap();
    let farm_port = farm
        .metrics
        .listen
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(listen.rsplit(':').next().unwrap(), farm_port);
    assert!(read("scripts/prometheus.yml").contains(&format!(".farm:{farm_port}")));
}

#[test]
fn grafana_provisioning_matches_the_dashboard_and_prometheus() {
    let datasources = read("scripts/grafana/provisioning/datasources/prometheus.yml");
    let uids = yaml_values(&datasources, "uid");
    assert_eq!(uids.len(), 1, "one provisioned datasource, got {uids:?}");
    let uid = &uids[0];
    assert_eq!(yaml_values(&datasources, "type"), ["prometheus"]);
    let scrape = read_scrape(&read("scripts/prometheus.yml"));
    assert_eq!(
        yaml_values(&datasources, "timeInterval").first(),
        scrape.interval.as_ref(),
        "the datasource's timeInterval must equal Prometheus' scrape_interval"
    );

    let dash = dashboard();
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id {}",
            p["id"]
        );
        assert!(
            p["gridPos"]["w"].as_u64().is_some(),
            "panel {} has no gridPos",
            p["title"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"].as_str(),
            Some(uid.as_str()),
            "panel {}",
            p["title"]
        );
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(
                t["datasource"]["uid"].as_str(),
                Some(uid.as_str()),
                "panel {}",
                p["title"]
            );
        }
    }

    // The provider path is where the README's one-liner mounts the dashboards folder.
    let providers = read("scripts/grafana/provisioning/dashboards/grail.yml");
    let path = yaml_values(&providers, "path");
    assert_eq!(path.len(), 1, "{path:?}");
    let readme = read("scripts/grafana/README.md");
    let mount = format!("scripts/grafana/dashboards:{}:", path[0]);
    assert!(readme.contains(&mount), "README.md does not mount {mount}");
    assert!(readme.contains("scripts/grafana/provisioning:/etc/grafana/provisioning:"));
    assert!(readme.contains(&format!("/d/{}", dash["uid"].as_str().unwrap())));
}

/// Prometheus names the scrape job; operators pick it (`job_name` in their own config), so a
/// panel that spells one (`job="grail"`) shows nothing under any other name.
#[test]
fn no_query_names_a_scrape_job() {
    let dash = dashboard();
    let mut exprs: Vec<String> = panel_queries(&dash).into_iter().map(|(_, e)| e).collect();
    exprs.extend(template_queries(&dash));
    let fixed: Vec<&String> = exprs
        .iter()
        .filter(|e| e.contains("job=\"") || e.contains("job!=\""))
        .collect();
    assert!(fixed.is_empty(), "queries with a fixed job: {fixed:?}");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(vars.contains(&"job"), "no $job variable: {vars:?}");
}

#[test]
fn operations_doc_describes_every_metric() {
    let doc = read("docs/OPERATIONS.md");
    let missing: Vec<&str> = FAMILIES
        .iter()
        .map(|f| f.name)
        .filter(|n| !doc.contains(&format!("`{n}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/OPERATIONS.md does not describe {missing:?}"
    );
}
