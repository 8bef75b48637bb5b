//! Supervised compute workers on dedicated OS threads.
//!
//! Model compute must never run inside an async actor (it would stall every actor on that
//! arbiter), and an uncaught panic would kill an actix actor for good. A [`WorkerPool`] owns
//! `n` threads, each holding one [`Worker`] (for example a model replica on one device). Every
//! job runs under `catch_unwind`. A panic or a fault ([`WorkerFault::rebuilds_worker`]: device
//! or model trouble) drops the worker (its state may be corrupt), counts
//! `grail_worker_restarts_total{role,worker}`, rebuilds it after an exponential backoff, and
//! retries the same job, so the job is not lost. After `max_attempts` the caller gets an error
//! and can hand the message back to JetStream. A job error (bad input, a refused job) goes
//! straight back to the caller: the worker is healthy and keeps serving.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Any error, boxed with its source chain intact.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How a worker pool treats a worker's error.
pub trait WorkerFault: std::error::Error + Send + Sync + Sized + 'static {
    /// True when the worker itself is suspect (device or model fault): drop it, rebuild it and
    /// retry the job. False when the job is at fault: return the error, keep the worker.
    fn rebuilds_worker(&self) -> bool;

    /// The error as the pool hands it on (a wrapper may unwrap itself here so that callers
    /// can downcast to the typed cause).
    fn into_boxed(self) -> BoxError {
        Box::new(self)
    }
}

/// Compute state living on one worker thread.
pub trait Worker: Sized {
    type Job: Send + 'static;
    type Output: Send + 'static;
    type Error: WorkerFault;
    /// Handle one job; a faulty `Err` rebuilds the worker (see [`WorkerFault`]).
    fn run(&mut self, job: &Self::Job) -> Result<Self::Output, Self::Error>;
}

/// Builds a worker for slot `index` (called again after every restart).
pub type WorkerFactory<W> = Arc<dyn Fn(usize) -> anyhow::Result<W> + Send + Sync>;

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub role: String,
    pub threads: usize,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl PoolConfig {
    pub fn new(role: &str, threads: usize) -> Self {
        Self {
            role: role.to_string(),
            threads: threads.max(1),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The job failed without fault of the worker (bad input, a refused job); not retried.
    #[error("{role} job failed: {source}")]
    Job {
        role: String,
        #[source]
        source: BoxError,
    },
    #[error("job failed {attempts} times on {role} workers; last failure: {last}")]
    Exhausted {
        role: String,
        attempts: u32,
        #[source]
        last: BoxError,
    },
    #[error("{role} worker pool is shut down")]
    Closed { role: String },
}

struct Task<W: Worker> {
    job: W::Job,
    reply: oneshot::Sender<Result<W::Output, PoolError>>,
}

pub struct WorkerPool<W: Worker> {
    sender: Mutex<Option<mpsc::Sender<Task<W>>>>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
    role: String,
}

impl<W: Worker + 'static> WorkerPool<W> {
    pub fn start(config: PoolConfig, factory: WorkerFactory<W>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel::<Task<W>>();
        let rx = Arc::new(Mutex::new(rx));
        // Zero-valued series from the start: "no restarts" must differ from "not exported".
        for slot in 0..config.threads {
            metrics
                .worker_restarts
                .with_label_values(&[&config.role, &slot.to_string()]);
        }
        let threads = (0..config.threads)
            .map(|slot| {
                let rx = rx.clone();
                let factory = factory.clone();
                let metrics = metrics.clone();
                let config = config.clone();
                thread::Builder::new()
                    .name(format!("{}-worker-{slot}", config.role))
                    .spawn(move || worker_loop(slot, config, factory, metrics, rx))
                    .expect("spawning a worker thread")
            })
            .collect();
        Self {
            sender: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            role: config.role,
        }
    }

    /// Run `job` on some worker; resolves when it is done (after any restarts).
    pub async fn run(&self, job: W::Job) -> Result<W::Output, PoolError> {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .sender
            .lock()
            .expect("pool sender lock")
            .as_ref()
            .map(|s| s.send(Task { job, reply }).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(PoolError::Closed {
                role: self.role.clone(),
            });
        }
        rx.await.unwrap_or(Err(PoolError::Closed {
            role: self.role.clone(),
        }))
    }

    /// Stop accepting jobs and join the threads after they finish their current job.
    pub fn shutdown(&self) {
        self.sender.lock().expect("pool sender lock").take();
        for t in self.threads.lock().expect("pool threads lock").drain(..) {
            let _ = t.join();
        }
    }
}

impl<W: Worker> Drop for WorkerPool<W> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
    }
}

/// A worker that could not start or did not return (the last failure of an exhausted job).
#[derive(Debug, thiserror::Error)]
pub enum WorkerFailure {
    #[error("worker start failed: {0:#}")]
    Start(#[source] anyhow::Error),
    #[error("worker start panicked: {0}")]
    StartPanicked(String),
    #[error("worker panicked: {0}")]
    Panicked(String),
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn worker_loop<W: Worker>(
    slot: usize,
    config: PoolConfig,
    factory: WorkerFactory<W>,
    metrics: Arc<Metrics>,
    rx: Arc<Mutex<mpsc::Receiver<Task<W>>>>,
) {
    let slot_label = slot.to_string();
    let mut worker: Option<W> = None;
    let mut backoff = config.initial_backoff;
    loop {
        let task = match rx.lock().expect("pool receiver lock").recv() {
            Ok(t) => t,
            Err(_) => return, // pool shut down
        };
        let mut attempts = 0;
        let mut last: Option<BoxError> = None;
        let result = loop {
            if attempts >= config.max_attempts {
                break Err(PoolError::Exhausted {
                    role: config.role.clone(),
                    attempts,
                    last: last
                        .take()
                        .unwrap_or_else(|| "no attempt (max_attempts = 0)".into()),
                });
            }
            attempts += 1;
            if worker.is_none() {
                let failure = match catch_unwind(AssertUnwindSafe(|| factory(slot))) {
                    Ok(Ok(w)) => {
                        worker = Some(w);
                        None
                    }
                    Ok(Err(e)) => Some(WorkerFailure::Start(e)),
                    Err(p) => Some(WorkerFailure::StartPanicked(panic_message(&*p))),
                };
                if let Some(failure) = failure {
                    tracing::error!(role = %config.role, worker = slot, error = %failure, "worker could not start");
                    last = Some(Box::new(failure));
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(config.max_backoff);
                    continue;
                }
            }
            let w = worker.as_mut().expect("worker present");
            match catch_unwind(AssertUnwindSafe(|| w.run(&task.job))) {
                Ok(Ok(out)) => {
                    backoff = config.initial_backoff;
                    break Ok(out);
                }
                Ok(Err(e)) if !e.rebuilds_worker() => {
                    // The job was at fault, not the worker: hand the error back, keep the worker.
                    backoff = config.initial_backoff;
                    break Err(PoolError::Job {
                        role: config.role.clone(),
                        source: e.into_boxed(),
                    });
                }
                Ok(Err(e)) => last = Some(e.into_boxed()),
                Err(p) => last = Some(Box::new(WorkerFailure::Panicked(panic_message(&*p)))),
            }
            let error = last.as_deref().map(|e| e.to_string()).unwrap_or_default();
            // The worker's state is suspect: rebuild it and retry the same job.
            worker = None;
            metrics
                .worker_restarts
                .with_label_values(&[&config.role, &slot_label])
                .inc();
            tracing::warn!(role = %config.role, worker = slot, attempt = attempts, %error,
                backoff_ms = backoff.as_millis() as u64, "restarting worker and retrying its job");
            thread::sleep(backoff);
            backoff = (backoff * 2).min(config.max_backoff);
        };
        let _ = task.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::model::ModelComputeError;
    use crate::compute::ComputeError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Flaky {
        calls: Arc<AtomicUsize>,
    }

    impl Worker for Flaky {
        type Job = u64;
        type Output = u64;
        type Error = ComputeError;
        fn run(&mut self, job: &u64) -> Result<u64, ComputeError> {
            // Panic on the first attempt of every odd job.
            if job % 2 == 1 && self.calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                panic!("simulated crash on job {job}");
            }
            Ok(job * 10)
        }
    }

    fn restarts(metrics: &Metrics, role: &str) -> u64 {
        metrics
            .worker_restarts
            .with_label_values(&[role, "0"])
            .get()
    }

    #[tokio::test]
    async fn panicking_worker_is_restarted_and_job_completes() {
        let metrics = Arc::new(Metrics::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let starts = Arc::new(AtomicUsize::new(0));
        let (c, s) = (calls.clone(), starts.clone());
        let factory: WorkerFactory<Flaky> = Arc::new(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
            Ok(Flaky { calls: c.clone() })
        });
        let mut cfg = PoolConfig::new("test", 1);
        cfg.initial_backoff = Duration::from_millis(1);
        let pool = WorkerPool::start(cfg, factory, metrics.clone());
        for job in 0..6u64 {
            assert_eq!(pool.run(job).await.unwrap(), job * 10);
        }
        assert_eq!(restarts(&metrics, "test"), 3, "one restart per odd job");
        assert_eq!(
            starts.load(Ordering::SeqCst),
            4,
            "initial start + 3 rebuilds"
        );
        pool.shutdown();
    }

    /// Refuses jobs without a checkpoint (a job error) and hits a candle error on the first
    /// attempt of job 7 (a model fault), as the model compute does.
    struct Classified {
        faults: Arc<AtomicUsize>,
    }

    impl Worker for Classified {
        type Job = Option<u64>;
        type Output = u64;
        type Error = ComputeError;
        fn run(&mut self, job: &Option<u64>) -> Result<u64, ComputeError> {
            let job = job.ok_or(ModelComputeError::NoCheckpoint { window: 3 })?;
            if job == 7 && self.faults.fetch_add(1, Ordering::SeqCst) == 0 {
                let candle = candle_core::Error::Msg("CUDA_ERROR_ILLEGAL_ADDRESS".into());
                return Err(ModelComputeError::Policy(candle.into()).into());
            }
            Ok(job)
        }
    }

    #[tokio::test]
    async fn a_job_error_keeps_the_worker_and_a_fault_rebuilds_it() {
        let metrics = Arc::new(Metrics::new());
        let starts = Arc::new(AtomicUsize::new(0));
        let faults = Arc::new(AtomicUsize::new(0));
        let (s, f) = (starts.clone(), faults.clone());
        let factory: WorkerFactory<Classified> = Arc::new(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
            Ok(Classified { faults: f.clone() })
        });
        let mut cfg = PoolConfig::new("classified", 1);
        cfg.initial_backoff = Duration::from_millis(1);
        let pool = WorkerPool::start(cfg, factory, metrics.clone());

        // A refused job comes back at once, typed, and the worker is not rebuilt.
        let err = pool.run(None).await.unwrap_err();
        let PoolError::Job { source, .. } = &err else {
            panic!("expected a job error, got {err}");
        };
        assert!(
            matches!(
                source.downcast_ref::<ModelComputeError>(),
                Some(ModelComputeError::NoCheckpoint { window: 3 })
            ),
            "{source:?}"
        );
        assert_eq!(restarts(&metrics, "classified"), 0);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert_eq!(
            pool.run(Some(5)).await.unwrap(),
            5,
            "the same worker serves on"
        );
        assert_eq!(starts.load(Ordering::SeqCst), 1);

        // A model fault rebuilds the worker and the job is retried on the new one.
        assert_eq!(pool.run(Some(7)).await.unwrap(), 7);
        assert_eq!(restarts(&metrics, "classified"), 1);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        pool.shutdown();
    }

    struct AlwaysFails;
    impl Worker for AlwaysFails {
        type Job = ();
        type Output = ();
        type Error = ComputeError;
        fn run(&mut self, _: &()) -> Result<(), ComputeError> {
            Err(ComputeError::fault("device lost"))
        }
    }

    #[tokio::test]
    async fn exhausted_retries_return_an_error_and_pool_keeps_serving() {
        let metrics = Arc::new(Metrics::new());
        let mut cfg = PoolConfig::new("bad", 2);
        cfg.initial_backoff = Duration::from_millis(1);
        let pool = WorkerPool::start(cfg, Arc::new(|_| Ok(AlwaysFails)), metrics);
        for _ in 0..3 {
            let err = pool.run(()).await.unwrap_err();
            assert!(
                matches!(err, PoolError::Exhausted { attempts: 3, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("device lost"), "{err}");
        }
        pool.shutdown();
        assert!(matches!(pool.run(()).await, Err(PoolError::Closed { .. })));
    }
}
