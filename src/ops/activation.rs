//! Activations, softmax and dropout, composed from primitives.

use crate::op::UnaryOp;
use crate::ops::ensure_f32;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// max(x, 0), with gradient 0 at 0 (as PyTorch).
    pub fn relu(&self) -> Tensor {
        self.to_f32().unary(UnaryOp::Relu)
    }

    /// `x` where positive, else `slope * x`.
    pub fn leaky_relu(&self, slope: f32) -> Tensor {
        let x = self.to_f32();
        Tensor::where_(&x.gt_scalar(0.0), &x, &x.mul_scalar(slope))
            .unwrap_or_else(|_| unreachable!("same shapes"))
    }

    /// Exact GELU: x * Phi(x) with the Gauss error function (BERT's form).
    pub fn gelu(&self) -> Tensor {
        let x = self.to_f32();
        let phi = x
            .mul_scalar(std::f32::consts::FRAC_1_SQRT_2)
            .erf()
            .add_scalar(1.0)
            .mul_scalar(0.5);
        x.mul(&phi).unwrap_or_else(|_| unreachable!("same shapes"))
    }

    /// GELU's tanh approximation (GPT-2's form).
    pub fn gelu_tanh(&self) -> Tensor {
        let x = self.to_f32();
        let inner = x
            .add(&x.pow_scalar(3.0).mul_scalar(0.044715))
            .unwrap_or_else(|_| unreachable!("same shapes"));
        let t = inner
            .mul_scalar((2.0 / std::f32::consts::PI).sqrt())
            .tanh()
            .add_scalar(1.0);
        x.mul(&t)
            .unwrap_or_else(|_| unreachable!("same shapes"))
            .mul_scalar(0.5)
    }

    /// 1 / (1 + e^-x), written through tanh so it never overflows.
    pub fn sigmoid(&self) -> Tensor {
        self.mul_scalar(0.5).tanh().add_scalar(1.0).mul_scalar(0.5)
    }

    /// `x * sigmoid(x)` (swish).
    pub fn silu(&self) -> Tensor {
        let x = self.to_f32();
        x.mul(&x.sigmoid())
            .unwrap_or_else(|_| unreachable!("same shapes"))
    }

    /// log(1 + e^x), stable for large |x|.
    pub fn softplus(&self) -> Tensor {
        let x = self.to_f32();
        // max(x, 0) + log(1 + e^-|x|)
        let tail = x.abs().neg().exp().add_scalar(1.0).log();
        x.relu()
            .add(&tail)
            .unwrap_or_else(|_| unreachable!("same shapes"))
    }

    /// softmax along `axis`, shifted by the maximum for stability.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        ensure_f32("softmax", self)?;
        let shifted = self.sub(&self.max(&[axis], true)?.detach())?;
        let e = shifted.exp();
        e.div(&e.sum(&[axis], true)?)
    }

    /// log(softmax(x)) along `axis`, computed without forming the softmax.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        ensure_f32("log_softmax", self)?;
        let shifted = self.sub(&self.max(&[axis], true)?.detach())?;
        let lse = shifted.exp().sum(&[axis], true)?.log();
        shifted.sub(&lse)
    }

    /// Zero each element with probability `p` and scale the rest by 1/(1-p)
    /// when `train`; identity otherwise.
    pub fn dropout(&self, p: f32, train: bool) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::param(
                "dropout",
                format!("probability {p} must lie in [0, 1)"),
            ));
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        let keep = crate::with_device(*self.device(), || Tensor::rand(self.shape()))
            .gt_scalar(p)
            .mul_scalar(1.0 / (1.0 - p));
        self.mul(&keep)
    }
}
