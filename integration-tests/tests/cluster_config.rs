//! The server configs `grail nats-config --cluster-routes ... --server-name ...` writes, run
//! as they are by three real nats-server processes on loopback: they form one JetStream
//! cluster with the operator credentials and permissions, and the admin creates the R3
//! topology on it while an anonymous client is refused.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::bus::Bus;
use actors::bus_auth::Credentials;
use actors::metrics::Metrics;
use grail_runtime::auth::setup::{cluster_server_config, ClusterNode};
use grail_runtime::auth::AuthFiles;
use grail_runtime::streams::{ensure, TopologyConfig, STREAMS};
use messages::bus_permissions::BusIdentity;

/// The servers, SIGKILLed on drop (this test owns nothing else).
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

#[test]
fn generated_cluster_configs_run_an_authenticated_r3_cluster() {
    let binary = grail_runtime::nats_server::find_binary().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let files = AuthFiles::ensure(dir.path().join("auth")).unwrap();
    let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<String> = route.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut servers = Servers(Vec::new());
    for i in 0..3 {
        let node = ClusterNode {
            cluster_name: "grail".into(),
            server_name: format!("n{i}"),
            listen: format!("127.0.0.1:{}", route[i]),
            routes: routes.clone(),
        };
        let conf = cluster_server_config(
            &files,
            &format!("127.0.0.1:{}", client[i]),
            &dir.path().join(format!("store-n{i}")),
            messages::DEFAULT_MAX_MESSAGE_BYTES,
            &node,
        )
        .unwrap();
        assert!(conf.contains("server_name: \"n") && conf.contains("nats-route://"));
        let path = dir.path().join(format!("nats-server-n{i}.conf"));
        std::fs::write(&path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).unwrap();
        servers.0.push(
            Command::new(&binary)
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    actix_rt::System::new().block_on(async {
        let url = format!("nats://127.0.0.1:{}", client[1]);
        let admin = Credentials::Nkey {
            identity: BusIdentity::Admin,
            seed_file: files.seed_path(&BusIdentity::Admin),
        };
        let metrics = Arc::new(Metrics::new());
        let bus = Bus::connect_with(&url, "admin", metrics.clone(), 1 << 23, &admin)
            .await
            .expect("admin connects");
        let cfg = TopologyConfig {
            replicas: 3,
            ..TopologyConfig::default()
        };
        let started = Instant::now();
        loop {
            match ensure(&bus.client, &bus.js, &cfg).await {
                Ok(_) => break,
                Err(e) if started.elapsed() < Duration::from_secs(60) => {
                    eprintln!("cluster not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    let log = std::fs::read_to_string(dir.path().join("n1.log")).unwrap();
                    panic!("R3 topology on the generated cluster: {e}\n{log}");
                }
            }
        }
        for (name, _, _) in STREAMS {
            let mut s = bus.js.get_stream(name).await.unwrap();
            let info = s.info().await.unwrap();
            assert_eq!(info.config.num_replicas, 3, "{name}");
            let cluster = info.cluster.as_ref().expect("clustered stream");
            assert_eq!(cluster.name.as_deref(), Some("grail"), "{name}");
            assert_eq!(
                cluster.replicas.len(),
                2,
                "{name}: peers besides the leader"
            );
        }
        // The credentials hold on every node: an anonymous client is not let in.
        let anonymous = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(format!("nats://127.0.0.1:{}", client[2]))
            .await;
        assert!(anonymous.is_err(), "an anonymous client was let in");
    });
}
