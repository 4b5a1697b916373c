//! Shared test helpers: closeness checks, finite-difference gradient checks,
//! and the macro that runs a test once per backend.
#![allow(dead_code)]

use shadergrad::{Result, Tensor};

/// Run each listed test function (`fn() -> Result<()>`) once per backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(
                #[test]
                fn $name() -> shadergrad::Result<()> {
                    shadergrad::with_device(shadergrad::Device::Cpu, super::$name)
                }
            )*
        }
        mod gpu {
            $(
                #[test]
                fn $name() -> shadergrad::Result<()> {
                    match $crate::common::gpu_device() {
                        Some(d) => shadergrad::with_device(d, super::$name),
                        None => Ok(()),
                    }
                }
            )*
        }
    };
}

/// The GPU the `gpu` arm of `backend_tests!` runs on: the first adapter
/// (`WGPU_BACKEND` picks the API). Without one the gpu tests pass without
/// running, and the test binary says so once, visibly; unless
/// `SHADERGRAD_REQUIRE_GPU=1`, which makes them fail.
pub fn gpu_device() -> Option<shadergrad::Device> {
    static DEVICE: std::sync::OnceLock<Option<shadergrad::Device>> = std::sync::OnceLock::new();
    let required = std::env::var("SHADERGRAD_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let device = *DEVICE.get_or_init(|| match shadergrad::Device::gpu(0) {
        Ok(d) => Some(d),
        Err(e) => {
            // The harness captures print!/eprint! of passing tests; a write
            // to the stderr handle itself is not captured, so this line
            // stays in the summary.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "NOTE: {e}\nNOTE: so this binary's gpu:: tests pass WITHOUT RUNNING \
                 (SHADERGRAD_REQUIRE_GPU=1 makes them fail instead)."
            );
            None
        }
    });
    assert!(
        device.is_some() || !required,
        "SHADERGRAD_REQUIRE_GPU=1 but no GPU adapter opened (see the message above)"
    );
    device
}

pub fn t(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape).expect("test data fits its shape")
}

pub fn ti(data: &[i32], shape: &[usize]) -> Tensor {
    Tensor::from_slice_i32(data, shape).expect("test data fits its shape")
}

/// Deterministic pseudo-random values in [-1, 1), different per `seed`.
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn rt(shape: &[usize], seed: u64) -> Tensor {
    t(&data(shape.iter().product(), seed), shape)
}

#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "lengths differ: got {got:?} want {want:?}"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g == w) || (g - w).abs() <= atol + rtol * w.abs();
        assert!(
            ok,
            "element {i}: got {g}, want {w}\n got  {got:?}\n want {want:?}"
        );
    }
}

#[track_caller]
pub fn assert_tensor(x: &Tensor, shape: &[usize], want: &[f32]) {
    assert_eq!(x.shape(), shape, "shape");
    assert_close(&x.to_vec().expect("realize"), want, 1e-5, 1e-5);
}

/// Compare autodiff gradients of `f` at `inputs` with central differences.
///
/// The scalar checked is `sum(f(x) * w)` for fixed random weights `w`, so
/// every output element's upstream gradient differs. f32 central differences
/// with eps 1e-2 are accurate to about 1e-3 on smooth functions.
#[track_caller]
pub fn gradcheck(inputs: Vec<Tensor>, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    gradcheck_tol(&inputs, 1e-2, 3e-3, 2e-2, f)
}

#[track_caller]
pub fn gradcheck_tol(
    inputs: &[Tensor],
    eps: f32,
    atol: f32,
    rtol: f32,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let base: Vec<Vec<f32>> = inputs.iter().map(|x| x.to_vec().expect("input")).collect();
    let leaves: Vec<Tensor> = inputs.iter().map(|x| x.with_grad()).collect();
    let out = f(&leaves).expect("forward");
    let w = Tensor::from_vec(data(out.numel(), 99), out.shape()).expect("weights");
    let loss = out.mul(&w).expect("weights fit").sum_all();
    let grads = loss.backward().expect("backward");
    let analytic: Vec<Tensor> = leaves.iter().map(|l| grads.get_or_zeros(l)).collect();
    Tensor::realize_all(&analytic).expect("realize gradients");
    let eval = |vals: &[Vec<f32>]| -> f64 {
        let xs: Vec<Tensor> = vals
            .iter()
            .zip(inputs)
            .map(|(v, x)| Tensor::from_slice(v, x.shape()).expect("shape"))
            .collect();
        let o = f(&xs).expect("forward");
        let o = o.to_vec().expect("realize");
        let wv = w.to_vec().expect("w");
        o.iter().zip(&wv).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    for (i, x) in base.iter().enumerate() {
        let got = analytic[i].to_vec().expect("gradient");
        let mut want = vec![0.0f32; x.len()];
        for j in 0..x.len() {
            let mut vals = base.clone();
            vals[i][j] = x[j] + eps;
            let plus = eval(&vals);
            vals[i][j] = x[j] - eps;
            let minus = eval(&vals);
            want[j] = ((plus - minus) / (2.0 * eps as f64)) as f32;
        }
        for (j, (g, n)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - n).abs() <= atol + rtol * n.abs(),
                "input {i} element {j}: autodiff {g}, finite difference {n}\n autodiff {got:?}\n numeric  {want:?}"
            );
        }
    }
}

/// The stdout of a successful run of the binary (else fail with its stderr).
pub fn stdout_of(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "shadergrad failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stderr of a run of the binary that must fail cleanly (no panic).
pub fn stderr_of_failure(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}
