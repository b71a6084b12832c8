//! A process-wide allocator setting for programs built on whisk (the CLI and the benches call
//! it first thing; a library cannot decide it for its host).

/// glibc maps large blocks (above a threshold that rises to at most 32 MiB) straight from the
/// kernel and unmaps them when freed, so the encoder's per-layer buffers (tens of MB) paid a
/// page fault per 4 KiB, every layer of every window: a third of a batched run's time went to
/// the kernel (`--batch-size 8` on the 160 TIMIT files: 11 s of 32 s). Keeping freed memory in
/// the heap for reuse does not raise the peak (the same sizes come back). All threads share
/// the one heap that these settings govern: the backend computes on rayon's threads, and a
/// thread's own heap (64 MiB at most) maps any block that does not fit afresh, as before.
/// Call it before starting threads; elsewhere than on glibc it does nothing.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const ONE_GIB: libc::c_int = 1 << 30;
        // SAFETY: `mallopt` only sets the allocator's parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, ONE_GIB);
            libc::mallopt(libc::M_TRIM_THRESHOLD, ONE_GIB);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Hands the heap's free pages back to the kernel. Under [`keep_freed_memory_for_reuse`] a
/// long-running host (a server between bursts) otherwise keeps its peak for good; call it when
/// idle, as the next burst pays a page fault per 4 KiB it touches again.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory; no live allocation moves.
    unsafe {
        libc::malloc_trim(0);
    }
}
