//! SSL losses, shared by the methods.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// NT-Xent (SimCLR's normalised-temperature cross entropy, a form of InfoNCE).
///
/// `z1[i]` and `z2[i]` are two views of image `i`. Each of the 2N embeddings is classified
/// against the other 2N-1 by cosine similarity / `temperature`: its partner is the positive,
/// the 2N-2 others the negatives. The mean over both directions is returned.
pub fn nt_xent(z1: Tensor<2>, z2: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [n, _] = z1.dims();
    let device = z1.device();
    let z = l2_normalize(Tensor::cat(vec![z1, z2], 0));
    let logits = z.clone().matmul(z.transpose()).div_scalar(temperature);
    // A large negative on the diagonal removes self-similarity from the softmax.
    let eye = Tensor::<2>::eye(2 * n, &device);
    let logits = logits - eye.mul_scalar(1e9);
    let log_probs = log_softmax(logits, 1);
    let partner: Vec<i64> = (0..2 * n).map(|i| ((i + n) % (2 * n)) as i64).collect();
    let partner = Tensor::<1, Int>::from_data(TensorData::new(partner, [2 * n]), &device);
    let picked = log_probs.gather(1, partner.reshape([2 * n, 1]));
    picked.mean().neg().reshape([1])
}

/// BYOL's regression loss: `2 - 2 cos(p, z)`, averaged over the batch. The caller decides what
/// is detached (the target branch in BYOL).
pub fn normalized_mse(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    let cos = (l2_normalize(p) * l2_normalize(z)).sum_dim(1);
    cos.mean().mul_scalar(-2.0).add_scalar(2.0).reshape([1])
}

/// Mean cross-entropy of `logits` `[n, classes]` against class indices `targets` `[n]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    log_softmax(logits, 1)
        .gather(1, targets.reshape([n, 1]))
        .mean()
        .neg()
        .reshape([1])
}

/// Mean squared error of `pred` against `target` (both `[batch, patches, values]`) over the
/// patches where `mask` `[batch, patches]` is 1: MAE's loss, which ignores visible patches.
pub fn masked_mse(pred: Tensor<3>, target: Tensor<3>, mask: Tensor<2>) -> Tensor<1> {
    let per_patch = (pred - target)
        .powi_scalar(2)
        .mean_dim(2)
        .squeeze_dim::<2>(2);
    masked_mean(per_patch, mask)
}

/// Mean absolute error over the patches where `mask` is 1: SimMIM's loss.
pub fn masked_l1(pred: Tensor<3>, target: Tensor<3>, mask: Tensor<2>) -> Tensor<1> {
    let per_patch = (pred - target).abs().mean_dim(2).squeeze_dim::<2>(2);
    masked_mean(per_patch, mask)
}

/// Mean of `values` `[batch, patches]` weighted by the 0/1 `mask`.
fn masked_mean(values: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    let count = mask.clone().sum().clamp_min(1.0);
    ((values * mask).sum() / count).reshape([1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex())
    }

    fn scalar(x: Tensor<1>) -> f64 {
        x.into_data().try_to_vec::<f32>().unwrap()[0] as f64
    }

    /// MAE's and SimMIM's losses count only masked patches: a visible patch's target can be
    /// anything, a masked one's cannot.
    #[test]
    fn masked_losses_ignore_visible_patches() {
        let device = Device::flex();
        let t3 = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [1, 3, 2]), &device);
        let pred = t3(vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        let target = t3(vec![1.0, 1.0, 1.0, 3.0, 2.0, 2.0]);
        // Patch 0 masked (error 1, 1), patch 1 visible, patch 2 masked (error 0, 0).
        let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 1.0], [1, 3]), &device);
        let mse = scalar(masked_mse(pred.clone(), target.clone(), mask.clone()));
        assert!(
            (mse - 0.5).abs() < 1e-6,
            "mean over 2 masked patches of (1 + 0): {mse}"
        );
        let l1 = scalar(masked_l1(pred.clone(), target.clone(), mask.clone()));
        assert!((l1 - 0.5).abs() < 1e-6, "{l1}");
        let visible_changed = t3(vec![1.0, 1.0, 9.0, -9.0, 2.0, 2.0]);
        assert_eq!(
            scalar(masked_mse(pred.clone(), visible_changed, mask.clone())),
            mse
        );
        let masked_changed = t3(vec![1.0, 1.0, 1.0, 3.0, 2.0, 5.0]);
        assert!(scalar(masked_mse(pred, masked_changed, mask)) > mse);
    }

    /// NT-Xent for N = 2 computed by hand.
    #[test]
    fn nt_xent_matches_hand_computation() {
        let z1 = t(&[[1.0, 0.0], [0.0, 2.0]]);
        let z2 = t(&[[3.0, 4.0], [-1.0, 0.0]]);
        let tau = 0.5;
        // Unit vectors: a=(1,0) b=(0,1) c=(0.6,0.8) d=(-1,0); order [a, b, c, d].
        let v = [[1.0f64, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]];
        let dot = |i: usize, j: usize| v[i][0] * v[j][0] + v[i][1] * v[j][1];
        let mut total = 0.0;
        for i in 0..4 {
            let pos = (i + 2) % 4;
            let denom: f64 = (0..4)
                .filter(|&k| k != i)
                .map(|k| (dot(i, k) / tau).exp())
                .sum();
            total += -(dot(i, pos) / tau - denom.ln());
        }
        let expected = total / 4.0;
        let got = scalar(nt_xent(z1, z2, tau));
        assert!(
            (got - expected).abs() < 1e-5,
            "got {got}, expected {expected}"
        );
    }

    #[test]
    fn nt_xent_rewards_aligned_views() {
        let aligned = scalar(nt_xent(
            t(&[[1.0, 0.0], [0.0, 1.0]]),
            t(&[[1.0, 0.1], [0.1, 1.0]]),
            0.1,
        ));
        let swapped = scalar(nt_xent(
            t(&[[1.0, 0.0], [0.0, 1.0]]),
            t(&[[0.1, 1.0], [1.0, 0.1]]),
            0.1,
        ));
        assert!(aligned < swapped);
    }

    #[test]
    fn normalized_mse_matches_hand_computation() {
        // cos((1,0),(1,1)) = 1/sqrt2; cos((0,1),(0,-3)) = -1.
        let got = scalar(normalized_mse(
            t(&[[1.0, 0.0], [0.0, 1.0]]),
            t(&[[1.0, 1.0], [0.0, -3.0]]),
        ));
        let expected = 2.0 - 2.0 * ((1.0 / 2f64.sqrt()) + -1.0) / 2.0;
        assert!(
            (got - expected).abs() < 1e-5,
            "got {got}, expected {expected}"
        );
    }
}
