//! A BERT encoder (Devlin et al.) on the Transformer layers, loadable from a
//! Hugging Face model folder (`config.json` + `model.safetensors`), and the
//! sentence-transformers sentence embedding: the mean of the token vectors
//! over real tokens, L2-normalised.
//!
//! Parameters carry Hugging Face's names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, ...), so a pretrained file
//! loads by name and a fine-tuned checkpoint reads like the original.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Embedding, Init, LayerNorm, Linear, Module, TransformerEncoderLayer};
use crate::io::checkpoint;
use crate::optim::Parameter;
use crate::{Error, Result, Tensor};

/// The architecture, as `config.json` states it.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of every layer.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Hidden width of each feed-forward block.
    pub intermediate_size: usize,
    /// The longest input, in tokens.
    pub max_position_embeddings: usize,
    /// Number of segment (token type) ids.
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f32,
    /// Dropout probability in training.
    pub hidden_dropout_prob: f32,
}

fn config_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Io {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

impl BertConfig {
    /// Parse a Hugging Face `config.json` (`source` names it in errors).
    pub fn from_json(text: &str, source: &Path) -> Result<BertConfig> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| config_err(source, format!("is not valid JSON: {e}")))?;
        if let Some(kind) = v.get("model_type").and_then(|m| m.as_str()) {
            if kind != "bert" {
                return Err(config_err(
                    source,
                    format!("describes a {kind:?} model; only BERT encoders (model_type \"bert\") load here"),
                ));
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(|a| a.as_str()) {
            if act != "gelu" {
                return Err(config_err(
                    source,
                    format!("hidden_act {act:?} is not supported; BERT's exact \"gelu\" is"),
                ));
            }
        }
        let int = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| config_err(source, format!("lacks the integer {key:?}")))
        };
        let float = |key: &str, default: f64| -> f32 {
            v.get(key).and_then(|x| x.as_f64()).unwrap_or(default) as f32
        };
        let config = BertConfig {
            vocab_size: int("vocab_size")?,
            hidden_size: int("hidden_size")?,
            num_hidden_layers: int("num_hidden_layers")?,
            num_attention_heads: int("num_attention_heads")?,
            intermediate_size: int("intermediate_size")?,
            max_position_embeddings: int("max_position_embeddings")?,
            type_vocab_size: int("type_vocab_size").unwrap_or(2),
            layer_norm_eps: float("layer_norm_eps", 1e-12),
            hidden_dropout_prob: float("hidden_dropout_prob", 0.1),
        };
        // Refuse sizes no real model has before anything is allocated for
        // them (a corrupt config.json claiming 2^60 layers).
        const MAX_LAYERS: usize = 1024;
        if config.num_hidden_layers > MAX_LAYERS {
            return Err(config_err(
                source,
                format!(
                    "num_hidden_layers {} is beyond {MAX_LAYERS}; the file is corrupt or not a BERT config",
                    config.num_hidden_layers
                ),
            ));
        }
        let dims = [
            ("vocab_size", config.vocab_size),
            ("hidden_size", config.hidden_size),
            ("intermediate_size", config.intermediate_size),
            ("max_position_embeddings", config.max_position_embeddings),
            ("type_vocab_size", config.type_vocab_size),
        ];
        if let Some((key, _)) = dims.iter().find(|(_, v)| *v == 0) {
            return Err(config_err(source, format!("{key} is 0")));
        }
        let largest = [
            config.vocab_size,
            config.intermediate_size,
            config.max_position_embeddings,
        ]
        .iter()
        .try_fold(0usize, |m, &d| {
            d.checked_mul(config.hidden_size).map(|n| m.max(n))
        });
        if largest.is_none_or(|n| n > crate::MAX_ELEMENTS) {
            return Err(config_err(
                source,
                format!(
                    "sizes {dims:?} make a weight of more than {} elements; the file is corrupt",
                    crate::MAX_ELEMENTS
                ),
            ));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(config_err(
                source,
                format!(
                    "hidden_size {} does not split into {} attention heads",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        Ok(config)
    }

    /// Whether the word embedding and the layer count in `shapes` (a
    /// weights file's header) are the ones this config claims.
    pub fn check_against(&self, shapes: &HashMap<String, Vec<usize>>, source: &Path) -> Result<()> {
        let prefix = if shapes.keys().any(|n| n.starts_with("bert.")) {
            "bert."
        } else {
            ""
        };
        let name = format!("{prefix}embeddings.word_embeddings.weight");
        let want = [self.vocab_size, self.hidden_size];
        match shapes.get(&name) {
            Some(shape) if shape[..] == want[..] => {}
            Some(shape) => {
                return Err(config_err(
                    source,
                    format!(
                        "holds {name} of shape {shape:?}, but config.json says vocab_size {} and \
                         hidden_size {}; the two files are from different models or one is corrupt",
                        self.vocab_size, self.hidden_size
                    ),
                ))
            }
            None => return Err(config_err(source, format!("lacks {name}"))),
        }
        let layers = shapes
            .keys()
            .filter_map(|n| {
                n.strip_prefix(&format!("{prefix}encoder.layer."))?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1);
        if layers < self.num_hidden_layers {
            return Err(config_err(
                source,
                format!(
                    "holds {layers} encoder layers, but config.json says num_hidden_layers {}",
                    self.num_hidden_layers
                ),
            ));
        }
        Ok(())
    }

    /// Read a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            config_err(
                path,
                format!("cannot be read ({e}); a Hugging Face model folder has config.json, model.safetensors and tokenizer.json"),
            )
        })?;
        BertConfig::from_json(&text, path)
    }

    /// The same fields as `config.json` writes them (for checkpoint metadata).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "model_type": "bert",
            "hidden_act": "gelu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.hidden_dropout_prob,
        })
        .to_string()
    }
}

/// Our layer's parameter names -> Hugging Face's, by prefix.
const LAYER_NAMES: [(&str, &str); 8] = [
    ("attention.query.", "attention.self.query."),
    ("attention.key.", "attention.self.key."),
    ("attention.value.", "attention.self.value."),
    ("attention.output.", "attention.output.dense."),
    ("norm1.", "attention.output.LayerNorm."),
    ("ff1.", "intermediate.dense."),
    ("ff2.", "output.dense."),
    ("norm2.", "output.LayerNorm."),
];

fn hf_layer_name(ours: &str) -> String {
    LAYER_NAMES
        .iter()
        .find_map(|(from, to)| ours.strip_prefix(from).map(|rest| format!("{to}{rest}")))
        .unwrap_or_else(|| ours.to_string())
}

/// The BERT encoder with its pooler.
pub struct Bert {
    /// The configuration it was built from.
    pub config: BertConfig,
    /// Token embeddings.
    pub word_embeddings: Embedding,
    /// Position embeddings.
    pub position_embeddings: Embedding,
    /// Segment (token type) embeddings.
    pub token_type_embeddings: Embedding,
    /// The layer norm after the summed embeddings.
    pub embeddings_norm: LayerNorm,
    /// Post-norm Transformer layers.
    pub layers: Vec<TransformerEncoderLayer>,
    /// `tanh(dense(h[CLS]))`, BERT's sentence vector for classification.
    pub pooler: Linear,
    training: bool,
}

impl Bert {
    /// A randomly initialised BERT (N(0, 0.02) embeddings, as BERT's).
    pub fn new(config: BertConfig) -> Result<Bert> {
        let d = config.hidden_size;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            let mut layer = TransformerEncoderLayer::new(
                d,
                config.num_attention_heads,
                config.intermediate_size,
                config.hidden_dropout_prob,
                false,
            )?;
            layer.norm1.eps = config.layer_norm_eps;
            layer.norm2.eps = config.layer_norm_eps;
            layers.push(layer);
        }
        Ok(Bert {
            word_embeddings: Embedding::new(config.vocab_size, d, 0.02)?,
            position_embeddings: Embedding::new(config.max_position_embeddings, d, 0.02)?,
            token_type_embeddings: Embedding::new(config.type_vocab_size.max(1), d, 0.02)?,
            embeddings_norm: LayerNorm::new(d, config.layer_norm_eps)?,
            layers,
            pooler: Linear::new(d, d, Init::GlorotUniform)?,
            config,
            training: true,
        })
    }

    /// Load a Hugging Face BERT folder: `config.json` and
    /// `model.safetensors`. Every tensor the model needs must be there with
    /// its shape; the error lists each one missing or misshaped.
    pub fn from_pretrained(dir: &Path) -> Result<Bert> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        // config.json's sizes are claims and the model is allocated from
        // them; check them against the weights that exist first, so a
        // corrupt config (a 3-billion-row vocabulary, found by fuzzing)
        // is an error, not an allocation of its claim.
        if weights.is_file() {
            config.check_against(&checkpoint::tensor_shapes(&weights)?, &weights)?;
        }
        let bert = Bert::new(config)?;
        bert.load_weights(&weights)?;
        Ok(bert)
    }

    /// Set every parameter from a safetensors file with Hugging Face names
    /// (with or without the `bert.` prefix of a `BertFor...` model).
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(config_err(
                path,
                "does not exist; a Hugging Face model folder has config.json and model.safetensors",
            ));
        }
        let ck = checkpoint::load(path)?;
        let prefix = if ck.tensors.keys().any(|n| n.starts_with("bert.")) {
            "bert."
        } else {
            ""
        };
        // Heads of a `BertFor...` model are not the encoder's: leave them out.
        let mut encoder_only = checkpoint::Checkpoint {
            metadata: ck.metadata,
            ..Default::default()
        };
        encoder_only.tensors = ck
            .tensors
            .into_iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .collect();
        encoder_only.restore_under(self, prefix, path)
    }

    /// Token vectors `[batch, seq, hidden]` of `ids` `[batch, seq]` (i32),
    /// `mask` `[batch, seq]` (1 = real token, 0 = padding) when padded.
    pub fn encode(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        crate::ops::ensure_rank("Bert", ids, 2, "token ids [batch, seq]")?;
        let len = ids.shape()[1];
        if len > self.config.max_position_embeddings {
            return Err(Error::param(
                "Bert",
                format!(
                    "a sequence of {len} tokens is longer than the model's {} positions; truncate it",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let positions = self.position_embeddings.weight.get().slice(0, 0, len)?;
        // Single-segment input: every token has type 0.
        let token_type = self.token_type_embeddings.weight.get().slice(0, 0, 1)?;
        let embedded = self
            .word_embeddings
            .forward(ids)?
            .add(&positions)?
            .add(&token_type)?;
        let mut h = self
            .embeddings_norm
            .forward(&embedded)?
            .dropout(self.config.hidden_dropout_prob, self.training)?;
        for layer in &self.layers {
            h = layer.forward_masked(&h, mask)?;
        }
        Ok(h)
    }

    /// BERT's pooled output: `tanh(W h[:, 0] + b)` `[batch, hidden]`.
    pub fn pool(&self, hidden: &Tensor) -> Result<Tensor> {
        let d = self.config.hidden_size;
        let first = hidden.slice(1, 0, 1)?.reshape(&[hidden.shape()[0], d])?;
        Ok(self.pooler.forward(&first)?.tanh())
    }

    /// The sentence-transformers embedding: the mean of the token vectors
    /// over real tokens, L2-normalised, `[batch, hidden]`.
    pub fn sentence_embedding(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        l2_normalize(&mean_pool(&self.encode(ids, Some(mask))?, mask)?)
    }
}

/// The mean of `hidden` `[batch, seq, dim]` over the positions where
/// `mask` `[batch, seq]` is 1: `[batch, dim]` (a row with no real token is
/// zero, as sentence-transformers' clamp makes it).
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, l) = (mask.shape()[0], mask.shape().get(1).copied().unwrap_or(0));
    let m = mask.reshape(&[b, l, 1])?;
    let summed = hidden.mul(&m)?.sum(&[1], false)?;
    let count = mask.sum(&[1], true)?.maximum_scalar(1e-9);
    summed.div(&count)
}

/// Each row divided by its Euclidean norm (at least 1e-12, as PyTorch's
/// `F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.square().sum(&[-1], true)?.sqrt().maximum_scalar(1e-12);
    x.div(&norm)
}

impl Module for Bert {
    /// Token vectors of unpadded `ids` `[batch, seq]`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.encode(ids, None)
    }

    fn parameters(&self) -> Vec<(String, Parameter)> {
        let mut p: Vec<(String, Parameter)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                self.word_embeddings.weight.clone(),
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                self.position_embeddings.weight.clone(),
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                self.token_type_embeddings.weight.clone(),
            ),
        ];
        for (n, t) in self.embeddings_norm.parameters() {
            p.push((format!("embeddings.LayerNorm.{n}"), t));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            for (n, t) in layer.parameters() {
                p.push((format!("encoder.layer.{i}.{}", hf_layer_name(&n)), t));
            }
        }
        for (n, t) in self.pooler.parameters() {
            p.push((format!("pooler.dense.{n}"), t));
        }
        p
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
        for layer in &mut self.layers {
            layer.set_training(training);
        }
    }
}

/// Where a pretrained model folder is: the flag, else `$SHADERGRAD_MODEL`,
/// else `../shared/models/all-MiniLM-L6-v2` (the default MiniLM).
pub fn locate_model(flag: Option<&Path>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match flag {
        Some(p) => vec![p.to_path_buf()],
        None => std::env::var_os("SHADERGRAD_MODEL")
            .map(PathBuf::from)
            .into_iter()
            .chain([
                PathBuf::from("models/all-MiniLM-L6-v2"),
                PathBuf::from("../shared/models/all-MiniLM-L6-v2"),
            ])
            .collect(),
    };
    candidates
        .iter()
        .find(|p| p.join("config.json").is_file())
        .cloned()
        .ok_or_else(|| Error::Io {
            path: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            msg: "no model folder with a config.json there; pass --model DIR (or --pretrained DIR) or set $SHADERGRAD_MODEL".into(),
        })
}
