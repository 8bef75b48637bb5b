//! Groups per second through the bus, the way the roles move them: miners seal (sign) and
//! publish rollout groups to JetStream with de-dup ids and wait for each PubAck; verifiers pull
//! them from the shared durable consumer, open (decode + verify the signature) and ack.
//!
//!     cargo run --release -p grail-integration-tests --example bus_throughput [GROUPS] [TOKENS]
//!
//! GROUPS (default 400) groups of 16 rollouts × TOKENS (default 256) tokens each.

use std::time::{Duration, Instant};

use actors::bus::MsgMeta;
use actors::roles::verifier::verifier_consumer;
use futures::StreamExt;
use grail_integration_tests::TestNats;
use messages::subjects as subj;
use messages::{Identity, PackedF32, PackedU32, Rollout, RolloutGroup, WIRE_VERSION};

fn group(miner: &Identity, window: u64, index: u32, tokens: usize) -> RolloutGroup {
    RolloutGroup {
        version: WIRE_VERSION,
        window,
        miner: miner.address().to_string(),
        group_index: index,
        nonce: index as u64,
        checkpoint: Default::default(),
        env: "bench".into(),
        problem_seed: index as u64,
        problem_id: format!("bench/{index}"),
        rollouts: (0..16)
            .map(|r| Rollout {
                tokens: PackedU32((0..tokens as u32).map(|t| (t * 31 + r) % 50_000).collect()),
                prompt_len: 32,
                sketches: PackedU32(vec![7; tokens - 32]),
                logprobs: PackedF32(vec![-0.5; tokens - 32]),
                reward: 0.5,
                advantage: 0.0,
                success: false,
            })
            .collect(),
    }
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (groups, tokens) = (
        args.first().copied().unwrap_or(400),
        args.get(1).copied().unwrap_or(256),
    );
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let miner = Identity::generate();
    let sample = messages::envelope::Envelope::seal(group(&miner, 1, 0, tokens), &miner).to_bytes();

    let started = Instant::now();
    let publishers: Vec<_> = (0..8u32)
        .map(|p| {
            let (bus, miner) = (bus.clone(), miner.clone());
            actix_rt::spawn(async move {
                for i in (p..groups as u32).step_by(8) {
                    // The rollout stream keeps at most `max_groups_per_window` groups per
                    // (window, miner): spread the groups over windows.
                    let window = 1 + u64::from(i) / 32;
                    let g = group(&miner, window, i, tokens);
                    let meta = MsgMeta {
                        window: Some(window),
                        miner: Some(miner.address().to_string()),
                        msg_id: Some(subj::rollout_msg_id(&messages::envelope::payload_digest(
                            &g,
                        ))),
                    };
                    bus.publish_durable(
                        "miner",
                        subj::rollout(window, miner.address()),
                        g,
                        &miner,
                        meta,
                        Duration::from_secs(30),
                    )
                    .await
                    .expect("publish");
                }
            })
        })
        .collect();
    for p in publishers {
        p.await?;
    }
    let publish_s = started.elapsed().as_secs_f64();

    let consumer = verifier_consumer(&bus.js, Duration::from_secs(30)).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(64)
        .messages()
        .await?;
    let started = Instant::now();
    let mut seen = 0;
    while seen < groups {
        let msg = messages
            .next()
            .await
            .expect("stream open")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        bus.open::<RolloutGroup>("verifier", &msg.payload)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        msg.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        seen += 1;
    }
    let consume_s = started.elapsed().as_secs_f64();
    let mb = sample.len() as f64 * groups as f64 / 1e6;
    println!("| groups | tokens/rollout | bytes/group | publish (sign + PubAck) | consume (pull + verify + ack) |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {groups} | {tokens} | {} | {:.0} groups/s ({:.1} MB/s) | {:.0} groups/s ({:.1} MB/s) |",
        sample.len(),
        groups as f64 / publish_s,
        mb / publish_s,
        groups as f64 / consume_s,
        mb / consume_s
    );
    Ok(())
}
