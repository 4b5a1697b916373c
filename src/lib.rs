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

pub mod autodiff;
pub mod backend;
pub mod bench;
pub mod data;
pub mod error;
pub mod io;
pub mod models;
pub mod nn;
pub mod op;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod shape;
pub mod tensor;
pub mod train;

pub use autodiff::{grad, Gradients};
pub use error::{Error, Result};
pub use ops::conv::Conv2dOpts;
pub use optim::{Adam, Optimizer, Parameter, Sgd};
pub use tensor::{default_device, manual_seed, no_grad, with_device, DType, Device, Tensor};
