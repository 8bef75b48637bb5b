//! The NATS edge every role uses: connect with reconnect accounting, publish signed messages
//! (JetStream with de-duplication ids, retried until acked), and open incoming envelopes with
//! every refusal counted by reason.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::HeaderMap;
use bytes::Bytes;
use messages::subjects as subj;
use messages::{Envelope, Hash32, Identity, SignedMessage};

use crate::bus_auth::Credentials;
use crate::metrics::Metrics;
use crate::trust::{Refusal, Trust};

/// Failures at the NATS edge; each keeps the client's own typed error as its source.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Credentials {
        url: String,
        #[source]
        source: crate::bus_auth::CredentialsError,
    },
    #[error("cannot connect to NATS at {url}: {source} (is nats-server running? `grail up` starts one when cluster.toml has no [nats] url)")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("publishing to {subject} was not acknowledged within {waited:?}: {source}")]
    NotAcked {
        subject: String,
        waited: Duration,
        #[source]
        source: Unacked,
    },
    #[error("publishing to {subject} failed: {source}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::client::PublishError,
    },
    /// The stream refused the message for good (e.g. this key's per-window quota of groups
    /// is used up): retrying cannot help.
    #[error("{subject} refused the message: {source} (the per-key quota `[network] max_groups_per_window` is used up)")]
    Refused {
        subject: String,
        #[source]
        source: JsPublishError,
    },
}

type JsPublishError = jetstream::context::PublishError;

/// Why the last attempt of a durable publish was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum Unacked {
    #[error(transparent)]
    Publish(JsPublishError),
    #[error("no ack within {0:?}")]
    TimedOut(Duration),
}

/// Outcome of one publish attempt: an error to retry on, or a refusal for good.
enum Failed {
    Retry(JsPublishError),
    Refused(JsPublishError),
}

impl Failed {
    /// The stream's per-subject limit (our quota) refuses with "store failed" (10077).
    fn of(e: JsPublishError) -> Self {
        let quota = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|j| j.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED);
        if quota {
            Failed::Refused(e)
        } else {
            Failed::Retry(e)
        }
    }
}

/// A connected client plus the JetStream context, shared by the roles of one process.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub metrics: Arc<Metrics>,
    pub max_message_bytes: usize,
    /// Counts the client's (re)connections: readers of ephemeral consumers rebuild them
    /// when it changes (a restarted server has forgotten them).
    pub connections: tokio::sync::watch::Receiver<u64>,
    /// The installed network manifest: whose signatures each kind is accepted from.
    pub trust: Arc<Trust>,
}

/// Metadata attached to a published message as NATS headers (readable with `nats sub`).
#[derive(Default, Clone, Debug)]
pub struct MsgMeta {
    pub window: Option<u64>,
    pub miner: Option<String>,
    /// JetStream de-duplication id: retries of the same logical message collapse.
    pub msg_id: Option<String>,
}

impl Bus {
    /// Connect without credentials (a server without authorization).
    pub async fn connect(
        url: &str,
        name: &str,
        metrics: Arc<Metrics>,
        max_message_bytes: usize,
    ) -> Result<Self, BusError> {
        Self::connect_with(url, name, metrics, max_message_bytes, &Credentials::None).await
    }

    /// Connect as the identity `credentials` name (see [`crate::bus_auth`]).
    pub async fn connect_with(
        url: &str,
        name: &str,
        metrics: Arc<Metrics>,
        max_message_bytes: usize,
        credentials: &Credentials,
    ) -> Result<Self, BusError> {
        let m = metrics.clone();
        // Zero-valued series from the start: an alert on disconnects sees 0, not nothing.
        for event in [
            "connected",
            "disconnected",
            "slow_consumer",
            "server_error",
            "client_error",
        ] {
            m.nats_events.with_label_values(&[event]);
        }
        let (connected, connections) = tokio::sync::watch::channel(0u64);
        let connected = Arc::new(connected);
        let client = credentials
            .connect_options()
            .map_err(|source| BusError::Credentials {
                url: url.to_string(),
                source,
            })?
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(CLIENT_PING_INTERVAL)
            .subscription_capacity(65_536)
            .event_callback(move |event| {
                let m = m.clone();
                let connected = connected.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        connected.send_modify(|n| *n += 1);
                    }
                    let label = match &event {
                        async_nats::Event::Connected => "connected",
                        async_nats::Event::Disconnected => "disconnected",
                        async_nats::Event::LameDuckMode => "lame_duck",
                        async_nats::Event::Draining => "draining",
                        async_nats::Event::Closed => "closed",
                        async_nats::Event::SlowConsumer(_) => "slow_consumer",
                        async_nats::Event::ServerError(_) => "server_error",
                        async_nats::Event::ClientError(_) => "client_error",
                    };
                    m.nats_events.with_label_values(&[label]).inc();
                    tracing::info!(event = %event, "nats event");
                }
            })
            .connect(server_addrs(url)?)
            .await
            .map_err(|source| BusError::Connect {
                url: url.to_string(),
                source,
            })?;
        let js = jetstream::new(client.clone());
        Ok(Self {
            client,
            js,
            metrics,
            max_message_bytes,
            connections,
            trust: Arc::new(Trust::default()),
        })
    }

    fn headers<T: SignedMessage>(meta: &MsgMeta, digest: &Hash32) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(subj::HDR_KIND, T::KIND);
        h.insert(subj::HDR_DIGEST, digest.to_string().as_str());
        if let Some(w) = meta.window {
            h.insert(subj::HDR_WINDOW, w.to_string().as_str());
        }
        if let Some(m) = &meta.miner {
            h.insert(subj::HDR_MINER, m.as_str());
        }
        if let Some(id) = &meta.msg_id {
            h.insert(subj::HDR_MSG_ID, id.as_str());
        }
        h
    }

    /// Sign `payload`, publish it to a JetStream subject and wait for the stream's ack,
    /// retrying (with the same de-duplication id) until acked or `deadline` passes.
    /// Returns the payload digest.
    pub async fn publish_durable<T: SignedMessage>(
        &self,
        role: &str,
        subject: String,
        payload: T,
        identity: &Identity,
        meta: MsgMeta,
        deadline: Duration,
    ) -> Result<Hash32, BusError> {
        let env = Envelope::seal(payload, identity);
        let digest = messages::envelope::payload_digest(&env.payload);
        let bytes = Bytes::from(env.to_bytes());
        let mut headers = Self::headers::<T>(&meta, &digest);
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        const ACK_WAIT: Duration = Duration::from_secs(5);
        loop {
            let attempt = async {
                let ack = self
                    .js
                    .publish_with_headers(subject.clone(), headers.clone(), bytes.clone())
                    .await
                    .map_err(Failed::of)?;
                ack.await.map_err(Failed::of)
            };
            let unacked = match tokio::time::timeout(ACK_WAIT, attempt).await {
                Ok(Ok(ack))
                    if ack.duplicate
                        && !self.stored_is_ours::<T>(&ack, &subject, identity).await =>
                {
                    // Someone stored another message under our id first (JetStream still
                    // acked us): publish again under an id nobody can have taken.
                    let id = meta.msg_id.as_deref().unwrap_or("");
                    tracing::error!(%subject, msg_id = id, stream = %ack.stream, sequence = ack.sequence,
                        "de-duplication id was taken by a message that is not ours; republishing under a fresh id");
                    self.metrics.reject(role, "dedup_squatted");
                    let fresh = format!("{id}:{:016x}", rand::random::<u64>());
                    headers.insert(subj::HDR_MSG_ID, fresh.as_str());
                    continue;
                }
                Ok(Ok(_ack)) => {
                    let m = &self.metrics;
                    m.messages_out.with_label_values(&[role, T::KIND]).inc();
                    m.bytes_published
                        .with_label_values(&[role, T::KIND])
                        .inc_by(bytes.len() as u64);
                    m.publish_seconds
                        .with_label_values(&[role, T::KIND])
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(digest);
                }
                Ok(Err(Failed::Refused(source))) => {
                    self.metrics.reject(role, "quota_exceeded");
                    return Err(BusError::Refused { subject, source });
                }
                Ok(Err(Failed::Retry(e))) => Unacked::Publish(e),
                Err(_) => Unacked::TimedOut(ACK_WAIT),
            };
            if started.elapsed() >= deadline {
                return Err(BusError::NotAcked {
                    subject,
                    waited: started.elapsed(),
                    source: unacked,
                });
            }
            tracing::warn!(%subject, error = %unacked, "publish not acked, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// After a "duplicate" ack: is the stored message under our id ours (or a peer's of the
    /// same role, e.g. another clock publishing the same phase)? Read it back by sequence.
    /// Anything else — another subject, another kind, an unauthorised signer, or a read
    /// that fails — counts as not ours, so the caller republishes rather than lose the message.
    async fn stored_is_ours<T: SignedMessage>(
        &self,
        ack: &jetstream::publish::PublishAck,
        subject: &str,
        identity: &Identity,
    ) -> bool {
        let stored = async {
            let stream = self.js.get_stream(&ack.stream).await.ok()?;
            stream.get_raw_message(ack.sequence).await.ok()
        };
        let Some(raw) = stored.await else {
            return false;
        };
        if raw.subject.as_str() != subject {
            return false;
        }
        match Envelope::<T>::open(&raw.payload, self.max_message_bytes) {
            Ok((env, _)) => {
                env.signer == identity.address()
                    || (T::AUTHORITY != messages::Authority::Anyone
                        && self.trust.holds(T::AUTHORITY, &env.signer))
            }
            Err(_) => false,
        }
    }

    /// Sign and publish on core NATS (at-most-once: heartbeats and other losable data).
    pub async fn publish_core<T: SignedMessage>(
        &self,
        role: &str,
        subject: String,
        payload: T,
        identity: &Identity,
    ) -> Result<(), BusError> {
        let env = Envelope::seal(payload, identity);
        let digest = messages::envelope::payload_digest(&env.payload);
        let headers = Self::headers::<T>(&MsgMeta::default(), &digest);
        let bytes = Bytes::from(env.to_bytes());
        self.metrics
            .bytes_published
            .with_label_values(&[role, T::KIND])
            .inc_by(bytes.len() as u64);
        self.client
            .publish_with_headers(subject.clone(), headers, bytes)
            .await
            .map_err(|source| BusError::Publish { subject, source })?;
        self.metrics
            .messages_out
            .with_label_values(&[role, T::KIND])
            .inc();
        Ok(())
    }

    /// Open an incoming envelope and admit it through the trust boundary (signer holds the
    /// role for this kind, fields in bounds), counting it in or its refusal by reason; the
    /// first refusal per (signer, reason) is logged with the signer.
    pub fn open<T: SignedMessage>(
        &self,
        role: &str,
        payload: &[u8],
    ) -> Result<(Envelope<T>, Hash32), Refusal> {
        let admitted = Envelope::<T>::open(payload, self.max_message_bytes)
            .map_err(Refusal::from)
            .and_then(|(env, digest)| self.trust.admit(&env).map(|()| (env, digest)));
        match admitted {
            Ok(ok) => {
                self.metrics
                    .messages_in
                    .with_label_values(&[role, T::KIND])
                    .inc();
                Ok(ok)
            }
            Err(e) => {
                self.refused(role, &e);
                Err(e)
            }
        }
    }

    /// Count a refusal by reason; log it the first time its (signer, reason) pair is seen.
    pub fn refused(&self, role: &str, refusal: &Refusal) {
        self.metrics.reject(role, refusal.reason());
        if self.trust.first_refusal(refusal) {
            tracing::warn!(role, reason = refusal.reason(), signer = refusal.signer().unwrap_or("-"), error = %refusal, "refused incoming message (further refusals of this signer for this reason are only counted)");
        }
    }
}

/// The servers of a `[nats] url`: one URL, or several comma-separated (the nodes of a
/// cluster). The client starts on whichever answers and learns the rest from the server, so
/// a process starts even while the first node listed is down.
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let parse_error =
        |u: &str, source: Box<dyn std::error::Error + Send + Sync>| BusError::Connect {
            url: u.to_string(),
            source: async_nats::ConnectError::with_source(
                async_nats::ConnectErrorKind::ServerParse,
                source,
            ),
        };
    if url.split(',').all(|u| u.trim().is_empty()) {
        return Err(parse_error(url, "no server URL".into()));
    }
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse().map_err(|e| parse_error(u, Box::new(e))))
        .collect()
}

/// The JetStream server timestamp of a message in unix milliseconds: submission time is
/// the server's word, never the publisher's claim.
pub fn server_timestamp_ms(msg: &jetstream::Message) -> Option<u64> {
    let info = msg.info().ok()?;
    let nanos = info.published.unix_timestamp_nanos();
    u64::try_from(nanos / 1_000_000).ok()
}

pub use crate::time::now_ms;

/// The last message of `stream` on `subject` (wildcards allowed); `Ok(None)` when it holds
/// none. One request (a direct get where the stream allows it).
pub async fn last_on_subject(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<jetstream::message::StreamMessage>, jetstream::stream::LastRawMessageError> {
    use jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// How often a client pings its server. async-nats drops a connection after 3 unanswered
/// pings, so a client whose node went silent (a cut link sends no reset) reconnects to
/// another node of the cluster in ~10 s; the default 60 s took over 3 minutes, and a miner
/// connected to the cut node mined nothing meanwhile (runtime/tests/multi_host.rs).
pub const CLIENT_PING_INTERVAL: Duration = Duration::from_secs(3);

/// Messages of `stream` whose subject matches `filter`, in stream order, from an ephemeral
/// ordered consumer (nothing to ack: a restarted reader simply replays). The reader survives
/// reconnects and server restarts: it rebuilds its consumer from the next unread sequence
/// (see [`Bus::replay`]). An `Err` item means the consumer could not be rebuilt for a while.
pub type OrderedMessages = futures::stream::BoxStream<'static, anyhow::Result<jetstream::Message>>;

/// Failed rebuilds (while connected) before a reader gives up and reports an error.
const REPLAY_MAX_FAILURES: u32 = 8;

/// A reader handed nothing for this long asks the stream whether it missed something; each
/// check that finds nothing doubles the wait up to [`REPLAY_STALL_CHECK_MAX`] (thousands of
/// idle readers, a few per miner, would otherwise keep the JetStream API busy for nothing).
const REPLAY_STALL_CHECK: Duration = Duration::from_secs(8);
const REPLAY_STALL_CHECK_MAX: Duration = Duration::from_secs(32);

/// The wait before the next stall check after `quiet` checks in a row found nothing.
fn stall_check_after(quiet: u32) -> Duration {
    REPLAY_STALL_CHECK
        .saturating_mul(1 << quiet.min(8))
        .min(REPLAY_STALL_CHECK_MAX)
}

struct ReplayState {
    bus: Bus,
    stream: String,
    filter: String,
    deliver: DeliverPolicy,
    /// Stream sequence after the last message handed out (where a rebuild resumes).
    next_sequence: Option<u64>,
    inner: Option<jetstream::consumer::pull::Ordered>,
    connections: tokio::sync::watch::Receiver<u64>,
    failures: u32,
    /// The stream handle stall checks reuse (dropped when a check fails).
    handle: Option<jetstream::stream::Stream>,
    /// Stall checks in a row that found nothing (see [`stall_check_after`]).
    quiet_checks: u32,
}

impl ReplayState {
    fn open(&self) -> impl Future<Output = anyhow::Result<jetstream::consumer::pull::Ordered>> {
        // Owned copies: `self` holds the (non-Sync) reader, so the future must not borrow it.
        let (js, stream, filter) = (
            self.bus.js.clone(),
            self.stream.clone(),
            self.filter.clone(),
        );
        let deliver = match self.next_sequence {
            Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            None => self.deliver,
        };
        async move {
            let s = get_stream(&js, &stream).await?;
            let consumer = s
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    // Named: the bus permissions grant non-admins only named ephemeral
                    // creates on streams with durable consumers (messages::bus_permissions).
                    name: Some(format!("reader_{:016x}", rand::random::<u64>())),
                    filter_subject: filter.clone(),
                    deliver_policy: deliver,
                    // Short pulls, so heartbeats every ~2 s: on a NATS cluster the node
                    // holding this consumer can die while our own connection stays up, and
                    // only missed heartbeats tell (after 30 s with the default 15 s).
                    max_expires: Duration::from_secs(4),
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("ordered consumer on {stream} ({filter}): {e}"))?;
            consumer
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("reading {stream} ({filter}): {e}"))
        }
    }

    /// Drop the consumer after `error`; true when the reader should give up.
    async fn failed(&mut self, error: &anyhow::Error) -> bool {
        self.inner = None;
        let connected =
            self.bus.client.connection_state() == async_nats::connection::State::Connected;
        if connected {
            self.failures += 1;
        }
        tracing::warn!(stream = %self.stream, filter = %self.filter, error = %format!("{error:#}"),
            failures = self.failures, "ordered reader failed; rebuilding its consumer");
        if self.failures >= REPLAY_MAX_FAILURES {
            return true;
        }
        let backoff = Duration::from_millis(100 << self.failures.min(4));
        // A reconnect ends the wait early: that is when a rebuild can succeed.
        let _ = tokio::time::timeout(backoff, self.connections.changed()).await;
        false
    }

    /// Whether the stream holds a message for our filter at or after the next sequence we
    /// expect, though the reader has handed out nothing for a while ([`stall_check_after`]):
    /// on a NATS cluster the node holding our ephemeral consumer can be cut off (a dead link
    /// sends no reset) while our own connection stays up, and the consumer then waits
    /// silently. Also returns the stream handle to reuse (`None` after a failed request).
    fn stalled(&self) -> impl Future<Output = (bool, Option<jetstream::stream::Stream>)> {
        // Owned copies: `self` holds the (non-Sync) reader, so the future must not borrow it.
        let (js, stream, filter, handle) = (
            self.bus.js.clone(),
            self.stream.clone(),
            self.filter.clone(),
            self.handle.clone(),
        );
        let next = self.next_sequence;
        async move {
            // Nothing read yet: the first message may simply not exist.
            let Some(next) = next else {
                return (false, handle);
            };
            let handle = match handle {
                Some(h) => h,
                None => match js.get_stream(&stream).await {
                    Ok(h) => h,
                    Err(_) => return (false, None),
                },
            };
            match last_on_subject(&handle, &filter).await {
                Ok(last) => (last.is_some_and(|m| m.sequence >= next), Some(handle)),
                Err(_) => (false, None),
            }
        }
    }

    /// The client reconnected: if the server restarted, our ephemeral consumer is gone and
    /// the client would only notice after two missed heartbeats, so rebuild it now.
    fn reconnected(&mut self) {
        tracing::info!(stream = %self.stream, filter = %self.filter, "reconnected; rebuilding ordered reader");
        self.inner = None;
    }

    /// One stall check ([`Self::stalled`]), rebuilding the reader when it is behind. Its
    /// requests may hang on a dead connection: a reconnect meanwhile rebuilds at once instead
    /// of after their timeout.
    async fn check_stall(&mut self) {
        tokio::select! {
            (stalled, handle) = self.stalled() => {
                self.handle = handle;
                self.quiet_checks = self.quiet_checks.saturating_add(1);
                if stalled {
                    tracing::warn!(stream = %self.stream, filter = %self.filter, next = ?self.next_sequence,
                        "ordered reader stalled behind the stream; rebuilding it");
                    self.inner = None;
                    self.quiet_checks = 0;
                }
            },
            Ok(()) = self.connections.changed() => self.reconnected(),
        }
    }

    async fn next(&mut self) -> Option<anyhow::Result<jetstream::Message>> {
        loop {
            let inner = match self.inner.as_mut() {
                Some(inner) => inner,
                None => match self.open().await {
                    Ok(inner) => self.inner.insert(inner),
                    Err(e) if self.failed(&e).await => return Some(Err(e)),
                    Err(_) => continue,
                },
            };
            tokio::select! {
                msg = futures::StreamExt::next(inner) => match msg {
                    Some(Ok(msg)) => {
                        if let Ok(info) = msg.info() {
                            self.next_sequence = Some(info.stream_sequence + 1);
                        }
                        self.failures = 0;
                        self.quiet_checks = 0;
                        return Some(Ok(msg));
                    }
                    Some(Err(e)) => {
                        let e = anyhow::anyhow!("reading {} ({}): {e}", self.stream, self.filter);
                        if self.failed(&e).await {
                            return Some(Err(e));
                        }
                    }
                    None => {
                        let e = anyhow::anyhow!("{} ({}) reader ended", self.stream, self.filter);
                        if self.failed(&e).await {
                            return None;
                        }
                    }
                },
                Ok(()) = self.connections.changed() => self.reconnected(),
                () = tokio::time::sleep(stall_check_after(self.quiet_checks)) => {
                    self.check_stall().await;
                }
            }
        }
    }
}

impl Bus {
    /// Read `stream` (subjects matching `filter`) in order from `deliver` on. Fails at once
    /// when the stream or consumer cannot be created; afterwards it rebuilds the consumer
    /// after reconnects and errors, resuming after the last message it returned.
    pub async fn replay(
        &self,
        stream: &str,
        filter: &str,
        deliver: DeliverPolicy,
    ) -> anyhow::Result<OrderedMessages> {
        let mut connections = self.connections.clone();
        connections.borrow_and_update();
        let mut state = ReplayState {
            bus: self.clone(),
            stream: stream.to_string(),
            filter: filter.to_string(),
            deliver,
            next_sequence: None,
            inner: None,
            connections,
            failures: 0,
            handle: None,
            quiet_checks: 0,
        };
        state.inner = Some(state.open().await?);
        let messages = futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        });
        Ok(Box::pin(messages))
    }
}

/// A stream of the topology, with an error that says how to create it.
pub async fn get_stream(
    js: &jetstream::Context,
    name: &str,
) -> anyhow::Result<jetstream::stream::Stream> {
    js.get_stream(name)
        .await
        .map_err(|e| anyhow::anyhow!("stream {name}: {e} (run `grail streams`)"))
}

/// `(subject, message count)` for every subject of stream `name` matching `filter`.
pub async fn subject_counts(
    js: &jetstream::Context,
    name: &str,
    filter: &str,
) -> anyhow::Result<Vec<(String, usize)>> {
    let stream = get_stream(js, name).await?;
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| anyhow::anyhow!("stream {name} info ({filter}): {e}"))?;
    let mut out = Vec::new();
    while let Some(item) = futures::StreamExt::next(&mut subjects).await {
        out.push(item.map_err(|e| anyhow::anyhow!("stream {name} subjects ({filter}): {e}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod stall_check_tests {
    use super::*;

    #[test]
    fn idle_readers_check_less_often_but_never_less_than_every_32_s() {
        let waits: Vec<u64> = (0..6).map(|q| stall_check_after(q).as_secs()).collect();
        assert_eq!(waits, [8, 16, 32, 32, 32, 32]);
        assert_eq!(stall_check_after(u32::MAX), REPLAY_STALL_CHECK_MAX);
    }
}
