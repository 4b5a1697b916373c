#![deny(missing_docs)]
//! shadergrad: a deep-learning engine with a lazy tensor graph, reverse-mode
//! autodiff as a graph transform, and backends that run the same graph on the
//! CPU (the executable specification) or on GPUs through WGSL.
//!
//! ```
//! use shadergrad::Tensor;
//! let w = Tensor::from_slice(&[1.0, 2.0], &[2]).unwrap().with_grad();
//! let loss = w.mul(&w).unwrap().sum_all();          // nothing runs yet
//! let grads = loss.backward().unwrap();              // new lazy nodes
//! assert_eq!(grads.get(&w).unwrap().to_vec().unwrap(), vec![2.0, 4.0]);
//! ```
//!
//! Layers: the engine (`Tensor`, its ops, autodiff, the scheduler, the cpu
//! and wgpu backends) and the model kit (`nn`, `optim`, `data`, `io`,
//! `models`) are always built; the application (`train`, `plot`, `bench`
//! and the `shadergrad` binary) comes with cargo features, on by default.

// The engine.
mod autodiff;
mod backend;
mod device;
mod error;
mod op;
mod ops;
mod schedule;
mod shape;
mod tensor;

// Graphics applications: their device, buffers and textures.
pub mod embed;

// The model kit.
pub mod data;
pub mod io;
pub mod models;
pub mod nn;
pub mod optim;

// The application.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
#[cfg(feature = "plot")]
pub mod plot;
#[cfg(feature = "train")]
pub mod train;

// The guide's Rust program is compiled with the doc tests, so it cannot rot.
#[cfg(all(doctest, feature = "train"))]
#[doc = include_str!("../docs/guide.md")]
mod guide {}

// So is the graphics-app guide's embedding program.
#[cfg(doctest)]
#[doc = include_str!("../docs/graphics-apps.md")]
mod graphics_apps {}

pub use autodiff::{grad, Gradients};
pub use device::{devices_report, Device, GpuId};
pub use error::{Error, Result};
pub use ops::attention::AttentionOpts;
pub use ops::conv::Conv2dOpts;
pub use optim::{Adam, Optimizer, Parameter, Sgd};
pub use schedule::anomaly::{detect_anomaly, set_detect_anomaly};
pub use schedule::{last_realize_stats, profile, total_realize_stats, RealizeStats};
pub use shape::MAX_ELEMENTS;
pub use tensor::{default_device, manual_seed, no_grad, with_device, DType, Tensor};
