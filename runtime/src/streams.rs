//! JetStream topology: streams, KV and object-store buckets ([`ensure`]) and the durable
//! consumers ([`ensure_consumers`]), created or updated idempotently by the admin
//! (`grail streams`, the start of `grail up`); a role started alone only [`check`]s it.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use messages::subjects as subj;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("the NATS server accepts at most {server} bytes per message but cluster.toml asks for {wanted} (nats.max_message_bytes): set `max_payload: {wanted}` in the nats-server config, or lower the setting")]
    PayloadTooSmall { server: usize, wanted: usize },
    #[error("cannot create or update {what} {name}: {source} (is JetStream enabled on the server? start it with -js)")]
    Create {
        what: &'static str,
        name: String,
        #[source]
        source: BoxError,
    },
    #[error("nats.replicas = {replicas} but {why}: {what} {name} cannot be kept in {replicas} copies (fix: set `[nats] replicas = 1` for a single server, or run a NATS cluster of at least {replicas} JetStream nodes, e.g. from `grail nats-config --cluster-routes ...`)")]
    Replicas {
        replicas: usize,
        why: String,
        what: &'static str,
        name: String,
    },
}

impl TopologyError {
    /// A creation error seen with `replicas` > 1: the server's "no suitable peers for
    /// placement", "insufficient resources" or "replicas > 1 not supported" means the
    /// cluster is too small for the key.
    fn create(
        replicas: usize,
        what: &'static str,
        name: &str,
        source: impl Into<BoxError>,
    ) -> Self {
        let source = source.into();
        let detail = source.to_string();
        let lower = detail.to_lowercase();
        if replicas > 1
            && (lower.contains("no suitable peers")
                || lower.contains("insufficient resources")
                || lower.contains("replicas"))
        {
            return Self::Replicas {
                replicas,
                why: format!("the server refused: {detail}"),
                what,
                name: name.to_string(),
            };
        }
        Self::Create {
            what,
            name: name.to_string(),
            source,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TopologyConfig {
    pub max_message_bytes: usize,
    pub memory: bool,
    pub retention: Duration,
    /// Groups one miner may store per window: the rollout stream keeps at most this many
    /// messages per `grail.rollout.<window>.<miner>` and refuses the rest (a per-key quota
    /// the server enforces before any role sees the flood).
    pub max_groups_per_window: u32,
    /// Copies of every stream, KV bucket and the object store (`[nats] replicas`).
    pub replicas: usize,
}

impl TopologyConfig {
    /// What `cfg` asks of the topology (`[nats]` and `[network]`).
    pub fn of(cfg: &crate::config::ClusterConfig) -> Self {
        Self {
            max_message_bytes: cfg.nats.max_message_bytes,
            memory: cfg.nats.storage == crate::config::NatsStorage::Memory,
            retention: Duration::from_secs(cfg.nats.retention_hours * 3600),
            max_groups_per_window: cfg.network.max_groups_per_window,
            replicas: cfg.nats.replicas,
        }
    }
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: messages::DEFAULT_MAX_MESSAGE_BYTES,
            memory: false,
            retention: Duration::from_secs(24 * 3600),
            max_groups_per_window: messages::manifest::NetworkLimits::default()
                .max_groups_per_window,
            replicas: 1,
        }
    }
}

/// (stream, subjects, description)
pub const STREAMS: [(&str, &str, &str); 7] = [
    (
        subj::STREAM_CLOCK,
        subj::CLOCK_ALL,
        "window open/close with randomness",
    ),
    (
        subj::STREAM_ROLLOUTS,
        subj::ROLLOUT_ALL,
        "signed rollout groups from miners",
    ),
    (
        subj::STREAM_VERDICTS,
        subj::VERDICT_ALL,
        "per-group and per-miner verdicts",
    ),
    (
        subj::STREAM_CHECKPOINTS,
        subj::CHECKPOINT_ALL,
        "checkpoint announcements and trainer candidates (kept forever)",
    ),
    (
        subj::STREAM_WEIGHTS,
        subj::WEIGHTS_ALL,
        "per-window miner weights",
    ),
    (
        subj::STREAM_MANIFEST,
        subj::MANIFEST,
        "owner-signed network manifests (kept forever)",
    ),
    (
        subj::STREAM_EVAL,
        subj::EVAL_ALL,
        "evaluator reports: each checkpoint's held-out score (kept forever)",
    ),
];

/// Ack wait of the verifiers' shared consumer (the verifier role's setting in cluster.rs).
pub const VERIFIER_ACK_WAIT: Duration = Duration::from_secs(30);

/// What `ensure` found or made, for `grail streams` to print.
#[derive(Debug)]
pub struct TopologyReport {
    pub server_max_payload: usize,
    pub lines: Vec<String>,
}

pub async fn ensure(
    client: &async_nats::Client,
    js: &jetstream::Context,
    cfg: &TopologyConfig,
) -> Result<TopologyReport, TopologyError> {
    // With retry-on-connect the client may still be connecting; wait for the server's INFO.
    let mut server = client.server_info().max_payload;
    for _ in 0..200 {
        if server > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        server = client.server_info().max_payload;
    }
    if server < cfg.max_message_bytes {
        return Err(TopologyError::PayloadTooSmall {
            server,
            wanted: cfg.max_message_bytes,
        });
    }
    let replicas = cfg.replicas.max(1);
    if replicas > 1 && client.server_info().cluster.is_none() {
        return Err(TopologyError::Replicas {
            replicas,
            why: format!(
                "the server at {} is not part of a cluster",
                client.server_info().host
            ),
            what: "stream",
            name: STREAMS[0].0.to_string(),
        });
    }
    let storage = if cfg.memory {
        stream::StorageType::Memory
    } else {
        stream::StorageType::File
    };
    let mut lines = Vec::new();
    for (name, subjects, description) in STREAMS {
        let config = stream::Config {
            name: name.to_string(),
            subjects: vec![subjects.to_string()],
            description: Some(description.to_string()),
            storage,
            retention: stream::RetentionPolicy::Limits,
            // Checkpoint announcements never expire: a book joining later must still see the
            // anchors its deltas build on (the publisher's retention prunes the objects).
            max_age: if [
                subj::STREAM_CHECKPOINTS,
                subj::STREAM_MANIFEST,
                subj::STREAM_EVAL,
            ]
            .contains(&name)
            {
                Duration::ZERO
            } else {
                cfg.retention
            },
            max_message_size: cfg.max_message_bytes as i32,
            // Retries of one logical message within this window are dropped by Nats-Msg-Id.
            duplicate_window: Duration::from_secs(600),
            // No byte cap: JetStream reserves a stream's max_bytes against the server's disk
            // budget up front, so 5 x 8 GiB refused to start on hosts with < ~54 GB free.
            // Retention is by age (max_age); the server's own store limit still applies.
            max_bytes: -1,
            num_replicas: replicas,
            ..Default::default()
        };
        let config = if name == subj::STREAM_ROLLOUTS {
            stream::Config {
                max_messages_per_subject: i64::from(cfg.max_groups_per_window),
                discard: stream::DiscardPolicy::New,
                discard_new_per_subject: true,
                ..config
            }
        } else {
            config
        };
        let info = js
            .create_or_update_stream(config)
            .await
            .map_err(|e| TopologyError::create(replicas, "stream", name, e))?;
        lines.push(format!(
            "stream {name:<18} subjects {subjects:<20} messages {:>8} bytes {:>12} replicas {}",
            info.state.messages, info.state.bytes, info.config.num_replicas
        ));
    }
    for (bucket, history) in [(subj::KV_CLOCK, 5), (subj::KV_STATE, 10)] {
        js.create_or_update_key_value(kv::Config {
            bucket: bucket.to_string(),
            history,
            storage,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| TopologyError::create(replicas, "kv bucket", bucket, e))?;
        lines.push(format!("kv     {bucket} replicas {replicas}"));
    }
    // The verifiers' shared window ledger: one value per key (claims are compare-and-set),
    // pruned by age so per-window state does not pile up.
    let ledger = subj::KV_LEDGER;
    js.create_or_update_key_value(kv::Config {
        bucket: ledger.to_string(),
        history: 1,
        max_age: Duration::from_secs(subj::KV_LEDGER_MAX_AGE_SECS),
        storage,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| TopologyError::create(replicas, "kv bucket", ledger, e))?;
    lines.push(format!(
        "kv     {ledger} replicas {replicas} max_age {}s",
        subj::KV_LEDGER_MAX_AGE_SECS
    ));
    let objects = subj::OBJECTS_CHECKPOINTS;
    if js.get_object_store(objects).await.is_err() {
        js.create_object_store(object_store::Config {
            bucket: objects.to_string(),
            storage,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| TopologyError::create(replicas, "object store", objects, e))?;
    }
    // An existing bucket keeps its config: migrate its backing stream's replica count.
    let backing = format!("OBJ_{objects}");
    let mut stream = js
        .get_stream(&backing)
        .await
        .map_err(|e| TopologyError::create(replicas, "object store", objects, e))?;
    let mut config = stream
        .info()
        .await
        .map_err(|e| TopologyError::create(replicas, "object store", objects, e))?
        .config
        .clone();
    if config.num_replicas != replicas {
        config.num_replicas = replicas;
        js.update_stream(config)
            .await
            .map_err(|e| TopologyError::create(replicas, "object store", objects, e))?;
    }
    lines.push(format!("object {objects} replicas {replicas}"));
    Ok(TopologyReport {
        server_max_payload: server,
        lines,
    })
}

/// Create the durable consumers the roles bind to (`verifiers`, `publisher`), with the
/// roles' settings: on an authenticated bus only the admin may, so `grail streams` and
/// `grail up` do it before any role starts. Without auth the roles create them on first use.
pub async fn ensure_consumers(js: &jetstream::Context) -> Result<Vec<String>, TopologyError> {
    let mut lines = Vec::new();
    for (stream, consumer, made) in [
        (
            subj::STREAM_ROLLOUTS,
            subj::CONSUMER_VERIFIERS,
            actors::roles::verifier::verifier_consumer(js, VERIFIER_ACK_WAIT)
                .await
                .map(|_| ()),
        ),
        (
            subj::STREAM_CHECKPOINTS,
            subj::CONSUMER_PUBLISHER,
            actors::roles::publisher::candidate_consumer(
                js,
                actors::roles::publisher::PublisherConfig::default().ack_wait,
            )
            .await
            .map(|_| ()),
        ),
    ] {
        made.map_err(|e| TopologyError::Create {
            what: "durable consumer",
            name: format!("{stream}/{consumer}"),
            source: e.into(),
        })?;
        lines.push(format!("durable consumer {consumer} on {stream}"));
    }
    Ok(lines)
}

#[derive(Debug, thiserror::Error)]
#[error("the JetStream topology is incomplete: {what} {name}: {source} (run `grail streams --config FILE` once with the admin credentials, or start `grail up`, which creates it)")]
pub struct TopologyMissing {
    pub what: &'static str,
    pub name: String,
    /// The cluster could not answer yet (no JetStream leader elected, the request went
    /// unanswered): worth waiting for, unlike an item that is not there.
    pub unavailable: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl TopologyMissing {
    fn of(
        what: &'static str,
        name: &str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            what,
            name: name.to_string(),
            unavailable: not_answered(&e),
            source: Box::new(e),
        }
    }
}

/// Whether `e` (or an error it wraps) says JetStream did not answer, rather than that the
/// item is missing: a request without a reply (a cluster still electing its meta leader
/// answers nothing) or "cluster not available" (10008).
fn not_answered(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
    use async_nats::jetstream::{Error as ApiError, ErrorCode};
    let unavailable = |code: ErrorCode| code == ErrorCode::CLUSTER_NOT_AVAILABLE;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(g) = err.downcast_ref::<GetStreamError>() {
            return match g.kind() {
                GetStreamErrorKind::Request => true,
                GetStreamErrorKind::JetStream(api) => unavailable(api.error_code()),
                _ => false,
            };
        }
        if let Some(api) = err.downcast_ref::<ApiError>() {
            return unavailable(api.error_code());
        }
        cur = err.source();
    }
    false
}

/// What a role started alone checks: a miner or evaluator [`check_for_miner`], another
/// operator identity [`check_readable`], no identity (an unauthenticated bus) [`check`]. A role
/// may start while its NATS cluster still elects a JetStream leader (a farm booting, nodes
/// restarting), so while JetStream does not answer it waits, up to `wait`, instead of exiting;
/// a missing item fails at once.
pub async fn check_patiently(
    js: &jetstream::Context,
    identity: Option<&messages::bus_permissions::BusIdentity>,
    wait: Duration,
) -> Result<(), TopologyMissing> {
    use messages::bus_permissions::BusIdentity;
    let started = std::time::Instant::now();
    loop {
        let checked = match identity {
            Some(BusIdentity::Miner(_) | BusIdentity::Evaluator) => check_for_miner(js).await,
            Some(identity) => check_readable(js, identity).await,
            None => check(js).await,
        };
        match checked {
            Err(e) if e.unavailable && started.elapsed() < wait => {
                tracing::warn!(error = %e, "JetStream does not answer yet (is the NATS cluster electing a leader?); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            checked => return checked,
        }
    }
}

/// Check, without changing anything, that every stream, KV bucket and the object store
/// exist: what a role started alone does (it has no right to create them).
pub async fn check(js: &jetstream::Context) -> Result<(), TopologyMissing> {
    check_some(js, &STREAMS.map(|(name, _, _)| name), true).await
}

/// What a miner or an evaluator may see of the topology (not the other streams, not the KV).
pub async fn check_for_miner(js: &jetstream::Context) -> Result<(), TopologyMissing> {
    let streams = [
        subj::STREAM_CLOCK,
        subj::STREAM_CHECKPOINTS,
        subj::STREAM_MANIFEST,
    ];
    check_some(js, &streams, false).await
}

/// What an operator role started alone on an authenticated bus checks: the streams, KV
/// buckets and object store its bus identity may read. Asking about the others is a
/// permissions violation (answered by silence), not a sign that they are missing.
pub async fn check_readable(
    js: &jetstream::Context,
    identity: &messages::bus_permissions::BusIdentity,
) -> Result<(), TopologyMissing> {
    let permissions = identity.permissions();
    let readable = |stream: &str| permissions.may_publish(&format!("$JS.API.STREAM.INFO.{stream}"));
    let streams: Vec<&str> = STREAMS
        .iter()
        .map(|(name, _, _)| *name)
        .filter(|name| readable(name))
        .collect();
    for name in &streams {
        js.get_stream(*name)
            .await
            .map_err(|e| TopologyMissing::of("stream", name, e))?;
    }
    for bucket in [subj::KV_CLOCK, subj::KV_STATE, subj::KV_LEDGER] {
        if readable(&format!("KV_{bucket}")) {
            js.get_key_value(bucket)
                .await
                .map_err(|e| TopologyMissing::of("kv bucket", bucket, e))?;
        }
    }
    if readable(&format!("OBJ_{}", subj::OBJECTS_CHECKPOINTS)) {
        js.get_object_store(subj::OBJECTS_CHECKPOINTS)
            .await
            .map_err(|e| TopologyMissing::of("object store", subj::OBJECTS_CHECKPOINTS, e))?;
    }
    Ok(())
}

async fn check_some(
    js: &jetstream::Context,
    streams: &[&str],
    kv: bool,
) -> Result<(), TopologyMissing> {
    for name in streams {
        js.get_stream(*name)
            .await
            .map_err(|e| TopologyMissing::of("stream", name, e))?;
    }
    let buckets: &[&str] = if kv {
        &[subj::KV_CLOCK, subj::KV_STATE, subj::KV_LEDGER]
    } else {
        &[]
    };
    for bucket in buckets {
        js.get_key_value(*bucket)
            .await
            .map_err(|e| TopologyMissing::of("kv bucket", bucket, e))?;
    }
    js.get_object_store(subj::OBJECTS_CHECKPOINTS)
        .await
        .map_err(|e| TopologyMissing::of("object store", subj::OBJECTS_CHECKPOINTS, e))?;
    Ok(())
}
