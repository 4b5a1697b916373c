//! Layers with named parameters, composed from tensor ops.

pub mod bert;
pub mod init;
pub mod transformer;

use crate::optim::Parameter;
use crate::{Conv2dOpts, Error, Result, Tensor};

pub use bert::{Bert, BertConfig};
pub use init::Init;
pub use transformer::{
    Embedding, Gelu, LayerNorm, MultiHeadAttention, PositionEmbedding, TransformerEncoderLayer,
};

/// A layer or model. Parameters and state are listed by name (these names
/// are the checkpoint's tensor names).
///
/// Layers compose with [`Sequential`], or by implementing the trait:
///
/// ```
/// use shadergrad::nn::{Init, Linear, Module};
/// use shadergrad::{Parameter, Result, Tensor};
///
/// /// x + mlp(x): a residual two-layer perceptron.
/// struct Residual {
///     up: Linear,
///     down: Linear,
/// }
///
/// impl Module for Residual {
///     fn forward(&self, x: &Tensor) -> Result<Tensor> {
///         let h = self.up.forward(x)?.relu();
///         x.add(&self.down.forward(&h)?)
///     }
///     fn parameters(&self) -> Vec<(String, Parameter)> {
///         let named = |prefix: &str, l: &Linear| {
///             l.parameters()
///                 .into_iter()
///                 .map(move |(n, p)| (format!("{prefix}.{n}"), p))
///                 .collect::<Vec<_>>()
///         };
///         [named("up", &self.up), named("down", &self.down)].concat()
///     }
/// }
///
/// # fn main() -> Result<()> {
/// let block = Residual {
///     up: Linear::new(8, 32, Init::KaimingUniform)?,
///     down: Linear::new(32, 8, Init::KaimingUniform)?,
/// };
/// let y = block.forward(&Tensor::randn(&[4, 8]))?;
/// assert_eq!(y.shape(), &[4, 8]);
/// let names: Vec<String> = block.parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["up.weight", "up.bias", "down.weight", "down.bias"]);
/// # Ok(())
/// # }
/// ```
pub trait Module: Send {
    /// The layer's output for input `x` (lazy: nothing runs until a value is needed).
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Trainable parameters, by name.
    fn parameters(&self) -> Vec<(String, Parameter)> {
        vec![]
    }

    /// Non-trainable state (running statistics), by name.
    fn state(&self) -> Vec<(String, Parameter)> {
        vec![]
    }

    /// Switch between training and evaluation behaviour (dropout, batch norm).
    fn set_training(&mut self, _training: bool) {}
}

/// Parameters and state together, by name: everything a checkpoint holds.
pub fn named_tensors<M: Module + ?Sized>(m: &M) -> Vec<(String, Parameter)> {
    let mut all = m.parameters();
    all.extend(m.state());
    all
}

/// Number of trainable scalars in `m`.
pub fn parameter_count<M: Module + ?Sized>(m: &M) -> usize {
    m.parameters()
        .iter()
        .map(|(_, p)| p.shape().iter().product::<usize>())
        .sum()
}

/// The `weight` and optional `bias` entries of a layer.
fn weight_and_bias(weight: &Parameter, bias: &Option<Parameter>) -> Vec<(String, Parameter)> {
    let mut p = vec![("weight".to_string(), weight.clone())];
    p.extend(bias.iter().map(|b| ("bias".to_string(), b.clone())));
    p
}

/// `y = x W^T + b`, weight stored `[out, in]`.
pub struct Linear {
    /// `[out, in]`.
    pub weight: Parameter,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Parameter>,
}

impl Linear {
    /// A layer from `inputs` to `outputs` features with `init` weights and zero bias.
    pub fn new(inputs: usize, outputs: usize, init: Init) -> Result<Linear> {
        Ok(Linear {
            weight: Parameter::new(init.tensor(&[outputs, inputs], inputs, outputs))?,
            bias: Some(Parameter::new(Tensor::zeros(&[outputs]))?),
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.linear(
            &self.weight.get(),
            self.bias.as_ref().map(|b| b.get()).as_ref(),
        )
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        weight_and_bias(&self.weight, &self.bias)
    }
}

/// 2-D convolution layer, weight `[out, in/groups, k, k]`.
pub struct Conv2d {
    /// `[out, in / groups, k, k]`.
    pub weight: Parameter,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Parameter>,
    /// Stride, padding, dilation and groups.
    pub opts: Conv2dOpts,
}

impl Conv2d {
    /// A `kernel`x`kernel` convolution from `inputs` to `outputs` channels with `init` weights and zero bias.
    pub fn new(
        inputs: usize,
        outputs: usize,
        kernel: usize,
        opts: Conv2dOpts,
        init: Init,
    ) -> Result<Conv2d> {
        if opts.groups == 0
            || !inputs.is_multiple_of(opts.groups)
            || !outputs.is_multiple_of(opts.groups)
        {
            return Err(Error::param(
                "Conv2d",
                format!(
                    "{inputs} inputs and {outputs} outputs must divide by groups {}",
                    opts.groups
                ),
            ));
        }
        let fan_in = inputs / opts.groups * kernel * kernel;
        let fan_out = outputs / opts.groups * kernel * kernel;
        Ok(Conv2d {
            weight: Parameter::new(init.tensor(
                &[outputs, inputs / opts.groups, kernel, kernel],
                fan_in,
                fan_out,
            ))?,
            bias: Some(Parameter::new(Tensor::zeros(&[outputs]))?),
            opts,
        })
    }
}

impl Conv2d {
    /// The layer without its bias (when a normalisation follows).
    pub fn without_bias(mut self) -> Conv2d {
        self.bias = None;
        self
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(
            &self.weight.get(),
            self.bias.as_ref().map(|b| b.get()).as_ref(),
            self.opts,
        )
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        weight_and_bias(&self.weight, &self.bias)
    }
}

/// Transposed 2-D convolution layer (the gradient of a convolution with
/// respect to its input: it upsamples by the stride), weight
/// `[in, out/groups, k, k]`.
pub struct ConvTranspose2d {
    /// `[in, out / groups, k, k]`, as PyTorch stores it.
    pub weight: Parameter,
    /// `[out]`, if the layer has a bias.
    pub bias: Option<Parameter>,
    /// Stride, padding, dilation and groups of the convolution this one transposes.
    pub opts: Conv2dOpts,
    /// Extra rows and columns on the bottom and right of the output.
    pub output_padding: (usize, usize),
}

impl ConvTranspose2d {
    /// A transposed `kernel`x`kernel` convolution from `inputs` to `outputs` channels.
    pub fn new(
        inputs: usize,
        outputs: usize,
        kernel: usize,
        opts: Conv2dOpts,
        init: Init,
    ) -> Result<ConvTranspose2d> {
        if opts.groups == 0
            || !inputs.is_multiple_of(opts.groups)
            || !outputs.is_multiple_of(opts.groups)
        {
            return Err(Error::param(
                "ConvTranspose2d",
                format!(
                    "{inputs} inputs and {outputs} outputs must divide by groups {}",
                    opts.groups
                ),
            ));
        }
        // As PyTorch counts them for this layout.
        let fan_in = outputs / opts.groups * kernel * kernel;
        let fan_out = inputs / opts.groups * kernel * kernel;
        Ok(ConvTranspose2d {
            weight: Parameter::new(init.tensor(
                &[inputs, outputs / opts.groups, kernel, kernel],
                fan_in,
                fan_out,
            ))?,
            bias: Some(Parameter::new(Tensor::zeros(&[outputs]))?),
            opts,
            output_padding: (0, 0),
        })
    }

    /// The layer without its bias (when a normalisation follows).
    pub fn without_bias(mut self) -> ConvTranspose2d {
        self.bias = None;
        self
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose2d(
            &self.weight.get(),
            self.bias.as_ref().map(|b| b.get()).as_ref(),
            self.opts,
            self.output_padding,
        )
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        weight_and_bias(&self.weight, &self.bias)
    }
}

/// Max pooling over `[n, c, h, w]`.
pub struct MaxPool2d {
    /// Window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit padding on each side (never chosen as the maximum).
    pub padding: usize,
}

impl MaxPool2d {
    /// Window `kernel`, stride `kernel`, no padding (Keras' `MaxPooling2D(k)`).
    pub fn new(kernel: usize) -> MaxPool2d {
        MaxPool2d {
            kernel,
            stride: kernel,
            padding: 0,
        }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.max_pool2d(self.kernel, self.stride, self.padding)
    }
}

/// `[n, k] -> [n, ...shape]` (a latent vector to a 1x1 feature map, say).
pub struct Unflatten(pub Vec<usize>);

impl Module for Unflatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut shape = vec![x.shape().first().copied().unwrap_or(0)];
        shape.extend(&self.0);
        x.reshape(&shape)
    }
}

/// `[n, ...] -> [n, prod(...)]`.
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.flatten(1, -1)
    }
}

/// `max(x, 0)`.
pub struct ReLU;

impl Module for ReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.relu())
    }
}

/// max(x, slope * x).
pub struct LeakyReLU(pub f32);

impl Module for LeakyReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.leaky_relu(self.0))
    }
}

/// `tanh(x)`.
pub struct Tanh;

impl Module for Tanh {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.tanh())
    }
}

/// `1 / (1 + exp(-x))`.
pub struct Sigmoid;

impl Module for Sigmoid {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.sigmoid())
    }
}

/// Zeroes each element with probability `p` in training and scales the rest by `1 / (1 - p)`; the identity in evaluation.
pub struct Dropout {
    /// Probability of dropping an element.
    pub p: f32,
    training: bool,
}

impl Dropout {
    /// Dropout with probability `p`.
    pub fn new(p: f32) -> Dropout {
        Dropout { p, training: true }
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.dropout(self.p, self.training)
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// Batch normalisation over `[n, c, h, w]` per channel. Training uses batch
/// statistics and updates the running ones; evaluation uses the running ones.
pub struct BatchNorm2d {
    /// Scale `[c]`.
    pub weight: Parameter,
    /// Shift `[c]`.
    pub bias: Parameter,
    /// Running mean `[c]` (state, not trained).
    pub running_mean: Parameter,
    /// Running variance `[c]` (state, not trained).
    pub running_var: Parameter,
    /// Weight of each batch in the running statistics.
    pub momentum: f32,
    /// Added to the variance before the square root.
    pub eps: f32,
    training: bool,
}

impl BatchNorm2d {
    /// Batch norm over `channels` channels: weight 1, bias 0, momentum 0.1, eps 1e-5.
    pub fn new(channels: usize) -> Result<BatchNorm2d> {
        Ok(BatchNorm2d {
            weight: Parameter::new(Tensor::ones(&[channels]))?,
            bias: Parameter::new(Tensor::zeros(&[channels]))?,
            running_mean: Parameter::state(Tensor::zeros(&[channels]))?,
            running_var: Parameter::state(Tensor::ones(&[channels]))?,
            momentum: 0.1,
            eps: 1e-5,
            training: true,
        })
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::ensure_rank("BatchNorm2d", x, 4, "input [n, c, h, w]")?;
        let c = x.shape()[1];
        if c != self.weight.shape()[0] {
            return Err(Error::shape(
                "BatchNorm2d",
                &[x.shape(), &self.weight.shape()],
                "input channels must match the layer's",
            ));
        }
        let per_channel = |t: Tensor| t.reshape(&[1, c, 1, 1]);
        let (mean, var) = if self.training {
            let mean = x.mean(&[0, 2, 3], true)?;
            let var = x.sub(&mean)?.square().mean(&[0, 2, 3], true)?;
            // Running variance uses the unbiased estimate, as PyTorch does.
            let n = (x.numel() / c) as f32;
            let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
            let m = self.momentum;
            crate::no_grad(|| -> Result<()> {
                let rm = self
                    .running_mean
                    .get()
                    .mul_scalar(1.0 - m)
                    .add(&mean.reshape(&[c])?.mul_scalar(m))?;
                let rv = self
                    .running_var
                    .get()
                    .mul_scalar(1.0 - m)
                    .add(&var.reshape(&[c])?.mul_scalar(m * unbiased))?;
                self.running_mean.set_lazy(rm)?;
                self.running_var.set_lazy(rv)
            })?;
            (mean, var)
        } else {
            (
                per_channel(self.running_mean.get())?,
                per_channel(self.running_var.get())?,
            )
        };
        let xhat = x.sub(&mean)?.div(&var.add_scalar(self.eps).sqrt())?;
        xhat.mul(&per_channel(self.weight.get())?)?
            .add(&per_channel(self.bias.get())?)
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
    fn state(&self) -> Vec<(String, Parameter)> {
        vec![
            ("running_mean".into(), self.running_mean.clone()),
            ("running_var".into(), self.running_var.clone()),
        ]
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// Layers applied in order; parameter names are `<layer name>.<param>`.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<(String, Box<dyn Module>)>,
}

impl Sequential {
    /// An empty sequence.
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Append a layer under `name`.
    pub fn add(mut self, name: &str, layer: impl Module + 'static) -> Sequential {
        self.layers.push((name.to_string(), Box::new(layer)));
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers' names, in order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Every layer's output, in order (the last is `forward`'s). Holding
    /// them keeps their values after a realize, so a later backward pass
    /// through this graph reads them instead of recomputing them.
    pub fn forward_all(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        let mut h = x.clone();
        for (_, layer) in &self.layers {
            h = layer.forward(&h)?;
            outs.push(h.clone());
        }
        Ok(outs)
    }

    /// The output of the layers up to and including `last` (features of an
    /// inner layer, e.g. a classifier's penultimate activations).
    pub fn forward_through(&self, x: &Tensor, last: &str) -> Result<Tensor> {
        if !self.layers.iter().any(|(n, _)| n == last) {
            return Err(Error::param(
                "Sequential::forward_through",
                format!("no layer {last:?}; the layers are {:?}", self.layer_names()),
            ));
        }
        let mut h = x.clone();
        for (name, layer) in &self.layers {
            h = layer.forward(&h)?;
            if name == last {
                break;
            }
        }
        Ok(h)
    }
}

fn prefixed(
    name: &str,
    items: Vec<(String, Parameter)>,
) -> impl Iterator<Item = (String, Parameter)> + '_ {
    items
        .into_iter()
        .map(move |(n, p)| (format!("{name}.{n}"), p))
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (_, layer) in &self.layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        self.layers
            .iter()
            .flat_map(|(n, l)| prefixed(n, l.parameters()))
            .collect()
    }
    fn state(&self) -> Vec<(String, Parameter)> {
        self.layers
            .iter()
            .flat_map(|(n, l)| prefixed(n, l.state()))
            .collect()
    }
    fn set_training(&mut self, training: bool) {
        for (_, l) in &mut self.layers {
            l.set_training(training);
        }
    }
}
