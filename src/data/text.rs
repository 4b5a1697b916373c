//! Sentence classification data: SST-2 as tab-separated files, a word-level
//! vocabulary for models trained from scratch, and batches padded to their
//! longest sentence, with sentences of similar length bucketed together.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result, Tensor};

/// Labelled sentences.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextDataset {
    /// The sentences, as given.
    pub sentences: Vec<String>,
    /// One class label per sentence.
    pub labels: Vec<i32>,
}

impl TextDataset {
    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no sentences.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A fixed random subset of `n` examples by `seed` (all when `n` is
    /// at least the size), in their original order.
    pub fn sample(&self, n: usize, seed: u64) -> TextDataset {
        if n >= self.len() {
            return self.clone();
        }
        let mut pick = super::batches::epoch_order(self.len(), true, seed ^ 0x5a4d_91e2, 0);
        pick.truncate(n);
        pick.sort_unstable();
        TextDataset {
            sentences: pick.iter().map(|&i| self.sentences[i].clone()).collect(),
            labels: pick.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Read a TSV with a header naming a `label` column (0 or 1) and a
    /// `sentence` (or `content`) column, in either order.
    pub fn read_tsv(path: &Path) -> Result<TextDataset> {
        let io = |msg: String| Error::Io {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| io(format!("cannot read: {e}")))?;
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.next() else {
            return Err(io(
                "empty file; expected a header line `label<TAB>sentence`".into(),
            ));
        };
        let columns: Vec<&str> = header.split('\t').map(str::trim).collect();
        let find = |names: &[&str]| columns.iter().position(|c| names.contains(c));
        let (Some(label_col), Some(text_col)) = (find(&["label"]), find(&["sentence", "content"]))
        else {
            return Err(io(format!(
                "the header {columns:?} lacks a `label` and a `sentence` (or `content`) column"
            )));
        };
        let mut data = TextDataset::default();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let (Some(label), Some(sentence)) = (fields.get(label_col), fields.get(text_col))
            else {
                return Err(io(format!(
                    "line {}: {} fields where the header has {}",
                    i + 1,
                    fields.len(),
                    columns.len()
                )));
            };
            let label = match label.trim() {
                "0" => 0,
                "1" => 1,
                other => return Err(io(format!("line {}: label {other:?} is not 0 or 1", i + 1))),
            };
            data.labels.push(label);
            data.sentences.push(sentence.trim().to_string());
        }
        if data.is_empty() {
            return Err(io("no examples after the header".into()));
        }
        Ok(data)
    }
}

/// SST-2's splits. The test split's labels are kept but the convention
/// (and the acceptance figures) use dev.
#[derive(Clone, Debug)]
pub struct Sst2 {
    /// The training split (`train.tsv`).
    pub train: TextDataset,
    /// The development split (`dev.tsv`), used for evaluation.
    pub dev: TextDataset,
}

impl Sst2 {
    /// `dir` holding `train.tsv` and `dev.tsv`.
    pub fn open(dir: &Path) -> Result<Sst2> {
        if !dir.join("train.tsv").is_file() {
            return Err(Error::Io {
                path: dir.display().to_string(),
                msg: "no train.tsv here; pass the SST-2 folder (train.tsv, dev.tsv) with --data or $SHADERGRAD_SST2".into(),
            });
        }
        Ok(Sst2 {
            train: TextDataset::read_tsv(&dir.join("train.tsv"))?,
            dev: TextDataset::read_tsv(&dir.join("dev.tsv"))?,
        })
    }

    /// Where SST-2 is: `flag`, else `$SHADERGRAD_SST2`, else `data/sst2`,
    /// else `../shared/data/sst2`.
    pub fn locate(flag: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = flag {
            return Ok(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("SHADERGRAD_SST2") {
            return Ok(PathBuf::from(p));
        }
        ["data/sst2", "../shared/data/sst2"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("train.tsv").is_file())
            .ok_or_else(|| Error::Io {
                path: "data/sst2".into(),
                msg: "SST-2 not found in data/sst2 or ../shared/data/sst2; pass its folder with --data or $SHADERGRAD_SST2".into(),
            })
    }
}

/// Lower-cased whitespace-separated words (SST-2 comes tokenised).
pub fn words(sentence: &str) -> impl Iterator<Item = String> + '_ {
    sentence.split_whitespace().map(str::to_lowercase)
}

/// A word-level vocabulary: id 0 pads, id 1 stands for unknown words.
#[derive(Clone, Debug, PartialEq)]
pub struct WordVocab {
    /// The words by id (`words[0]` is the padding token, `words[1]` the unknown word).
    pub words: Vec<String>,
    index: HashMap<String, i32>,
}

impl WordVocab {
    /// The id that pads short sentences.
    pub const PAD: i32 = 0;
    /// The id of every word not in the vocabulary.
    pub const UNKNOWN: i32 = 1;

    /// Words seen at least `min_count` times, most frequent first (ties
    /// alphabetical, so the ids are reproducible), at most `max_size` ids
    /// including the two reserved ones.
    pub fn build<'a>(
        sentences: impl IntoIterator<Item = &'a String>,
        min_count: usize,
        max_size: usize,
    ) -> WordVocab {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for s in sentences {
            for w in words(s) {
                *counts.entry(w).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(_, c)| *c >= min_count.max(1))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut all = vec!["[PAD]".to_string(), "[UNK]".to_string()];
        all.extend(
            ranked
                .into_iter()
                .map(|(w, _)| w)
                .take(max_size.saturating_sub(2)),
        );
        WordVocab::from_words(all)
    }

    /// A vocabulary from its word list (id = position), as saved.
    pub fn from_words(words: Vec<String>) -> WordVocab {
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as i32))
            .collect();
        WordVocab { words, index }
    }

    /// Number of ids, padding and unknown included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the vocabulary has no words at all.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Ids of a sentence's first `max_len` words (unknown words as
    /// `UNKNOWN`); an empty sentence gives one `UNKNOWN`, so every example
    /// has a token to attend to.
    pub fn encode(&self, sentence: &str, max_len: usize) -> Vec<i32> {
        let mut ids: Vec<i32> = words(sentence)
            .take(max_len.max(1))
            .map(|w| *self.index.get(&w).unwrap_or(&Self::UNKNOWN))
            .collect();
        if ids.is_empty() {
            ids.push(Self::UNKNOWN);
        }
        ids
    }
}

/// One batch of token ids `[batch, len]` (i32, padded with 0), its key
/// mask `[batch, len]` (1 for real tokens) and labels `[batch]` (i32).
pub struct TextBatch {
    /// Token ids `[batch, len]`, i32.
    pub ids: Tensor,
    /// `[batch, len]`: 1 for real tokens, 0 for padding.
    pub mask: Tensor,
    /// Class labels `[batch]`, i32.
    pub labels: Tensor,
}

/// Pad encoded sentences to the longest of them.
pub fn pad_batch(encoded: &[&[i32]], labels: &[i32]) -> Result<TextBatch> {
    let b = encoded.len();
    let len = encoded.iter().map(|e| e.len()).max().unwrap_or(0);
    let mut ids = vec![WordVocab::PAD; b * len];
    let mut mask = vec![0.0f32; b * len];
    for (i, e) in encoded.iter().enumerate() {
        ids[i * len..][..e.len()].copy_from_slice(e);
        mask[i * len..][..e.len()].fill(1.0);
    }
    Ok(TextBatch {
        ids: Tensor::from_slice_i32(&ids, &[b, len])?,
        mask: Tensor::from_vec(mask, &[b, len])?,
        labels: Tensor::from_slice_i32(labels, &[b])?,
    })
}

/// The example order of one epoch as batches: shuffled by `seed`, then
/// sorted by length within windows of `window` batches so that each batch
/// holds sentences of similar length (less padding), and the batches
/// shuffled again. `window` 1 keeps the plain shuffle.
pub fn bucketed_batches(
    lengths: &[usize],
    batch: usize,
    window: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let batch = batch.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 33) as usize) % n
    };
    for i in (1..order.len()).rev() {
        order.swap(i, next(i + 1));
    }
    for w in order.chunks_mut(batch * window.max(1)) {
        w.sort_by_key(|&i| lengths[i]);
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch).map(<[usize]>::to_vec).collect();
    for i in (1..batches.len()).rev() {
        batches.swap(i, next(i + 1));
    }
    batches
}
