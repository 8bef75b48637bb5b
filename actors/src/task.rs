//! Tasks with an owner: [`OwnedTask`] is a local task aborted when its handle is dropped, so a
//! role's helpers (clock follower, checkpoint follower, heartbeats) end with the role loop
//! that spawned them, on failure and restart as on shutdown, instead of leaking.

use std::future::Future;

use tokio::task::JoinHandle;

/// A spawned local task that lives exactly as long as this handle.
#[derive(Debug)]
pub struct OwnedTask<T>(JoinHandle<T>);

impl<T: 'static> OwnedTask<T> {
    /// Spawn `fut` on the current local runtime (actix-rt's).
    pub fn spawn(fut: impl Future<Output = T> + 'static) -> Self {
        Self(actix_rt::spawn(fut))
    }

    /// The task returned (for a follower: its stream was lost and the role should restart).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[actix_rt::test]
    async fn dropping_the_handle_aborts_the_task() {
        let ran_to_end = Arc::new(AtomicBool::new(false));
        let flag = ran_to_end.clone();
        let task = OwnedTask::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            flag.store(true, Ordering::SeqCst);
        });
        assert!(!task.is_finished());
        drop(task);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !ran_to_end.load(Ordering::SeqCst),
            "the task outlived its owner"
        );
    }
}
