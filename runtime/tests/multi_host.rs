//! The farm of docs/OPERATIONS.md across hosts: four network namespaces joined by veth pairs
//! on a bridge (its own namespace too: nothing touches the machine's network), three of them
//! running a NATS node from `grail nats-config` and some roles, all from the same `grail`
//! binary and one config file (the miner's copy names the node that will be cut, so its
//! client must find the other nodes by itself). The fourth is the operator's desk: `grail
//! streams`, `grail manifest`, and this test's own reads. Then one host's link is cut (`ip
//! link set down`: no TCP reset, the peers only notice by silence) and brought back.
//!
//! Needs root (`ip netns`); CI runs as root and scripts/test.sh runs it. Namespaces and
//! processes are removed on drop, a panic included.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::bus::Bus;
use actors::bus_auth::Credentials;
use actors::metrics::Metrics;
use async_nats::jetstream;
use messages::bus_permissions::BusIdentity;
use messages::subjects as subj;
use messages::{Envelope, GroupVerdict, RolloutGroup, WindowOpen};

const HOSTS: usize = 4; // h0..h2 with a NATS node each, h3 the operator's desk
const DESK: usize = 3;
const WINDOW_SECS: f64 = 4.0;

fn addr(host: usize) -> String {
    format!("10.201.0.{}", host + 1)
}

/// `ip ARGS`, panicking with its stderr.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip`: {e} (install iproute2)"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces and every process started in them; all killed and deleted on drop.
struct Hosts {
    prefix: String,
    made: Vec<String>,
    children: Vec<(String, Child, PathBuf)>,
    dir: PathBuf,
}

impl Hosts {
    fn ns(&self, host: usize) -> String {
        format!("{}h{host}", self.prefix)
    }

    /// Four hosts on one bridge (in namespace `<prefix>sw`), each with `eth0` = 10.201.0.(i+1).
    fn create(dir: &Path) -> Self {
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
        let mut hosts = Hosts {
            prefix: format!("gmh{}", std::process::id() % 100_000),
            made: vec![],
            children: vec![],
            dir: dir.to_path_buf(),
        };
        let switch = format!("{}sw", hosts.prefix);
        let add = Command::new("ip").args(["netns", "add", &switch]).output();
        match add {
            Ok(out) if out.status.success() => hosts.made.push(switch.clone()),
            other => panic!(
                "cannot create a network namespace (uid {uid}): {other:?}. This test needs root \
                 and `ip netns` (CI runs as root); as root: `cargo test -p grail-runtime --test \
                 multi_host -- --ignored`"
            ),
        }
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 0..HOSTS {
            let ns = hosts.ns(i);
            ip(&["netns", "add", &ns]);
            hosts.made.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("v{i}");
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        hosts
    }

    /// Start `program args` on `host`, its output in `<dir>/<name>.log`.
    fn spawn(&mut self, host: usize, name: &str, program: &Path, args: &[&str]) {
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(program)
            .args(args)
            .current_dir(&self.dir)
            .env(
                "RUST_LOG",
                std::env::var("GRAIL_MULTI_HOST_RUST_LOG")
                    .unwrap_or_else(|_| "info,async_nats=warn".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        self.children.push((name.to_string(), child, log));
    }

    /// `grail ARGS --config farm.toml` on `host`, to completion: (success, output).
    fn grail(&self, host: usize, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(env!("CARGO_BIN_EXE_grail"))
            .args(args)
            .args(["--config", "farm.toml"])
            .current_dir(&self.dir)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// Cut (`false`) or restore `host`'s only link.
    fn link(&self, host: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns(host), "link", "set", "eth0", state]);
    }

    /// The last lines of every process log whose name contains `filter` (failure messages).
    fn logs(&self, filter: &str) -> String {
        let mut out = String::new();
        for (name, _, log) in self.children.iter().filter(|c| c.0.contains(filter)) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!(
                "\n--- {name}\n{}",
                lines[lines.len().saturating_sub(8)..].join("\n")
            );
        }
        out
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Every process's whole log, for a failure the last lines do not explain.
        if let Some(keep) = std::env::var_os("GRAIL_MULTI_HOST_LOGS") {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            for (name, _, log) in &self.children {
                let _ = std::fs::copy(log, keep.join(format!("{name}.log")));
            }
        }
        // Anything else still inside our namespaces was started by this test.
        for ns in &self.made {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
        }
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Run `f` on a thread that lives in namespace `ns` (sockets it opens are that host's).
fn on_host<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    let thread = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    });
    thread
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The farm's config, its `[nats] url` naming host `node`'s NATS node.
fn farm_toml(node: usize) -> String {
    format!(
        "[cluster]\nname = \"mh\"\nrun_dir = \"run\"\n\
         [nats]\nurl = \"nats://{}:4222\"\nreplicas = 3\ncredentials_dir = \"auth\"\nstorage = \"file\"\n\
         [window]\nlength_secs = {WINDOW_SECS}\nsubmit_fraction = 0.6\nchain_length = 1000\n\
         [compute]\nkind = \"structural\"\n[metrics]\nlisten = \"\"\n\
         [roles.clock]\ninstances = 2\n[roles.miner]\ninstances = 1\ngroups_per_window = 2\n\
         [roles.verifier]\ninstances = 2\n[roles.scorer]\ninstances = 1\n",
        addr(node)
    )
}

/// Every message of `stream` whose subject starts with `prefix`, in order; None when the
/// stream cannot be read completely right now (a node just went away: ask again).
async fn try_read(
    js: &jetstream::Context,
    stream: &str,
    prefix: &str,
) -> Option<Vec<(String, Vec<u8>)>> {
    let mut s = js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = vec![];
    for seq in first.max(1)..=last {
        let m = s.get_raw_message(seq).await.ok()?;
        if m.subject.starts_with(prefix) {
            out.push((m.subject.to_string(), m.payload.to_vec()));
        }
    }
    Some(out)
}

/// [`try_read`] until it succeeds (30 s at most).
async fn read(js: &jetstream::Context, stream: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let start = Instant::now();
    loop {
        match try_read(js, stream, prefix).await {
            Some(all) => return all,
            None if start.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            None => panic!("cannot read stream {stream} from the desk for 30 s"),
        }
    }
}

fn open<T: messages::SignedMessage>(payload: &[u8]) -> T {
    Envelope::<T>::open(payload, 1 << 24)
        .expect("a signed message")
        .0
        .payload
}

/// Groups and group verdicts stored per window (what a stalled run's failure names).
async fn per_window(js: &jetstream::Context) -> String {
    let count = |all: Vec<(String, Vec<u8>)>| {
        let mut n: BTreeMap<u64, usize> = BTreeMap::new();
        for (s, _) in all {
            if let Some(w) = s.split('.').find_map(|t| t.parse::<u64>().ok()) {
                *n.entry(w).or_default() += 1;
            }
        }
        n
    };
    let groups = count(read(js, subj::STREAM_ROLLOUTS, "grail.rollout.").await);
    let verdicts = count(read(js, subj::STREAM_VERDICTS, "grail.verdict.group.").await);
    format!("groups stored per window {groups:?}, group verdicts per window {verdicts:?}")
}

/// Highest window with weights (0 when none yet).
async fn weights_upto(js: &jetstream::Context) -> u64 {
    read(js, subj::STREAM_WEIGHTS, "grail.weights.")
        .await
        .iter()
        .filter_map(|(s, _)| s.rsplit('.').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Highest window opened (0 when none yet).
async fn opened_upto(js: &jetstream::Context) -> u64 {
    read(js, subj::STREAM_CLOCK, "grail.clock.")
        .await
        .iter()
        .filter(|(s, _)| s.ends_with(".open"))
        .filter_map(|(s, _)| s.split('.').nth(2)?.parse().ok())
        .max()
        .unwrap_or(0)
}

async fn until(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cond().await
}

/// All replicas of `stream` current (a node back from a cut has caught up).
async fn replicas_current(js: &jetstream::Context, stream: &str) -> bool {
    let Ok(mut s) = js.get_stream(stream).await else {
        return false;
    };
    let Ok(info) = s.info().await else {
        return false;
    };
    info.cluster.as_ref().is_some_and(|c| {
        c.leader.is_some()
            && c.replicas.len() == 2
            && c.replicas
                .iter()
                .all(|r| r.current && r.lag.unwrap_or(0) == 0)
    })
}

#[test]
#[ignore = "needs root and `ip netns` (network namespaces): CI runs it as root from scripts/test.sh; \
            by hand: `cargo test -p grail-runtime --test multi_host -- --ignored` as root"]
fn one_binary_and_config_across_hosts_survive_a_cut_link() {
    let nats = grail_runtime::nats_server::find_binary()
        .unwrap_or_else(|e| panic!("{e} (run scripts/install-nats.sh)"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut hosts = Hosts::create(&dir);
    std::fs::write(dir.join("farm.toml"), farm_toml(0)).unwrap();
    // The miner's config names only the node that will be cut: its connection goes silent
    // and it must find the others (learnt from that node) on its own.
    std::fs::write(dir.join("farm-via-n2.toml"), farm_toml(2)).unwrap();
    std::fs::create_dir_all(dir.join("auth")).unwrap();
    std::fs::create_dir_all(dir.join("run/keys")).unwrap();

    // The three node configs, written on the desk (no network needed), as OPERATIONS says.
    let routes: Vec<String> = (0..3).map(|i| format!("{}:6222", addr(i))).collect();
    for i in 0..3 {
        let store = dir.join(format!("store-n{i}"));
        let (ok, out) = hosts.grail(
            DESK,
            &[
                "nats-config",
                "--out",
                "auth",
                "--store-dir",
                store.to_str().unwrap(),
                "--server-name",
                &format!("n{i}"),
                "--cluster-routes",
                &routes.join(","),
            ],
        );
        assert!(ok, "grail nats-config for n{i}: {out}");
    }
    for i in 0..3 {
        let conf = format!("auth/nats-server-n{i}.conf");
        hosts.spawn(i, &format!("nats-n{i}"), &nats, &["-c", &conf]);
    }
    // The admin creates the R3 topology once the cluster has formed.
    let started = Instant::now();
    loop {
        let (ok, out) = hosts.grail(DESK, &["streams"]);
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "grail streams on the 3-host cluster: {out}{}",
            hosts.logs("nats")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // Operator keys, then the owner signs the manifest listing them.
    for key in [
        "clock-0",
        "clock-1",
        "verifier-0",
        "verifier-1",
        "scorer-0",
        "miner-0",
    ] {
        let out = common::grail()
            .args(["keys", "new", "--out", &format!("run/keys/{key}.json")])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "grail keys new {key}");
    }
    let (ok, out) = hosts.grail(DESK, &["manifest"]);
    assert!(ok, "grail manifest: {out}");

    let grail = PathBuf::from(env!("CARGO_BIN_EXE_grail"));
    let roles: [(usize, &str, &[&str], &str); 7] = [
        (0, "gatekeeper", &["gatekeeper"], "farm.toml"),
        (0, "clock-0", &["clock", "--instance", "0"], "farm.toml"),
        (0, "scorer", &["scorer"], "farm.toml"),
        (1, "miner", &["miner"], "farm-via-n2.toml"),
        (
            1,
            "verifier-0",
            &["verifier", "--instance", "0"],
            "farm.toml",
        ),
        (2, "clock-1", &["clock", "--instance", "1"], "farm.toml"),
        (
            2,
            "verifier-1",
            &["verifier", "--instance", "1"],
            "farm.toml",
        ),
    ];
    for (host, name, args, config) in roles {
        let mut args = args.to_vec();
        args.extend(["--config", config]);
        hosts.spawn(host, name, &grail, &args);
    }

    let admin = Credentials::Nkey {
        identity: BusIdentity::Admin,
        seed_file: dir.join("auth/admin.nk"),
    };
    let url = format!("nats://{}:4222", addr(1));
    let (desk, cut_host) = (hosts.ns(DESK), hosts.ns(2));
    let report = on_host(&desk, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let bus = Bus::connect_with(&url, "desk", Arc::new(Metrics::new()), 1 << 24, &admin)
                .await
                .expect("the admin connects from the desk");
            let js = &bus.js;
            if !until(Duration::from_secs(90), async || {
                weights_upto(js).await >= 3
            })
            .await
            {
                return Err("no weights for window 3 before the cut".to_string());
            }
            let before = weights_upto(js).await;
            let cut_at = Instant::now();
            ip(&["-n", &cut_host, "link", "set", "eth0", "down"]);
            let target = before + 4;
            if !until(Duration::from_secs(120), async || {
                let w = weights_upto(js).await;
                eprintln!(
                    "{:.1} s after the cut: weights up to {w}, windows opened up to {}",
                    cut_at.elapsed().as_secs_f64(),
                    opened_upto(js).await
                );
                w >= target
            })
            .await
            {
                return Err(format!(
                    "windows stopped after the cut in window ~{before}; {}",
                    per_window(js).await
                ));
            }
            let during = cut_at.elapsed();
            ip(&["-n", &cut_host, "link", "set", "eth0", "up"]);
            let healed_at = Instant::now();
            if !until(Duration::from_secs(60), async || {
                replicas_current(js, subj::STREAM_ROLLOUTS).await
                    && replicas_current(js, subj::STREAM_CLOCK).await
            })
            .await
            {
                return Err("the cut host's node never caught up".to_string());
            }
            let caught_up = healed_at.elapsed();
            let after = weights_upto(js).await;
            if !until(Duration::from_secs(60), async || {
                weights_upto(js).await >= after + 2
            })
            .await
            {
                return Err(format!(
                    "windows stopped after the link came back (at {after})"
                ));
            }
            let upto = after;
            // The record: each window opened once, none skipped; every group of windows
            // ..=upto decided exactly once.
            let mut opens: BTreeMap<u64, BTreeSet<[u8; 32]>> = BTreeMap::new();
            for (s, p) in read(js, subj::STREAM_CLOCK, "grail.clock.").await {
                if s.ends_with(".open") {
                    let o: WindowOpen = open(&p);
                    opens.entry(o.window).or_default().insert(o.randomness.0);
                }
            }
            let last = *opens.keys().last().unwrap_or(&0);
            if opens.keys().copied().ne(1..=last) || opens.values().any(|v| v.len() != 1) {
                return Err(format!("clock record: {opens:?}"));
            }
            let groups: Vec<RolloutGroup> = read(js, subj::STREAM_ROLLOUTS, "grail.rollout.")
                .await
                .iter()
                .map(|(_, p)| open(p))
                .collect();
            // A group the cut verifier held is handed to the other one after its ack wait.
            let mut verdicts: BTreeMap<(u64, String, u32), Vec<bool>> = BTreeMap::new();
            until(Duration::from_secs(60), async || {
                verdicts.clear();
                for (_, p) in read(js, subj::STREAM_VERDICTS, "grail.verdict.group.").await {
                    let v: GroupVerdict = open(&p);
                    verdicts
                        .entry((v.window, v.miner, v.group_index))
                        .or_default()
                        .push(v.accepted);
                }
                groups
                    .iter()
                    .filter(|g| g.window <= upto)
                    .all(|g| verdicts.contains_key(&(g.window, g.miner.clone(), g.group_index)))
            })
            .await;
            let mut accepted = 0;
            let mut stored = 0;
            for g in groups.iter().filter(|g| g.window <= upto) {
                stored += 1;
                match verdicts.get(&(g.window, g.miner.clone(), g.group_index)) {
                    Some(v) if v.len() == 1 => accepted += usize::from(v[0]),
                    other => {
                        return Err(format!(
                            "group ({}, {}) of window {}: verdicts {other:?}",
                            g.miner, g.group_index, g.window
                        ))
                    }
                }
            }
            let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
            for g in groups.iter().filter(|g| g.window <= upto) {
                *per_window.entry(g.window).or_default() += 1;
            }
            Ok(format!(
                "weights up to window {before} before the cut; {target} reached {:.1} s after \
                 it; the node caught up {:.1} s after the link came back; groups of windows \
                 ..={upto}: {stored} stored, {accepted} accepted, each decided once \
                 (groups per window: {per_window:?})",
                during.as_secs_f64(),
                caught_up.as_secs_f64()
            ))
        })
    });
    match report {
        Ok(summary) => eprintln!("multi-host: {summary}"),
        Err(e) => panic!("{e}{}", hosts.logs("")),
    }
    hosts.link(2, true);
    // Every role process ran on its own credentials and never asked for what they deny (a
    // role alone used to subscribe to the console's subjects: 5 violations per process).
    let denied: Vec<String> = hosts
        .children
        .iter()
        .filter(|c| !c.0.starts_with("nats"))
        .filter_map(|(name, _, log)| {
            let n = std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("Permissions Violation")
                .count();
            (n > 0).then(|| format!("{name}: {n}"))
        })
        .collect();
    assert!(
        denied.is_empty(),
        "permission violations in role logs: {denied:?}{}",
        hosts.logs("")
    );
}
