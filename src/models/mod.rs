//! Reference models, by name.

pub mod gan;
#[cfg(feature = "text")]
pub mod text;

use crate::nn::{Conv2d, Flatten, Init, Linear, MaxPool2d, ReLU, Sequential};
use crate::{Conv2dOpts, Error, Result};

pub const NAMES: [&str; 1] = ["seed-cnn"];

/// The founding document's Keras CIFAR-10 example, layer for layer:
/// Conv2D(32, 3x3, relu) -> MaxPool(2) -> Conv2D(64, 3x3, relu) -> MaxPool(2)
/// -> Conv2D(64, 3x3, relu) -> Flatten -> Dense(64, relu) -> Dense(10) logits,
/// Glorot-uniform weights and zero biases (Keras' defaults). Flatten runs
/// over channels-first features, a fixed permutation of Keras' order.
pub fn seed_cnn() -> Result<Sequential> {
    let conv = |i, o| Conv2d::new(i, o, 3, Conv2dOpts::default(), Init::GlorotUniform);
    Ok(Sequential::new()
        .add("conv1", conv(3, 32)?)
        .add("relu1", ReLU)
        .add("pool1", MaxPool2d::new(2))
        .add("conv2", conv(32, 64)?)
        .add("relu2", ReLU)
        .add("pool2", MaxPool2d::new(2))
        .add("conv3", conv(64, 64)?)
        .add("relu3", ReLU)
        .add("flatten", Flatten)
        .add("fc1", Linear::new(64 * 4 * 4, 64, Init::GlorotUniform)?)
        .add("relu4", ReLU)
        .add("fc2", Linear::new(64, 10, Init::GlorotUniform)?))
}

/// Build a model by name.
pub fn build(name: &str) -> Result<Sequential> {
    match name {
        "seed-cnn" => seed_cnn(),
        _ => Err(Error::param(
            "model",
            format!("unknown model {name:?}; available: {}", NAMES.join(", ")),
        )),
    }
}
