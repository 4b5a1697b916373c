//! Errors are values: every message names the op, the shapes involved and a fix.

use thiserror::Error;

/// What every fallible shadergrad function returns.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Error, Clone, PartialEq)]
/// Everything that can go wrong, each message naming the op, the shapes or file involved, and a fix.
pub enum Error {
    /// Operand shapes that do not fit together.
    #[error("{op}: incompatible shapes {shapes}; {hint}")]
    Shape {
        /// The operation that failed.
        op: &'static str,
        /// The shapes involved, as written in the message.
        shapes: String,
        /// What to change.
        hint: String,
    },
    /// An axis outside the tensor's rank.
    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank} (shape {shape:?}); axes run from -{rank} to {last}", last = *rank as isize - 1)]
    Axis {
        /// The operation that failed.
        op: &'static str,
        /// The axis asked for.
        axis: isize,
        /// The tensor's rank.
        rank: usize,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A parameter that makes no sense for the op (kernel larger than input, zero stride, ...).
    #[error("{op}: {msg}")]
    Param {
        /// The operation that failed.
        op: &'static str,
        /// What is wrong, and the fix.
        msg: String,
    },
    /// Wrong element type for the op.
    #[error("{op}: expected {expected} but got {got}; {hint}")]
    DType {
        /// The operation that failed.
        op: &'static str,
        /// The type it needs.
        expected: String,
        /// The type it was given.
        got: String,
        /// What to change.
        hint: String,
    },
    /// Gradient asked of something that cannot give one.
    #[error("backward: {0}")]
    Grad(String),
    /// Reading or writing a file failed.
    #[error("{path}: {msg}")]
    Io {
        /// The file or folder (or `entry in archive`).
        path: String,
        /// What is wrong with it, and the fix.
        msg: String,
    },
    /// No usable GPU, a lost device, a kernel that failed to compile.
    #[error("gpu: {0}")]
    Device(String),
    /// A NaN or infinity where training needs finite numbers: a non-finite
    /// loss, or (with [`crate::set_detect_anomaly`]) the first op that
    /// produced one.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// The host or a device could not allocate; smaller work can continue.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
}

impl Error {
    pub(crate) fn shape(op: &'static str, shapes: &[&[usize]], hint: impl Into<String>) -> Self {
        let shapes = shapes
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" and ");
        Error::Shape {
            op,
            shapes,
            hint: hint.into(),
        }
    }

    /// A [`Error::Param`] for `op` with the message `msg`.
    pub fn param(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Param {
            op,
            msg: msg.into(),
        }
    }
}
