//! Weight initialisers (drawn from the thread's seeded generator).

use crate::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
/// How a layer's weights start.
pub enum Init {
    /// U(-a, a) with a = sqrt(6 / (fan_in + fan_out)): Keras' default.
    GlorotUniform,
    /// U(-a, a) with a = sqrt(6 / fan_in): He et al. for ReLU networks.
    KaimingUniform,
    /// N(0, 2 / fan_in).
    KaimingNormal,
    /// N(0, std^2) whatever the fans (DCGAN's 0.02).
    Normal(f32),
}

impl Init {
    /// A fresh tensor of `shape`, for a layer with these fans.
    pub fn tensor(self, shape: &[usize], fan_in: usize, fan_out: usize) -> Tensor {
        let uniform = |a: f32| Tensor::rand(shape).mul_scalar(2.0 * a).add_scalar(-a);
        match self {
            Init::GlorotUniform => uniform((6.0 / (fan_in + fan_out).max(1) as f32).sqrt()),
            Init::KaimingUniform => uniform((6.0 / fan_in.max(1) as f32).sqrt()),
            Init::KaimingNormal => {
                Tensor::randn(shape).mul_scalar((2.0 / fan_in.max(1) as f32).sqrt())
            }
            Init::Normal(std) => Tensor::randn(shape).mul_scalar(std),
        }
    }
}
