//! Keeps freed tensor buffers inside the process (glibc malloc).
//!
//! candle allocates a fresh buffer for every op's output. With glibc's defaults, blocks above
//! the (dynamic) mmap threshold are `munmap`ed on free and the heap top is trimmed back to the
//! kernel, so every forward pass faults in and zeroes its pages again: page faults and
//! `clear_page` were ~9% of a SmolLM2 prefill profile, and the prefill ran 25–30% faster with
//! the settings below (measured in docs/BENCHMARKS.md). The cost is that the process keeps its
//! peak heap, which a long-running miner or verifier reuses on the next batch anyway.

/// Buffers up to 32 MiB (glibc's maximum for this knob) come from the heap, and the heap top is
/// never trimmed. Larger ones (a 49k-vocabulary embedding gradient is 113 MB, and training
/// makes several per micro-batch) would still be `mmap`ed fresh every time, so mmap is off
/// altogether: they come from the main heap (threads' arenas fall back to it for blocks their
/// 64 MiB heaps cannot hold). Call once at start-up, before worker threads exist. A no-op off
/// glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc tunables; it is called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}
