//! Text-model layers: token and position embeddings, layer norm, GELU,
//! multi-head attention on the fused attention op, and the Transformer
//! encoder layer (post-norm as BERT, or pre-norm).

use super::{weight_and_bias, Init, Linear, Module};
use crate::optim::Parameter;
use crate::{AttentionOpts, Error, Result, Tensor};

/// Prefix every name of `entries` with `prefix.`.
pub(crate) fn prefixed(
    prefix: &str,
    entries: Vec<(String, Parameter)>,
) -> Vec<(String, Parameter)> {
    entries
        .into_iter()
        .map(|(n, p)| (format!("{prefix}.{n}"), p))
        .collect()
}

/// A table of `[vocab, dim]` vectors looked up by integer ids.
pub struct Embedding {
    /// `[vocab, dim]`.
    pub weight: Parameter,
}

impl Embedding {
    /// Rows drawn from N(0, std^2) (BERT uses 0.02).
    pub fn new(vocab: usize, dim: usize, std: f32) -> Result<Embedding> {
        Ok(Embedding {
            weight: Parameter::new(Init::Normal(std).tensor(&[vocab, dim], vocab, dim))?,
        })
    }

    /// Number of ids.
    pub fn vocab(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for Embedding {
    /// `ids` (i32, any shape) -> `[..ids, dim]`. An id outside the table is
    /// an error naming it when the result is computed.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Tensor::embedding(&self.weight.get(), ids)
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        vec![("weight".into(), self.weight.clone())]
    }
}

/// Normalise the last axis to zero mean and unit variance, then scale and
/// shift per feature (`weight`, `bias`).
pub struct LayerNorm {
    /// Scale `[dim]`.
    pub weight: Parameter,
    /// Shift `[dim]`.
    pub bias: Parameter,
    /// Added to the variance before the square root.
    pub eps: f32,
}

impl LayerNorm {
    /// A layer norm over the last axis of width `dim`.
    pub fn new(dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: Parameter::new(Tensor::ones(&[dim]))?,
            bias: Parameter::new(Tensor::zeros(&[dim]))?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.weight.shape()[0];
        if x.shape().last() != Some(&dim) {
            return Err(Error::shape(
                "LayerNorm",
                &[x.shape(), &[dim]],
                format!("the input's last axis must have the layer's {dim} features"),
            ));
        }
        let centred = x.sub(&x.mean(&[-1], true)?)?;
        let var = centred.square().mean(&[-1], true)?;
        centred
            .mul(&var.add_scalar(self.eps).sqrt().recip())?
            .mul(&self.weight.get())?
            .add(&self.bias.get())
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        weight_and_bias(&self.weight, &Some(self.bias.clone()))
    }
}

/// The exact (erf) GELU, as BERT uses.
pub struct Gelu;

impl Module for Gelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.gelu())
    }
}

/// Position information added to token embeddings.
pub enum PositionEmbedding {
    /// A trained vector per position (BERT).
    Learned(Embedding),
    /// Fixed sines and cosines of geometric wavelengths (Vaswani et al.):
    /// `[max_len, dim]`, no parameters.
    Sinusoidal(Tensor),
}

impl PositionEmbedding {
    /// Learned positions: a `[max_len, dim]` table.
    pub fn learned(max_len: usize, dim: usize) -> Result<PositionEmbedding> {
        Ok(PositionEmbedding::Learned(Embedding::new(
            max_len, dim, 0.02,
        )?))
    }

    /// `pe[p, 2i] = sin(p / 10000^(2i/dim))`, `pe[p, 2i+1] = cos(...)`.
    pub fn sinusoidal(max_len: usize, dim: usize) -> Result<PositionEmbedding> {
        let mut table = vec![0.0f32; max_len * dim];
        for p in 0..max_len {
            for i in 0..dim {
                let rate = 10000f64.powf(-((i / 2 * 2) as f64) / dim as f64);
                let angle = p as f64 * rate;
                table[p * dim + i] = if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
            }
        }
        Ok(PositionEmbedding::Sinusoidal(Tensor::from_vec(
            table,
            &[max_len, dim],
        )?))
    }

    /// The longest sequence it covers.
    pub fn max_len(&self) -> usize {
        match self {
            PositionEmbedding::Learned(e) => e.vocab(),
            PositionEmbedding::Sinusoidal(t) => t.shape()[0],
        }
    }

    /// Vectors of positions `0..len`: `[len, dim]`.
    pub fn positions(&self, len: usize) -> Result<Tensor> {
        if len > self.max_len() {
            return Err(Error::param(
                "PositionEmbedding",
                format!(
                    "a sequence of {len} tokens is longer than the {} positions the model has; truncate it",
                    self.max_len()
                ),
            ));
        }
        match self {
            PositionEmbedding::Learned(e) => e.weight.get().slice(0, 0, len),
            PositionEmbedding::Sinusoidal(t) => t.slice(0, 0, len),
        }
    }

    /// The learned table, if any.
    pub fn parameters(&self) -> Vec<(String, Parameter)> {
        match self {
            PositionEmbedding::Learned(e) => e.parameters(),
            PositionEmbedding::Sinusoidal(_) => vec![],
        }
    }
}

/// Self-attention with `heads` heads of `dim / heads` features each on
/// the fused attention op: query, key, value and output projections.
pub struct MultiHeadAttention {
    /// Input to queries.
    pub query: Linear,
    /// Input to keys.
    pub key: Linear,
    /// Input to values.
    pub value: Linear,
    /// The heads' concatenation to the output.
    pub output: Linear,
    /// Number of heads (`dim` divides by it).
    pub heads: usize,
    /// Each position attends only to itself and earlier ones.
    pub causal: bool,
}

impl MultiHeadAttention {
    /// Self-attention of width `dim` in `heads` heads.
    pub fn new(dim: usize, heads: usize) -> Result<MultiHeadAttention> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::param(
                "MultiHeadAttention",
                format!("{heads} heads cannot split {dim} features evenly; pick a head count that divides the width"),
            ));
        }
        let linear = || Linear::new(dim, dim, Init::GlorotUniform);
        Ok(MultiHeadAttention {
            query: linear()?,
            key: linear()?,
            value: linear()?,
            output: linear()?,
            heads,
            causal: false,
        })
    }

    /// `x` `[batch, seq, dim]`; `key_mask` `[batch, seq]` (nonzero = a real
    /// token) keeps padding out of every query's view.
    pub fn attend(&self, x: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        crate::ops::ensure_rank("MultiHeadAttention", x, 3, "input [batch, seq, dim]")?;
        let (b, l, dim) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let dh = dim / self.heads;
        // [b, l, dim] -> [b, heads, l, dh], a view the kernels read in place.
        let split = |t: Tensor| t.reshape(&[b, l, self.heads, dh])?.permute(&[0, 2, 1, 3]);
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let opts = AttentionOpts {
            scale: None,
            causal: self.causal,
            key_mask: key_mask.cloned(),
        };
        let heads = Tensor::attention(&q, &k, &v, &opts)?;
        let merged = heads.permute(&[0, 2, 1, 3])?.reshape(&[b, l, dim])?;
        self.output.forward(&merged)
    }
}

impl Module for MultiHeadAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.attend(x, None)
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        let mut p = prefixed("query", self.query.parameters());
        p.extend(prefixed("key", self.key.parameters()));
        p.extend(prefixed("value", self.value.parameters()));
        p.extend(prefixed("output", self.output.parameters()));
        p
    }
}

/// One Transformer encoder layer: self-attention and a GELU feed-forward
/// block, each with a residual connection, dropout and layer norm; the
/// norms after each residual sum (BERT, `norm_first = false`) or at the
/// start of each block (pre-norm, steadier to train deep from scratch).
pub struct TransformerEncoderLayer {
    /// Self-attention.
    pub attention: MultiHeadAttention,
    /// The norm around the attention block.
    pub norm1: LayerNorm,
    /// Feed-forward: `dim` to the hidden width.
    pub ff1: Linear,
    /// Feed-forward: back to `dim`.
    pub ff2: Linear,
    /// The norm around the feed-forward block.
    pub norm2: LayerNorm,
    /// Dropout probability in training.
    pub dropout: f32,
    /// Pre-norm (normalise each block's input) instead of post-norm.
    pub norm_first: bool,
    training: bool,
}

impl TransformerEncoderLayer {
    /// A layer of width `dim`, `heads` heads and a feed-forward block of `ff_dim`.
    pub fn new(
        dim: usize,
        heads: usize,
        ff_dim: usize,
        dropout: f32,
        norm_first: bool,
    ) -> Result<TransformerEncoderLayer> {
        Ok(TransformerEncoderLayer {
            attention: MultiHeadAttention::new(dim, heads)?,
            norm1: LayerNorm::new(dim, 1e-12)?,
            ff1: Linear::new(dim, ff_dim, Init::GlorotUniform)?,
            ff2: Linear::new(ff_dim, dim, Init::GlorotUniform)?,
            norm2: LayerNorm::new(dim, 1e-12)?,
            dropout,
            norm_first,
            training: true,
        })
    }

    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        self.ff2.forward(&self.ff1.forward(x)?.gelu())
    }

    /// `x` `[batch, seq, dim]`, `key_mask` `[batch, seq]` (nonzero = a real token).
    pub fn forward_masked(&self, x: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
        let drop = |t: Tensor| t.dropout(self.dropout, self.training);
        if self.norm_first {
            let h = x.add(&drop(
                self.attention.attend(&self.norm1.forward(x)?, key_mask)?,
            )?)?;
            h.add(&drop(self.feed_forward(&self.norm2.forward(&h)?)?)?)
        } else {
            let h = self
                .norm1
                .forward(&x.add(&drop(self.attention.attend(x, key_mask)?)?)?)?;
            self.norm2.forward(&h.add(&drop(self.feed_forward(&h)?)?)?)
        }
    }
}

impl Module for TransformerEncoderLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, None)
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        let mut p = prefixed("attention", self.attention.parameters());
        p.extend(prefixed("norm1", self.norm1.parameters()));
        p.extend(prefixed("ff1", self.ff1.parameters()));
        p.extend(prefixed("ff2", self.ff2.parameters()));
        p.extend(prefixed("norm2", self.norm2.parameters()));
        p
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
