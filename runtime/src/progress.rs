//! What `grail up` prints: one line per finalised window (groups mined / verified / rejected
//! by reason, mean verified reward, the checkpoint the window was mined on, how long the
//! window took from open to weights) and a closing summary with the mean-reward curve.
//!
//! The shaped mean reward mixes partial credit (arith's digit components, SAT's clause share);
//! next to it each line shows **exact-answer success**: the fraction of rollouts in verified
//! groups whose `success` the verifier confirmed (`GroupVerdict::success_rollouts` over
//! verified groups × the protocol group size). With an evaluator (`[roles.evaluator]`), each
//! of its signed reports adds a line with **held-out pass@1** of a checkpoint on problems never
//! trained on, the latest one is shown on every window line, and the summary prints the
//! held-out curve from the base model on: the number that says the model got smarter.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use actors::bus::Bus;
use futures::StreamExt;
use messages::subjects as subj;
use messages::{CheckpointAnnounce, EvalReport, GroupVerdict, Weights, WindowOpen};

/// The role label of the console's refusals (`grail_messages_rejected_total{role="console"}`).
const CONSOLE: &str = "console";

#[derive(Default)]
struct WindowLine {
    verified: u32,
    rejected: BTreeMap<&'static str, u32>,
    reward_sum: f64,
    success_rollouts: u64,
    groups: u32,
    opened: Option<Instant>,
}

/// The checkpoints announced so far, to name the one each window ran on.
#[derive(Default)]
struct Checkpoints(Vec<CheckpointAnnounce>);

impl Checkpoints {
    fn label(&self, window: u64) -> String {
        self.0
            .iter()
            .filter(|a| a.valid_from_window <= window)
            .max_by_key(|a| (a.valid_from_window, a.seq))
            .map(|a| {
                let kind = match a.kind {
                    messages::CheckpointKind::Full => "full",
                    messages::CheckpointKind::Delta { .. } => "delta",
                };
                format!("#{} {}… {kind}", a.seq, &a.checkpoint.short()[..8])
            })
            .unwrap_or_else(|| "none".into())
    }
}

/// Fraction of rollouts that solved the task among `verified` groups of `group_size`.
pub fn success_rate(success_rollouts: u64, verified: u32, group_size: u32) -> f64 {
    let rollouts = u64::from(verified) * u64::from(group_size);
    if rollouts == 0 {
        0.0
    } else {
        success_rollouts as f64 / rollouts as f64
    }
}

/// Mean of the first and last `k` points of the curve, and their ratio.
pub fn curve_gain(curve: &[(u64, f64)], k: usize) -> Option<(f64, f64)> {
    let k = k.min(curve.len() / 2);
    if k == 0 {
        return None;
    }
    let mean = |pts: &[(u64, f64)]| pts.iter().map(|(_, r)| r).sum::<f64>() / pts.len() as f64;
    Some((mean(&curve[..k]), mean(&curve[curve.len() - k..])))
}

/// Print one line per finalised window; return after `limit` windows.
pub async fn show_progress(bus: Bus, limit: Option<u64>) -> anyhow::Result<()> {
    let subscribe = |subject: &'static str| {
        let client = bus.client.clone();
        async move {
            client
                .subscribe(subject)
                .await
                .map_err(|e| anyhow::anyhow!("subscribe {subject}: {e}"))
        }
    };
    let mut verdicts = subscribe(subj::VERDICT_GROUP_ALL).await?;
    let mut weights = subscribe(subj::WEIGHTS_ALL).await?;
    let mut opens = subscribe(subj::CLOCK_OPEN_ALL).await?;
    let mut announces = subscribe(subj::CHECKPOINT_ANNOUNCE_ALL).await?;
    let mut evals = subscribe(subj::EVAL_ALL).await?;
    let mut held_out = HeldOut::default();
    let mut lines: BTreeMap<u64, WindowLine> = BTreeMap::new();
    let mut checkpoints = Checkpoints::default();
    let mut seen: HashSet<(u64, String, u32)> = HashSet::new();
    let mut curve = Vec::new();
    let mut success_curve = Vec::new();
    // Every verified group has exactly this many rollouts (a different count is rejected).
    // The network's group size (the manifest's; the default before one is installed).
    let group_size = bus.trust.manifest().map_or(
        messages::manifest::NetworkLimits::default().group_size,
        |m| m.limits.group_size,
    );
    let mut done = 0u64;
    loop {
        tokio::select! {
            Some(msg) = opens.next() => {
                if let Ok((env, _)) = bus.open::<WindowOpen>(CONSOLE, &msg.payload) {
                    lines.entry(env.payload.window).or_default().opened.get_or_insert_with(Instant::now);
                }
            }
            Some(msg) = announces.next() => {
                if let Ok((env, _)) = bus.open::<CheckpointAnnounce>(CONSOLE, &msg.payload) {
                    checkpoints.0.push(env.payload);
                }
            }
            Some(msg) = evals.next() => {
                if let Ok((env, _)) = bus.open::<EvalReport>(CONSOLE, &msg.payload) {
                    println!("{}", held_out.add(env.payload));
                }
            }
            Some(msg) = verdicts.next() => {
                let Ok((env, _)) = bus.open::<GroupVerdict>(CONSOLE, &msg.payload) else { continue };
                let v = env.payload;
                if !seen.insert((v.window, v.miner.clone(), v.group_index)) { continue }
                let line = lines.entry(v.window).or_default();
                line.groups += 1;
                if v.accepted {
                    line.verified += 1;
                    line.reward_sum += v.mean_reward as f64;
                    line.success_rollouts += u64::from(v.success_rollouts);
                } else {
                    *line.rejected.entry(v.reason.map_or("unspecified", |c| c.as_str())).or_default() += 1;
                }
            }
            Some(msg) = weights.next() => {
                let Ok((env, _)) = bus.open::<Weights>(CONSOLE, &msg.payload) else { continue };
                let w = env.payload;
                let line = lines.remove(&w.window).unwrap_or_default();
                lines.retain(|window, _| *window > w.window);
                let mean = if line.verified > 0 { line.reward_sum / line.verified as f64 } else { 0.0 };
                curve.push((w.window, mean));
                let success = success_rate(line.success_rollouts, line.verified, group_size);
                success_curve.push((w.window, success));
                let top: Vec<String> = w.entries.iter().filter(|e| e.weight > 0.0)
                    .map(|e| format!("{}…={:.2}", e.miner.chars().take(6).collect::<String>(), e.weight)).collect();
                let took = line.opened.map(|t| format!("{:.1}s", t.elapsed().as_secs_f64())).unwrap_or_else(|| "?".into());
                println!(
                    "window {:>4} | groups {:>3} verified {:>3} rejected {:>3} {:?} | mean reward {:.3} success {:.3}{} | ckpt {} | open→weights {} | weights {}",
                    w.window, line.groups, line.verified, line.groups - line.verified, line.rejected,
                    mean, success, held_out.latest_label(), checkpoints.label(w.window), took, top.join(" ")
                );
                done += 1;
                if limit.is_some_and(|l| done >= l) {
                    print_summary(&curve, &checkpoints);
                    for line in success_summary(&success_curve).into_iter().chain(held_out.summary()) {
                        println!("{line}");
                    }
                    return Ok(());
                }
            }
            else => anyhow::bail!("subscriptions closed"),
        }
    }
}

/// The evaluator's reports seen so far, by checkpoint seq.
#[derive(Default)]
struct HeldOut(BTreeMap<u64, EvalReport>);

impl HeldOut {
    /// Record a report; the console line for it.
    fn add(&mut self, r: EvalReport) -> String {
        let sampled = r
            .sampled
            .as_ref()
            .map(|s| format!(" sampled {:.3}", s.pass_at_1()))
            .unwrap_or_default();
        let line = format!(
            "held-out eval | ckpt #{} {}… | {} {} split, {} problems | pass@1 greedy {:.3}{sampled} | mean reward {:.3}",
            r.seq,
            &r.checkpoint.short()[..8],
            r.env,
            r.split.as_str(),
            r.problems,
            r.greedy.pass_at_1(),
            r.greedy.mean_reward,
        );
        self.0.insert(r.seq, r);
        line
    }

    /// ` | held-out 0.250 (#10)` for window lines, once a report arrived.
    fn latest_label(&self) -> String {
        self.0
            .iter()
            .next_back()
            .map(|(seq, r)| format!(" | held-out {:.3} (#{seq})", r.greedy.pass_at_1()))
            .unwrap_or_default()
    }

    fn summary(&self) -> Vec<String> {
        held_out_summary(
            &self
                .0
                .iter()
                .map(|(seq, r)| {
                    (
                        *seq,
                        r.greedy.pass_at_1(),
                        r.sampled.as_ref().map(|s| s.pass_at_1()),
                    )
                })
                .collect::<Vec<_>>(),
        )
    }
}

/// Summary lines for the held-out curve `(seq, greedy pass@1, sampled pass@1)`.
pub fn held_out_summary(curve: &[(u64, f64, Option<f64>)]) -> Vec<String> {
    let Some((first, last)) = curve.first().zip(curve.last()) else {
        return vec![
            "summary: held-out pass@1: no evaluator report (add [roles.evaluator])".into(),
        ];
    };
    let point = |(seq, greedy, sampled): &(u64, f64, Option<f64>)| match sampled {
        Some(s) => format!("#{seq}:{greedy:.3}/{s:.3}"),
        None => format!("#{seq}:{greedy:.3}"),
    };
    vec![
        format!(
            "summary: held-out pass@1 by checkpoint (greedy/sampled): {}",
            curve.iter().map(point).collect::<Vec<_>>().join(" ")
        ),
        format!(
            "summary: held-out pass@1 (greedy) base #{} {:.3} → #{} {:.3} ({:+.3})",
            first.0,
            first.1,
            last.0,
            last.1,
            last.1 - first.1
        ),
    ]
}

fn print_summary(curve: &[(u64, f64)], checkpoints: &Checkpoints) {
    println!(
        "summary: {} windows, {} checkpoints announced; mean-reward curve: {}",
        curve.len(),
        checkpoints.0.len(),
        curve
            .iter()
            .map(|(w, r)| format!("{w}:{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some((first, last)) = curve_gain(curve, 3) {
        println!(
            "summary: mean reward first windows {first:.3} → last windows {last:.3} ({:.2}×)",
            if first > 0.0 {
                last / first
            } else {
                f64::INFINITY
            }
        );
    }
}

/// The summary lines for exact-answer success: the per-window curve, then first vs last windows.
pub fn success_summary(curve: &[(u64, f64)]) -> Vec<String> {
    let mut lines = vec![format!(
        "summary: exact-answer success curve: {}",
        curve
            .iter()
            .map(|(w, s)| format!("{w}:{s:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    )];
    if let Some((first, last)) = curve_gain(curve, 3) {
        lines.push(format!(
            "summary: exact-answer success first windows {first:.3} → last windows {last:.3} ({:+.3})",
            last - first
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_summary_shows_the_curve_and_the_gain() {
        let lines = held_out_summary(&[(0, 0.0, Some(0.0625)), (10, 0.25, Some(0.2))]);
        assert_eq!(
            lines[0],
            "summary: held-out pass@1 by checkpoint (greedy/sampled): #0:0.000/0.062 #10:0.250/0.200"
        );
        assert_eq!(
            lines[1],
            "summary: held-out pass@1 (greedy) base #0 0.000 → #10 0.250 (+0.250)"
        );
        assert!(held_out_summary(&[])[0].contains("no evaluator report"));
    }

    #[test]
    fn curve_gain_compares_the_ends() {
        let curve: Vec<(u64, f64)> = (0..10).map(|w| (w, w as f64)).collect();
        assert_eq!(curve_gain(&curve, 3), Some((1.0, 8.0)));
        assert_eq!(curve_gain(&curve[..1], 3), None);
        assert_eq!(curve_gain(&curve[..4], 3), Some((0.5, 2.5)));
    }

    #[test]
    fn success_is_the_share_of_solved_rollouts_in_verified_groups() {
        assert_eq!(success_rate(0, 0, 16), 0.0);
        assert_eq!(success_rate(8, 2, 16), 0.25);
        assert_eq!(success_rate(32, 2, 16), 1.0);
        let curve = [
            (1, 0.0),
            (2, 0.0625),
            (3, 0.125),
            (4, 0.25),
            (5, 0.5),
            (6, 0.5),
        ];
        let lines = success_summary(&curve);
        assert_eq!(
            lines[0],
            "summary: exact-answer success curve: 1:0.000 2:0.062 3:0.125 4:0.250 5:0.500 6:0.500"
        );
        assert_eq!(
            lines[1],
            "summary: exact-answer success first windows 0.062 → last windows 0.417 (+0.354)"
        );
        assert_eq!(success_summary(&curve[..1]).len(), 1);
    }
}
