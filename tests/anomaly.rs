//! Numerical guards: anomaly detection names the first op, forward or
//! backward, that produced a NaN or an infinity; without it nothing
//! changes. On both backends.

mod common;

use common::t;
use shadergrad::{Error, Result, Tensor};

/// Anomaly detection is process-wide: the tests that turn it on take turns.
static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn with_detection<R>(f: impl FnOnce() -> R) -> R {
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    shadergrad::set_detect_anomaly(true);
    let r = f();
    shadergrad::set_detect_anomaly(false);
    r
}

fn forward_log_of_zero_is_named() -> Result<()> {
    let x = t(&[1.0, 0.5, 2.0], &[3]);
    // sub makes a 0 (finite), log turns it into -inf: log is the culprit,
    // inside a chain that would otherwise be one fused kernel.
    let y = x.sub_scalar(0.5).log().mul_scalar(3.0).exp().sum_all();
    let err = with_detection(|| y.item()).expect_err("log(0) is -inf");
    let msg = err.to_string();
    assert!(matches!(err, Error::NonFinite(_)), "{msg}");
    assert!(
        msg.contains("anomaly: log in the forward pass produced -inf at element 1"),
        "{msg}"
    );
    assert!(msg.contains("all its inputs were finite"), "{msg}");
    // Without detection the same graph just computes (fused) to a value.
    let y = x.sub_scalar(0.5).log().mul_scalar(3.0).exp().sum_all();
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let v = y.item()?;
    assert!((v - (0.5f32.powi(3) + 1.5f32.powi(3))).abs() < 1e-4, "{v}");
    Ok(())
}

fn backward_sqrt_at_zero_is_named() -> Result<()> {
    let x = t(&[4.0, 0.0, 1.0], &[3]).with_grad();
    // sqrt(0) = 0 is finite; its gradient 0.5 / sqrt(0) is not.
    let loss = x.sqrt().sum_all();
    let err = with_detection(|| -> Result<Vec<f32>> {
        let g = shadergrad::grad(&loss, std::slice::from_ref(&x))?;
        g[0].to_vec()
    })
    .expect_err("the gradient at 0 is inf");
    let msg = err.to_string();
    assert!(
        msg.contains("in the backward pass produced inf at element 1"),
        "{msg}"
    );
    assert!(msg.contains("[3]"), "{msg}");
    Ok(())
}

fn nan_data_is_told_apart() -> Result<()> {
    // The NaN comes with the data: the first op to see it says so.
    let x = t(&[1.0, f32::NAN], &[2]);
    let err = with_detection(|| x.mul_scalar(2.0).add_scalar(1.0).to_vec()).expect_err("NaN in");
    assert!(
        err.to_string().contains("already held non-finite values"),
        "{err}"
    );
    Ok(())
}

backend_tests!(
    forward_log_of_zero_is_named,
    backward_sqrt_at_zero_is_named,
    nan_data_is_told_apart
);

#[test]
fn finite_graphs_are_unchanged_by_detection() -> Result<()> {
    let x = Tensor::from_slice(&[0.5, -1.0, 2.0, 3.0], &[2, 2])?.with_grad();
    let f = |x: &Tensor| -> Result<(f32, Vec<f32>)> {
        let loss = x.matmul(x)?.tanh().sum_all();
        let g = shadergrad::grad(&loss, std::slice::from_ref(x))?;
        Ok((loss.item()?, g[0].to_vec()?))
    };
    let with = with_detection(|| f(&x))?;
    let _turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(with, f(&x)?);
    Ok(())
}
