//! Process shutdown as a value: one [`Shutdown`] per process, a [`ShutdownSignal`] in every
//! role's hands. Requesting shutdown tells every role to stop pulling new work; roles that
//! drain (the verifier) finish or hand back what they hold, the others are dropped at once.

use tokio::sync::watch;

/// The sending side, owned by whoever decides the process stops (`grail up` on a signal).
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

/// A cheap, cloneable view of the shutdown request.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            tx: watch::channel(false).0,
        }
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }

    /// Ask every holder of a signal to stop. Idempotent.
    pub fn request(&self) {
        self.tx.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// A signal that is never raised (roles started outside a process with a shutdown path,
    /// e.g. in tests, run until their runtime stops).
    pub fn never() -> Self {
        // One sender that lives for the process and is never raised: a closed channel would
        // read as "requested" below.
        static NEVER: std::sync::OnceLock<watch::Sender<bool>> = std::sync::OnceLock::new();
        Self {
            rx: NEVER.get_or_init(|| watch::channel(false).0).subscribe(),
        }
    }

    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is requested (or the [`Shutdown`] is dropped, which means the
    /// process is going away).
    pub async fn requested(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|requested| *requested).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_signal_sees_one_request() {
        let shutdown = Shutdown::new();
        let (a, b) = (shutdown.signal(), shutdown.signal());
        assert!(!a.is_requested());
        let waiter = tokio::spawn(async move { b.requested().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        shutdown.request();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(a.is_requested());
        let never = ShutdownSignal::never();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), never.requested())
                .await
                .is_err()
        );
    }
}
