//! A small supervisor for role loops (it replaces actix actors, which grail used only as a
//! restart wrapper: no messages, no handlers, and an actor that had to hold its own address to
//! stay alive).
//!
//! Each role instance runs as one local task: the loop runs; when it fails the supervisor
//! counts `grail_actor_restarts_total{role}`, waits an exponential backoff and runs it again
//! (resuming from durable state: JetStream consumers, KV). The backoff resets once a run was
//! healthy for [`RestartPolicy::healthy_after`], so a role that fails once a day is not
//! throttled like a crash loop. On shutdown, loops that drain get [`RestartPolicy::grace`] to
//! settle their in-flight work; the others are dropped at once (their owned tasks with them).
//! Every instance started from a [`RoleCtx`] also heartbeats (`grail.heartbeat.<role>.<instance>`)
//! for as long as it is supervised.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::heartbeat::heartbeats;
use crate::metrics::Metrics;
use crate::role::{RoleCtx, RoleLoop};
use crate::shutdown::ShutdownSignal;
use crate::task::OwnedTask;

/// When and how fast a failed loop is restarted, and how long a draining one may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RestartPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A run this long is healthy: the next failure starts again from `initial_backoff`.
    pub healthy_after: Duration,
    /// How long a draining loop may take after shutdown is requested.
    pub grace: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            healthy_after: Duration::from_secs(30),
            grace: Duration::from_secs(10),
        }
    }
}

impl RestartPolicy {
    /// The wait before restart number `failures` (1-based) of a crash loop.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The restart decision, pure: consecutive failures, reset by a healthy run.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// A run that lasted `ran_for` failed: how long to wait before the next one.
    pub fn on_failure(&mut self, ran_for: Duration, policy: &RestartPolicy) -> Duration {
        if ran_for >= policy.healthy_after {
            self.failures = 0;
        }
        self.failures += 1;
        policy.backoff(self.failures)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A supervised role instance. Dropping the handle does not stop the role (it runs until
/// shutdown or until its runtime stops); [`RoleHandle::stopped`] waits for it.
pub struct RoleHandle {
    pub role: &'static str,
    pub instance: String,
    task: JoinHandle<()>,
}

impl RoleHandle {
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Wait until the role stopped (after shutdown, or a loop that returned `Ok`).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Run `body` (the loop of `ctx`'s role instance) under supervision until `shutdown`.
pub fn start_with(
    ctx: &RoleCtx,
    body: Arc<dyn RoleLoop>,
    shutdown: ShutdownSignal,
    policy: RestartPolicy,
) -> RoleHandle {
    let name = Supervised {
        role: ctx.role,
        instance: ctx.instance.clone(),
        metrics: ctx.bus.metrics.clone(),
    };
    // Heartbeats for as long as the instance is supervised (they end with it).
    let beats = (ctx.clone(), HEARTBEAT_EVERY);
    let (role, instance) = (name.role, name.instance.clone());
    let task = actix_rt::spawn(async move {
        let _beats = OwnedTask::spawn(heartbeats(beats.0, beats.1));
        supervise(name, body, shutdown, policy).await
    });
    RoleHandle {
        role,
        instance,
        task,
    }
}

/// How often every role instance says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// [`start_with`] the default policy and no shutdown path (tests, tools).
pub fn start(ctx: RoleCtx, body: Arc<dyn RoleLoop>) -> RoleHandle {
    start_with(
        &ctx,
        body,
        ShutdownSignal::never(),
        RestartPolicy::default(),
    )
}

/// Who is supervised: names and where to count.
pub struct Supervised {
    pub role: &'static str,
    pub instance: String,
    pub metrics: Arc<Metrics>,
}

pub fn spawn(
    name: Supervised,
    body: Arc<dyn RoleLoop>,
    shutdown: ShutdownSignal,
    policy: RestartPolicy,
) -> RoleHandle {
    let (role, instance) = (name.role, name.instance.clone());
    let task = actix_rt::spawn(supervise(name, body, shutdown, policy));
    RoleHandle {
        role,
        instance,
        task,
    }
}

async fn supervise(
    name: Supervised,
    body: Arc<dyn RoleLoop>,
    shutdown: ShutdownSignal,
    policy: RestartPolicy,
) {
    let metrics = name.metrics.clone();
    let (role, instance) = (name.role, name.instance.as_str());
    // Zero-valued series from the start, so an alert on restarts sees 0, not nothing.
    metrics.actor_restarts.with_label_values(&[role]);
    metrics.roles_alive.with_label_values(&[role]).inc();
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let mut run = body.run(shutdown.clone());
        let result = tokio::select! {
            result = &mut run => Some(result),
            _ = shutdown.requested(), if !body.drains() => None,
        };
        drop(run);
        match result {
            None => {
                tracing::info!(role, instance, "stopped on shutdown");
                break;
            }
            Some(Ok(())) => {
                tracing::info!(role, instance, "role loop finished");
                break;
            }
            Some(Err(e)) if shutdown.is_requested() => {
                tracing::info!(role, instance, error = %format!("{e:#}"), "role loop ended during shutdown");
                break;
            }
            Some(Err(e)) => {
                let delay = backoff.on_failure(started.elapsed(), &policy);
                let failures = backoff.failures();
                metrics.actor_restarts.with_label_values(&[role]).inc();
                tracing::error!(role, instance, error = %format!("{e:#}"), failures,
                    backoff_ms = delay.as_millis() as u64, "role loop failed; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.requested() => break,
                }
            }
        }
    }
    metrics.roles_alive.with_label_values(&[role]).dec();
}

/// Stop every role: request shutdown, then wait (at most `grace` plus a second) for them all.
/// Returns the instances that did not stop in time.
pub async fn stop_all(
    shutdown: &crate::shutdown::Shutdown,
    roles: Vec<RoleHandle>,
    grace: Duration,
) -> Vec<String> {
    shutdown.request();
    let deadline = Instant::now() + grace + Duration::from_secs(1);
    let mut late = Vec::new();
    for handle in roles {
        let name = handle.instance.clone();
        if tokio::time::timeout_at(deadline, handle.stopped())
            .await
            .is_err()
        {
            late.push(name);
        }
    }
    late
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::RoleFuture;
    use crate::shutdown::Shutdown;
    use crate::task::OwnedTask;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// Fails `fail_first` times (after `run_for`), then runs until shutdown; each run spawns
    /// an owned helper task that counts while it lives.
    struct Flaky {
        runs: Arc<AtomicU32>,
        fail_first: u32,
        run_for: Duration,
        helper_ticks: Arc<AtomicU32>,
        started_at: Arc<Mutex<Vec<Instant>>>,
        drains: bool,
    }

    impl RoleLoop for Flaky {
        fn run(&self, shutdown: ShutdownSignal) -> RoleFuture {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            self.started_at.lock().unwrap().push(Instant::now());
            let (fail, run_for, ticks, drains) = (
                n <= self.fail_first,
                self.run_for,
                self.helper_ticks.clone(),
                self.drains,
            );
            Box::pin(async move {
                let _helper = OwnedTask::spawn(async move {
                    loop {
                        ticks.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
                if fail {
                    tokio::time::sleep(run_for).await;
                    anyhow::bail!("failure {n}");
                }
                if drains {
                    shutdown.requested().await;
                    // Settle in-flight work, then return.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Ok(());
                }
                futures::future::pending::<()>().await;
                Ok(())
            })
        }
        fn drains(&self) -> bool {
            self.drains
        }
    }

    fn flaky(fail_first: u32, run_for: Duration, drains: bool) -> (Arc<Flaky>, Arc<AtomicU32>) {
        let runs = Arc::new(AtomicU32::new(0));
        let body = Arc::new(Flaky {
            runs: runs.clone(),
            fail_first,
            run_for,
            helper_ticks: Arc::new(AtomicU32::new(0)),
            started_at: Arc::new(Mutex::new(vec![])),
            drains,
        });
        (body, runs)
    }

    fn name(metrics: &Arc<Metrics>) -> Supervised {
        Supervised {
            role: "test",
            instance: "test-0".into(),
            metrics: metrics.clone(),
        }
    }

    const FAST: RestartPolicy = RestartPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
        healthy_after: Duration::from_millis(150),
        grace: Duration::from_secs(2),
    };

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = FAST;
        let ms: Vec<u128> = (1..=5).map(|f| p.backoff(f).as_millis()).collect();
        assert_eq!(ms, vec![20, 40, 80, 80, 80]);
    }

    #[actix_rt::test]
    async fn failed_loops_restart_with_backoff_counted_and_then_run() {
        let metrics = Arc::new(Metrics::new());
        let (body, runs) = flaky(3, Duration::ZERO, false);
        let shutdown = Shutdown::new();
        let handle = spawn(name(&metrics), body.clone(), shutdown.signal(), FAST);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three failures, then a healthy run"
        );
        let starts = body.started_at.lock().unwrap().clone();
        let gaps: Vec<u128> = starts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert!(
            gaps[0] >= 20 && gaps[1] >= 40 && gaps[2] >= 80,
            "backoff grows: {gaps:?}"
        );
        assert_eq!(metrics.actor_restarts.with_label_values(&["test"]).get(), 3);
        assert_eq!(metrics.roles_alive.with_label_values(&["test"]).get(), 1);
        shutdown.request();
        tokio::time::timeout(Duration::from_secs(1), handle.stopped())
            .await
            .expect("a non-draining loop stops at once");
        assert_eq!(metrics.roles_alive.with_label_values(&["test"]).get(), 0);
    }

    #[test]
    fn backoff_resets_after_a_healthy_run() {
        let p = FAST;
        let mut b = Backoff::default();
        let quick = Duration::from_millis(1);
        let waits: Vec<u128> = (0..3)
            .map(|_| b.on_failure(quick, &p).as_millis())
            .collect();
        assert_eq!(waits, vec![20, 40, 80], "a crash loop backs off");
        assert_eq!(
            b.on_failure(p.healthy_after, &p).as_millis(),
            20,
            "a failure after a healthy run starts over"
        );
        assert_eq!(b.failures(), 1);
    }

    #[actix_rt::test]
    async fn owned_tasks_end_with_their_run_and_draining_loops_get_to_finish() {
        let metrics = Arc::new(Metrics::new());
        let (body, _) = flaky(1, Duration::from_millis(30), true);
        let shutdown = Shutdown::new();
        let handle = spawn(name(&metrics), body.clone(), shutdown.signal(), FAST);
        tokio::time::sleep(Duration::from_millis(150)).await;
        shutdown.request();
        let stopped = Instant::now();
        let late = stop_all(&shutdown, vec![handle], FAST.grace).await;
        assert!(late.is_empty());
        let took = stopped.elapsed();
        assert!(took >= Duration::from_millis(40), "drained in {took:?}");
        // After the stop, no helper of any run is alive: the tick count stays put.
        let ticks = body.helper_ticks.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            body.helper_ticks.load(Ordering::SeqCst),
            ticks,
            "a helper task leaked"
        );
    }
}
