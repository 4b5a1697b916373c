//! What it takes to use a trained image classifier on new files: the
//! architecture, the input size, how images were fitted to it and the class
//! names. `train images` writes it into the checkpoint's metadata, so
//! `predict` and `eval images` need nothing but the checkpoint; a CIFAR-10
//! checkpoint (no such entries) reads as 32x32 with CIFAR-10's classes.

use std::collections::HashMap;
use std::path::Path;

use crate::data::image_folder::{self, Fit};
use crate::nn::{Module, Sequential};
use crate::{Error, Result, Tensor};

/// An image classifier's recipe, as stored in checkpoint metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePipeline {
    /// A name [`super::build_for`] knows (`seed-cnn`, `resnet8`, ...).
    pub model: String,
    /// Input `(height, width)`.
    pub size: (usize, usize),
    /// How images of other shapes are brought to `size`.
    pub fit: Fit,
    /// Class names; logit `i` is `classes[i]`.
    pub classes: Vec<String>,
}

impl ImagePipeline {
    /// The metadata entries that [`ImagePipeline::from_metadata`] reads back.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        vec![
            ("task".into(), "image-classification".into()),
            (
                "input_size".into(),
                format!("{}x{}", self.size.0, self.size.1),
            ),
            ("fit".into(), self.fit.name().into()),
            (
                "classes".into(),
                serde_json::Value::from(self.classes.clone()).to_string(),
            ),
        ]
    }

    /// The pipeline of a checkpoint at `path` with `metadata`.
    pub fn from_metadata(metadata: &HashMap<String, String>, path: &Path) -> Result<ImagePipeline> {
        let bad = |msg: String| Error::Io {
            path: path.display().to_string(),
            msg,
        };
        if let Some(task) = metadata
            .get("task")
            .filter(|t| *t != "image-classification")
        {
            return Err(bad(format!(
                "is a checkpoint of a {task} model, not an image classifier"
            )));
        }
        let model = metadata
            .get("model")
            .cloned()
            .unwrap_or_else(|| "seed-cnn".into());
        if !super::NAMES.contains(&model.as_str()) {
            return Err(bad(format!(
                "holds a {model:?} model, which is not an image classifier ({})",
                super::NAMES.join(", ")
            )));
        }
        let Some(classes) = metadata.get("classes") else {
            // Written by `train cifar10`.
            return Ok(ImagePipeline {
                model,
                size: (32, 32),
                fit: Fit::Crop,
                classes: crate::data::cifar10::CLASSES
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            });
        };
        let classes: Vec<String> = serde_json::from_str(classes)
            .map_err(|e| bad(format!("has unreadable class names in its metadata ({e})")))?;
        let size = image_folder::parse_size(
            metadata
                .get("input_size")
                .ok_or_else(|| bad("has classes but no input_size in its metadata".into()))?,
        )?;
        let fit = Fit::parse(metadata.get("fit").map_or("crop", String::as_str))?;
        Ok(ImagePipeline {
            model,
            size,
            fit,
            classes,
        })
    }

    /// A fresh model of this architecture (untrained weights).
    pub fn build(&self) -> Result<Sequential> {
        super::build_for(&self.model, self.size, self.classes.len())
    }

    /// Read, fit and scale one image file to the model's input, `[3, h, w]`
    /// u8 channel-major.
    pub fn load_image(&self, path: &Path) -> Result<Vec<u8>> {
        image_folder::load_file(path, self.size, self.fit)
    }

    /// Class probabilities for images prepared by [`ImagePipeline::load_image`],
    /// in batches of `batch`, without gradients, in evaluation mode.
    pub fn predict(
        &self,
        model: &mut dyn Module,
        images: &[Vec<u8>],
        batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        model.set_training(false);
        let (h, w) = self.size;
        let k = self.classes.len();
        let result = crate::no_grad(|| -> Result<Vec<Vec<f32>>> {
            let mut out = Vec::with_capacity(images.len());
            for chunk in images.chunks(batch.max(1)) {
                let pixels: Vec<f32> = chunk
                    .iter()
                    .flat_map(|img| img.iter().map(|&v| v as f32 / 255.0))
                    .collect();
                let x = Tensor::from_slice(&pixels, &[chunk.len(), 3, h, w])?;
                let probs = model.forward(&x)?.softmax(1)?.to_vec()?;
                out.extend(probs.chunks(k).map(<[f32]>::to_vec));
            }
            Ok(out)
        });
        model.set_training(true);
        result
    }
}

/// The `k` most probable `(class index, probability)` pairs, best first.
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}
