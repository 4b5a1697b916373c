//! Generative adversarial networks: DCGAN (Radford et al., 2016) for
//! 32x32 RGB images, and a small MLP pair for 2-D point sets (the ring of
//! Gaussians that checks adversarial training end to end).

use crate::nn::{
    BatchNorm2d, Conv2d, ConvTranspose2d, Flatten, Init, LeakyReLU, Linear, Module, ReLU,
    Sequential, Tanh, Unflatten,
};
use crate::{Conv2dOpts, Error, Parameter, Result, Tensor};

/// The DCGAN latent size.
pub const LATENT: usize = 100;

/// DCGAN's initialisation: every convolution N(0, 0.02); batch-norm scales
/// N(1, 0.02) and shifts 0.
const DCGAN_INIT: Init = Init::Normal(0.02);

fn batch_norm(channels: usize) -> Result<BatchNorm2d> {
    let mut bn = BatchNorm2d::new(channels)?;
    bn.weight = Parameter::new(Tensor::randn(&[channels]).mul_scalar(0.02).add_scalar(1.0))?;
    Ok(bn)
}

fn check_width(width: usize) -> Result<()> {
    if width == 0 {
        return Err(Error::param(
            "dcgan",
            "the width must be at least 1 (the paper's is 64)",
        ));
    }
    Ok(())
}

/// The DCGAN generator for 32x32: a `[n, latent]` normal vector through
/// transposed convolutions (4x4, stride 2) with batch norm and ReLU, from
/// 4x4 with `4 * width` channels to a 3x32x32 image in [-1, 1] (tanh).
pub fn dcgan_generator(width: usize, latent: usize) -> Result<Sequential> {
    check_width(width)?;
    let up = |i, o| {
        ConvTranspose2d::new(
            i,
            o,
            4,
            Conv2dOpts::default().stride(2).padding(1),
            DCGAN_INIT,
        )
        .map(ConvTranspose2d::without_bias)
    };
    let (w1, w2, w4) = (width, 2 * width, 4 * width);
    Ok(Sequential::new()
        .add("unflatten", Unflatten(vec![latent, 1, 1]))
        .add(
            "up1",
            ConvTranspose2d::new(latent, w4, 4, Conv2dOpts::default(), DCGAN_INIT)?.without_bias(),
        )
        .add("bn1", batch_norm(w4)?)
        .add("relu1", ReLU)
        .add("up2", up(w4, w2)?)
        .add("bn2", batch_norm(w2)?)
        .add("relu2", ReLU)
        .add("up3", up(w2, w1)?)
        .add("bn3", batch_norm(w1)?)
        .add("relu3", ReLU)
        .add("up4", up(w1, 3)?)
        .add("tanh", Tanh))
}

/// The DCGAN discriminator for 32x32: strided 4x4 convolutions with
/// LeakyReLU(0.2) (batch norm after all but the first), down to one logit
/// per image, `[n, 1]`.
pub fn dcgan_discriminator(width: usize) -> Result<Sequential> {
    check_width(width)?;
    let down = |i, o| {
        Conv2d::new(
            i,
            o,
            4,
            Conv2dOpts::default().stride(2).padding(1),
            DCGAN_INIT,
        )
        .map(Conv2d::without_bias)
    };
    let (w1, w2, w4) = (width, 2 * width, 4 * width);
    Ok(Sequential::new()
        .add("down1", down(3, w1)?)
        .add("lrelu1", LeakyReLU(0.2))
        .add("down2", down(w1, w2)?)
        .add("bn2", batch_norm(w2)?)
        .add("lrelu2", LeakyReLU(0.2))
        .add("down3", down(w2, w4)?)
        .add("bn3", batch_norm(w4)?)
        .add("lrelu3", LeakyReLU(0.2))
        .add(
            "out",
            Conv2d::new(w4, 1, 4, Conv2dOpts::default(), DCGAN_INIT)?.without_bias(),
        )
        .add("flatten", Flatten))
}

/// An MLP generator for 2-D points: `[n, latent]` -> `[n, 2]`.
pub fn ring_generator(hidden: usize, latent: usize) -> Result<Sequential> {
    Ok(Sequential::new()
        .add("fc1", Linear::new(latent, hidden, Init::KaimingUniform)?)
        .add("relu1", ReLU)
        .add("fc2", Linear::new(hidden, hidden, Init::KaimingUniform)?)
        .add("relu2", ReLU)
        .add("out", Linear::new(hidden, 2, Init::GlorotUniform)?))
}

/// An MLP discriminator for 2-D points: `[n, 2]` -> one logit `[n, 1]`.
pub fn ring_discriminator(hidden: usize) -> Result<Sequential> {
    Ok(Sequential::new()
        .add("fc1", Linear::new(2, hidden, Init::KaimingUniform)?)
        .add("lrelu1", LeakyReLU(0.2))
        .add("fc2", Linear::new(hidden, hidden, Init::KaimingUniform)?)
        .add("lrelu2", LeakyReLU(0.2))
        .add("out", Linear::new(hidden, 1, Init::GlorotUniform)?))
}

/// A generator and its discriminator, by architecture.
pub struct Gan {
    /// "dcgan" or "gan-ring".
    pub kind: String,
    /// Channel width multiplier of both networks.
    pub width: usize,
    /// Length of the generator's latent vector.
    pub latent: usize,
    /// Latent `[n, latent]` to images `[n, 3, 32, 32]` in [-1, 1].
    pub generator: Sequential,
    /// Images to one logit each (real vs generated).
    pub discriminator: Sequential,
}

impl Gan {
    /// DCGAN for 32x32 RGB at `width` (the paper's is 64).
    pub fn dcgan(width: usize) -> Result<Gan> {
        Ok(Gan {
            kind: "dcgan".into(),
            width,
            latent: LATENT,
            generator: dcgan_generator(width, LATENT)?,
            discriminator: dcgan_discriminator(width)?,
        })
    }

    /// The MLP pair for 2-D points, `hidden` units wide, from a `latent`-d normal.
    pub fn ring(hidden: usize, latent: usize) -> Result<Gan> {
        Ok(Gan {
            kind: "gan-ring".into(),
            width: hidden,
            latent,
            generator: ring_generator(hidden, latent)?,
            discriminator: ring_discriminator(hidden)?,
        })
    }

    /// Build by name: `dcgan` or `gan-ring`.
    pub fn build(kind: &str, width: usize, latent: usize) -> Result<Gan> {
        match kind {
            "dcgan" => Gan::dcgan(width),
            "gan-ring" => Gan::ring(width, latent),
            other => Err(Error::param(
                "gan",
                format!("unknown GAN {other:?}; available: dcgan, gan-ring"),
            )),
        }
    }

    /// Samples of the generator for latents `z` `[n, latent]`.
    pub fn generate(&self, z: &Tensor) -> Result<Tensor> {
        self.generator.forward(z)
    }

    /// Standard-normal latents for `n` samples from the thread's generator.
    pub fn latents(&self, n: usize) -> Tensor {
        Tensor::randn(&[n, self.latent])
    }
}
