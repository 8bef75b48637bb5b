//! Two real `grail clock` processes started from the same directory (same run_dir, so the
//! same chain seed and the same generated hotkey), the leader SIGKILLed: the survivor takes
//! the KV lease and windows keep opening and closing on the same hash chain, no window number
//! skipped, none opened twice with different randomness, none left unclosed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::bus::Bus;
use actors::metrics::Metrics;
use actors::windows::WindowBook;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use grail_runtime::nats_server::{find_binary, EmbeddedNats, EmbeddedOptions};
use messages::subjects as subj;
use messages::{Envelope, WindowClose, WindowOpen};

/// A `grail` child process, SIGKILLed on drop so a failing test leaves nothing behind.
struct Grail {
    child: Child,
    log: PathBuf,
}

impl Grail {
    fn clock(config: &Path, log: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_grail"))
            .args(["clock", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,async_nats=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// The last lines of the process's log (for failure messages).
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no cleanup, the lease simply stops being renewed
        let _ = self.child.wait();
    }
}

impl Drop for Grail {
    fn drop(&mut self) {
        self.sigkill();
    }
}

use common::free_port;

/// A clock-only config; `name` only changes the /metrics port (two processes on one host).
fn write_config(dir: &Path, name: &str, url: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[cluster]\nrun_dir = \"run\"\n\
         [nats]\nurl = \"{url}\"\n\
         [window]\nlength_secs = 3.0\nsubmit_fraction = 0.5\nchain_length = 1000\n\
         [metrics]\nlisten = \"127.0.0.1:{}\"\n\
         [roles.clock]\ninstances = 1\n",
        free_port()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `grail keys new` for the role key, then `grail manifest` as the owner.
fn owner_signs_manifest(config: &Path, role_key: &Path) {
    let grail = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_grail"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "grail {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    grail(&[
        "keys".as_ref(),
        "new".as_ref(),
        "--out".as_ref(),
        role_key.as_os_str(),
    ]);
    grail(&["manifest".as_ref(), "--config".as_ref(), config.as_os_str()]);
}

async fn lease_holder(bus: &Bus) -> Option<String> {
    let kv = bus.js.get_key_value(subj::KV_CLOCK).await.ok()?;
    let value = kv.get("leader").await.ok()??;
    let lease: serde_json::Value = serde_json::from_slice(&value).ok()?;
    lease["holder"].as_str().map(str::to_string)
}

/// Highest window whose `phase` the clock stream holds (0 when none, or no stream yet).
async fn last_window(bus: &Bus, phase: &str) -> u64 {
    let Ok(stream) = bus.js.get_stream(subj::STREAM_CLOCK).await else {
        return 0;
    };
    match stream
        .get_last_raw_message_by_subject(&format!("grail.clock.*.{phase}"))
        .await
    {
        Ok(msg) => match subj::parse(&msg.subject) {
            Ok(subj::Subject::WindowOpen { window } | subj::Subject::WindowClose { window }) => {
                window
            }
            other => panic!("{}: {other:?}", msg.subject),
        },
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
        Err(e) => panic!("reading the clock stream: {e}"),
    }
}

async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond().await
}

/// Check every clock message the way roles do and return (windows opened, windows closed).
async fn checked_clock_record(bus: &Bus) -> (Vec<u64>, BTreeSet<u64>) {
    let mut stream = bus.js.get_stream(subj::STREAM_CLOCK).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let book = WindowBook::default();
    let mut opens: BTreeMap<u64, BTreeSet<[u8; 32]>> = BTreeMap::new();
    let mut closes = BTreeSet::new();
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await.unwrap();
        match subj::parse(&msg.subject).unwrap() {
            subj::Subject::WindowOpen { window } => {
                let (env, _) = Envelope::<WindowOpen>::open(&msg.payload, 1 << 20).unwrap();
                opens
                    .entry(window)
                    .or_default()
                    .insert(env.payload.randomness.0);
                assert!(
                    book.record_open(env.payload),
                    "{} fails the chain",
                    msg.subject
                );
            }
            subj::Subject::WindowClose { window } => {
                let (env, _) = Envelope::<WindowClose>::open(&msg.payload, 1 << 20).unwrap();
                assert!(
                    book.record_close(env.payload),
                    "{} fails the chain",
                    msg.subject
                );
                closes.insert(window);
            }
            other => panic!("unexpected {other:?} in the clock stream"),
        }
    }
    for (w, values) in &opens {
        assert_eq!(
            values.len(),
            1,
            "window {w} opened with different randomness"
        );
    }
    (opens.into_keys().collect(), closes)
}

#[test]
fn two_clock_processes_the_leader_sigkilled_windows_continue_on_the_same_chain() {
    // scripts/test.sh installs it; a missing server is a failure that says so, not a pass.
    find_binary().expect("nats-server not found: run scripts/install-nats.sh");
    let dir = tempfile::tempdir().unwrap();
    let nats = EmbeddedNats::start(EmbeddedOptions {
        dir: dir.path().join("nats"),
        max_payload: messages::DEFAULT_MAX_MESSAGE_BYTES,
        port: 0,
    })
    .unwrap();
    let config_a = write_config(dir.path(), "clock-a", nats.url());
    let config_b = write_config(dir.path(), "clock-b", nats.url());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let bus = Bus::connect(
            nats.url(),
            "test",
            Arc::new(Metrics::new()),
            messages::DEFAULT_MAX_MESSAGE_BYTES,
        )
        .await
        .unwrap();
        // The farm flow: the clock's key exists on its box, the owner signs the manifest that
        // lists it, then the clocks start and pin that owner.
        owner_signs_manifest(&config_a, &dir.path().join("run/keys/clock-0.json"));
        let mut a = Grail::clock(&config_a, dir.path().join("a.log"));
        assert!(
            wait_for(Duration::from_secs(30), || async {
                last_window(&bus, "open").await >= 1
            })
            .await,
            "clock A opened no window: {}",
            a.log()
        );
        let holder_a = lease_holder(&bus).await.expect("A holds the lease");

        // B starts once A has written the shared seed and key, and must stay a follower.
        let b = Grail::clock(&config_b, dir.path().join("b.log"));
        assert!(
            wait_for(Duration::from_secs(30), || async {
                b.log().contains("starting")
            })
            .await,
            "clock B did not start: {}",
            b.log()
        );
        let target = last_window(&bus, "close").await + 2;
        // Every lease holder seen until two more windows closed.
        let mut holders = BTreeSet::new();
        let started = Instant::now();
        while last_window(&bus, "close").await < target {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "windows stalled: {}",
                a.log()
            );
            holders.extend(lease_holder(&bus).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            holders,
            BTreeSet::from([holder_a.clone()]),
            "the lease moved while A was alive"
        );

        a.sigkill();
        let killed_in = last_window(&bus, "open").await;
        assert!(
            wait_for(Duration::from_secs(20), || async {
                lease_holder(&bus).await.is_some_and(|h| h != holder_a)
            })
            .await,
            "B never took the lease: {}",
            b.log()
        );
        assert!(
            wait_for(Duration::from_secs(40), || async {
                last_window(&bus, "close").await >= killed_in + 3
            })
            .await,
            "windows stopped after A died in window {killed_in}: {}",
            b.log()
        );

        let (opened, closed) = checked_clock_record(&bus).await;
        let last = *opened.last().unwrap();
        assert_eq!(
            opened,
            (1..=last).collect::<Vec<_>>(),
            "a window number was skipped"
        );
        let unclosed: Vec<u64> = (1..=killed_in + 3)
            .filter(|w| !closed.contains(w))
            .collect();
        assert!(unclosed.is_empty(), "windows never closed: {unclosed:?}");
    });
}
