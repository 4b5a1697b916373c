//! How good generated images are, measured with a network we train
//! ourselves: a CIFAR-10 classifier from `shadergrad train cifar10` stands
//! where Inception-v3 stands in FID, KID and the Inception Score. The
//! figures are on their own scale (they are not FID), named so:
//!
//! - **FCD**, Fréchet classifier distance: the Fréchet distance between
//!   Gaussians fitted to the classifier's penultimate features of the two
//!   sets, `|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`;
//! - **KCD**, kernel classifier distance: the unbiased MMD^2 in the same
//!   features with the cubic polynomial kernel `(x.y / d + 1)^3`, averaged
//!   over subsets (with its standard deviation);
//! - **CS**, classifier score: `exp(E_x KL(p(y|x) || p(y)))` over the
//!   classifier's predictions, averaged over ten splits (with its spread).
//!
//! Lower FCD and KCD and higher CS are better.

use std::path::Path;

use crate::data::batches::Rng;
use crate::data::ImageDataset;
use crate::nn::{Module, Sequential};
use crate::{Error, Result, Tensor};

/// Rows of numbers: one feature vector (or probability vector) per image.
pub type Rows = Vec<Vec<f64>>;

/// A classifier whose penultimate features and predictions score images.
pub struct FeatureNet {
    net: Sequential,
    /// The layer whose output is the feature vector.
    layer: &'static str,
    /// Which checkpoint and layer the features come from.
    pub name: String,
}

impl FeatureNet {
    /// A classifier checkpoint written by `shadergrad train cifar10`.
    pub fn load(path: &Path) -> Result<FeatureNet> {
        let ck = crate::io::checkpoint::load(path)?;
        let model = ck.metadata.get("model").cloned().unwrap_or_default();
        if ck
            .metadata
            .get("format")
            .is_some_and(|f| f.starts_with("shadergrad-gan"))
            || model != "seed-cnn"
        {
            return Err(Error::Io {
                path: path.display().to_string(),
                msg: format!(
                    "is a checkpoint of {:?}, not a CIFAR-10 classifier; make one with `shadergrad train cifar10 --out DIR` and pass DIR/checkpoint.safetensors",
                    if model.is_empty() { "an unknown model" } else { &model }
                ),
            });
        }
        let net = crate::models::build(&model)?;
        ck.restore(&net, path)?;
        Ok(FeatureNet {
            net,
            layer: "relu4",
            name: model,
        })
    }

    /// Penultimate features `[n][d]` and class probabilities `[n][classes]`
    /// of `set` (u8 images scaled to [0, 1], as the classifier trained).
    pub fn features(&mut self, set: &ImageDataset) -> Result<(Rows, Rows)> {
        if (set.channels, set.height, set.width) != (3, 32, 32) {
            return Err(Error::param(
                "scores",
                format!(
                    "the classifier takes 3x32x32 images, not {}x{}x{}",
                    set.channels, set.height, set.width
                ),
            ));
        }
        self.net.set_training(false);
        let result = crate::no_grad(|| -> Result<(Rows, Rows)> {
            let (mut feats, mut probs) = (Vec::new(), Vec::new());
            let il = set.image_len();
            for start in (0..set.len()).step_by(500) {
                let n = (set.len() - start).min(500);
                let x: Vec<f32> = set.images[start * il..(start + n) * il]
                    .iter()
                    .map(|&v| v as f32 / 255.0)
                    .collect();
                let x = Tensor::from_vec(x, &[n, 3, 32, 32])?;
                let f = self.net.forward_through(&x, self.layer)?;
                let p = self.net.forward(&x)?.softmax(1)?;
                Tensor::realize_all(&[f.clone(), p.clone()])?;
                let rows = |t: &Tensor| -> Result<Rows> {
                    let d = t.shape()[1];
                    Ok(t.to_vec()?
                        .chunks(d)
                        .map(|r| r.iter().map(|&v| v as f64).collect())
                        .collect())
                };
                feats.extend(rows(&f)?);
                probs.extend(rows(&p)?);
            }
            Ok((feats, probs))
        });
        self.net.set_training(true);
        result
    }
}

/// The three figures of one image set against a reference set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// Images scored.
    pub images: usize,
    /// Frechet classifier distance (lower is better).
    pub fcd: f64,
    /// Kernel classifier distance (unbiased MMD^2, lower is better).
    pub kcd: f64,
    /// Standard deviation of KCD over subsets.
    pub kcd_std: f64,
    /// Classifier score: exp(E KL(p(y|x) || p(y))), higher is better.
    pub cs: f64,
    /// Standard deviation of CS over splits.
    pub cs_std: f64,
}

impl Scores {
    /// One JSON object of the figures.
    pub fn json(&self) -> String {
        format!(
            "{{\"images\": {}, \"fcd\": {:.4}, \"kcd\": {:.5}, \"kcd_std\": {:.5}, \"cs\": {:.4}, \"cs_std\": {:.4}}}",
            self.images, self.fcd, self.kcd, self.kcd_std, self.cs, self.cs_std
        )
    }
}

/// Mean and covariance of the rows.
fn gaussian(x: &[Vec<f64>]) -> (Vec<f64>, nalgebra::DMatrix<f64>) {
    let (n, d) = (x.len(), x.first().map_or(0, Vec::len));
    let mut mu = vec![0.0; d];
    for r in x {
        for (m, v) in mu.iter_mut().zip(r) {
            *m += v / n as f64;
        }
    }
    let mut cov = nalgebra::DMatrix::<f64>::zeros(d, d);
    for r in x {
        for i in 0..d {
            let a = r[i] - mu[i];
            for j in i..d {
                cov[(i, j)] += a * (r[j] - mu[j]);
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    for i in 0..d {
        for j in i..d {
            let v = cov[(i, j)] / denom;
            cov[(i, j)] = v;
            cov[(j, i)] = v;
        }
    }
    (mu, cov)
}

/// The Fréchet distance between Gaussians fitted to `a` and `b`.
pub fn frechet_distance(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let (mu1, s1) = gaussian(a);
    let (mu2, s2) = gaussian(b);
    let mean_term: f64 = mu1.iter().zip(&mu2).map(|(x, y)| (x - y).powi(2)).sum();
    // Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2), the latter symmetric.
    let e = nalgebra::SymmetricEigen::new(s1.clone());
    let root = &e.eigenvectors
        * nalgebra::DMatrix::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt()))
        * e.eigenvectors.transpose();
    let m = &root * &s2 * &root;
    let m = (&m + m.transpose()) * 0.5;
    let tr_sqrt: f64 = nalgebra::SymmetricEigen::new(m)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    (mean_term + s1.trace() + s2.trace() - 2.0 * tr_sqrt).max(0.0)
}

/// The unbiased MMD^2 with the cubic polynomial kernel over `subsets`
/// random subsets of `size` rows of each set: (mean, standard deviation).
pub fn kernel_distance(
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    subsets: usize,
    size: usize,
    seed: u64,
) -> (f64, f64) {
    let d = a.first().map_or(1, Vec::len) as f64;
    let k =
        |x: &[f64], y: &[f64]| (x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>() / d + 1.0).powi(3);
    let m = size.min(a.len()).min(b.len());
    if m < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = Rng::new(seed);
    let mut pick = |n: usize| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..m {
            let j = i + rng.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(m);
        idx
    };
    let values: Vec<f64> = (0..subsets.max(1))
        .map(|_| {
            let (ia, ib) = (pick(a.len()), pick(b.len()));
            let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
            for (p, &i) in ia.iter().enumerate() {
                for (q, &j) in ia.iter().enumerate() {
                    if p != q {
                        xx += k(&a[i], &a[j]);
                    }
                }
                for &j in &ib {
                    xy += k(&a[i], &b[j]);
                }
            }
            for (p, &i) in ib.iter().enumerate() {
                for (q, &j) in ib.iter().enumerate() {
                    if p != q {
                        yy += k(&b[i], &b[j]);
                    }
                }
            }
            let mf = m as f64;
            (xx + yy) / (mf * (mf - 1.0)) - 2.0 * xy / (mf * mf)
        })
        .collect();
    mean_std(&values)
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// `exp(E KL(p(y|x) || p(y)))` over `splits` equal parts: (mean, std).
pub fn classifier_score(probs: &[Vec<f64>], splits: usize) -> (f64, f64) {
    let splits = splits.clamp(1, probs.len().max(1));
    let per = probs.len() / splits;
    let values: Vec<f64> = (0..splits)
        .map(|s| {
            let part = &probs[s * per..(s + 1) * per];
            let c = part.first().map_or(0, Vec::len);
            let mut marginal = vec![0.0; c];
            for p in part {
                for (m, v) in marginal.iter_mut().zip(p) {
                    *m += v / part.len() as f64;
                }
            }
            let kl: f64 = part
                .iter()
                .map(|p| {
                    p.iter()
                        .zip(&marginal)
                        .filter(|(v, _)| **v > 0.0)
                        .map(|(v, m)| v * (v.ln() - m.max(1e-30).ln()))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / part.len() as f64;
            kl.exp()
        })
        .collect();
    mean_std(&values)
}

/// Score `set` against the reference features (`reference` from the same net).
pub fn score(
    net: &mut FeatureNet,
    set: &ImageDataset,
    reference: &[Vec<f64>],
    seed: u64,
) -> Result<Scores> {
    if set.len() < 2 {
        return Err(Error::param("scores", "need at least two images to score"));
    }
    let (feats, probs) = net.features(set)?;
    let (kcd, kcd_std) = kernel_distance(&feats, reference, 10, 1000, seed);
    let (cs, cs_std) = classifier_score(&probs, 10);
    Ok(Scores {
        images: set.len(),
        fcd: frechet_distance(&feats, reference),
        kcd,
        kcd_std,
        cs,
        cs_std,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(n: usize, d: usize, shift: f64, scale: f64, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| (0..d).map(|_| shift + scale * rng.normal()).collect())
            .collect()
    }

    #[test]
    fn frechet_distance_of_gaussians() {
        // Same distribution: near 0. Shifted by 1 in each of 4 axes: near 4.
        // Scaled by 2 (S2 = 4 S1): Tr(S1 + 4 S1 - 2 * 2 S1) = Tr S1 = 4.
        let a = points(20_000, 4, 0.0, 1.0, 1);
        let b = points(20_000, 4, 0.0, 1.0, 2);
        assert!(frechet_distance(&a, &b) < 0.01);
        let shifted = points(20_000, 4, 1.0, 1.0, 3);
        assert!((frechet_distance(&a, &shifted) - 4.0).abs() < 0.1);
        let scaled = points(20_000, 4, 0.0, 2.0, 4);
        assert!((frechet_distance(&a, &scaled) - 4.0).abs() < 0.15);
    }

    #[test]
    fn kernel_distance_and_classifier_score() {
        let a = points(600, 8, 0.0, 1.0, 5);
        let b = points(600, 8, 0.0, 1.0, 6);
        let c = points(600, 8, 0.5, 1.0, 7);
        let (same, _) = kernel_distance(&a, &b, 5, 300, 1);
        let (far, _) = kernel_distance(&a, &c, 5, 300, 1);
        assert!(same.abs() < 0.02 && far > 0.1, "{same} {far}");
        // Confident predictions spread evenly over 4 classes: score 4.
        let onehot: Vec<Vec<f64>> = (0..400)
            .map(|i| (0..4).map(|c| if c == i % 4 { 1.0 } else { 0.0 }).collect())
            .collect();
        assert!((classifier_score(&onehot, 4).0 - 4.0).abs() < 1e-9);
        // Uniform predictions: score 1.
        let flat = vec![vec![0.25; 4]; 400];
        assert!((classifier_score(&flat, 4).0 - 1.0).abs() < 1e-9);
    }
}
