//! The device's peaks, measured by short probes: f32 FMA throughput and
//! copy bandwidth. Entries are read as fractions of these, which says how
//! far a kernel is from what this device does, not from a data sheet.

use std::time::Instant;

use super::Peak;
use crate::{Device, Result};

/// Both probes, each the best of a few short runs.
pub(super) fn peak(device: &Device, tiny: bool) -> Result<Peak> {
    match device {
        Device::Cpu => Ok(Peak {
            fma_gflops: best(5, || cpu_fma(if tiny { 1 << 12 } else { 1 << 20 }))?,
            copy_gbs: cpu_copy(if tiny { 1 << 16 } else { 64 << 20 }, 5)?,
        }),
        Device::Gpu(id) => {
            let ctx = crate::backend::gpu::device::context(*id)?;
            let software = ctx.info.device_type == wgpu::DeviceType::Cpu;
            // (invocations, rounds, copy bytes): a few ms on each kind.
            let (invocations, rounds, bytes) = if tiny {
                (1 << 10, 16, 1 << 16)
            } else if software {
                (1 << 14, 64, 16 << 20)
            } else {
                (1 << 20, 1024, 256 << 20)
            };
            Ok(Peak {
                fma_gflops: best(5, || gpu_fma(&ctx, invocations, rounds))?,
                copy_gbs: best(5, || gpu_copy(&ctx, bytes))?,
            })
        }
    }
}

fn best(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut top = 0.0f64;
    for _ in 0..runs {
        top = top.max(f()?);
    }
    Ok(top)
}

/// FLOPs of one round of the chains below: 12 vectors x 16 lanes x 2.
const CPU_FLOPS_PER_ROUND: usize = 12 * 16 * 2;

/// Twelve independent chains of 16 lanes per thread (enough in flight
/// for two FMA units), without vector instructions.
fn fma_chains(rounds: usize, seed: f32) -> f32 {
    let mut acc = [[seed; 16]; 12];
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            for x in a.iter_mut() {
                *x = x.mul_add(0.9999, 1e-4);
            }
        }
    }
    acc.iter().flatten().sum()
}

/// The same chains as twelve AVX-512 registers (what the cpu backend's
/// GEMM uses on this CPU).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_avx512(rounds: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (m, c) = (_mm512_set1_ps(0.9999), _mm512_set1_ps(1e-4));
    let mut acc = [_mm512_set1_ps(seed); 12];
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

/// Twenty-four AVX2 registers' worth of chains in two rounds of twelve.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains_avx2(rounds: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (m, c) = (_mm256_set1_ps(0.9999), _mm256_set1_ps(1e-4));
    let mut acc = [_mm256_set1_ps(seed); 24];
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut lanes = [0.0f32; 8];
    let mut sum = 0.0;
    for a in acc {
        // SAFETY: `lanes` holds the 8 floats written.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
        sum += lanes.iter().sum::<f32>();
    }
    sum
}

/// GFLOP/s of the FMA chains with the widest vectors this CPU has (the
/// cpu backend's GEMM picks the same at run time).
fn cpu_fma(rounds: usize) -> Result<f64> {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let run = |seed: f32| -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the features were detected on this CPU.
                return unsafe { fma_chains_avx512(rounds, seed) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above.
                return unsafe { fma_chains_avx2(rounds, seed) };
            }
        }
        fma_chains(rounds, seed)
    };
    let t = Instant::now();
    let sum: f32 = (0..threads)
        .into_par_iter()
        .map(|i| run(std::hint::black_box(i as f32 * 1e-3)))
        .sum();
    let seconds = t.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    Ok((threads * rounds * CPU_FLOPS_PER_ROUND) as f64 / seconds / 1e9)
}

/// GB/s (read + write) of copying `bytes` between two buffers, split over
/// the rayon threads as the cpu backend's elementwise kernels are; the
/// best of `runs` copies into memory already touched.
fn cpu_copy(bytes: usize, runs: usize) -> Result<f64> {
    use rayon::prelude::*;
    let n = bytes / 4;
    let src = vec![1.0f32; n];
    let mut dst = vec![2.0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(1);
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&dst);
    }
    Ok(2.0 * (n * 4) as f64 / best / 1e9)
}

type Ctx = std::sync::Arc<crate::backend::gpu::device::Context>;

/// GFLOP/s of probe.wgsl, timed from submit to the device going idle.
fn gpu_fma(ctx: &Ctx, invocations: usize, rounds: u32) -> Result<f64> {
    use crate::backend::gpu::kernels::probe;
    let seconds = synced(ctx, |rec| {
        probe::fma_probe(rec, invocations, rounds).map(drop)
    })?;
    Ok(invocations as f64 * rounds as f64 * probe::FLOPS_PER_ROUND / seconds / 1e9)
}

/// GB/s (read + write) of one buffer-to-buffer copy of `bytes`.
fn gpu_copy(ctx: &Ctx, bytes: usize) -> Result<f64> {
    use crate::backend::gpu::Recorder;
    let mut rec = Recorder::new(ctx.clone())?;
    let src = rec.output("copy probe", bytes / 4, crate::DType::F32)?;
    let dst = rec.output("copy probe", bytes / 4, crate::DType::F32)?;
    rec.clear(&src);
    rec.submit()?;
    ctx.wait()?;
    let seconds = synced(ctx, |rec| rec.copy_whole(&src, &dst))?;
    Ok(2.0 * bytes as f64 / seconds / 1e9)
}

/// Seconds from submitting what `record` records to the device being idle.
fn synced(
    ctx: &Ctx,
    mut record: impl FnMut(&mut crate::backend::gpu::Recorder) -> Result<()>,
) -> Result<f64> {
    use crate::backend::gpu::Recorder;
    let mut rec = Recorder::new(ctx.clone())?;
    record(&mut rec)?;
    let t = Instant::now();
    rec.submit()?;
    ctx.wait()?;
    Ok(t.elapsed().as_secs_f64().max(1e-9))
}
