//! Test harness: a real nats-server per test (random loopback port, temp dir, killed on
//! drop), the production topology on it, and helpers to run roles inside an actix System.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::bus::Bus;
use actors::metrics::Metrics;
use grail_runtime::nats_server::{EmbeddedNats, EmbeddedOptions};
use grail_runtime::streams::{ensure, TopologyConfig};

pub struct TestNats {
    pub server: EmbeddedNats,
    _dir: tempfile::TempDir,
}

impl TestNats {
    /// Start a private server; panics with install instructions when nats-server is missing.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = EmbeddedNats::start(EmbeddedOptions {
            dir: dir.path().join("nats"),
            max_payload: messages::DEFAULT_MAX_MESSAGE_BYTES,
            port: 0,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        Self { server, _dir: dir }
    }

    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Connect a bus with fresh metrics and create the production topology.
    pub async fn bus(&self) -> Bus {
        let metrics = Arc::new(Metrics::new());
        let bus = Bus::connect(
            self.url(),
            "test",
            metrics,
            messages::DEFAULT_MAX_MESSAGE_BYTES,
        )
        .await
        .expect("connect");
        ensure(&bus.client, &bus.js, &TopologyConfig::default())
            .await
            .expect("topology");
        bus
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
