//! Scaling curves (issue 14): real nats-servers (one node, or the 3-node harness cluster with
//! R3 streams), a clock and a scorer in this process, V verifier *processes* (this binary
//! re-executed, model-free `structural` compute), and N miner keys that each publish G signed
//! structural groups per window. One configuration per run; it prints one markdown row.
//!
//!     cargo build --release -p grail-integration-tests --example scale_bench
//!     target/release/examples/scale_bench nodes=1 verifiers=4 miners=1000 groups=2 \
//!         windows=3 window_ms=6000 concurrency=8 [header]
//!
//! `tiny=1` swaps the structural compute for the tiny model (policy::write_tiny_model, Qwen2,
//! seed 7, arith, 8 new tokens): this process mines every group with `ModelMiner` (proof
//! forward + sketch, one blocking thread) before publishing the window's groups, and each
//! verifier process verifies with `ModelVerifier` (every group deep-checked, as the default
//! cluster.toml's `deep_check_rate = 1.0`). Every process writes the same tiny model, so they
//! agree on the checkpoint digest without a checkpoint on the bus.
//!
//! Verifiers verify a window only after its close (the close randomness is revealed at the
//! deadline), so publish→verdict latency includes the wait for the close; close→verdict is
//! the verification phase and "drain" the rate over it (groups / (last verdict − deadline)).
//! CPU seconds per process group (verifiers, nats-servers, this process: load generator,
//! clock, scorer) over the measured windows show where the time goes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actors::bus::{now_ms, Bus, MsgMeta};
use actors::compute::mine::{MineJob, MinerCompute};
use actors::compute::model::{MinerOptions, ModelBase, ModelMiner, ModelVerifier, VerifierOptions};
use actors::compute::structural::{StructuralMiner, StructuralVerifier};
use actors::compute::verify::{VerifierCompute, VerifyJob, VerifyOutcome};
use actors::compute::{ActiveCheckpoint, ComputeError};
use actors::role::RoleCtx;
use actors::roles::clock::Clock;
use actors::roles::scorer::{Scorer, ScorerConfig};
use actors::windows::{follow_clock, WindowBook};
use futures::StreamExt;
use grail_integration_tests::cluster::TestCluster;
use grail_integration_tests::{authorize, clock_config, connect, start_verifier, TestNats};
use messages::envelope::Envelope;
use messages::subjects as subj;
use messages::{Authority, GroupVerdict, Identity, RolloutGroup, Weights};

#[derive(Clone, Debug)]
struct Args {
    nodes: usize,
    verifiers: usize,
    miners: usize,
    groups: u32,
    windows: u64,
    window_ms: u64,
    concurrency: usize,
    tiny: bool,
    header: bool,
}

impl Args {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut a = Args {
            nodes: 1,
            verifiers: 1,
            miners: 10,
            groups: 2,
            windows: 3,
            window_ms: 6000,
            concurrency: 8,
            tiny: false,
            header: false,
        };
        for arg in args {
            if arg == "header" {
                a.header = true;
                continue;
            }
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("argument {arg:?}: expected key=value"))?;
            let n: u64 = v
                .parse()
                .map_err(|e| anyhow::anyhow!("argument {arg:?}: {e}"))?;
            match k {
                "nodes" if n == 1 || n == 3 => a.nodes = n as usize,
                "verifiers" if n >= 1 => a.verifiers = n as usize,
                "miners" if n >= 1 => a.miners = n as usize,
                // The rollout stream keeps at most 64 groups per (window, miner).
                "groups" if (1..=64).contains(&n) => a.groups = n as u32,
                "windows" if n >= 1 => a.windows = n,
                "window_ms" if n >= 1000 => a.window_ms = n,
                "concurrency" if n >= 1 => a.concurrency = n as usize,
                "tiny" if n <= 1 => a.tiny = n == 1,
                _ => anyhow::bail!(
                    "argument {arg:?}: unknown key or value out of range (nodes=1|3, \
                     verifiers/miners/windows/concurrency >= 1, groups 1..=64, window_ms >= 1000, tiny=0|1)"
                ),
            }
        }
        Ok(a)
    }
}

/// Operator keys from fixed seeds: every process derives and trusts the same ones.
fn clock_id() -> Identity {
    Identity::from_seed([0xC1; 32])
}
fn scorer_id() -> Identity {
    Identity::from_seed([0x5C; 32])
}
fn verifier_id(i: usize) -> Identity {
    let mut seed = [0xA0; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Identity::from_seed(seed)
}

fn grant_roles(verifiers: usize) {
    authorize(Authority::Clock, clock_id().address());
    authorize(Authority::Scorer, scorer_id().address());
    for i in 0..verifiers {
        authorize(Authority::Verifier, verifier_id(i).address());
    }
}

fn ctx(bus: &Bus, identity: Identity, role: &'static str, instance: String) -> RoleCtx {
    RoleCtx {
        bus: bus.clone(),
        identity,
        role,
        instance,
    }
}

/// The tiny model every process of a `tiny=1` run builds identically.
struct Tiny {
    _dir: tempfile::TempDir,
    base: Arc<ModelBase>,
    env: Arc<dyn envs::Environment>,
    checkpoint: ActiveCheckpoint,
}

impl Tiny {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        policy::write_tiny_model(dir.path(), policy::Arch::Qwen2, 7)?;
        let base = Arc::new(ModelBase::load(
            dir.path(),
            &policy::LoadOptions::default(),
        )?);
        let sampling = messages::SamplingSpec {
            max_new_tokens: 8,
            ..Default::default()
        };
        let checkpoint = base.base_checkpoint(sampling)?;
        let env = envs::build(&envs::EnvSpec::new("arith"))?;
        Ok(Self {
            _dir: dir,
            base,
            env,
            checkpoint,
        })
    }
}

/// A model verifier whose checkpoint is the run's tiny model (no checkpoint book here).
struct TinyVerifier(ModelVerifier, ActiveCheckpoint);

impl VerifierCompute for TinyVerifier {
    fn verify(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, ComputeError> {
        let mut job = job.clone();
        job.checkpoint = Some(self.1.clone());
        self.0.verify(&job)
    }
}

/// `verifier-child <url> <index> <concurrency> <0|1 tiny>`: one verifier process. It exits
/// when its parent closes its stdin (or dies).
fn verifier_child(url: String, index: usize, concurrency: usize, tiny: bool) {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runner = actix_rt::System::new();
    runner.block_on(async move {
        grant_roles(index + 1);
        let bus = connect(&url).await;
        let c = ctx(&bus, verifier_id(index), "verifier", format!("v{index}"));
        if tiny {
            let t = Tiny::new().expect("tiny model");
            let opts = VerifierOptions {
                deep_check_rate_ppm: 1_000_000,
                ..Default::default()
            };
            start_verifier(c, concurrency, Duration::from_secs(30), move |_| {
                Box::new(TinyVerifier(
                    ModelVerifier::new(t.base.clone(), t.env.clone(), opts.clone()),
                    t.checkpoint.clone(),
                ))
            });
        } else {
            start_verifier(c, concurrency, Duration::from_secs(30), |_| {
                Box::new(StructuralVerifier)
            });
        }
        println!("ready");
    });
    let _ = runner.run();
}

/// CPU seconds (user + system, 100 Hz ticks) and RSS / peak RSS in MB of process `pid`.
fn proc_stats(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (cpu, kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// The nats-server processes started over the given directories (their `-c <dir>/nats.conf`).
fn nats_pids(dirs: &[std::path::PathBuf]) -> Vec<u32> {
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("nats-server") && dirs.iter().any(|d| cmd.contains(&*d.to_string_lossy())) {
            pids.push(pid);
        }
    }
    pids
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// Children killed (SIGKILL) and reaped on every way out of `main` (their stdout kept open
/// until then).
struct Children(
    Vec<Child>,
    Vec<std::io::BufReader<std::process::ChildStdout>>,
);
impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

enum Nats {
    One(TestNats),
    Three(TestCluster),
}

type GroupKey = (u64, String, u32);

#[derive(Default)]
struct Observed {
    published_ms: HashMap<GroupKey, u64>,
    verdict_ms: HashMap<GroupKey, (u64, bool)>,
    /// window → (arrival, entries, bytes) of its `Weights`.
    weights: HashMap<u64, (u64, usize, usize)>,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("verifier-child") {
        let bad = || anyhow::anyhow!("verifier-child <url> <index> <concurrency> <0|1>");
        let url = argv.get(1).ok_or_else(bad)?.clone();
        let index = argv.get(2).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let conc = argv.get(3).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let tiny = argv.get(4).map(String::as_str) == Some("1");
        verifier_child(url, index, conc, tiny);
        return Ok(());
    }
    let args = Args::parse(&argv)?;
    actix_rt::System::new().block_on(run(args))
}

async fn run(a: Args) -> anyhow::Result<()> {
    grant_roles(a.verifiers);
    let (nats, urls, dirs) = if a.nodes == 1 {
        let n = TestNats::start();
        let (u, d) = (vec![n.url().to_string()], vec![n.dir()]);
        (Nats::One(n), u, d)
    } else {
        let c = TestCluster::start(3);
        let u = (0..3).map(|i| c.url(i).to_string()).collect();
        let d = (0..3).map(|i| c.dir(i)).collect();
        (Nats::Three(c), u, d)
    };
    let bus = match &nats {
        Nats::One(n) => n.bus().await,
        Nats::Three(c) => c.bus(0, 3).await,
    };
    let url = |i: usize| urls[i % urls.len()].clone();

    let clock = ctx(&bus, clock_id(), "clock", "clock-0".into());
    actors::supervisor::start(
        clock.clone(),
        Arc::new(Clock::new(clock, clock_config(a.window_ms))),
    );
    let scorer_bus = connect(&url(1)).await;
    let scorer = ctx(&scorer_bus, scorer_id(), "scorer", "scorer-0".into());
    actors::supervisor::start(
        scorer.clone(),
        Arc::new(Scorer::new(scorer, ScorerConfig::default())),
    );

    let exe = std::env::current_exe()?;
    let mut children = Children(vec![], vec![]);
    for i in 0..a.verifiers {
        let mut child = Command::new(&exe)
            .args(["verifier-child", &url(i), &i.to_string()])
            .arg(a.concurrency.to_string())
            .arg(if a.tiny { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        children.0.push(child);
        out.read_line(&mut line)?;
        anyhow::ensure!(
            line.trim() == "ready",
            "verifier {i} did not start: {line:?}"
        );
        children.1.push(out);
    }

    // Observers: every group verdict and every Weights, timestamped on arrival.
    let seen = Rc::new(RefCell::new(Observed::default()));
    let watch = connect(&url(2)).await;
    let mut verdicts = watch.client.subscribe(subj::VERDICT_GROUP_ALL).await?;
    let mut weights = watch.client.subscribe(subj::WEIGHTS_ALL).await?;
    let limit = watch.max_message_bytes;
    let s = seen.clone();
    actix_rt::spawn(async move {
        while let Some(m) = verdicts.next().await {
            if let Ok((env, _)) = Envelope::<GroupVerdict>::open(&m.payload, limit) {
                let v = env.payload;
                s.borrow_mut()
                    .verdict_ms
                    .entry((v.window, v.miner, v.group_index))
                    .or_insert((now_ms(), v.accepted));
            }
        }
    });
    let s = seen.clone();
    actix_rt::spawn(async move {
        while let Some(m) = weights.next().await {
            if let Ok((env, _)) = Envelope::<Weights>::open(&m.payload, limit) {
                let w = env.payload;
                let row = (now_ms(), w.entries.len(), m.payload.len());
                s.borrow_mut().weights.entry(w.window).or_insert(row);
            }
        }
    });

    let book = WindowBook::default();
    actix_rt::spawn(follow_clock(bus.clone(), "bench", book.clone()));
    let miners: Vec<Identity> = (0..a.miners).map(|_| Identity::generate()).collect();
    let tiny = if a.tiny { Some(Tiny::new()?) } else { None };

    // Warm-up: the window open when everything is up is not measured.
    let first = loop {
        book.changed(Duration::from_millis(200)).await;
        if let Some(o) = book.latest_open() {
            break o.window + 1;
        }
    };
    let mut measured = vec![];
    let mut cpu_start = None;
    for window in first..first + a.windows {
        let open = loop {
            if let Some(o) = book.get(window).open {
                break o;
            }
            book.changed(Duration::from_millis(100)).await;
        };
        if cpu_start.is_none() {
            cpu_start = Some(cpu_snapshot(&children, &dirs));
        }
        measured.push((window, open.deadline_ms));
        let jobs: Vec<MineJob> = miners
            .iter()
            .flat_map(|m| (0..a.groups).map(move |g| (m, g)))
            .map(|(miner, g)| MineJob {
                window,
                open_randomness: open.randomness.0,
                deadline_ms: open.deadline_ms,
                group_index: g,
                miner: miner.address().to_string(),
                miner_pubkey: miner.public(),
                checkpoint: tiny.as_ref().map(|t| t.checkpoint.clone()),
            })
            .collect();
        let groups: Vec<RolloutGroup> = match &tiny {
            // Model mining is CPU work: off the async thread the clock and scorer run on.
            Some(t) => {
                let (base, env) = (t.base.clone(), t.env.clone());
                actix_rt::task::spawn_blocking(move || {
                    let mut m = ModelMiner::new(base, env, MinerOptions::default());
                    jobs.iter()
                        .map(|j| m.mine(j).expect("tiny mining"))
                        .collect()
                })
                .await?
            }
            None => jobs
                .iter()
                .map(|j| {
                    let mut compute = StructuralMiner {
                        checkpoint: Default::default(),
                    };
                    compute.mine(j).expect("structural mining")
                })
                .collect(),
        };
        let by_key: HashMap<String, &Identity> = miners
            .iter()
            .map(|m| (m.address().to_string(), m))
            .collect();
        futures::stream::iter(groups)
            .for_each_concurrent(128, |group| {
                let (bus, seen, by_key) = (&bus, &seen, &by_key);
                async move {
                    let miner = group.miner.clone();
                    let g = group.group_index;
                    let meta = MsgMeta {
                        window: Some(window),
                        miner: Some(miner.clone()),
                        msg_id: Some(subj::rollout_msg_id(&messages::envelope::payload_digest(
                            &group,
                        ))),
                    };
                    let t0 = now_ms();
                    let subject = subj::rollout(window, &miner);
                    let retry = Duration::from_secs(10);
                    let key = by_key[&miner];
                    if bus
                        .publish_durable("miner", subject, group, key, meta, retry)
                        .await
                        .is_ok()
                    {
                        seen.borrow_mut()
                            .published_ms
                            .insert((window, miner, g), t0);
                    }
                }
            })
            .await;
    }
    // Drain: every published group has a verdict, or 3 windows past the last deadline.
    let (last, last_deadline) = *measured.last().expect("at least one window");
    let give_up = last_deadline + 3 * a.window_ms;
    loop {
        let done = {
            let o = seen.borrow();
            o.published_ms.keys().all(|k| o.verdict_ms.contains_key(k))
        };
        if done || now_ms() > give_up {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_end = cpu_snapshot(&children, &dirs);
    // The scorer finalises window W once W+1 has closed: wait for the last Weights too.
    let weights_by = last_deadline + 3 * a.window_ms;
    while !seen.borrow().weights.contains_key(&last) && now_ms() < weights_by {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    // The observers keep running: report from a snapshot.
    let snapshot = std::mem::take(&mut *seen.borrow_mut());
    let report = Report {
        a: &a,
        seen: &snapshot,
        measured: &measured,
        book: &book,
        cpu: (cpu_start.expect("measured"), cpu_end),
        scorer_bus: &scorer_bus,
        bus: &bus,
    };
    report.print().await?;
    drop(children);
    drop(nats);
    Ok(())
}

/// (verifier CPU s, nats CPU s, this process's CPU s, wall ms, verifier peak RSS MB each,
/// nats RSS MB summed, this process's RSS MB).
type Cpu = (f64, f64, f64, u64, Vec<f64>, f64, f64);

fn cpu_snapshot(children: &Children, dirs: &[std::path::PathBuf]) -> Cpu {
    let verifiers: Vec<(f64, f64, f64)> = children.0.iter().map(|c| proc_stats(c.id())).collect();
    let nats: Vec<(f64, f64, f64)> = nats_pids(dirs).into_iter().map(proc_stats).collect();
    let me = proc_stats(std::process::id());
    (
        verifiers.iter().map(|v| v.0).sum(),
        nats.iter().map(|v| v.0).sum(),
        me.0,
        now_ms(),
        verifiers.iter().map(|v| v.2).collect(),
        nats.iter().map(|v| v.1).sum(),
        me.1,
    )
}

struct Report<'a> {
    a: &'a Args,
    seen: &'a Observed,
    measured: &'a [(u64, u64)],
    book: &'a WindowBook,
    cpu: (Cpu, Cpu),
    scorer_bus: &'a Bus,
    bus: &'a Bus,
}

impl Report<'_> {
    async fn print(&self) -> anyhow::Result<()> {
        let (a, o) = (self.a, self.seen);
        let mut e2e = vec![];
        let mut phase = vec![];
        let mut drains = vec![];
        let (mut offered, mut judged, mut accepted) = (0usize, 0usize, 0usize);
        for &(window, deadline) in self.measured {
            offered += a.miners * a.groups as usize;
            let mut last = None;
            for (k, t0) in o.published_ms.iter().filter(|(k, _)| k.0 == window) {
                if let Some(&(t, ok)) = o.verdict_ms.get(k) {
                    judged += 1;
                    accepted += ok as usize;
                    e2e.push(t.saturating_sub(*t0));
                    phase.push(t.saturating_sub(deadline));
                    last = last.max(Some(t));
                }
            }
            let n = o.published_ms.keys().filter(|k| k.0 == window).count();
            if let Some(t) = last {
                drains.push(n as f64 * 1000.0 / t.saturating_sub(deadline).max(1) as f64);
            }
        }
        e2e.sort_unstable();
        phase.sort_unstable();
        drains.sort_by(f64::total_cmp);
        let drain = drains.get(drains.len() / 2).copied().unwrap_or(0.0);
        // Scorer fold: Weights(W) arrival after W+1's deadline (when it may finalise W),
        // and the scorer's own publish time per window.
        let mut lags = vec![];
        let mut entries = 0;
        for &(window, _) in self.measured {
            let next = self.book.get(window + 1).open.map(|o| o.deadline_ms);
            if let (Some(&(t, n, _)), Some(d)) = (o.weights.get(&window), next) {
                lags.push(t.saturating_sub(d));
                entries = entries.max(n);
            }
        }
        lags.sort_unstable();
        let h = self
            .scorer_bus
            .metrics
            .window_phase_seconds
            .with_label_values(&["scoring"]);
        let fold_ms = 1000.0 * h.get_sample_sum() / h.get_sample_count().max(1) as f64;
        let windows = self.measured.len() as f64;
        let stream_kb = |name: &'static str| async move {
            let mut s = self.bus.js.get_stream(name).await?;
            anyhow::Ok(s.info().await?.state.bytes as f64 / 1024.0)
        };
        // Stream bytes include the warm-up window (empty of groups) and the clock's messages
        // are elsewhere; per window = over the measured windows.
        let rollouts_kb = stream_kb(subj::STREAM_ROLLOUTS).await? / windows;
        let verdicts_kb = stream_kb(subj::STREAM_VERDICTS).await? / windows;
        let per_miner_b = (rollouts_kb + verdicts_kb) * 1024.0 / a.miners as f64;
        let (c0, c1) = &self.cpu;
        let wall = (c1.3 - c0.3) as f64 / 1000.0;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().next().unwrap_or("?");
        let vrss = c1.4.iter().copied().fold(0.0, f64::max);
        if a.header {
            println!(
                "| nodes | verifiers | miners × groups | judged / offered | drain groups/s | \
                 publish→verdict p50 / p99 ms | close→verdict p50 / p99 ms | scorer: Weights \
                 after close p50 ms, fold ms, entries | rollouts + verdicts KiB/window | \
                 B/miner/window | CPU s verifiers / nats / bench (wall s) | RSS MB verifier max / \
                 nats / bench | load 1m |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        }
        println!(
            "| {} | {} | {} × {} | {judged} / {offered} ({} rejected) | {drain:.0} | {} / {} | \
             {} / {} | {}, {fold_ms:.0}, {entries} | {rollouts_kb:.0} + {verdicts_kb:.0} | \
             {per_miner_b:.0} | {:.1} / {:.1} / {:.1} ({wall:.1}) | {vrss:.0} / {:.0} / {:.0} | \
             {load} |",
            a.nodes,
            a.verifiers,
            a.miners,
            a.groups,
            judged - accepted,
            percentile(&e2e, 50.0),
            percentile(&e2e, 99.0),
            percentile(&phase, 50.0),
            percentile(&phase, 99.0),
            percentile(&lags, 50.0),
            c1.0 - c0.0,
            c1.1 - c0.1,
            c1.2 - c0.2,
            c1.5,
            c1.6,
        );
        Ok(())
    }
}
