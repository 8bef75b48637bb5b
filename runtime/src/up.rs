//! `grail up` and the single-role commands: connect (or start an embedded nats-server),
//! create the topology, serve /metrics, start the roles, show progress per window, and shut
//! everything down on Ctrl-C, SIGTERM or after `--windows N`.

use std::sync::Arc;
use std::time::Duration;

use actors::bus::Bus;
use actors::metrics::Metrics;
use futures::StreamExt;
use messages::subjects as subj;

use crate::auth::RoleBuses;
use crate::cluster::start_roles;
use crate::config::{ClusterConfig, Role};
use crate::nats_server::{EmbeddedNats, EmbeddedOptions};
use crate::streams::{ensure, TopologyConfig};

pub struct UpOptions {
    pub only_role: Option<Role>,
    pub windows: Option<u64>,
}

/// The file where `grail up` records its embedded server's URL for `grail tail`/`streams`.
pub fn url_file(cfg: &ClusterConfig) -> std::path::PathBuf {
    cfg.run_dir().join("nats.url")
}

/// The NATS URL to use: cluster.toml's, else the one a running `grail up` recorded.
pub fn resolve_url(cfg: &ClusterConfig) -> anyhow::Result<String> {
    if let Some(u) = &cfg.nats.url {
        return Ok(u.clone());
    }
    std::fs::read_to_string(url_file(cfg))
        .map(|s| s.trim().to_string())
        .map_err(|_| anyhow::anyhow!("{} names no [nats] url and no `grail up` is running with it (no {}); start `grail up` first or pass --url", cfg.source.display(), url_file(cfg).display()))
}

/// Run until a signal or the window limit. Owns the embedded server, if any, and stops it
/// on every exit path (its Drop runs when this function returns or unwinds).
pub fn run(cfg: ClusterConfig, opts: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(cfg.run_dir())?;
    if opts.only_role.is_none() {
        // `grail up` is the owner: its key exists before anything pins or binds to it.
        crate::keys::load_or_create(&cfg.owner_key_path())?;
    }
    let embedded = match &cfg.nats.url {
        Some(_) => None,
        None if opts.only_role.is_some() => None,
        None => {
            // Authenticated unless `[nats] auth = false`: operator nkeys in run_dir/auth.
            let auth = match crate::auth::credentials_dir(&cfg) {
                Some(dir) => crate::auth::AuthFiles::ensure(dir)?.server_block()?,
                None => String::new(),
            };
            let server = EmbeddedNats::start_with(
                EmbeddedOptions {
                    dir: cfg.run_dir().join("nats"),
                    max_payload: cfg.nats.max_message_bytes,
                    port: 0,
                },
                &auth,
            )?;
            std::fs::write(url_file(&cfg), server.url())?;
            tracing::info!(
                url = server.url(),
                pid = server.pid(),
                "embedded nats-server started"
            );
            Some(server)
        }
    };
    let url = match &embedded {
        Some(s) => s.url().to_string(),
        None => resolve_url(&cfg)?,
    };
    let result = actix_rt::System::new().block_on(run_system(cfg.clone(), opts, url));
    if embedded.is_some() {
        let _ = std::fs::remove_file(url_file(&cfg));
    }
    drop(embedded);
    result
}

/// How long a role started alone waits for JetStream to answer its topology check.
const TOPOLOGY_WAIT: Duration = Duration::from_secs(120);

async fn run_system(cfg: ClusterConfig, opts: UpOptions, url: String) -> anyhow::Result<()> {
    let metrics = crate::metrics_server::process_metrics();
    // One connection per role identity (one shared connection when the bus has no auth).
    let buses = RoleBuses::new(&cfg, &url, metrics.clone(), Default::default());
    if opts.only_role.is_none() {
        crate::auth::start_gatekeeper(&cfg, &url, metrics.clone()).await?;
    }
    let bus = buses.control(opts.only_role).await?;
    // The admin makes the topology; a role started alone on an authenticated bus only checks
    // it (it has no right to change it). Without auth every connection may, as before.
    if opts.only_role.is_none() || !buses.authenticated() {
        ensure(&bus.client, &bus.js, &TopologyConfig::of(&cfg)).await?;
        crate::streams::ensure_consumers(&bus.js).await?;
    } else {
        use messages::bus_permissions::BusIdentity;
        let identity = match opts.only_role {
            Some(Role::Miner) => Some(BusIdentity::Miner(String::new())),
            Some(role) => BusIdentity::operator(role.as_str()),
            None => None,
        };
        crate::streams::check_patiently(&bus.js, identity.as_ref(), TOPOLOGY_WAIT).await?;
    }
    // `grail up` (every role) signs the manifest as the owner; a single role only pins it.
    let signs = opts.only_role.is_none();
    // One model load per process: the manifest's digest and the roles share it.
    let shared = Arc::new(crate::compute::SharedCompute::new(&cfg));
    let manifest = crate::network::establish(&cfg, &bus, &shared, signs).await?;
    let model_role = matches!(
        opts.only_role,
        Some(Role::Miner | Role::Verifier | Role::Trainer | Role::Publisher | Role::Evaluator)
    );
    if !signs && model_role {
        crate::network::check_base_model(&cfg, &shared, &manifest)?;
    }
    tracing::info!(network = %manifest.network_id, seq = manifest.seq, owner = %manifest.owner, "trusting the network manifest");
    if let Some(listen) = &cfg.metrics.listen {
        let addr = crate::metrics_server::serve(listen.parse()?, metrics.clone()).await?;
        tracing::info!(%addr, "serving /metrics");
    }
    let shutdown = actors::shutdown::Shutdown::new();
    let roles = start_roles(&cfg, &shared, &buses, opts.only_role, &shutdown.signal()).await?;
    // Which roles this process runs: several processes may share one config.
    let names: Vec<&str> = roles.roles.iter().map(|r| r.instance.as_str()).collect();
    println!(
        "grail: this process runs {} ({}) on {url} (Ctrl-C to stop)",
        names.join(", "),
        names.len()
    );
    let limit = opts
        .windows
        .or(Some(cfg.cluster.windows))
        .filter(|w| *w > 0);
    // The console's window lines come from core subscriptions to the network's subjects,
    // which only the admin identity may make on an authenticated bus: a role started alone
    // there keeps to its own logs (they were "Permissions Violation for Subscription" lines).
    let console = opts.only_role.is_none() || !buses.authenticated();
    let progress = if console {
        actix_rt::spawn(crate::progress::show_progress(bus.clone(), limit))
    } else {
        if opts.windows.is_some() {
            tracing::warn!("--windows is ignored by a role started alone on an authenticated bus (it cannot see the weights); stop it with Ctrl-C or SIGTERM");
        }
        println!("grail: window lines are shown by the process that runs every role, or by `grail tail --config <cluster.toml> 'grail.weights.>'` (admin credentials)");
        actix_rt::spawn(futures::future::pending::<anyhow::Result<()>>())
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("interrupted; shutting down"),
        _ = term.recv() => println!("terminated; shutting down"),
        res = progress => {
            if let Ok(Err(e)) = res {
                tracing::error!(error = %e, "progress display failed");
            }
        }
    }
    // Drain: every role stops pulling; the verifiers finish or nak what they hold; worker
    // pools close with their roles; then the connections flush what was published.
    let grace = actors::supervisor::RestartPolicy::default().grace;
    let late = actors::supervisor::stop_all(&shutdown, roles.roles, grace).await;
    if !late.is_empty() {
        tracing::warn!(
            ?late,
            "role instances still busy after the grace period; stopping anyway"
        );
    }
    buses.flush().await;
    actix_rt::System::current().stop();
    Ok(())
}

/// `grail streams`: create or verify the topology and print it.
pub async fn streams(url: &str, cfg: &ClusterConfig) -> anyhow::Result<()> {
    let bus = Bus::connect_with(
        url,
        "grail-streams",
        Arc::new(Metrics::new()),
        cfg.nats.max_message_bytes,
        &crate::auth::operator_credentials(cfg, messages::bus_permissions::BusIdentity::Admin),
    )
    .await?;
    let mut report = ensure(&bus.client, &bus.js, &TopologyConfig::of(cfg)).await?;
    report
        .lines
        .extend(crate::streams::ensure_consumers(&bus.js).await?);
    println!("server max_payload {} bytes", report.server_max_payload);
    for l in report.lines {
        println!("{l}");
    }
    Ok(())
}

/// `grail tail`: print decoded grail messages as JSON lines.
pub async fn tail(
    url: &str,
    creds: &actors::bus_auth::Credentials,
    pattern: &str,
    from_stream: bool,
    limit: usize,
) -> anyhow::Result<()> {
    let client = creds
        .connect_options()?
        .connect(actors::bus::server_addrs(url)?)
        .await?;
    let mut printed = 0usize;
    let mut print = |subject: &str, payload: &[u8]| {
        let decoded = messages::envelope::to_json(payload, messages::DEFAULT_MAX_MESSAGE_BYTES);
        let line = match decoded {
            Ok(v) => serde_json::json!({"subject": subject, "message": v}),
            Err(e) => {
                serde_json::json!({"subject": subject, "error": e.to_string(), "bytes": payload.len()})
            }
        };
        println!("{line}");
        printed += 1;
        limit > 0 && printed >= limit
    };
    if from_stream {
        let js = async_nats::jetstream::new(client.clone());
        let stream_name = js
            .stream_by_subject(pattern)
            .await
            .map_err(|e| anyhow::anyhow!("no stream holds {pattern}: {e}"))?;
        let stream = js.get_stream(&stream_name).await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: pattern.to_string(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        while let Some(msg) = messages.next().await {
            let msg = msg?;
            if print(&msg.subject, &msg.payload) {
                break;
            }
        }
    } else {
        let mut sub = client.subscribe(pattern.to_string()).await?;
        while let Some(msg) = sub.next().await {
            if subj::parse(&msg.subject).is_err() && !msg.subject.starts_with(subj::ROOT) {
                continue;
            }
            if print(&msg.subject, &msg.payload) {
                break;
            }
        }
    }
    Ok(())
}
