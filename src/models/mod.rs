//! Reference models, by name.

pub mod gan;
pub mod image;
pub mod resnet;
#[cfg(feature = "text")]
pub mod text;

use crate::nn::{Conv2d, Flatten, Init, Linear, MaxPool2d, ReLU, Sequential};
use crate::{Conv2dOpts, Error, Result};

/// The image classifiers [`build_for`] knows.
pub const NAMES: [&str; 3] = ["seed-cnn", "resnet8", "resnet18"];

/// The founding document's Keras CIFAR-10 example, layer for layer:
/// Conv2D(32, 3x3, relu) -> MaxPool(2) -> Conv2D(64, 3x3, relu) -> MaxPool(2)
/// -> Conv2D(64, 3x3, relu) -> Flatten -> Dense(64, relu) -> Dense(10) logits,
/// Glorot-uniform weights and zero biases (Keras' defaults). Flatten runs
/// over channels-first features, a fixed permutation of Keras' order.
pub fn seed_cnn() -> Result<Sequential> {
    seed_cnn_for((32, 32), 10)
}

/// The seed CNN for RGB images of `size` (height, width) and `classes`
/// classes: the same layers, with the dense layer sized to the features
/// the convolutions leave (at least 18x18 pixels in).
pub fn seed_cnn_for(size: (usize, usize), classes: usize) -> Result<Sequential> {
    // Three valid 3x3 convolutions, two 2x2 poolings (flooring).
    let side = |s: usize| ((s.saturating_sub(2) / 2).saturating_sub(2) / 2).saturating_sub(2);
    let (fh, fw) = (side(size.0), side(size.1));
    if fh == 0 || fw == 0 {
        return Err(Error::param(
            "seed-cnn",
            format!(
                "input {}x{} is too small: the seed CNN needs at least 18x18 pixels (use a larger --size)",
                size.0, size.1
            ),
        ));
    }
    check_classes("seed-cnn", classes)?;
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
        .add("fc1", Linear::new(64 * fh * fw, 64, Init::GlorotUniform)?)
        .add("relu4", ReLU)
        .add("fc2", Linear::new(64, classes, Init::GlorotUniform)?))
}

fn check_classes(model: &'static str, classes: usize) -> Result<()> {
    if classes < 2 {
        return Err(Error::param(
            model,
            format!("{classes} classes: a classifier needs at least 2"),
        ));
    }
    Ok(())
}

/// Build a CIFAR-10 model (32x32 RGB, 10 classes) by name.
pub fn build(name: &str) -> Result<Sequential> {
    build_for(name, (32, 32), 10)
}

/// Build an image classifier by name for RGB images of `size` (height,
/// width) and `classes` classes.
pub fn build_for(name: &str, size: (usize, usize), classes: usize) -> Result<Sequential> {
    match name {
        "seed-cnn" => seed_cnn_for(size, classes),
        "resnet8" => resnet::resnet(&resnet::RESNET8, size, classes),
        "resnet18" => resnet::resnet(&resnet::RESNET18, size, classes),
        _ => Err(Error::param(
            "model",
            format!("unknown model {name:?}; available: {}", NAMES.join(", ")),
        )),
    }
}
