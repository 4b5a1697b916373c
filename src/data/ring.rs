//! A mixture of Gaussians on a ring (the 2-D check of adversarial
//! training, after Metz et al.'s unrolled-GAN experiments), and the two
//! numbers that say how well a sample set covers it.

use super::batches::Rng;

/// `modes` Gaussians of standard deviation `std` on a circle of `radius`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ring {
    /// Number of Gaussians (modes).
    pub modes: usize,
    /// Radius of the circle the means sit on.
    pub radius: f32,
    /// Standard deviation of each Gaussian.
    pub std: f32,
}

impl Default for Ring {
    /// Eight modes of std 0.05 on a circle of radius 2.
    fn default() -> Ring {
        Ring {
            modes: 8,
            radius: 2.0,
            std: 0.05,
        }
    }
}

/// How a sample set covers a ring.
#[derive(Clone, Debug, PartialEq)]
pub struct Coverage {
    /// Samples within 3 standard deviations of each mode.
    pub per_mode: Vec<usize>,
    /// Modes with at least `min_share` of a fair share of the samples.
    pub modes_covered: usize,
    /// Fraction of samples within 3 standard deviations of some mode.
    pub high_quality: f32,
}

impl Ring {
    /// The means of the modes, counter-clockwise from (radius, 0).
    pub fn centers(&self) -> Vec<[f32; 2]> {
        (0..self.modes)
            .map(|k| {
                let a = 2.0 * std::f32::consts::PI * k as f32 / self.modes as f32;
                [self.radius * a.cos(), self.radius * a.sin()]
            })
            .collect()
    }

    /// `n` points (row-major `[n, 2]`), the same for the same seed.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let centers = self.centers();
        let mut rng = Rng::new(seed ^ 0x7269_6e67);
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let c = centers[rng.below(self.modes.max(1))];
            out.push(c[0] + self.std * rng.normal() as f32);
            out.push(c[1] + self.std * rng.normal() as f32);
        }
        out
    }

    /// Coverage of `points` (`[n, 2]` row-major): a mode counts as covered
    /// when it holds at least `min_share` of the n / modes samples a
    /// perfect generator would put there.
    pub fn coverage(&self, points: &[f32], min_share: f32) -> Coverage {
        let centers = self.centers();
        let mut per_mode = vec![0usize; self.modes];
        let n = points.len() / 2;
        let limit = 3.0 * self.std;
        for p in points.chunks_exact(2) {
            if let Some(k) = centers
                .iter()
                .position(|c| ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt() <= limit)
            {
                per_mode[k] += 1;
            }
        }
        let fair = n as f32 / self.modes.max(1) as f32;
        let modes_covered = per_mode
            .iter()
            .filter(|&&c| c as f32 >= min_share * fair)
            .count();
        let high_quality = per_mode.iter().sum::<usize>() as f32 / n.max(1) as f32;
        Coverage {
            per_mode,
            modes_covered,
            high_quality,
        }
    }
}
