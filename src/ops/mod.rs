//! The public tensor operations. Each validates its operands (errors name the
//! op, shapes and a fix) and builds primitive nodes; composites are plain
//! Rust over the primitives, so they get gradients and every backend for free.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod index;
pub mod linalg;
pub mod loss;
pub mod movement;
pub(crate) mod optim;
pub mod reduce;

use crate::{DType, Error, Result, Tensor};

pub(crate) fn ensure_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::DType {
            op,
            expected: "f32".into(),
            got: t.dtype().to_string(),
            hint: "convert with .cast(DType::F32)".into(),
        });
    }
    Ok(())
}

pub(crate) fn ensure_i32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::I32 {
        return Err(Error::DType {
            op,
            expected: "i32 indices".into(),
            got: t.dtype().to_string(),
            hint: "build indices with from_slice_i32 or convert with .cast(DType::I32)".into(),
        });
    }
    Ok(())
}

pub(crate) fn ensure_rank(op: &'static str, t: &Tensor, rank: usize, what: &str) -> Result<()> {
    if t.rank() != rank {
        return Err(Error::shape(
            op,
            &[t.shape()],
            format!(
                "expected a rank-{rank} tensor ({what}), got rank {}",
                t.rank()
            ),
        ));
    }
    Ok(())
}

/// All operands on one device, or an error naming both devices and the fix.
pub(crate) fn same_device(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    if let Some((first, rest)) = ts.split_first() {
        if let Some(other) = rest.iter().find(|t| t.device() != first.device()) {
            return Err(Error::param(
                op,
                format!(
                    "operands live on {} and {}; move one with .to(device) (e.g. x.to({}))",
                    first.device(),
                    other.device(),
                    first.device()
                ),
            ));
        }
    }
    Ok(())
}
