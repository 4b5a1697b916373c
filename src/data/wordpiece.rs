//! Subword tokenisation of pretrained models through the `tokenizers`
//! crate, from a Hugging Face `tokenizer.json` (WordPiece for BERT, but any
//! model that file describes), so ids match Hugging Face's exactly.

use std::path::Path;
use std::str::FromStr;

use tokenizers::{Tokenizer, TruncationParams};

use crate::{Error, Result};

/// A `tokenizer.json` tokenizer, special tokens added (`[CLS] ... [SEP]`),
/// no padding (batches pad themselves).
pub struct WordPiece {
    tokenizer: Tokenizer,
    /// The file's text, kept so a checkpoint can carry its tokenizer.
    pub json: String,
}

/// One sentence's ids, and how many tokens it had before truncation.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// Token ids, `[CLS]` first and `[SEP]` last.
    pub ids: Vec<i32>,
    /// Some(n) when the sentence had `n` > max tokens and was cut.
    pub truncated_from: Option<usize>,
}

impl WordPiece {
    /// Read `tokenizer.json` (a file, or the model folder holding it).
    pub fn from_file(path: &Path) -> Result<WordPiece> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let json = std::fs::read_to_string(&file).map_err(|e| Error::Io {
            path: file.display().to_string(),
            msg: format!("cannot be read ({e}); a pretrained text model's folder needs the Hugging Face tokenizer.json"),
        })?;
        WordPiece::from_json(json, &file)
    }

    /// Parse a `tokenizer.json` text (`source` names it in errors).
    pub fn from_json(json: String, source: &Path) -> Result<WordPiece> {
        let refuse = |why: String| {
            Error::Io {
            path: source.display().to_string(),
            msg: format!(
                "is not a tokenizer format shadergrad reads ({why}); expected a Hugging Face fast-tokenizer tokenizer.json"
            ),
        }
        };
        // tokenizers 0.22 panics (`expect("Helper")`) on some malformed
        // "decoder" sections instead of returning an error (found by
        // fuzzing): check the JSON's syntax first, and turn what panics
        // remain into this error.
        serde_json::from_str::<serde_json::Value>(&json)
            .map_err(|e| refuse(format!("not valid JSON: {e}")))?;
        let mut tokenizer = std::panic::catch_unwind(|| Tokenizer::from_str(&json))
            .map_err(|_| refuse("the tokenizers crate could not read it".into()))?
            .map_err(|e| refuse(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::param("tokenizer", e.to_string()))?;
        // A template that names a special token the file does not define
        // panics inside tokenizers at the first encode (found by fuzzing):
        // encode once here, so such a file is refused when it is read.
        let trial = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokenizer.encode("a test sentence", true)
        }));
        match trial {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(refuse(format!("it cannot encode a test sentence: {e}"))),
            Err(_) => {
                return Err(refuse(
                    "it cannot encode a test sentence: its post_processor or model is inconsistent"
                        .into(),
                ))
            }
        }
        Ok(WordPiece { tokenizer, json })
    }

    /// Ids of `sentence` with its special tokens. Longer than `max_len`
    /// tokens: cut to `max_len` (special tokens kept) when `truncate`, else
    /// an error.
    pub fn encode(&self, sentence: &str, max_len: usize, truncate: bool) -> Result<Encoded> {
        let encode = |t: &Tokenizer| {
            t.encode(sentence, true)
                .map_err(|e| Error::param("tokenizer", format!("cannot encode {sentence:?}: {e}")))
        };
        let full = encode(&self.tokenizer)?;
        let n = full.get_ids().len();
        if n <= max_len {
            return Ok(Encoded {
                ids: full.get_ids().iter().map(|&i| i as i32).collect(),
                truncated_from: None,
            });
        }
        if !truncate {
            return Err(Error::param(
                "tokenizer",
                format!(
                    "a sentence of {n} tokens is longer than the {max_len} allowed; shorten it, raise --max-len, or allow truncation"
                ),
            ));
        }
        let mut cutting = self.tokenizer.clone();
        cutting
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::param("tokenizer", e.to_string()))?;
        Ok(Encoded {
            ids: encode(&cutting)?
                .get_ids()
                .iter()
                .map(|&i| i as i32)
                .collect(),
            truncated_from: Some(n),
        })
    }

    /// The id of a token (`[PAD]`, `[CLS]`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<i32> {
        self.tokenizer.token_to_id(token).map(|i| i as i32)
    }

    /// Number of token ids the tokenizer can produce.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}
