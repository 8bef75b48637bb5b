//! Test harness: a real nats-server per test (random loopback port, temp dir, killed on
//! drop, restartable in place), the production topology on it, helpers that start roles as
//! supervised actors, "processes" (an actix System on its own thread with its own NATS
//! connection) that can be killed abruptly, and readers for what the streams hold.

pub mod cluster;
pub mod observe;
pub mod s3;

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use actors::bus::Bus;
use actors::metrics::Metrics;
use actors::role::RoleCtx;
use actors::roles::clock::{Clock, ClockConfig};
use actors::roles::miner::{Miner, MinerCompute, MinerConfig, MinerWorker};
use actors::roles::scorer::Scorer;
use actors::roles::verifier::{Verifier, VerifierCompute, VerifierConfig, VerifierWorker};
use actors::trust::Trust;
use actors::worker_pool::{PoolConfig, WorkerPool};
use grail_runtime::nats_server::{EmbeddedNats, EmbeddedOptions};
use grail_runtime::streams::{ensure, TopologyConfig};
use messages::manifest::{ModelSpec, NetworkLimits, RoleKeys};
use messages::{Authority, Envelope, Identity, NetworkManifest, SignedMessage};

pub struct TestNats {
    url: String,
    keeper: Option<(mpsc::Sender<Restart>, std::thread::JoinHandle<()>)>,
    dir: tempfile::TempDir,
}

/// Crash the server, keep it down this long, start it again, then reply.
struct Restart(Duration, tokio::sync::oneshot::Sender<()>);

fn nats_options(dir: &std::path::Path, port: u16) -> EmbeddedOptions {
    EmbeddedOptions {
        dir: dir.join("nats"),
        max_payload: messages::DEFAULT_MAX_MESSAGE_BYTES,
        port,
    }
}

impl TestNats {
    /// Start a private server; panics with install instructions when nats-server is missing.
    ///
    /// The server is started, restarted and stopped by one keeper thread that lives as long
    /// as this value: the child gets `PR_SET_PDEATHSIG`, which the kernel fires when the
    /// *thread* that spawned it exits, so a server started from a short-lived thread dies
    /// with that thread.
    pub fn start() -> Self {
        logs_from_env();
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let (ready, started) = mpsc::channel();
        let (control, requests) = mpsc::channel::<Restart>();
        let keeper = std::thread::spawn(move || {
            let mut server = match EmbeddedNats::start(nats_options(&root, 0)) {
                Ok(s) => s,
                Err(e) => return ready.send(Err(e.to_string())).expect("starter waits"),
            };
            ready
                .send(Ok(server.url().to_string()))
                .expect("starter waits");
            for Restart(downtime, done) in requests {
                let port = server.port();
                server.kill();
                std::thread::sleep(downtime);
                server = EmbeddedNats::start(nats_options(&root, port))
                    .unwrap_or_else(|e| panic!("restarting nats-server on port {port}: {e}"));
                let _ = done.send(());
            }
            // Dropping `server` stops it (SIGTERM, then SIGKILL).
        });
        let url = started
            .recv()
            .expect("keeper thread")
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            url,
            keeper: Some((control, keeper)),
            dir,
        }
    }

    /// The URL stays the same across [`TestNats::crash_and_restart`] (same port).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's directory (config, `nats-server.log`, JetStream store).
    pub fn dir(&self) -> std::path::PathBuf {
        self.dir.path().join("nats")
    }

    /// SIGKILL the server (no clean JetStream shutdown), keep it down for `downtime`, then
    /// start a new one on the same port over the same store directory. The caller's actors
    /// keep running meanwhile (and notice the outage).
    pub async fn crash_and_restart(&self, downtime: Duration) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let (control, _) = self.keeper.as_ref().expect("server running");
        control
            .send(Restart(downtime, done))
            .expect("keeper thread alive");
        wait.await.expect("nats-server restarted");
    }

    /// Connect a bus with fresh metrics and create the production topology.
    pub async fn bus(&self) -> Bus {
        let bus = connect(self.url()).await;
        ensure(&bus.client, &bus.js, &TopologyConfig::default())
            .await
            .expect("topology");
        bus
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        if let Some((control, keeper)) = self.keeper.take() {
            drop(control);
            let _ = keeper.join(); // the server is stopped before the temp dir goes
        }
    }
}

/// A bus (own connection, own metrics) to `url`; the topology must already exist. Every
/// harness bus shares the harness's [`Trust`] (see [`authorize`]).
pub async fn connect(url: &str) -> Bus {
    let mut bus = Bus::connect(
        url,
        "test",
        Arc::new(Metrics::new()),
        messages::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await
    .expect("connect");
    bus.trust = harness_trust();
    bus
}

/// The owner of the harness's network manifest (tests that publish manifests sign with it).
pub fn harness_owner() -> Identity {
    Identity::from_seed([0x0E; 32])
}

/// The vocabulary size the harness manifest pins (token ids at or above it are refused).
pub const HARNESS_VOCAB: u32 = 1 << 20;

static TRUST: std::sync::OnceLock<Arc<Trust>> = std::sync::OnceLock::new();
static GRANTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The manifest every harness bus trusts: owned by [`harness_owner`], operator keys added by
/// [`authorize`] as tests create role identities (shared by the tests of one binary: keys are
/// random, so one test's grants never make another test's forger trusted).
pub fn harness_trust() -> Arc<Trust> {
    TRUST
        .get_or_init(|| {
            let trust = Arc::new(Trust::default());
            let manifest = NetworkManifest {
                version: messages::WIRE_VERSION,
                network_id: "test".into(),
                seq: 1,
                owner: harness_owner().address().to_string(),
                created_at_ms: 0,
                roles: RoleKeys::default(),
                // Above every test model's vocabulary: poison token ids are still refused.
                model: Some(ModelSpec {
                    source: "test".into(),
                    base_checkpoint: Default::default(),
                    vocab_size: HARNESS_VOCAB,
                }),
                env: None,
                sampling: Default::default(),
                schedule: None,
                limits: NetworkLimits::default(),
            };
            trust.install(manifest).expect("harness manifest");
            trust
        })
        .clone()
}

/// Grant `address` the operator role `authority` in the harness manifest (a new manifest seq).
pub fn authorize(authority: Authority, address: &str) {
    let _one_at_a_time = GRANTS.lock().unwrap_or_else(|e| e.into_inner());
    let trust = harness_trust();
    let mut next = (*trust.manifest().expect("installed")).clone();
    next.roles.grant(authority, address);
    next.seq += 1;
    trust.install(next).expect("harness manifest update");
}

/// A fresh identity, granted `role` in the harness manifest when it is an operator role.
pub fn role_identity(role: &str) -> Identity {
    let id = Identity::generate();
    if let Some(authority) = Authority::of_role(role) {
        authorize(authority, id.address());
    }
    id
}

/// Print the roles' logs to stderr when `RUST_LOG` is set (e.g. `RUST_LOG=info`).
pub fn logs_from_env() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut cond: F) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// Like [`eventually`] for a condition that needs to await (e.g. reading a stream).
pub async fn eventually_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cond().await
}

pub fn role_ctx(bus: &Bus, role: &'static str, instance: &str) -> RoleCtx {
    RoleCtx {
        bus: bus.clone(),
        identity: role_identity(role),
        role,
        instance: instance.to_string(),
    }
}

/// A clock with windows of `length_ms` (60% submission), a 1 s lease and a shared seed.
pub fn clock_config(length_ms: u64) -> ClockConfig {
    ClockConfig {
        length_ms,
        submit_ms: length_ms * 6 / 10,
        chain_len: 1000,
        seed: [7; 32],
        lease_ttl_ms: 1000,
        tick_ms: 50,
        genesis_ms: None,
    }
}

pub fn start_clock(bus: &Bus, length_ms: u64) -> actors::supervisor::RoleHandle {
    let ctx = role_ctx(bus, "clock", "clock-0");
    actors::supervisor::start(
        ctx.clone(),
        Arc::new(Clock::new(ctx, clock_config(length_ms))),
    )
}

/// A miner role on `threads` compute workers built by `compute` (called again after every
/// worker restart). Returns the miner's address.
pub fn start_miner<F>(ctx: RoleCtx, groups_per_window: u32, threads: usize, compute: F) -> String
where
    F: Fn(usize) -> Box<dyn MinerCompute> + Send + Sync + 'static,
{
    let mut pc = PoolConfig::new("miner", threads);
    pc.initial_backoff = Duration::from_millis(5);
    let pool = WorkerPool::start(
        pc,
        Arc::new(move |slot| Ok(MinerWorker(compute(slot)))),
        ctx.bus.metrics.clone(),
    );
    let address = ctx.identity.address().to_string();
    let cfg = MinerConfig::groups(groups_per_window);
    actors::supervisor::start(ctx.clone(), Arc::new(Miner::new(ctx, cfg, Arc::new(pool))));
    address
}

/// A verifier role with `concurrency` groups in flight on as many compute workers.
pub fn start_verifier<F>(ctx: RoleCtx, concurrency: usize, ack_wait: Duration, compute: F) -> String
where
    F: Fn(usize) -> Box<dyn VerifierCompute> + Send + Sync + 'static,
{
    let pool = WorkerPool::start(
        PoolConfig::new("verifier", concurrency),
        Arc::new(move |slot| Ok(VerifierWorker(compute(slot)))),
        ctx.bus.metrics.clone(),
    );
    let address = ctx.identity.address().to_string();
    let cfg = VerifierConfig {
        concurrency,
        ack_wait,
    };
    actors::supervisor::start(
        ctx.clone(),
        Arc::new(Verifier::new(ctx, cfg, Arc::new(pool))),
    );
    address
}

pub fn start_scorer(bus: &Bus) {
    let ctx = role_ctx(bus, "scorer", "scorer-0");
    actors::supervisor::start(ctx.clone(), Arc::new(Scorer::new(ctx, Default::default())));
}

/// Roles in their own actix System on their own thread with their own NATS connection: a
/// stand-in for a separate process that [`Process::kill`] ends without any cleanup.
pub struct Process {
    system: actix_rt::System,
    thread: Option<std::thread::JoinHandle<()>>,
    pub bus: Bus,
}

impl Process {
    /// Connect to `url` and run `start` (which starts actors) inside the new System.
    pub fn spawn<F>(url: &str, start: F) -> Self
    where
        F: FnOnce(&Bus) + Send + 'static,
    {
        let url = url.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runner = actix_rt::System::new();
            let bus = runner.block_on(async move {
                let bus = connect(&url).await;
                start(&bus);
                bus
            });
            tx.send((actix_rt::System::current(), bus))
                .expect("process handle");
            let _ = runner.run();
        });
        let (system, bus) = rx.recv().expect("process started");
        Self {
            system,
            thread: Some(thread),
            bus,
        }
    }

    /// Stop the System: its runtime, actors, in-flight futures and NATS connection are dropped
    /// at once (no acks, no naks, no drain), as when a process is SIGKILLed.
    pub fn kill(mut self) {
        self.system.stop();
        if let Some(t) = self.thread.take() {
            t.join().expect("process thread");
        }
    }
}

/// Every message of `stream` whose subject starts with `prefix`, as stored (subject and
/// payload), in stream order: read by sequence number, so no consumer state is involved.
/// Transient errors (e.g. while the client reconnects after a server restart) are retried
/// for up to 20 s.
pub async fn stream_raw(bus: &Bus, stream: &str, prefix: &str) -> Vec<(String, bytes::Bytes)> {
    let started = Instant::now();
    loop {
        match try_stream_raw(bus, stream, prefix).await {
            Ok(out) => return out,
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                eprintln!("reading stream {stream} again after: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("reading stream {stream}: {e}"),
        }
    }
}

async fn try_stream_raw(
    bus: &Bus,
    stream: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(String, bytes::Bytes)>> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let mut s = bus.js.get_stream(stream).await?;
    let (first, last, count) = {
        let state = &s.info().await?.state;
        (state.first_sequence, state.last_sequence, state.messages)
    };
    let mut out = Vec::new();
    if count == 0 {
        return Ok(out);
    }
    for seq in first..=last {
        match s.get_raw_message(seq).await {
            Ok(raw) if raw.subject.starts_with(prefix) => {
                out.push((raw.subject.to_string(), raw.payload))
            }
            Ok(_) => {}
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {} // deleted
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The messages of [`stream_raw`] that open as a `T` with a valid signature by a key the
/// bus trusts for the kind (forged, unauthorised or malformed ones, which the roles refuse
/// too, are left out).
pub async fn stream_messages<T: SignedMessage>(bus: &Bus, stream: &str, prefix: &str) -> Vec<T> {
    stream_raw(bus, stream, prefix)
        .await
        .into_iter()
        .filter_map(|(_, payload)| Envelope::<T>::open(&payload, bus.max_message_bytes).ok())
        .filter(|(env, _)| bus.trust.admit(env).is_ok())
        .map(|(env, _)| env.payload)
        .collect()
}
