//! Batches from an in-memory image set: seeded per-epoch shuffling, scaling
//! to [0, 1] and optional normalisation, random crop with padding and
//! horizontal flip, prepared on a background thread.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::ImageDataset;
use crate::{Result, Tensor};

/// Training-time augmentation (both off reproduces the original seed CNN).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augment {
    /// Pad by this many zero pixels on each side, then crop back at a random offset.
    pub crop_padding: usize,
    /// Mirror each image left-right with probability 1/2.
    pub horizontal_flip: bool,
}

#[derive(Clone, Debug)]
/// How a [`Batcher`] draws and prepares batches.
pub struct BatchOptions {
    /// Examples per batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Shuffle the order each epoch (by `seed` and the epoch number).
    pub shuffle: bool,
    /// Seed of the shuffle and the augmentation.
    pub seed: u64,
    /// Random crops and flips (training only).
    pub augment: Augment,
    /// Per-channel (mean, std) applied after scaling to [0, 1].
    pub normalize: Option<(Vec<f32>, Vec<f32>)>,
}

/// One batch: images `[b, c, h, w]` as f32 and labels as i32.
pub struct Batch {
    /// Pixels `[b, c, h, w]`, scaled to [0, 1] (then normalised, if asked).
    pub images: Vec<f32>,
    /// Class labels, one per image.
    pub labels: Vec<i32>,
    /// `[b, c, h, w]`.
    pub shape: [usize; 4],
}

impl Batch {
    /// The images `[b, c, h, w]` (f32) and labels `[b]` (i32) as tensors on the default device.
    pub fn tensors(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::from_slice(&self.images, &self.shape)?,
            Tensor::from_slice_i32(&self.labels, &[self.labels.len()])?,
        ))
    }
}

/// A small, seedable generator for shuffles and augmentation (splitmix64).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6a09_e667_f3bc_c909)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in (0, 1].
    pub(crate) fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// The example order of an epoch: a seeded permutation (or identity).
pub fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = Rng::new(seed.wrapping_mul(0x100_0000_01b3) ^ epoch);
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    order
}

fn make_batch(data: &ImageDataset, idx: &[usize], opts: &BatchOptions, rng: &mut Rng) -> Batch {
    let (c, h, w) = (data.channels, data.height, data.width);
    let plane = h * w;
    let mut images = vec![0.0f32; idx.len() * c * plane];
    let mut labels = Vec::with_capacity(idx.len());
    let pad = opts.augment.crop_padding;
    for (b, &i) in idx.iter().enumerate() {
        labels.push(data.labels[i] as i32);
        let src = &data.images[i * data.image_len()..(i + 1) * data.image_len()];
        let (dy, dx) = if pad > 0 {
            (
                rng.below(2 * pad + 1) as isize - pad as isize,
                rng.below(2 * pad + 1) as isize - pad as isize,
            )
        } else {
            (0, 0)
        };
        let flip = opts.augment.horizontal_flip && rng.below(2) == 1;
        let dst = &mut images[b * c * plane..(b + 1) * c * plane];
        for ch in 0..c {
            let (mean, std) = match &opts.normalize {
                Some((m, s)) => (m[ch], s[ch]),
                None => (0.0, 1.0),
            };
            for y in 0..h {
                for x in 0..w {
                    let sy = y as isize + dy;
                    let sx0 = if flip { w - 1 - x } else { x };
                    let sx = sx0 as isize + dx;
                    let v = if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                        src[ch * plane + sy as usize * w + sx as usize] as f32 / 255.0
                    } else {
                        0.0
                    };
                    dst[ch * plane + y * w + x] = (v - mean) / std;
                }
            }
        }
    }
    Batch {
        images,
        labels,
        shape: [idx.len(), c, h, w],
    }
}

/// Iterator over one epoch's batches, filled by a background thread.
pub struct Batcher {
    rx: Receiver<Batch>,
    worker: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Batcher {
    /// Batches of `epoch`, starting at batch `start` (to resume mid-epoch).
    pub fn new(data: Arc<ImageDataset>, opts: BatchOptions, epoch: u64, start: usize) -> Batcher {
        let n = data.len();
        let bs = opts.batch_size.max(1);
        let batches = n.div_ceil(bs);
        let (tx, rx) = sync_channel(3);
        let worker = std::thread::spawn(move || {
            let order = epoch_order(n, opts.shuffle, opts.seed, epoch);
            for b in start..batches {
                // Augmentation draws depend on (seed, epoch, batch) only, so a
                // resumed run sees the same pixels.
                let mut rng =
                    Rng::new(opts.seed ^ (epoch << 32) ^ (b as u64).wrapping_mul(0x9e37_79b9));
                let idx = &order[b * bs..((b + 1) * bs).min(n)];
                if tx.send(make_batch(&data, idx, &opts, &mut rng)).is_err() {
                    return;
                }
            }
        });
        Batcher {
            rx,
            worker: Some(worker),
            remaining: batches.saturating_sub(start),
        }
    }

    /// Batches this epoch has still to give.
    pub fn batches_left(&self) -> usize {
        self.remaining
    }
}

impl Iterator for Batcher {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let b = self.rx.recv().ok()?;
        self.remaining -= 1;
        Some(b)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the channel stops the worker at its next send.
        let (_, dead) = sync_channel(0);
        self.rx = dead;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
