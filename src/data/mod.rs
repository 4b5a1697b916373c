//! Data sets and batching.

pub mod batches;
mod cache;
pub mod cifar10;
pub mod image_folder;
pub mod image_set;
pub mod ring;
pub mod text;
#[cfg(feature = "text")]
pub mod wordpiece;

pub use batches::{Augment, Batch, Batcher};

/// Labelled images held in memory as u8, channel-major (`[n, c, h, w]`).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageDataset {
    /// Pixels, `[n, c, h, w]` row-major, 0-255.
    pub images: Vec<u8>,
    /// One class label per image.
    pub labels: Vec<u8>,
    /// Channels per image (3 for RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

impl ImageDataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (`c * h * w`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The first `n` examples (or all, when there are fewer).
    pub fn head(&self, n: usize) -> ImageDataset {
        let n = n.min(self.len());
        ImageDataset {
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..*self
        }
    }

    /// A seeded random subset of `n` examples (all, when there are fewer),
    /// kept in their original order: every class is represented even when
    /// the source is sorted by class.
    pub fn sample(&self, n: usize, seed: u64) -> ImageDataset {
        if n >= self.len() {
            return self.clone();
        }
        let mut pick = batches::epoch_order(self.len(), true, seed ^ 0x5a4d_91e2, 0);
        pick.truncate(n);
        pick.sort_unstable();
        self.select(&pick)
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageDataset {
        let il = self.image_len();
        ImageDataset {
            images: indices
                .iter()
                .flat_map(|&i| self.images[i * il..(i + 1) * il].iter().copied())
                .collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            ..*self
        }
    }

    /// Mean of each channel over all pixels, in [0, 1].
    pub fn channel_means(&self) -> Vec<f32> {
        let plane = self.height * self.width;
        (0..self.channels)
            .map(|c| {
                let sum: u64 = self
                    .images
                    .chunks(self.image_len())
                    .map(|img| {
                        img[c * plane..(c + 1) * plane]
                            .iter()
                            .map(|&v| v as u64)
                            .sum::<u64>()
                    })
                    .sum();
                sum as f32 / (255.0 * (plane * self.len()).max(1) as f32)
            })
            .collect()
    }
}
