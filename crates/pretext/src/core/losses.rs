//! SSL losses, shared by the methods.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

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

/// InfoNCE against a bank of negatives (MoCo): each query `q[i]` is classified among its key
/// `k[i]` (the positive) and every row of `negatives` by cosine similarity / `temperature`.
/// `q` and `k` are normalised here; the bank's rows are unit vectors already.
pub fn info_nce(q: Tensor<2>, k: Tensor<2>, negatives: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [n, _] = q.dims();
    let device = q.device();
    let (q, k) = (l2_normalize(q), l2_normalize(k));
    let positive = (q.clone() * k).sum_dim(1);
    let negative = q.matmul(negatives.transpose());
    let logits = Tensor::cat(vec![positive, negative], 1).div_scalar(temperature);
    cross_entropy(logits, Tensor::<1, Int>::zeros([n], &device))
}

/// Cross-view InfoNCE with in-batch negatives, one direction: row `a[i]` is classified among
/// all rows of `b` by cosine similarity / `temperature`, `b[i]` being the positive (MoCo v3's
/// contrastive loss; NNCLR's, with `a` the nearest neighbours).
pub fn cross_view_info_nce(a: Tensor<2>, b: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [n, _] = a.dims();
    let device = a.device();
    let logits = l2_normalize(a)
        .matmul(l2_normalize(b).transpose())
        .div_scalar(temperature);
    cross_entropy(logits, Tensor::<1, Int>::arange(0..n as i64, &device))
}

/// BYOL's regression loss: `2 - 2 cos(p, z)`, averaged over the batch. The caller decides what
/// is detached (the target branch in BYOL).
pub fn normalized_mse(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    let cos = (l2_normalize(p) * l2_normalize(z)).sum_dim(1);
    cos.mean().mul_scalar(-2.0).add_scalar(2.0).reshape([1])
}

/// BYOL's symmetric loss on both views at once: `p` (predictions) and `z` (target
/// projections) hold view 1's rows then view 2's; each view's prediction regresses the other
/// view's target.
pub fn byol_symmetric(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    let [rows, _] = p.dims();
    let n = rows / 2;
    let (p1, p2) = (p.clone().narrow(0, 0, n), p.narrow(0, n, n));
    let (z1, z2) = (z.clone().narrow(0, 0, n), z.narrow(0, n, n));
    (normalized_mse(p1, z2) + normalized_mse(p2, z1)).div_scalar(2.0)
}

/// SimSiam's loss: the negative cosine similarity of `p` and `z`, averaged over the batch
/// (-1 when aligned). The caller detaches `z` (the stop-gradient).
pub fn negative_cosine(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    (l2_normalize(p) * l2_normalize(z))
        .sum_dim(1)
        .mean()
        .neg()
        .reshape([1])
}

/// Columns standardised over the batch as a batch norm without affine weights does (mean 0,
/// biased variance plus 1e-5 under the root): the paper's code and lightly 1.6's loss.
fn standardize(z: Tensor<2>) -> Tensor<2> {
    let [n, _] = z.dims();
    let mean = z.clone().mean_dim(0);
    let centred = z - mean;
    let var = centred
        .clone()
        .powi_scalar(2)
        .sum_dim(0)
        .div_scalar(n as f64);
    centred / var.add_scalar(1e-5).sqrt()
}

/// The `[d, d]` matrix's diagonal as a 0/1 mask, and its complement.
fn diagonal_masks(d: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let eye = Tensor::<2>::eye(d, device);
    (eye.clone(), eye.neg().add_scalar(1.0))
}

/// Barlow Twins (Zbontar et al. 2021): the cross-correlation of the batch-standardised
/// embeddings `C = z1ᵀ z2 / N` is driven to the identity: `Σ (1 - C_ii)² + λ Σ_{i≠j} C_ij²`.
pub fn barlow_twins(z1: Tensor<2>, z2: Tensor<2>, lambda: f64) -> Tensor<1> {
    let [n, d] = z1.dims();
    let device = z1.device();
    let c = standardize(z1)
        .transpose()
        .matmul(standardize(z2))
        .div_scalar(n as f64);
    let (diag, off) = diagonal_masks(d, &device);
    let on = (c.clone() * diag)
        .sum_dim(1)
        .neg()
        .add_scalar(1.0)
        .powi_scalar(2)
        .sum();
    let off = (c * off).powi_scalar(2).sum().mul_scalar(lambda);
    (on + off).reshape([1])
}

/// VICReg (Bardes et al. 2022), with lightly's weights and normalisations:
/// `λ · MSE(z1, z2) + μ · ½ (v(z1) + v(z2)) + ν · (c(z1) + c(z2))`, where the variance term
/// `v(z) = mean_j relu(1 - sqrt(var_j(z) + ε))` keeps every dimension spread over the batch and
/// `c(z)` is the sum of the squared off-diagonal covariances divided by the dimension.
pub fn vicreg(z1: Tensor<2>, z2: Tensor<2>, lambda: f64, mu: f64, nu: f64) -> Tensor<1> {
    const EPS: f64 = 1e-4;
    let [n, d] = z1.dims();
    let device = z1.device();
    let invariance = (z1.clone() - z2.clone()).powi_scalar(2).mean();
    let variance = |z: Tensor<2>| {
        z.var(0)
            .add_scalar(EPS)
            .sqrt()
            .neg()
            .add_scalar(1.0)
            .clamp_min(0.0)
            .mean()
    };
    let (_, off) = diagonal_masks(d, &device);
    let covariance = |z: Tensor<2>| {
        let centred = z.clone() - z.mean_dim(0);
        let cov = centred
            .clone()
            .transpose()
            .matmul(centred)
            .div_scalar((n - 1) as f64);
        (cov * off.clone())
            .powi_scalar(2)
            .sum()
            .div_scalar(d as f64)
    };
    let var = (variance(z1.clone()) + variance(z2.clone())).mul_scalar(0.5);
    let cov = covariance(z1) + covariance(z2);
    (invariance.mul_scalar(lambda) + var.mul_scalar(mu) + cov.mul_scalar(nu)).reshape([1])
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

/// Cross-entropy against soft targets, summed over classes and averaged over the batch:
/// `-(1/n) Σ_i Σ_c targets[i, c] · log_softmax(logits)[i, c]`. A row of zeros contributes
/// nothing but still counts in `n`, which is how FixMatch averages its masked unlabelled loss
/// (over every unlabelled image, confident or not); soft rows give distillation's loss.
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    (log_softmax(logits, 1) * targets)
        .sum()
        .div_scalar(n.max(1) as f64)
        .neg()
        .reshape([1])
}

/// DINO's loss (Caron et al. 2021): the cross-entropy between the teacher's sharpened, centred
/// distribution over prototypes for each global view and the student's for every other view.
/// `teacher[t]` and `student[s]` are `[batch, prototypes]` logits; the student's first views are
/// the same crops as the teacher's, so pairs with `t == s` are left out. The teacher's side is
/// detached. Averaged over pairs and images, as the authors' code and lightly do.
pub fn dino(
    teacher: &[Tensor<2>],
    student: &[Tensor<2>],
    center: Tensor<2>,
    teacher_temperature: f64,
    student_temperature: f64,
) -> Tensor<1> {
    let [batch, _] = teacher[0].dims();
    let targets: Vec<Tensor<2>> = teacher
        .iter()
        .map(|t| {
            softmax(
                (t.clone().detach() - center.clone()).div_scalar(teacher_temperature),
                1,
            )
        })
        .collect();
    let mut total: Option<Tensor<1>> = None;
    let mut pairs = 0;
    for (s, logits) in student.iter().enumerate() {
        let log_p = log_softmax(logits.clone().div_scalar(student_temperature), 1);
        for (t, target) in targets.iter().enumerate() {
            if t == s {
                continue;
            }
            let term = (target.clone() * log_p.clone()).sum().neg().reshape([1]);
            total = Some(total.map_or(term.clone(), |sum| sum + term));
            pairs += 1;
        }
    }
    let device = teacher[0].device();
    total
        .unwrap_or_else(|| Tensor::zeros([1], &device))
        .div_scalar((pairs.max(1) * batch) as f64)
}

/// Sinkhorn-Knopp (SwAV): soft assignments of the rows of `scores` `[batch, prototypes]` to
/// prototypes such that every prototype gets an equal share of the batch, from
/// `exp(scores / epsilon)` by `iterations` alternating normalisations. Rows sum to 1. No
/// gradient flows through it.
pub fn sinkhorn(scores: Tensor<2>, iterations: usize, epsilon: f64) -> Tensor<2> {
    let [batch, prototypes] = scores.dims();
    // The max is subtracted before exp for range only: it cancels in the first normalisation.
    let scores = scores.detach().div_scalar(epsilon);
    let q = (scores.clone() - scores.max().unsqueeze::<2>()).exp();
    let mut q = q.clone() / q.sum().unsqueeze::<2>();
    for _ in 0..iterations {
        // Each prototype's column sums to 1/K over the batch, then each image's row to 1/B.
        q = q.clone() / q.sum_dim(0).mul_scalar(prototypes as f64);
        q = q.clone() / q.sum_dim(1).mul_scalar(batch as f64);
    }
    q.mul_scalar(batch as f64)
}

/// SwAV's swapped prediction (Caron et al. 2020): for each global view, its Sinkhorn codes
/// (computed with `queue[i]`'s stored scores appended when a queue is given, for a batch too
/// small to spread over the prototypes) are predicted from every other view's scores by a
/// softmax at `temperature`. `global` and `local` are `[batch, prototypes]` scores of
/// L2-normalised embeddings against unit prototypes. Averaged as lightly's `SwaVLoss` does.
pub fn swav(
    global: &[Tensor<2>],
    local: &[Tensor<2>],
    queue: Option<&[Tensor<2>]>,
    temperature: f64,
    iterations: usize,
    epsilon: f64,
) -> Tensor<1> {
    let crops = global.len() + local.len();
    let subloss = |scores: &Tensor<2>, codes: &Tensor<2>| {
        let log_p = log_softmax(scores.clone().div_scalar(temperature), 1);
        (codes.clone() * log_p).sum_dim(1).mean().neg().reshape([1])
    };
    let mut total: Option<Tensor<1>> = None;
    for (i, scores) in global.iter().enumerate() {
        let [batch, _] = scores.dims();
        let codes = match queue.and_then(|q| q.get(i)) {
            Some(stored) => {
                let all = Tensor::cat(vec![scores.clone(), stored.clone()], 0);
                sinkhorn(all, iterations, epsilon).narrow(0, 0, batch)
            }
            None => sinkhorn(scores.clone(), iterations, epsilon),
        };
        let others = global
            .iter()
            .enumerate()
            .filter(|(v, _)| *v != i)
            .map(|(_, s)| s)
            .chain(local);
        let mut sum: Option<Tensor<1>> = None;
        for other in others {
            let term = subloss(other, &codes);
            sum = Some(sum.map_or(term.clone(), |s| s + term));
        }
        let device = scores.device();
        let view_loss = sum
            .unwrap_or_else(|| Tensor::zeros([1], &device))
            .div_scalar((crops.max(2) - 1) as f64);
        total = Some(total.map_or(view_loss.clone(), |t| t + view_loss));
    }
    total
        .expect("swav needs at least one global view")
        .div_scalar(global.len() as f64)
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

    /// Barlow Twins, VICReg and SimSiam's losses against values worked out by hand for N = 2
    /// or 3 rows of two dimensions.
    #[test]
    fn negative_free_losses_match_hand_computation() {
        // z1 = [[1, 2], [3, 0]], z2 = [[2, 1], [0, 3]]. Each column of two values 2 apart has
        // biased variance 1, so it standardises to ±1 (the 1e-5 under the root moves the 5th
        // digit): z1 → [[-1, 1], [1, -1]], z2 → [[1, -1], [-1, 1]], C = z1ᵀ z2 / 2 =
        // [[-1, 1], [1, -1]]. On-diagonal (1 + 1)² twice = 8; off-diagonal 1² twice = 2, times
        // λ = 0.5: 1.
        let z1 = t(&[[1.0, 2.0], [3.0, 0.0]]);
        let z2 = t(&[[2.0, 1.0], [0.0, 3.0]]);
        let bt = scalar(barlow_twins(z1.clone(), z2.clone(), 0.5));
        assert!((bt - 9.0).abs() < 1e-3, "Barlow Twins {bt}");
        // Identical, decorrelated views: C = I, nothing to pay.
        let a = t(&[[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]]);
        let same = scalar(barlow_twins(a.clone(), a, 0.5));
        assert!(same.abs() < 1e-6, "{same}");

        // VICReg on the same pair, λ = μ = ν = 1:
        // invariance: mean of (1-2)², (2-1)², (3-0)², (0-3)² = (1 + 1 + 9 + 9) / 4 = 5;
        // variance: every column has var 2 (unbiased, two values 2 apart) → std sqrt(2.0001)
        // > 1, so the hinge is 0; covariance: z1 centred [[-1, 1], [1, -1]], cov = xᵀx / 1 =
        // [[2, -2], [-2, 2]], off-diagonal squares 4 + 4 = 8, / d = 4; the same for z2: 8.
        let v = scalar(vicreg(z1.clone(), z2.clone(), 1.0, 1.0, 1.0));
        assert!((v - 13.0).abs() < 1e-4, "VICReg {v}");
        // A collapsed branch pays the variance hinge: all rows equal → std sqrt(1e-4) = 0.01.
        let flat = t(&[[1.0, 1.0], [1.0, 1.0]]);
        let v = scalar(vicreg(flat.clone(), flat, 0.0, 1.0, 0.0));
        assert!((v - 0.99).abs() < 1e-4, "variance hinge {v}");

        // SimSiam: rows (1, 0)·(0.6, 0.8) = 0.6 and (0, 1)·(0, 1) = 1 → -(0.6 + 1) / 2.
        let p = t(&[[2.0, 0.0], [0.0, 5.0]]);
        let z = t(&[[3.0, 4.0], [0.0, 1.0]]);
        let s = scalar(negative_cosine(p, z));
        assert!((s + 0.8).abs() < 1e-6, "SimSiam {s}");
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
