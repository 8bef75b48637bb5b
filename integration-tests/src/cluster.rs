//! A JetStream cluster of real nats-server processes on loopback: random client and route
//! ports, a temp dir per node, killed on drop. Nodes can be SIGKILLed, restarted in place
//! (same ports, same store: they rejoin and catch up) and isolated (restarted on a fresh
//! route port, routed nowhere: alive, clients connected, cut off from its peers).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use actors::bus::Bus;
use grail_runtime::auth::setup::ClusterNode;
use grail_runtime::nats_server::{EmbeddedNats, EmbeddedOptions};
use grail_runtime::streams::{ensure, TopologyConfig};

use crate::{connect, logs_from_env};

/// The cluster name every node is started with.
pub const CLUSTER_NAME: &str = "grail-test";

enum Op {
    Kill(usize),
    Start(usize),
    Isolate(usize),
}

/// An operation for the keeper thread and where it answers.
type Request = (Op, mpsc::Sender<Result<(), String>>);

pub struct TestCluster {
    urls: Vec<String>,
    names: Vec<String>,
    control: Option<mpsc::Sender<Request>>,
    keeper: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

/// A port nobody listens on now (bound and released; the race is harmless on loopback).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

struct NodePlan {
    dir: PathBuf,
    client_port: u16,
    route_port: u16,
    name: String,
}

impl NodePlan {
    fn start(&self, routes: &[String], route_port: u16) -> Result<EmbeddedNats, String> {
        let node = ClusterNode {
            cluster_name: CLUSTER_NAME.into(),
            server_name: self.name.clone(),
            listen: format!("127.0.0.1:{route_port}"),
            routes: routes.to_vec(),
        };
        EmbeddedNats::start_with(
            EmbeddedOptions {
                dir: self.dir.clone(),
                max_payload: messages::DEFAULT_MAX_MESSAGE_BYTES,
                port: self.client_port,
            },
            &node.block(),
        )
        .map_err(|e| format!("starting {}: {e}", self.name))
    }
}

impl TestCluster {
    /// Start `n` clustered nodes (`n0`, `n1`, ...) and wait until JetStream has a meta leader.
    /// Panics with install instructions when nats-server is missing.
    pub fn start(n: usize) -> Self {
        logs_from_env();
        let dir = tempfile::tempdir().expect("temp dir");
        let plans: Vec<NodePlan> = (0..n)
            .map(|i| NodePlan {
                dir: dir.path().join(format!("n{i}")),
                client_port: free_port(),
                route_port: free_port(),
                name: format!("n{i}"),
            })
            .collect();
        let routes: Vec<String> = plans
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.route_port))
            .collect();
        let urls = plans
            .iter()
            .map(|p| format!("nats://127.0.0.1:{}", p.client_port))
            .collect();
        let names = plans.iter().map(|p| p.name.clone()).collect();
        let (ready, started) = mpsc::channel();
        let (control, requests) = mpsc::channel::<Request>();
        // One keeper thread starts, kills and stops every node: the children get
        // PR_SET_PDEATHSIG, which fires when the *thread* that spawned them exits.
        let keeper = std::thread::spawn(move || {
            let mut nodes: Vec<Option<EmbeddedNats>> = Vec::new();
            for p in &plans {
                match p.start(&routes, p.route_port) {
                    Ok(s) => nodes.push(Some(s)),
                    Err(e) => return ready.send(Err(e)).expect("starter waits"),
                }
            }
            ready.send(Ok(())).expect("starter waits");
            for (op, done) in requests {
                let result = match op {
                    Op::Kill(i) => {
                        if let Some(mut s) = nodes[i].take() {
                            s.kill();
                        }
                        Ok(())
                    }
                    Op::Start(i) => {
                        if let Some(mut s) = nodes[i].take() {
                            s.kill();
                        }
                        plans[i]
                            .start(&routes, plans[i].route_port)
                            .map(|s| nodes[i] = Some(s))
                    }
                    Op::Isolate(i) => {
                        if let Some(mut s) = nodes[i].take() {
                            s.kill();
                        }
                        // Its peers keep dialling the old route port, nobody answers there;
                        // it dials a port nobody listens on (JetStream needs some route).
                        let nowhere = [format!("127.0.0.1:{}", free_port())];
                        plans[i]
                            .start(&nowhere, free_port())
                            .map(|s| nodes[i] = Some(s))
                    }
                };
                let _ = done.send(result);
            }
            // Dropping the nodes stops them (SIGTERM, then SIGKILL) before the temp dir goes.
        });
        started
            .recv()
            .expect("keeper thread")
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            urls,
            names,
            control: Some(control),
            keeper: Some(keeper),
            dir,
        }
    }

    /// Client URL of node `i` (stable across restarts).
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i]
    }

    /// Server name of node `i` (`n<i>`), as stream info reports leaders and replicas.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Node `i`'s directory (config, `nats-server.log`, JetStream store).
    pub fn dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}"))
    }

    fn op(&self, op: Op) {
        let (done, wait) = mpsc::channel();
        self.control
            .as_ref()
            .expect("cluster running")
            .send((op, done))
            .expect("keeper thread alive");
        wait.recv()
            .expect("keeper answers")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGKILL node `i` (no clean JetStream shutdown).
    pub fn kill(&self, i: usize) {
        self.op(Op::Kill(i))
    }

    /// (Re)start node `i` on its ports over its store: it rejoins the cluster.
    pub fn restart(&self, i: usize) {
        self.op(Op::Start(i))
    }

    /// Kill node `i` and start it again alone: same client port and store, but a fresh
    /// route port and a route to nowhere, so it and its clients are cut off from the majority.
    pub fn isolate(&self, i: usize) {
        self.op(Op::Isolate(i))
    }

    /// A bus to node `i` (own connection and metrics) with the topology created in
    /// `replicas` copies; retried while the cluster elects its JetStream leaders.
    pub async fn bus(&self, i: usize, replicas: usize) -> Bus {
        let bus = connect(self.url(i)).await;
        let cfg = TopologyConfig {
            replicas,
            ..TopologyConfig::default()
        };
        let started = Instant::now();
        loop {
            match ensure(&bus.client, &bus.js, &cfg).await {
                Ok(_) => return bus,
                Err(e) if started.elapsed() < Duration::from_secs(60) => {
                    eprintln!("cluster topology not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("creating the R{replicas} topology on {}: {e}", self.url(i)),
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        drop(self.control.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

/// The server name of the current leader of `stream` (None while it elects one).
pub async fn stream_leader(bus: &Bus, stream: &str) -> Option<String> {
    let mut s = bus.js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    info.cluster.as_ref().and_then(|c| c.leader.clone())
}
