//! Residual networks (He et al., 2016) with BatchNorm for image folders
//! harder than the seed CNN can learn: `resnet8` (three stages of one basic
//! block, 16-64 channels, ~78k parameters) and `resnet18` (four stages of
//! two blocks, 64-512 channels, ~11M). Parameter names follow torchvision's
//! (`layer2.0.conv1.weight`, `layer2.0.downsample.1.running_var`).
//!
//! Inputs under 128 pixels get the CIFAR stem (one 3x3 convolution); larger
//! ones get ImageNet's (7x7 stride-2 convolution and a 3x3 stride-2 max
//! pool). Global average pooling makes every size above 8x8 work.

use crate::nn::transformer::prefixed;
use crate::nn::{BatchNorm2d, Conv2d, Init, Linear, MaxPool2d, Module, ReLU, Sequential};
use crate::optim::Parameter;
use crate::{Conv2dOpts, Error, Result, Tensor};

/// The shape of a residual network: channels and block count per stage.
#[derive(Clone, Copy, Debug)]
pub struct ResNetSpec {
    /// Output channels of each stage (the first stage keeps the stem's).
    pub widths: &'static [usize],
    /// Basic blocks per stage.
    pub blocks: &'static [usize],
}

/// ResNet-8: 16, 32, 64 channels, one block each.
pub const RESNET8: ResNetSpec = ResNetSpec {
    widths: &[16, 32, 64],
    blocks: &[1, 1, 1],
};

/// ResNet-18: 64, 128, 256, 512 channels, two blocks each.
pub const RESNET18: ResNetSpec = ResNetSpec {
    widths: &[64, 128, 256, 512],
    blocks: &[2, 2, 2, 2],
};

fn conv(inputs: usize, outputs: usize, kernel: usize, stride: usize) -> Result<Conv2d> {
    let opts = Conv2dOpts {
        stride: (stride, stride),
        padding: (kernel / 2, kernel / 2),
        ..Conv2dOpts::default()
    };
    // No bias: a BatchNorm follows every convolution.
    Ok(Conv2d::new(inputs, outputs, kernel, opts, Init::KaimingNormal)?.without_bias())
}

/// Two 3x3 convolutions with BatchNorm around an identity (or a strided
/// 1x1 projection where the shape changes): `relu(f(x) + shortcut(x))`.
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    /// A block from `inputs` to `outputs` channels, `stride` 1 or 2.
    pub fn new(inputs: usize, outputs: usize, stride: usize) -> Result<BasicBlock> {
        let downsample = if stride != 1 || inputs != outputs {
            Some((
                conv(inputs, outputs, 1, stride)?,
                BatchNorm2d::new(outputs)?,
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: conv(inputs, outputs, 3, stride)?,
            bn1: BatchNorm2d::new(outputs)?,
            conv2: conv(outputs, outputs, 3, 1)?,
            bn2: BatchNorm2d::new(outputs)?,
            downsample,
        })
    }

    fn layers(&self) -> Vec<(&str, &dyn Module)> {
        let mut l: Vec<(&str, &dyn Module)> = vec![
            ("conv1", &self.conv1),
            ("bn1", &self.bn1),
            ("conv2", &self.conv2),
            ("bn2", &self.bn2),
        ];
        if let Some((c, b)) = &self.downsample {
            l.push(("downsample.0", c));
            l.push(("downsample.1", b));
        }
        l
    }
}

impl Module for BasicBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward(&self.conv1.forward(x)?)?.relu();
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?;
        let shortcut = match &self.downsample {
            Some((c, b)) => b.forward(&c.forward(x)?)?,
            None => x.clone(),
        };
        Ok(h.add(&shortcut)?.relu())
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        self.layers()
            .into_iter()
            .flat_map(|(n, l)| prefixed(n, l.parameters()))
            .collect()
    }
    fn state(&self) -> Vec<(String, Parameter)> {
        self.layers()
            .into_iter()
            .flat_map(|(n, l)| prefixed(n, l.state()))
            .collect()
    }
    fn set_training(&mut self, training: bool) {
        self.bn1.set_training(training);
        self.bn2.set_training(training);
        if let Some((_, b)) = &mut self.downsample {
            b.set_training(training);
        }
    }
}

/// The mean over each feature map: `[n, c, h, w] -> [n, c]`.
pub struct GlobalAvgPool;

impl Module for GlobalAvgPool {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::ensure_rank("GlobalAvgPool", x, 4, "input [n, c, h, w]")?;
        x.mean(&[2, 3], false)
    }
}

/// A residual network of shape `spec` for RGB images of `size` (height,
/// width) and `classes` classes.
pub fn resnet(spec: &ResNetSpec, size: (usize, usize), classes: usize) -> Result<Sequential> {
    let side = size.0.min(size.1);
    if side < 8 {
        return Err(Error::param(
            "resnet",
            format!(
                "input {}x{} is too small: a ResNet needs at least 8x8 pixels",
                size.0, size.1
            ),
        ));
    }
    super::check_classes("resnet", classes)?;
    let stem = spec.widths[0];
    let mut net = if side >= 128 {
        Sequential::new()
            .add("conv1", conv(3, stem, 7, 2)?)
            .add("bn1", BatchNorm2d::new(stem)?)
            .add("relu", ReLU)
            .add(
                "maxpool",
                MaxPool2d {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
            )
    } else {
        Sequential::new()
            .add("conv1", conv(3, stem, 3, 1)?)
            .add("bn1", BatchNorm2d::new(stem)?)
            .add("relu", ReLU)
    };
    let mut channels = stem;
    for (stage, (&width, &blocks)) in spec.widths.iter().zip(spec.blocks).enumerate() {
        for b in 0..blocks {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            net = net.add(
                &format!("layer{}.{b}", stage + 1),
                BasicBlock::new(channels, width, stride)?,
            );
            channels = width;
        }
    }
    Ok(net
        .add("avgpool", GlobalAvgPool)
        .add("fc", Linear::new(channels, classes, Init::KaimingUniform)?))
}
