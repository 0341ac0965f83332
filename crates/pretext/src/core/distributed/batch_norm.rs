//! Synchronised batch norm (`train.sync_batchnorm`) in burn's tensor ops: the batch statistics
//! of every rank's rows together, so that N ranks normalise as one process does on the whole
//! global batch. On flex, training takes pretext's batch-norm kernel instead, whose per-channel
//! sums are all-reduced between its passes ([`super::sum_over_ranks`]); this is the path of the
//! other devices and of `PRETEXT_KERNELS=off`, and the tests' second opinion.
//! Each rank sums its rows, the sums travel through [`gather_rows`]'s differentiable gather,
//! and the gradient reaches every rank's inputs through the statistics as it would in one
//! process. Two small all-reduces per layer (the mean, then the centred squares, as the
//! single-process kernel computes the variance in two passes).

use burn::prelude::*;

use super::sum_rows_over_ranks;

/// Batch norm in training mode over the global batch: the output, and the per-channel mean
/// and biased variance (for the running statistics, which therefore agree on every rank).
/// `x` is `[batch, channels, ...]`.
pub fn batch_norm_over_ranks<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let dims = x.dims();
    let (batch, channels) = (dims[0], dims[1]);
    let spatial = dims[2..].iter().product::<usize>();
    // [batch, channels, ...] -> [batch * positions, channels]
    let rows: Tensor<2> = x
        .reshape([batch, channels, spatial])
        .swap_dims(1, 2)
        .reshape([batch * spatial, channels]);
    let total = (batch * spatial * super::world().size) as f64;
    let mean = sum_rows_over_ranks(rows.clone().sum_dim(0)).div_scalar(total);
    let centred = rows - mean.clone();
    let variance = sum_rows_over_ranks(centred.clone().powi_scalar(2).sum_dim(0)).div_scalar(total);
    let normalised = centred / variance.clone().add_scalar(epsilon).sqrt();
    let out = normalised * gamma.reshape([1, channels]) + beta.reshape([1, channels]);
    let out = out
        .reshape([batch, spatial, channels])
        .swap_dims(1, 2)
        .reshape(dims);
    (out, mean.reshape([channels]), variance.reshape([channels]))
}

#[cfg(test)]
mod tests {
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;

    use super::*;

    /// In one process the synchronised form is ordinary batch norm: output, the gradients of
    /// the input, γ and β, and the statistics equal burn's `BatchNorm` in training mode.
    #[test]
    fn one_process_equals_burns_batch_norm() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let norm = BatchNormConfig::new(4).init(&device);
        let x = Tensor::<4>::random([8, 4, 7, 6], Distribution::Normal(0.5, 2.0), &device);
        let r = Tensor::<4>::random(x.dims(), Distribution::Normal(0.0, 1.0), &device);
        let run = |synced: bool| {
            let x = x.clone().detach().require_grad();
            let (gamma, beta) = (norm.gamma.val(), norm.beta.val());
            let y = if synced {
                batch_norm_over_ranks(x.clone(), gamma.clone(), beta.clone(), norm.epsilon).0
            } else {
                norm.forward(x.clone())
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let values = |t: Tensor<4>| {
                t.inner()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap_or_default()
            };
            [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(gamma.grad(&grads).unwrap().reshape([1, 4, 1, 1])),
                values(beta.grad(&grads).unwrap().reshape([1, 4, 1, 1])),
            ]
        };
        let (synced, reference) = (run(true), run(false));
        for (what, (a, b)) in ["output", "dx", "dgamma", "dbeta"]
            .iter()
            .zip(synced.iter().zip(&reference))
        {
            let worst = a
                .iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            let size = b.iter().map(|q| q.abs()).fold(1f32, f32::max);
            assert!(
                worst < 1e-5 * size,
                "{what}: differs from burn's by {worst}"
            );
        }
    }
}
