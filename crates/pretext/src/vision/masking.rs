//! Patches and masks for masked image modelling (MAE, SimMIM): cut images into non-overlapping
//! patches and back, and draw per-image random masks on the device.
//!
//! A mask is drawn as in MAE's reference code: uniform noise per patch, sorted; the patches with
//! the smallest noise stay visible. The device's random stream is seeded afresh at every
//! training step (see the training loop), so a run and its resumed copy draw the same masks.

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::ops::PadMode;

use crate::core::distributed::world;

/// Pad `[batch, channels, height, width]` on the bottom and right with zeros (the dataset mean,
/// after normalisation) up to multiples of `patch`.
pub fn pad_to_patches(images: Tensor<4>, patch: usize) -> Tensor<4> {
    let [_, _, h, w] = images.dims();
    let (dh, dw) = (h.next_multiple_of(patch) - h, w.next_multiple_of(patch) - w);
    if dh == 0 && dw == 0 {
        return images;
    }
    images.pad([(0, dh), (0, dw)], PadMode::Constant(0.0))
}

/// The patch grid (rows, columns) of a `height x width` image, padding included.
pub fn patch_grid(height: usize, width: usize, patch: usize) -> (usize, usize) {
    (height.div_ceil(patch), width.div_ceil(patch))
}

/// `[batch, channels, H, W]` (multiples of `patch`) → `[batch, patches, channels * patch²]`,
/// patches in row-major order, each flattened as (channel, row, column): the layout of a
/// `patch x patch` convolution's weight, so a linear patch embedding is such a convolution.
pub fn patchify(images: Tensor<4>, patch: usize) -> Result<Tensor<3>> {
    let [b, c, h, w] = images.dims();
    if patch == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
        bail!("patchify: {h}x{w} images do not split into {patch}x{patch} patches");
    }
    let (gh, gw) = (h / patch, w / patch);
    Ok(images
        .reshape([b, c, gh, patch, gw, patch])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, gh * gw, c * patch * patch]))
}

/// The inverse of [`patchify`] for a `grid` of patches with `channels` channels.
pub fn unpatchify(
    patches: Tensor<3>,
    patch: usize,
    channels: usize,
    grid: (usize, usize),
) -> Result<Tensor<4>> {
    let [b, l, values] = patches.dims();
    let (gh, gw) = grid;
    if l != gh * gw || values != channels * patch * patch {
        bail!(
            "unpatchify: {l} patches of {values} values do not form a {gh}x{gw} grid of \
             {channels}-channel {patch}x{patch} patches"
        );
    }
    Ok(patches
        .reshape([b, gh, gw, channels, patch, patch])
        .permute([0, 3, 1, 4, 2, 5])
        .reshape([b, channels, gh * patch, gw * patch]))
}

/// How many of `patches` a mask ratio hides: `round(ratio * patches)`, leaving one visible.
pub fn masked_count(patches: usize, ratio: f64) -> usize {
    ((ratio * patches as f64).round() as usize).min(patches.saturating_sub(1))
}

/// A masked model's patch grid on `height x width` views: at least two patches, and
/// `ratio` hiding at least one (it always leaves one visible).
pub fn check_patch_masking(
    method: &str,
    patch: usize,
    ratio: f64,
    height: usize,
    width: usize,
) -> Result<()> {
    let (rows, cols) = patch_grid(height, width, patch.max(1));
    let patches = rows * cols;
    if patches < 2 {
        bail!(
            "backbone.patch_size = {patch} leaves {patches} patch(es) in {height}x{width} \
             views: {method} hides some patches and predicts them from the rest, so it needs two \
             at least (a smaller backbone.patch_size)"
        );
    }
    if masked_count(patches, ratio) == 0 {
        bail!(
            "{method}.mask_ratio = {ratio} hides none of the {patches} patches of \
             {height}x{width} views (patch {patch}): nothing would be predicted (a larger \
             {method}.mask_ratio or a smaller backbone.patch_size)"
        );
    }
    Ok(())
}

/// One random mask per image of a batch.
#[derive(Debug, Clone)]
pub struct PatchMask {
    /// Indices of the visible patches `[batch, visible]`.
    pub keep: Tensor<2, Int>,
    /// For each position of the original order, where it sits in (visible ++ masked) order
    /// `[batch, patches]`: gathering with it puts a decoder's tokens back in place.
    pub restore: Tensor<2, Int>,
    /// 1 where a patch is masked, 0 where it is visible `[batch, patches]`.
    pub mask: Tensor<2>,
    /// Indices of the hidden patches `[batch, patches - visible]`.
    pub hidden: Tensor<2, Int>,
}

impl PatchMask {
    pub fn visible(&self) -> usize {
        self.keep.dims()[1]
    }
}

/// Draw a mask hiding [`masked_count`] patches of each image, independently per image.
pub fn random_masking(batch: usize, patches: usize, ratio: f64, device: &Device) -> PatchMask {
    let visible = patches - masked_count(patches, ratio);
    let noise = world().random_rows([batch, patches], Distribution::Uniform(0.0, 1.0), device);
    let shuffle = noise.argsort(1);
    let restore = shuffle.clone().argsort(1);
    let hidden = shuffle.clone().narrow(1, visible, patches - visible);
    let keep = shuffle.narrow(1, 0, visible);
    let in_shuffled_order = Tensor::cat(
        vec![
            Tensor::<2>::zeros([batch, visible], device),
            Tensor::<2>::ones([batch, patches - visible], device),
        ],
        1,
    );
    let mask = in_shuffled_order.gather(1, restore.clone());
    PatchMask {
        keep,
        restore,
        mask,
        hidden,
    }
}

/// Rows `indices` `[batch, k]` of every image's tokens `[batch, n, dim]` → `[batch, k, dim]`.
pub fn gather_tokens(tokens: Tensor<3>, indices: Tensor<2, Int>) -> Tensor<3> {
    crate::core::kernels::gather_rows(tokens, indices)
}

/// Each patch scaled to zero mean and unit variance over its values: MAE's `norm_pix_loss`
/// target, which the paper found gives better representations. Also returns the per-patch mean
/// and standard deviation, to map predictions back to pixels for display.
pub fn normalize_patches(patches: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
    let mean = patches.clone().mean_dim(2);
    let var = patches.clone().var(2);
    let std = var.add_scalar(1e-6).sqrt();
    ((patches - mean.clone()) / std.clone(), mean, std)
}

/// [`normalize_patches`]'s normalised patches alone (MAE's loss target) as one layer
/// normalisation: with `c = (n − 1)/n` for patches of `n` values, the unbiased variance is the
/// biased one over `c`, so `(x − μ)/√(s² + ε) = √c·(x − μ)/√(σ² + c·ε)`. The five tensor ops of
/// the definition were about 1.4% of a VideoMAE step.
pub fn normalized_patches(patches: Tensor<3>) -> Tensor<3> {
    let n = patches.dims()[2];
    if n < 2 {
        return normalize_patches(patches).0;
    }
    let c = (n - 1) as f64 / n as f64;
    let device = patches.device();
    crate::core::kernels::layer_norm(
        patches,
        Tensor::full([n], c.sqrt(), &device),
        Tensor::zeros([n], &device),
        1e-6 * c,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn ints<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    #[test]
    fn a_mask_that_hides_nothing_or_a_single_patch_is_refused() {
        // 28x28 at patch 7: 16 patches, 0.6 hides 10.
        assert!(check_patch_masking("simmim", 7, 0.6, 28, 28).is_ok());
        let err = check_patch_masking("mae", 28, 0.75, 28, 28)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("backbone.patch_size = 28") && err.contains("1 patch"),
            "{err}"
        );
        assert!(check_patch_masking("mae", 32, 0.75, 28, 28).is_err());
        // 4 patches: 0.1 rounds to none hidden.
        let err = check_patch_masking("simmim", 14, 0.1, 28, 28)
            .unwrap_err()
            .to_string();
        assert!(err.contains("simmim.mask_ratio = 0.1 hides none"), "{err}");
        assert!(check_patch_masking("simmim", 14, 0.2, 28, 28).is_ok());
        // The ViT pads to whole patches, so a patch that does not divide the view counts its
        // padded grid: 20 on 28x28 is 2x2.
        assert!(check_patch_masking("mae", 20, 0.75, 28, 28).is_ok());
    }

    #[test]
    fn patchify_then_unpatchify_is_the_identity() {
        let device = Device::flex();
        let flat: Vec<f32> = (0..2 * 3 * 8 * 12).map(|i| i as f32).collect();
        let images = Tensor::<4>::from_data(TensorData::new(flat.clone(), [2, 3, 8, 12]), &device);
        let patches = patchify(images, 4).unwrap();
        assert_eq!(patches.dims(), [2, 6, 3 * 16]);
        // Patch 1 of image 0 is rows 0-3, columns 4-7; its first values are channel 0, row 0.
        let p = values(patches.clone());
        assert_eq!(&p[48..52], &[4.0, 5.0, 6.0, 7.0]);
        assert_eq!(p[48 + 4], 16.0, "the next row, one image row (12) further");
        assert_eq!(
            p[48 + 16],
            100.0,
            "channel 1 (offset 96) follows the 16 values"
        );
        let back = unpatchify(patches, 4, 3, (2, 3)).unwrap();
        assert_eq!(back.dims(), [2, 3, 8, 12]);
        assert_eq!(values(back), flat);
        assert!(patchify(Tensor::<4>::zeros([1, 1, 7, 8], &device), 4).is_err());
        assert!(unpatchify(Tensor::<3>::zeros([1, 5, 16], &device), 4, 1, (2, 3)).is_err());
    }

    #[test]
    fn padding_reaches_the_next_multiple_with_zeros() {
        let device = Device::flex();
        let images = Tensor::<4>::ones([1, 1, 9, 6], &device);
        let padded = pad_to_patches(images, 4);
        assert_eq!(padded.dims(), [1, 1, 12, 8]);
        let v = values(padded);
        assert_eq!(
            v.iter().sum::<f32>(),
            54.0,
            "only the original pixels are non-zero"
        );
        assert_eq!(v[6], 0.0, "row 0, column 6 is padding");
        assert_eq!(patch_grid(28, 28, 4), (7, 7));
        assert_eq!(patch_grid(9, 6, 4), (3, 2));
    }

    #[test]
    fn masks_hide_exactly_the_ratio_and_repeat_per_seed() {
        let device = Device::flex();
        assert_eq!(masked_count(49, 0.75), 37);
        assert_eq!(masked_count(16, 0.6), 10);
        assert_eq!(masked_count(4, 1.0), 3, "one patch always stays visible");
        let draw = |seed| {
            device.seed(seed);
            random_masking(5, 49, 0.75, &device)
        };
        let (a, b, c) = (draw(3), draw(3), draw(4));
        assert_eq!(a.visible(), 12);
        let mask = values(a.mask.clone());
        for row in mask.chunks(49) {
            assert_eq!(row.iter().sum::<f32>(), 37.0);
        }
        assert_eq!(mask, values(b.mask.clone()), "same seed, same mask");
        assert_ne!(mask, values(c.mask.clone()), "another seed, another mask");
        assert_ne!(&mask[..49], &mask[49..98], "each image draws its own mask");
        // The kept indices are exactly the unmasked positions, the hidden ones exactly the
        // masked positions (each once), and restore inverts the shuffle.
        let keep = ints(a.keep.clone());
        for (i, row) in keep.chunks(12).enumerate() {
            for &k in row {
                assert_eq!(mask[i * 49 + k as usize], 0.0);
            }
        }
        let hidden = ints(a.hidden.clone());
        for (i, row) in hidden.chunks(37).enumerate() {
            let mut sorted = row.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 37);
            assert!(sorted.iter().all(|&h| mask[i * 49 + h as usize] == 1.0));
        }
        let restore = ints(a.restore.clone());
        for (i, row) in restore.chunks(49).enumerate() {
            for (pos, &r) in row.iter().enumerate() {
                let visible = (r as usize) < 12;
                assert_eq!(visible, mask[i * 49 + pos] == 0.0);
                if visible {
                    assert_eq!(keep[i * 12 + r as usize], pos as i64);
                }
            }
        }
    }

    #[test]
    fn gathered_tokens_are_the_indexed_rows() {
        let device = Device::flex();
        let tokens = Tensor::<3>::from_data(
            TensorData::new((0..2 * 4 * 2).map(|i| i as f32).collect(), [2, 4, 2]),
            &device,
        );
        let idx =
            Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 0, 1, 2], [2, 2]), &device);
        let picked = values(gather_tokens(tokens, idx));
        assert_eq!(picked, vec![6.0, 7.0, 0.0, 1.0, 10.0, 11.0, 12.0, 13.0]);
    }

    #[test]
    fn normalised_patches_have_zero_mean_and_unit_variance() {
        let device = Device::flex();
        let patches = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0], [1, 2, 4]),
            &device,
        );
        let (normed, mean, _) = normalize_patches(patches);
        let v = values(normed);
        assert!(v[..4].iter().sum::<f32>().abs() < 1e-5);
        // Unbiased variance of [1, 2, 3, 6] is 14/3.
        assert!(
            (v[3] - (6.0 - 3.0) / (14.0f32 / 3.0).sqrt()).abs() < 1e-3,
            "{v:?}"
        );
        assert!(
            v[4..].iter().all(|x| x.abs() < 1e-3),
            "a flat patch stays flat"
        );
        assert_eq!(values(mean), vec![3.0, 5.0]);
    }

    /// The one-pass target equals the definition's, through the kernel (autodiff) and burn's
    /// layer norm (without), on patches of very different scales and a flat one.
    #[test]
    fn normalized_patches_equal_the_definition() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let patches = Tensor::<3>::random([3, 5, 12], Distribution::Default, &device)
                * Tensor::<3>::from_data(
                    TensorData::new(vec![0.01f32, 1.0, 100.0, 0.0, 3.0], [1, 5, 1]),
                    &device,
                );
            let want = values(normalize_patches(patches.clone()).0);
            let got = values(normalized_patches(patches));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "[{i}]: {g} against {w}"
                );
            }
        }
    }
}
