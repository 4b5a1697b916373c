//! Sentence classifiers: a small Transformer trained from scratch on a word
//! vocabulary, and a pretrained BERT (MiniLM) with a classification head,
//! with what it takes to rebuild either from a checkpoint's metadata: the
//! architecture, the tokenizer and the class names.

use std::collections::HashMap;
use std::path::Path;

use crate::data::text::{pad_batch, TextBatch, WordVocab};
use crate::data::wordpiece::WordPiece;
use crate::nn::bert::{mean_pool, Bert, BertConfig};
use crate::nn::transformer::prefixed;
use crate::nn::{Embedding, Init, LayerNorm, Linear, Module, PositionEmbedding};
use crate::nn::{TransformerEncoderLayer, TransformerEncoderLayer as Layer};
use crate::optim::Parameter;
use crate::{Error, Result, Tensor};

/// A model that classifies padded token sequences.
pub trait TextModel: Module {
    /// Logits `[batch, classes]` of `ids` `[batch, seq]` (i32) with `mask`
    /// `[batch, seq]` (1 = real token, 0 = padding).
    fn logits(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor>;
}

/// The size of the from-scratch Transformer.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerSize {
    /// Model (embedding) width.
    pub dim: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Hidden width of each feed-forward block.
    pub ff_dim: usize,
    /// Dropout probability in training.
    pub dropout: f32,
}

impl Default for TransformerSize {
    /// 2 pre-norm layers of width 128, 4 heads.
    fn default() -> TransformerSize {
        TransformerSize {
            dim: 128,
            layers: 2,
            heads: 4,
            ff_dim: 512,
            dropout: 0.1,
        }
    }
}

/// Word embeddings plus learned positions, pre-norm Transformer layers, a
/// final layer norm, the mean over real tokens and a linear head.
pub struct TransformerClassifier {
    /// Token embeddings.
    pub embedding: Embedding,
    /// Learned position embeddings.
    pub position: PositionEmbedding,
    /// The pre-norm encoder layers.
    pub layers: Vec<TransformerEncoderLayer>,
    /// The final layer norm.
    pub norm: LayerNorm,
    /// Mean-pooled features to class logits.
    pub head: Linear,
    /// Dropout probability in training.
    pub dropout: f32,
    training: bool,
}

impl TransformerClassifier {
    /// A classifier of `size` over a vocabulary of `vocab` ids, for sentences of up to `max_len` tokens and `classes` classes.
    pub fn new(
        vocab: usize,
        max_len: usize,
        classes: usize,
        size: &TransformerSize,
    ) -> Result<TransformerClassifier> {
        let layers = (0..size.layers)
            .map(|_| Layer::new(size.dim, size.heads, size.ff_dim, size.dropout, true))
            .collect::<Result<Vec<_>>>()?;
        Ok(TransformerClassifier {
            embedding: Embedding::new(vocab, size.dim, 0.02)?,
            position: PositionEmbedding::learned(max_len, size.dim)?,
            layers,
            norm: LayerNorm::new(size.dim, 1e-5)?,
            head: Linear::new(size.dim, classes, Init::GlorotUniform)?,
            dropout: size.dropout,
            training: true,
        })
    }
}

impl TextModel for TransformerClassifier {
    fn logits(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let len = ids.shape().get(1).copied().unwrap_or(0);
        let x = self
            .embedding
            .forward(ids)?
            .add(&self.position.positions(len)?)?
            .dropout(self.dropout, self.training)?;
        let mut h = x;
        for layer in &self.layers {
            h = layer.forward_masked(&h, Some(mask))?;
        }
        let pooled = mean_pool(&self.norm.forward(&h)?, mask)?;
        self.head
            .forward(&pooled.dropout(self.dropout, self.training)?)
    }
}

impl Module for TransformerClassifier {
    /// Logits of unpadded `ids`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.logits(ids, &Tensor::ones(ids.shape()))
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        let mut p = prefixed("embedding", self.embedding.parameters());
        p.extend(prefixed("position", self.position.parameters()));
        for (i, layer) in self.layers.iter().enumerate() {
            p.extend(prefixed(&format!("layer.{i}"), layer.parameters()));
        }
        p.extend(prefixed("norm", self.norm.parameters()));
        p.extend(prefixed("head", self.head.parameters()));
        p
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
        self.layers
            .iter_mut()
            .for_each(|l| l.set_training(training));
    }
}

/// A BERT encoder, the mean of its token vectors over real tokens (the
/// sentence embedding sentence-transformers models are trained for), dropout
/// and a linear head. Names: `bert.*` (Hugging Face's) and `classifier.*`.
pub struct BertClassifier {
    /// The pretrained encoder.
    pub bert: Bert,
    /// Pooled features to class logits.
    pub classifier: Linear,
    training: bool,
}

impl BertClassifier {
    /// A classifier of `classes` classes on top of `bert`.
    pub fn new(bert: Bert, classes: usize) -> Result<BertClassifier> {
        let d = bert.config.hidden_size;
        Ok(BertClassifier {
            bert,
            classifier: Linear::new(d, classes, Init::GlorotUniform)?,
            training: true,
        })
    }
}

impl TextModel for BertClassifier {
    fn logits(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let pooled = mean_pool(&self.bert.encode(ids, Some(mask))?, mask)?;
        let p = self.bert.config.hidden_dropout_prob;
        self.classifier.forward(&pooled.dropout(p, self.training)?)
    }
}

impl Module for BertClassifier {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.logits(ids, &Tensor::ones(ids.shape()))
    }
    fn parameters(&self) -> Vec<(String, Parameter)> {
        let mut p = prefixed("bert", self.bert.parameters());
        p.extend(prefixed("classifier", self.classifier.parameters()));
        p
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
        self.bert.set_training(training);
    }
}

/// Text to ids: a word vocabulary or a pretrained model's tokenizer.
pub enum TextTokenizer {
    /// A word-level vocabulary built from the training data.
    Words(WordVocab),
    /// A pretrained model's `tokenizer.json`.
    WordPiece(Box<WordPiece>),
}

/// Everything a sentence classifier is besides its weights: architecture,
/// tokenizer, longest input and class names. It travels in a checkpoint's
/// metadata, so `classify` needs nothing but the checkpoint.
pub struct TextPipeline {
    /// "transformer" or "bert".
    pub kind: String,
    /// The from-scratch Transformer's size (for `kind == "transformer"`).
    pub size: TransformerSize,
    /// The pretrained model's configuration (for `kind == "bert"`).
    pub bert: Option<BertConfig>,
    /// Text to ids.
    pub tokenizer: TextTokenizer,
    /// The longest input in tokens, special tokens included.
    pub max_len: usize,
    /// Class names; logit `i` is `classes[i]`.
    pub classes: Vec<String>,
}

/// SST-2's labels.
pub const SENTIMENT: [&str; 2] = ["negative", "positive"];

impl TextPipeline {
    /// A from-scratch Transformer over `vocab`.
    pub fn transformer(vocab: WordVocab, size: TransformerSize, max_len: usize) -> TextPipeline {
        TextPipeline {
            kind: "transformer".into(),
            size,
            bert: None,
            tokenizer: TextTokenizer::Words(vocab),
            max_len,
            classes: SENTIMENT.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A pretrained BERT folder's config and tokenizer (the weights are
    /// loaded by [`TextPipeline::build`] with `pretrained`).
    pub fn bert(dir: &Path, max_len: usize) -> Result<TextPipeline> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let tokenizer = WordPiece::from_file(dir)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Io {
                path: dir.display().to_string(),
                msg: format!(
                    "its tokenizer has {} tokens but the model only {} embeddings",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        Ok(TextPipeline {
            kind: "bert".into(),
            size: TransformerSize::default(),
            max_len: max_len.min(config.max_position_embeddings),
            bert: Some(config),
            tokenizer: TextTokenizer::WordPiece(Box::new(tokenizer)),
            classes: SENTIMENT.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The classifier, freshly initialised; a BERT's encoder from
    /// `pretrained` (a model folder) when given.
    pub fn build(&self, pretrained: Option<&Path>) -> Result<Box<dyn TextModel>> {
        let classes = self.classes.len();
        match (&self.tokenizer, &self.bert) {
            (TextTokenizer::Words(vocab), _) => Ok(Box::new(TransformerClassifier::new(
                vocab.len(),
                self.max_len,
                classes,
                &self.size,
            )?)),
            (TextTokenizer::WordPiece(_), Some(config)) => {
                let weights = pretrained.map(|dir| dir.join("model.safetensors"));
                if let Some(w) = weights.as_deref().filter(|w| w.is_file()) {
                    config.check_against(&crate::io::checkpoint::tensor_shapes(w)?, w)?;
                }
                let bert = Bert::new(config.clone())?;
                if let Some(w) = &weights {
                    bert.load_weights(w)?;
                }
                Ok(Box::new(BertClassifier::new(bert, classes)?))
            }
            (TextTokenizer::WordPiece(_), None) => Err(Error::param(
                "TextPipeline",
                "a WordPiece pipeline needs a BERT config",
            )),
        }
    }

    /// Ids of one sentence. An empty sentence is an error; one longer than
    /// `max_len` tokens is cut when `truncate`, else an error.
    pub fn encode(
        &self,
        sentence: &str,
        truncate: bool,
    ) -> Result<crate::data::wordpiece::Encoded> {
        if sentence.trim().is_empty() {
            return Err(Error::param(
                "tokenizer",
                "an empty sentence has no words to classify or embed; pass some text",
            ));
        }
        match &self.tokenizer {
            TextTokenizer::WordPiece(wp) => wp.encode(sentence, self.max_len, truncate),
            TextTokenizer::Words(vocab) => {
                let n = crate::data::text::words(sentence).count();
                if n > self.max_len && !truncate {
                    return Err(Error::param(
                        "tokenizer",
                        format!(
                            "a sentence of {n} words is longer than the {} allowed; shorten it, raise --max-len, or allow truncation",
                            self.max_len
                        ),
                    ));
                }
                Ok(crate::data::wordpiece::Encoded {
                    ids: vocab.encode(sentence, self.max_len),
                    truncated_from: (n > self.max_len).then_some(n),
                })
            }
        }
    }

    /// Encode many sentences: for a data set (`truncate`, counting the cut
    /// ones) or user input.
    pub fn encode_all(
        &self,
        sentences: &[String],
        truncate: bool,
    ) -> Result<(Vec<Vec<i32>>, usize)> {
        let mut cut = 0;
        let mut out = Vec::with_capacity(sentences.len());
        for (i, s) in sentences.iter().enumerate() {
            let e = self.encode(s, truncate).map_err(|e| match e {
                Error::Param { op, msg } => Error::Param {
                    op,
                    msg: format!("sentence {} ({s:?}): {msg}", i + 1),
                },
                other => other,
            })?;
            cut += e.truncated_from.is_some() as usize;
            out.push(e.ids);
        }
        Ok((out, cut))
    }

    /// Metadata entries that describe this pipeline.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let mut m = vec![
            ("text_model".to_string(), self.kind.clone()),
            ("max_len".to_string(), self.max_len.to_string()),
            ("classes".to_string(), self.classes.join("\n")),
        ];
        match &self.tokenizer {
            TextTokenizer::Words(vocab) => {
                let s = &self.size;
                m.push((
                    "transformer_size".into(),
                    format!(
                        "{},{},{},{},{}",
                        s.dim, s.layers, s.heads, s.ff_dim, s.dropout
                    ),
                ));
                m.push(("vocab".into(), vocab.words.join("\n")));
            }
            TextTokenizer::WordPiece(wp) => {
                m.push(("tokenizer_json".into(), wp.json.clone()));
                if let Some(c) = &self.bert {
                    m.push(("bert_config".into(), c.to_json()));
                }
            }
        }
        m
    }

    /// The pipeline a checkpoint was trained with (`source` names it in errors).
    pub fn from_metadata(meta: &HashMap<String, String>, source: &Path) -> Result<TextPipeline> {
        let err = |msg: String| Error::Io {
            path: source.display().to_string(),
            msg,
        };
        let get = |key: &str| {
            meta.get(key).ok_or_else(|| {
                err(format!(
                    "lacks the metadata {key:?}; it is not a checkpoint of `shadergrad train sst2`"
                ))
            })
        };
        let kind = get("text_model")?.clone();
        let max_len: usize = get("max_len")?
            .parse()
            .map_err(|_| err("its max_len is not a number".into()))?;
        let classes: Vec<String> = get("classes")?.lines().map(str::to_string).collect();
        let mut pipeline = match kind.as_str() {
            "transformer" => {
                let v: Vec<&str> = get("transformer_size")?.split(',').collect();
                let num = |i: usize| v.get(i).and_then(|x| x.parse::<usize>().ok());
                let size = match (
                    num(0),
                    num(1),
                    num(2),
                    num(3),
                    v.get(4).and_then(|x| x.parse().ok()),
                ) {
                    (Some(dim), Some(layers), Some(heads), Some(ff_dim), Some(dropout)) => {
                        TransformerSize {
                            dim,
                            layers,
                            heads,
                            ff_dim,
                            dropout,
                        }
                    }
                    _ => {
                        return Err(err(format!(
                            "its transformer_size {v:?} is not dim,layers,heads,ff,dropout"
                        )))
                    }
                };
                let words = get("vocab")?.split('\n').map(str::to_string).collect();
                TextPipeline::transformer(WordVocab::from_words(words), size, max_len)
            }
            "bert" => {
                let config = BertConfig::from_json(get("bert_config")?, source)?;
                // The metadata's sizes are claims (the checksum covers the
                // tensors only): check them against the tensors themselves.
                if source.is_file() {
                    config.check_against(&crate::io::checkpoint::tensor_shapes(source)?, source)?;
                }
                let tokenizer = WordPiece::from_json(get("tokenizer_json")?.clone(), source)?;
                TextPipeline {
                    kind,
                    size: TransformerSize::default(),
                    bert: Some(config),
                    tokenizer: TextTokenizer::WordPiece(Box::new(tokenizer)),
                    max_len,
                    classes: vec![],
                }
            }
            other => {
                return Err(err(format!(
                    "has text_model {other:?}; expected transformer or bert"
                )))
            }
        };
        if classes.len() < 2 {
            return Err(err(format!(
                "names {} classes; a classifier needs at least 2",
                classes.len()
            )));
        }
        pipeline.classes = classes;
        Ok(pipeline)
    }
}

/// Class probabilities `[n, classes]` of `encoded` sentences, in batches of
/// `batch`, without gradients, in evaluation mode.
pub fn predict(
    model: &mut dyn TextModel,
    encoded: &[Vec<i32>],
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    model.set_training(false);
    let result = crate::no_grad(|| -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(encoded.len());
        for chunk in encoded.chunks(batch.max(1)) {
            let refs: Vec<&[i32]> = chunk.iter().map(Vec::as_slice).collect();
            let b: TextBatch = pad_batch(&refs, &vec![0; chunk.len()])?;
            let probs = model.logits(&b.ids, &b.mask)?.softmax(-1)?;
            let classes = probs.shape()[1];
            let values = probs.to_vec()?;
            out.extend(values.chunks(classes).map(<[f32]>::to_vec));
        }
        Ok(out)
    });
    model.set_training(true);
    result
}
