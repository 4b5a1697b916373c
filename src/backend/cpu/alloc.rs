//! glibc hands every allocation above its mmap threshold (128 KiB at
//! first) straight from the kernel and unmaps it when freed, and trims the
//! heap's free top back to the kernel: a tensor allocated each step then
//! page-faults its way in, one fault per 4 KiB page, every time. An add of
//! two 2^24-element tensors ran at 10 GB/s that way and 29 GB/s without it;
//! the seed CNN's training step took 20% longer. The cpu backend raises
//! both thresholds once, so freed tensors are reused from the heap.

/// Allocations up to this many bytes come from the heap (glibc's maximum
/// for the threshold on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Freed heap memory kept for reuse before any goes back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Keep freed tensor memory for reuse (once per process; glibc only).
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only tunes the allocator's thresholds; a
            // refused value (return 0) leaves glibc's default in place.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
        });
    }
}
