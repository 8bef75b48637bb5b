//! Evaluator: scores the base model (checkpoint seq 0) and every new anchor checkpoint (or
//! every checkpoint) on a fixed subset of the environment's held-out split, and publishes a
//! signed [`EvalReport`] on `grail.eval.<seq>` (stream `GRAIL_EVAL`, kept forever).
//!
//! Reports inform people and dashboards; nothing trains or scores on them. Evaluation is
//! deterministic in (weights, env, plan), so anyone can re-run a report with
//! `grail eval --checkpoint <seq>` and compare. Compute runs on a worker thread.
//!
//! Which checkpoint to evaluate next is [`EvalQueue`], a pure type with unit tests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use messages::subjects as subj;
use messages::{CheckpointKind, DataSplit, EvalReport, WIRE_VERSION};

use crate::bus::{now_ms, MsgMeta};
use crate::checkpoints::CheckpointBook;
use crate::compute::model::evaluate::{EvalPlan, Evaluation};
use crate::compute::model::ModelEvaluator;
use crate::role::{RoleCtx, RoleFuture, RoleLoop};
use crate::shutdown::ShutdownSignal;
use crate::worker_pool::WorkerPool;

/// Which announced checkpoints the evaluator scores (the base model, seq 0, always).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalEvery {
    /// Full checkpoints only (every `anchor_every`-th): the default, cheap on any model.
    Anchors,
    /// Every announced checkpoint, deltas included.
    Checkpoints,
}

/// Pure decisions: which checkpoint to evaluate next.
///
/// In seq order, so the published curve has no holes, except that when more than
/// `max_backlog` eligible checkpoints wait (evaluation slower than publication) the older
/// ones are skipped: the newest scores matter most. Seq 0, the base model, is never skipped:
/// it is what every later score is compared with.
#[derive(Clone, Debug)]
pub struct EvalQueue {
    every: EvalEvery,
    max_backlog: usize,
    /// Evaluated (by us, now or before a restart) or skipped.
    settled: BTreeSet<u64>,
}

impl EvalQueue {
    pub fn new(every: EvalEvery, max_backlog: usize) -> Self {
        Self {
            every,
            max_backlog: max_backlog.max(1),
            settled: BTreeSet::new(),
        }
    }

    /// `seq` needs no evaluation (done, already reported, or given up on).
    pub fn settle(&mut self, seq: u64) {
        self.settled.insert(seq);
    }

    pub fn is_settled(&self, seq: u64) -> bool {
        self.settled.contains(&seq)
    }

    /// The next seq to evaluate among the announced `(seq, is_full)`, if any.
    pub fn next(&mut self, announced: &[(u64, bool)]) -> Option<u64> {
        let eligible: Vec<u64> = announced
            .iter()
            .filter(|(seq, full)| {
                *seq == 0 || *full || matches!(self.every, EvalEvery::Checkpoints)
            })
            .map(|(seq, _)| *seq)
            .filter(|seq| !self.settled.contains(seq))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if eligible.first() == Some(&0) {
            return Some(0);
        }
        let skip = eligible.len().saturating_sub(self.max_backlog);
        for seq in &eligible[..skip] {
            self.settled.insert(*seq);
        }
        eligible.get(skip).copied()
    }
}

#[derive(Clone, Debug)]
pub struct EvaluatorConfig {
    pub every: EvalEvery,
    /// The env id reports name (the manifest's).
    pub env: String,
    pub plan: EvalPlan,
    pub max_backlog: usize,
}

pub struct Evaluator {
    ctx: RoleCtx,
    cfg: EvaluatorConfig,
    pool: Arc<WorkerPool<ModelEvaluator>>,
    book: CheckpointBook,
    queue: Arc<std::sync::Mutex<EvalQueue>>,
}

impl Evaluator {
    pub fn new(
        ctx: RoleCtx,
        cfg: EvaluatorConfig,
        pool: Arc<WorkerPool<ModelEvaluator>>,
        book: CheckpointBook,
    ) -> Self {
        let queue = EvalQueue::new(cfg.every, cfg.max_backlog);
        Self {
            ctx,
            cfg,
            pool,
            book,
            queue: Arc::new(std::sync::Mutex::new(queue)),
        }
    }
}

impl RoleLoop for Evaluator {
    fn run(&self, _shutdown: ShutdownSignal) -> RoleFuture {
        let (ctx, cfg, pool, book, queue) = (
            self.ctx.clone(),
            self.cfg.clone(),
            self.pool.clone(),
            self.book.clone(),
            self.queue.clone(),
        );
        Box::pin(async move {
            for seq in reported_before(&ctx, &cfg).await? {
                queue.lock().expect("queue lock").settle(seq);
            }
            let follower = book.spawn_follower(ctx.bus.clone(), "evaluator");
            loop {
                if follower.is_finished() {
                    anyhow::bail!("lost the checkpoint stream");
                }
                let next = book.is_caught_up().then(|| {
                    let announced: Vec<(u64, bool)> = book
                        .announcements()
                        .iter()
                        .map(|a| (a.seq, matches!(a.kind, CheckpointKind::Full)))
                        .collect();
                    queue.lock().expect("queue lock").next(&announced)
                });
                let Some(seq) = next.flatten() else {
                    book.changed(Duration::from_millis(500)).await;
                    continue;
                };
                match evaluate_and_publish(&ctx, &cfg, &pool, &book, seq).await {
                    Ok(()) => queue.lock().expect("queue lock").settle(seq),
                    Err(Failure::GiveUp(e)) => {
                        tracing::warn!(seq, error = %format!("{e:#}"), "checkpoint not evaluated; skipping it");
                        queue.lock().expect("queue lock").settle(seq);
                    }
                    Err(Failure::Retry(e)) => return Err(e),
                }
            }
        })
    }
}

enum Failure {
    /// This checkpoint cannot be evaluated (unloadable): move on.
    GiveUp(anyhow::Error),
    /// Something of ours failed (bus, workers): restart the role.
    Retry(anyhow::Error),
}

async fn evaluate_and_publish(
    ctx: &RoleCtx,
    cfg: &EvaluatorConfig,
    pool: &WorkerPool<ModelEvaluator>,
    book: &CheckpointBook,
    seq: u64,
) -> Result<(), Failure> {
    let m = ctx.metrics();
    let checkpoint = book.load_seq(seq).await.map_err(|e| {
        m.reject("evaluator", &format!("checkpoint_{}", e.reason()));
        if e.is_transient() {
            Failure::Retry(e.into())
        } else {
            Failure::GiveUp(e.into())
        }
    })?;
    let started = Instant::now();
    let _working =
        crate::metrics::InFlight::enter(m.in_flight.with_label_values(&[ctx.role, &ctx.instance]));
    let digest = checkpoint.digest;
    let evaluation = pool
        .run(checkpoint)
        .await
        .map_err(|e| Failure::Retry(e.into()))?;
    let secs = started.elapsed().as_secs_f64();
    let report = report(ctx, cfg, seq, digest, &evaluation);
    let (env, split) = (cfg.env.as_str(), DataSplit::Eval.as_str());
    m.eval_seconds.with_label_values(&[env]).observe(secs);
    m.eval_checkpoint_seq
        .with_label_values(&[env, split])
        .set(seq as i64);
    let kinds = [
        ("greedy", Some(&evaluation.greedy)),
        ("sampled", evaluation.sampled.as_ref()),
    ];
    for (kind, scores) in kinds {
        if let Some(s) = scores {
            m.eval_pass_at_1
                .with_label_values(&[env, split, kind])
                .set(s.pass_at_1);
            m.eval_mean_reward
                .with_label_values(&[env, split, kind])
                .set(s.mean_reward);
        }
    }
    tracing::info!(
        seq,
        checkpoint = %digest.short(),
        pass_at_1 = evaluation.greedy.pass_at_1,
        sampled = evaluation.sampled.as_ref().map(|s| s.pass_at_1),
        secs,
        "checkpoint evaluated on held-out problems"
    );
    let msg_id = subj::content_msg_id("eval", &messages::envelope::payload_digest(&report));
    ctx.bus
        .publish_durable(
            "evaluator",
            subj::eval_report(seq),
            report,
            &ctx.identity,
            MsgMeta {
                msg_id: Some(msg_id),
                ..MsgMeta::default()
            },
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| Failure::Retry(e.into()))?;
    Ok(())
}

fn report(
    ctx: &RoleCtx,
    cfg: &EvaluatorConfig,
    seq: u64,
    checkpoint: messages::Hash32,
    e: &Evaluation,
) -> EvalReport {
    EvalReport {
        version: WIRE_VERSION,
        evaluator: ctx.identity.address().to_string(),
        checkpoint,
        seq,
        env: cfg.env.clone(),
        split: DataSplit::Eval,
        problems: e.problems as u32,
        samples: cfg.plan.samples as u32,
        seed: cfg.plan.seed,
        max_new_tokens: cfg.plan.max_new_tokens as u32,
        temperature: cfg.plan.temperature,
        greedy: e.greedy.to_wire(),
        sampled: e.sampled.as_ref().map(|s| s.to_wire()),
        pass_at_k: e
            .pass_at_k
            .iter()
            .map(|(k, v)| (*k as u32, *v as f32))
            .collect(),
        created_at_ms: now_ms(),
    }
}

/// Seqs this evaluator already reported with the same plan (a restart does not redo them).
async fn reported_before(ctx: &RoleCtx, cfg: &EvaluatorConfig) -> anyhow::Result<Vec<u64>> {
    let expected: usize =
        crate::bus::subject_counts(&ctx.bus.js, subj::STREAM_EVAL, subj::EVAL_ALL)
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum();
    let mut seqs = Vec::new();
    if expected == 0 {
        return Ok(seqs);
    }
    let mut messages = ctx
        .bus
        .replay(subj::STREAM_EVAL, subj::EVAL_ALL, DeliverPolicy::All)
        .await?;
    let me = ctx.identity.address();
    for _ in 0..expected {
        let msg = match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => anyhow::bail!("reading {}: {e}", subj::STREAM_EVAL),
            Ok(None) | Err(_) => break,
        };
        let Ok((env, _)) = ctx.bus.open::<EvalReport>("evaluator", &msg.payload) else {
            continue; // counted by `open`
        };
        let r = env.payload;
        let same_plan = r.env == cfg.env
            && u64::from(r.problems) == cfg.plan.problems
            && r.samples as usize == cfg.plan.samples
            && r.seed == cfg.plan.seed;
        if env.signer == me && same_plan {
            seqs.push(r.seq);
        }
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced(n: u64, anchor_every: u64) -> Vec<(u64, bool)> {
        (0..n).map(|s| (s, s % anchor_every == 0)).collect()
    }

    #[test]
    fn base_first_then_anchors_in_order() {
        let mut q = EvalQueue::new(EvalEvery::Anchors, 4);
        let a = announced(25, 10);
        assert_eq!(q.next(&a), Some(0));
        q.settle(0);
        assert_eq!(q.next(&a), Some(10));
        q.settle(10);
        assert_eq!(q.next(&a), Some(20));
        q.settle(20);
        assert_eq!(q.next(&a), None, "deltas are not evaluated in anchors mode");
    }

    #[test]
    fn every_checkpoint_mode_takes_deltas() {
        let mut q = EvalQueue::new(EvalEvery::Checkpoints, 100);
        let a = announced(3, 10);
        for want in 0..3 {
            assert_eq!(q.next(&a), Some(want));
            q.settle(want);
        }
        assert_eq!(q.next(&a), None);
    }

    #[test]
    fn a_backlog_skips_old_checkpoints_but_never_the_base() {
        let mut q = EvalQueue::new(EvalEvery::Checkpoints, 2);
        let a = announced(10, 100);
        assert_eq!(q.next(&a), Some(0), "the base model is never skipped");
        q.settle(0);
        // 1..=9 wait; only the newest 2 are kept.
        assert_eq!(q.next(&a), Some(8));
        assert!(
            q.is_settled(1) && q.is_settled(7),
            "older ones were skipped"
        );
        q.settle(8);
        assert_eq!(q.next(&a), Some(9));
    }

    /// What a reader (console, dashboard exporter, `grail tail`) does with reports: forged
    /// or inflated ones never count as the network's held-out score.
    #[test]
    fn forged_and_inflated_reports_are_refused() {
        use messages::manifest::RoleKeys;
        use messages::{Envelope, Identity, NetworkManifest};
        let (owner, evaluator, forger) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let trust = crate::trust::Trust::default();
        let roles = RoleKeys {
            evaluator: vec![evaluator.address().into()],
            ..Default::default()
        };
        trust
            .install(NetworkManifest::with_roles("t", owner.address(), roles))
            .unwrap();
        let report = |by: &Identity, successes: u32| EvalReport {
            version: WIRE_VERSION,
            evaluator: by.address().into(),
            checkpoint: Default::default(),
            seq: 10,
            env: "arith".into(),
            split: DataSplit::Eval,
            problems: 8,
            samples: 0,
            seed: 0,
            max_new_tokens: 8,
            temperature: 1.0,
            greedy: messages::EvalScores {
                completions: 8,
                successes,
                mean_reward: 0.5,
                mean_completion_tokens: 3.0,
            },
            sampled: None,
            pass_at_k: vec![],
            created_at_ms: 0,
        };
        let admit = |r: EvalReport, by: &Identity| {
            let bytes = Envelope::seal(r, by).to_bytes();
            let (env, _) = Envelope::<EvalReport>::open(&bytes, 1 << 20)
                .map_err(|e| crate::trust::Refusal::from(e).reason())?;
            trust.admit(&env).map_err(|e| e.reason())
        };
        assert_eq!(admit(report(&evaluator, 2), &evaluator), Ok(()));
        assert_eq!(
            admit(report(&forger, 8), &forger),
            Err("unauthorized_signer"),
            "a key the manifest does not name cannot publish a score"
        );
        assert!(
            admit(report(&evaluator, 8), &forger).is_err(),
            "nor sign one in the evaluator's name"
        );
        assert_eq!(
            admit(report(&evaluator, 9), &evaluator),
            Err("bad_field"),
            "more successes than completions"
        );
    }

    #[test]
    fn reports_from_before_a_restart_are_not_redone() {
        let mut q = EvalQueue::new(EvalEvery::Anchors, 4);
        q.settle(0);
        q.settle(10);
        assert_eq!(q.next(&announced(21, 10)), Some(20));
    }
}
