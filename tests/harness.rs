//! The shared test macro says when its GPU half did not run: without an
//! adapter, a line that the harness does not capture; with
//! `SHADERGRAD_REQUIRE_GPU=1`, a failure. Checked by running this test
//! binary again with wgpu limited to a backend this platform lacks.

mod common;

use std::process::Command;

use shadergrad::{Result, Tensor};

fn adds() -> Result<()> {
    let x = Tensor::from_slice(&[1.0, 2.0], &[2])?;
    assert_eq!(x.add_scalar(1.0).to_vec()?, vec![2.0, 3.0]);
    Ok(())
}

backend_tests!(adds);

/// This binary again, running only `gpu::adds`, with no adapter to find.
fn run_without_gpu(require: bool) -> std::process::Output {
    let mut c = Command::new(std::env::current_exe().expect("own path"));
    c.args(["gpu::adds", "--exact"])
        // Native builds of wgpu have no WebGPU backend: no adapter.
        .env("WGPU_BACKEND", "webgpu")
        .env_remove("SHADERGRAD_REQUIRE_GPU");
    if require {
        c.env("SHADERGRAD_REQUIRE_GPU", "1");
    }
    c.output().expect("run the test binary")
}

#[test]
fn a_skipped_gpu_test_says_so() {
    let o = run_without_gpu(false);
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        err.contains("pass WITHOUT RUNNING"),
        "the skipped GPU half must say so outside the capture:\n{out}\n{err}"
    );
    let o = run_without_gpu(true);
    assert!(
        !o.status.success(),
        "SHADERGRAD_REQUIRE_GPU=1 without a GPU must fail:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
