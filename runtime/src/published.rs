//! A checkpoint the network published, fetched and verified the way miners do it: the owner's
//! manifest installed (so only its publishers' announcements count), the announcement
//! stream replayed, the object's byte digest and the weight digest checked (an anchor, or the
//! anchor plus the delta chain). Used by `grail eval --checkpoint` and `grail export`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actors::checkpoints::{BookConfig, CheckpointBook};
use actors::compute::model::ModelBase;
use actors::compute::ActiveCheckpoint;
use actors::metrics::Metrics;
use anyhow::Context;
use messages::{CheckpointAnnounce, NetworkManifest};

use crate::config::ClusterConfig;

/// Which published checkpoint: `latest`, a seq number, or a weight-digest hex prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointSelector {
    Latest,
    Seq(u64),
    /// At least 8 hex characters of the weight digest.
    Digest(String),
}

impl FromStr for CheckpointSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "latest" {
            return Ok(Self::Latest);
        }
        if let Ok(seq) = s.parse() {
            return Ok(Self::Seq(seq));
        }
        let hex = s.to_ascii_lowercase();
        if hex.len() >= 8 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self::Digest(hex));
        }
        Err(format!(
            "{s:?}: use `latest`, a checkpoint seq (e.g. 10) or 8-64 hex characters of its weight digest"
        ))
    }
}

impl CheckpointSelector {
    /// The announcement this selects among `announced` (ascending seq).
    pub fn pick<'a>(&self, announced: &'a [CheckpointAnnounce]) -> Option<&'a CheckpointAnnounce> {
        match self {
            Self::Latest => announced.last(),
            Self::Seq(seq) => announced.iter().find(|a| a.seq == *seq),
            Self::Digest(prefix) => announced
                .iter()
                .rev()
                .find(|a| a.checkpoint.to_string().starts_with(prefix.as_str())),
        }
    }
}

/// A verified published checkpoint and what it runs on.
pub struct PublishedCheckpoint {
    pub manifest: Arc<NetworkManifest>,
    pub announce: CheckpointAnnounce,
    pub checkpoint: ActiveCheckpoint,
    /// The cluster's base model on the requested device (its digest matches the manifest's).
    pub base: Arc<ModelBase>,
}

/// Fetch checkpoint `selector` of the network `cfg` describes (at `url`, or the running
/// `grail up`'s), with the admin's credentials when this host has them, else the evaluator's.
pub fn fetch(
    cfg: &ClusterConfig,
    url: Option<&str>,
    selector: &CheckpointSelector,
    device: policy::DeviceSpec,
) -> anyhow::Result<PublishedCheckpoint> {
    let url = match url {
        Some(u) => u.to_string(),
        None => crate::up::resolve_url(cfg)?,
    };
    // An actix System: the manifest follower and the checkpoint book spawn local tasks.
    actix_rt::System::new().block_on(fetch_async(cfg, &url, selector, device))
}

async fn fetch_async(
    cfg: &ClusterConfig,
    url: &str,
    selector: &CheckpointSelector,
    device: policy::DeviceSpec,
) -> anyhow::Result<PublishedCheckpoint> {
    let buses = crate::auth::RoleBuses::new(cfg, url, Arc::new(Metrics::new()), Default::default());
    let bus = if buses.has_admin() {
        buses.admin().await?
    } else {
        buses.control(Some(crate::config::Role::Evaluator)).await?
    };
    let owner = crate::network::pinned_owner(cfg)?;
    let manifest = crate::network::install_latest(&bus, &owner, Some(&cfg.network_id())).await?;
    let shared = crate::compute::SharedCompute::new(cfg);
    crate::network::check_base_model(cfg, &shared, &manifest)?;
    let mut book_cfg = BookConfig::trusting(manifest.roles.publisher.iter().cloned());
    // Only what is asked for is loaded (`load_seq`); the follower keeps one set at most.
    book_cfg.cache = 1;
    let book = CheckpointBook::new(book_cfg, shared.store(&bus).await?);
    let follower = actix_rt::spawn(book.clone().follow(bus.clone(), "eval"));
    let caught_up = book.wait_caught_up(Duration::from_secs(60)).await;
    let result = async {
        anyhow::ensure!(
            caught_up,
            "the checkpoint announcements on {url} did not replay within 60 s"
        );
        let announced = book.announcements();
        let announce = selector.pick(&announced).cloned().with_context(|| {
            let seqs: Vec<String> = announced.iter().map(|a| a.seq.to_string()).collect();
            format!(
                "--checkpoint {selector:?}: not announced on {url} (announced seqs: [{}])",
                seqs.join(", ")
            )
        })?;
        let checkpoint = book
            .load_seq(announce.seq)
            .await
            .with_context(|| format!("loading checkpoint seq {}", announce.seq))?;
        anyhow::Ok((announce, checkpoint))
    }
    .await;
    follower.abort();
    let (announce, checkpoint) = result?;
    Ok(PublishedCheckpoint {
        manifest,
        announce,
        checkpoint,
        base: shared.base(device)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!("latest".parse(), Ok(CheckpointSelector::Latest));
        assert_eq!("12".parse(), Ok(CheckpointSelector::Seq(12)));
        assert_eq!(
            "ABCDEF0123".parse(),
            Ok(CheckpointSelector::Digest("abcdef0123".into()))
        );
        assert!("abc".parse::<CheckpointSelector>().is_err());
        assert!("newest".parse::<CheckpointSelector>().is_err());
    }
}
