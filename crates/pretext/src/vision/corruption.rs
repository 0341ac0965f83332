//! Corruptions for denoising autoencoders (Vincent et al. 2008; random erasing, Zhong et al.
//! 2020): applied to a batch of normalised images on the device; the autoencoder must
//! reconstruct the clean image. Randomness comes from the device's stream, which the training
//! loop seeds afresh at every step.

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::core::distributed::world;
use crate::vision::backbones::decoder::upsample;
use crate::vision::masking::{patch_grid, random_masking};

/// A corruption, ready to apply (built from `[autoencoder]` by
/// [`crate::vision::methods::autoencoder::AutoencoderConfig::corruption`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Corruption {
    /// Gaussian noise of this standard deviation (in units of the dataset's pixel std).
    Gaussian { std: f64 },
    /// This share of pixels set to the batch's darkest or brightest value, half each.
    SaltPepper { share: f64 },
    /// One rectangle per image, covering a share of it drawn uniformly in `scale`, set to 0.
    Erase { scale: (f64, f64) },
    /// This share of `size x size` blocks set to 0.
    Block { ratio: f64, size: usize },
}

impl Corruption {
    /// The corrupted copy of `images` `[batch, channels, height, width]`.
    pub fn apply(&self, images: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = images.dims();
        let device = images.device();
        // One draw per pixel position, shared by its channels.
        let per_pixel = |dist| {
            world()
                .random_rows([b, 1, h, w], dist, &device)
                .expand([b, c, h, w])
        };
        match *self {
            Corruption::Gaussian { std } => {
                let noise =
                    world().random_rows([b, c, h, w], Distribution::Normal(0.0, std), &device);
                images + noise
            }
            Corruption::SaltPepper { share } => {
                let u = per_pixel(Distribution::Uniform(0.0, 1.0));
                let (dark, bright) = (
                    images.clone().min().into_scalar::<f32>(),
                    images.clone().max().into_scalar::<f32>(),
                );
                let salt = u.clone().lower_elem(share / 2.0);
                let pepper = u.lower_elem(share).bool_and(salt.clone().bool_not());
                images.mask_fill(salt, bright).mask_fill(pepper, dark)
            }
            Corruption::Erase { scale } => {
                let keep = erase_mask(b, h, w, scale, &device).expand([b, c, h, w]);
                images * keep
            }
            Corruption::Block { ratio, size } => {
                let (gh, gw) = patch_grid(h, w, size);
                let blanked = random_masking(b, gh * gw, ratio, &device).mask;
                let m = upsample(blanked.reshape([b, 1, gh, gw]), size)
                    .slice([0..b, 0..1, 0..h, 0..w])
                    .expand([b, c, h, w]);
                images * m.neg().add_scalar(1.0)
            }
        }
    }
}

/// 1 outside one random rectangle per image, 0 inside: `[batch, 1, h, w]`. The rectangle's
/// area share is uniform in `scale`, its aspect ratio log-uniform in [1/3, 3].
fn erase_mask(b: usize, h: usize, w: usize, scale: (f64, f64), device: &Device) -> Tensor<4> {
    let draws = world()
        .random_rows([b, 4], Distribution::Uniform(0.0, 1.0), device)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    let mut mask = vec![1f32; b * h * w];
    for (i, d) in draws.chunks_exact(4).enumerate() {
        let area = (scale.0 + (scale.1 - scale.0) * d[0] as f64) * (h * w) as f64;
        let ratio = (3f64.ln() * (2.0 * d[1] as f64 - 1.0)).exp();
        let eh = ((area * ratio).sqrt().round() as usize).clamp(1, h);
        let ew = ((area / ratio).sqrt().round() as usize).clamp(1, w);
        let top = ((h - eh) as f64 * d[2] as f64).round() as usize;
        let left = ((w - ew) as f64 * d[3] as f64).round() as usize;
        for y in top..top + eh {
            let row = (i * h + y) * w;
            mask[row + left..row + left + ew].fill(0.0);
        }
    }
    Tensor::from_data(TensorData::new(mask, [b, 1, h, w]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn each_corruption_changes_what_it_claims() {
        let device = Device::flex();
        device.seed(5);
        let images = Tensor::<4>::random([4, 2, 12, 12], Distribution::Uniform(-1.0, 1.0), &device);
        let clean = values(images.clone());
        let n = clean.len() as f64;
        let changed =
            |out: &[f32]| clean.iter().zip(out).filter(|(a, b)| a != b).count() as f64 / n;

        let noisy = values(Corruption::Gaussian { std: 0.5 }.apply(images.clone()));
        let diff: Vec<f64> = clean
            .iter()
            .zip(&noisy)
            .map(|(a, b)| (b - a) as f64)
            .collect();
        let sd = (diff.iter().map(|d| d * d).sum::<f64>() / n).sqrt();
        assert!((sd - 0.5).abs() < 0.05, "noise std {sd}");

        let sp = values(Corruption::SaltPepper { share: 0.2 }.apply(images.clone()));
        let share = changed(&sp);
        assert!((share - 0.2).abs() < 0.06, "salt and pepper hit {share}");
        let (lo, hi) = clean
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(
            sp.iter()
                .zip(&clean)
                .all(|(s, c)| s == c || *s == lo || *s == hi)
        );

        let erased = values(Corruption::Erase { scale: (0.2, 0.3) }.apply(images.clone()));
        for (img, orig) in erased.chunks(288).zip(clean.chunks(288)) {
            let zeros = img
                .iter()
                .zip(orig)
                .filter(|(a, b)| **a == 0.0 && **b != 0.0)
                .count();
            let share = zeros as f64 / 288.0;
            assert!((0.1..=0.4).contains(&share), "erased share {share}");
            // The same rectangle in both channels.
            assert_eq!(
                img[..144].iter().map(|v| *v == 0.0).collect::<Vec<_>>(),
                img[144..].iter().map(|v| *v == 0.0).collect::<Vec<_>>()
            );
        }

        for size in [4, 3] {
            let blocked = values(Corruption::Block { ratio: 0.5, size }.apply(images.clone()));
            let per_image = 288;
            for img in blocked.chunks(per_image) {
                let zero = img.iter().filter(|v| **v == 0.0).count();
                // 12x12 in 4x4 blocks: 9 blocks, 4 or 5 blanked (round(4.5) = 5 in Rust).
                let blocks = (12 / size) * (12 / size);
                let expected = ((blocks as f64 * 0.5).round() as usize) * size * size * 2;
                assert_eq!(zero, expected, "block size {size}");
            }
        }
    }
}
