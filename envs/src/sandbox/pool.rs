//! The process-wide bound on concurrent sandboxed processes.

use std::sync::{Condvar, Mutex, OnceLock};

/// A counting semaphore bounding concurrent sandbox processes in this process.
pub(super) struct Pool {
    free: Mutex<usize>,
    available: Condvar,
}

pub(super) struct Slot<'a>(&'a Pool);

impl Pool {
    pub(super) fn acquire(&self) -> Slot<'_> {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while *free == 0 {
            free = self
                .available
                .wait(free)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self
            .0
            .free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *free += 1;
        self.0.available.notify_one();
    }
}

static POOL_SIZE: OnceLock<usize> = OnceLock::new();
static POOL: OnceLock<Pool> = OnceLock::new();

pub(super) fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let size =
            *POOL_SIZE.get_or_init(|| std::thread::available_parallelism().map_or(2, usize::from));
        Pool {
            free: Mutex::new(size.max(1)),
            available: Condvar::new(),
        }
    })
}

/// Sets how many sandboxed processes may run at once in this process (default: the number of
/// cores). Returns `false` if the pool was already sized (first call or first run wins).
pub fn set_max_concurrency(processes: usize) -> bool {
    POOL_SIZE.set(processes.max(1)).is_ok()
}
