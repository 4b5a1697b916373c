//! Denormal floats (magnitudes below 1.2e-38) take a slow path on x86
//! (tens to hundreds of cycles per operation). Training makes them: Adam's
//! second moments and late gradients shrink toward zero, and the seed CNN's
//! Adam update ran 2.7x slower in its second epoch than in its first. The
//! cpu backend therefore flushes them to zero while its kernels run, as
//! TensorFlow's CPU kernels do and as GPUs do.

/// MXCSR's flush-to-zero (results) and denormals-are-zero (inputs) bits.
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

/// Sets flushing on this thread until dropped, then restores the mode.
pub(crate) struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    pub(crate) fn new() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = get_csr();
            set_csr(saved | FTZ_DAZ);
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        set_csr(self.saved);
    }
}

/// Rayon's worker threads run the cpu backend's parallel loops: flush on
/// them for good. Builds rayon's global pool with a start handler the
/// first time; when the application built the global pool already, its
/// workers keep their mode (slower on denormals, same results otherwise).
pub(crate) fn on_worker_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Thread count as rayon's default: RAYON_NUM_THREADS, else every core.
        let _ = rayon::ThreadPoolBuilder::new()
            .start_handler(|_| std::mem::forget(FlushDenormals::new()))
            .build_global();
    });
}

#[cfg(target_arch = "x86_64")]
fn get_csr() -> u32 {
    // SAFETY: reading MXCSR has no preconditions on x86_64 (SSE is baseline).
    #[allow(deprecated)]
    unsafe {
        std::arch::x86_64::_mm_getcsr()
    }
}

#[cfg(target_arch = "x86_64")]
fn set_csr(csr: u32) {
    // SAFETY: only the FTZ/DAZ bits change from a value read from MXCSR,
    // which alters float results below the normal range and nothing else.
    #[allow(deprecated)]
    unsafe {
        std::arch::x86_64::_mm_setcsr(csr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denormals_flush_inside_the_guard_and_not_after() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        assert!(tiny * half > 0.0, "IEEE: a denormal result");
        {
            let _flush = FlushDenormals::new();
            if cfg!(target_arch = "x86_64") {
                assert_eq!(std::hint::black_box(tiny) * half, 0.0, "flushed");
            }
        }
        assert!(std::hint::black_box(tiny) * half > 0.0, "mode restored");
    }
}
