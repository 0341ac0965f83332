//! The differentiable collectives under a real `mpirun` (built with `--features mpi`): each test
//! starts itself on two ranks and checks, on every rank, the gradient the collective hands back
//! against one computed by hand or by one process on the whole batch.
#![cfg(feature = "mpi")]

use std::process::Command;

use burn::nn::BatchNormConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use pretext::core::distributed::{self, World, batch_norm_over_ranks, gather_rows};
use pretext::core::kernels::BatchNormForward;

const RANKS: usize = 2;

/// Run `test` on [`RANKS`] ranks: outside `mpirun`, start this test binary under it (filtered
/// to `name`) and require success; inside, join the job and run the check.
fn on_ranks(name: &str, test: impl FnOnce(World)) {
    if std::env::var("OMPI_COMM_WORLD_SIZE").is_err() {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np"])
            .arg(RANKS.to_string())
            .arg(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .output()
            .expect("mpirun (apt-get install openmpi-bin)");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} under mpirun failed:\n{text}");
        // Each rank's harness reports its own pass: both ran the check.
        assert_eq!(text.matches("1 passed").count(), RANKS, "{text}");
        return;
    }
    let _session = distributed::init().unwrap();
    let world = distributed::world();
    assert_eq!(world.size, RANKS);
    test(world);
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Rank r holds rows x_r and computes L_r = Σ G ⊙ W_r over the gathered G. The gradient each
/// rank receives for its rows is Σ_q W_q at those rows (every rank's loss depends on them),
/// not only its own W_r (lightly#1528's mistake).
#[test]
fn the_gathers_gradient_is_the_sum_of_every_ranks_loss_gradient() {
    on_ranks(
        "the_gathers_gradient_is_the_sum_of_every_ranks_loss_gradient",
        |world| {
            let device = Device::flex().autodiff();
            let (rows, dim) = (2, 3);
            let x_of = |r: usize| {
                let v: Vec<f32> = (0..rows * dim).map(|i| (10 * r + i) as f32).collect();
                Tensor::<2>::from_data(TensorData::new(v, [rows, dim]), &device)
            };
            let w_of = |r: usize| {
                let v: Vec<f32> = (0..RANKS * rows * dim)
                    .map(|i| ((i + 1) * (r + 2)) as f32 * 0.5)
                    .collect();
                Tensor::<2>::from_data(TensorData::new(v, [RANKS * rows, dim]), &device)
            };
            let x = x_of(world.rank).require_grad();
            let gathered = gather_rows(x.clone());
            let all: Vec<f32> = (0..RANKS).flat_map(|r| values(x_of(r))).collect();
            assert_eq!(values(gathered.clone().inner()), all, "rows in rank order");
            let grads = (gathered * w_of(world.rank)).sum().backward();
            let dx = values(x.grad(&grads).unwrap());
            let expected: Vec<f32> = (0..rows * dim)
                .map(|i| {
                    (0..RANKS)
                        .map(|q| values(w_of(q))[world.rank * rows * dim + i])
                        .sum()
                })
                .collect();
            assert_eq!(dx, expected, "rank {}", world.rank);
        },
    );
}

/// Synchronised batch norm on two ranks' halves of a batch equals burn's batch norm on the
/// whole batch in one process: each rank's output rows, the gradients of its input rows, and
/// the sum over ranks of the γ and β gradients. Twice: with each rank's loss on its own rows,
/// and with every rank computing the whole batch's loss on gathered rows (as SimCLR does),
/// where each rank's gradients are N times its share and the loop's average restores them.
#[test]
fn synchronised_batch_norm_on_halves_equals_batch_norm_on_the_whole_batch() {
    on_ranks(
        "synchronised_batch_norm_on_halves_equals_batch_norm_on_the_whole_batch",
        |world| {
            distributed::set_sync_batchnorm(true);
            for kernel in [true, false] {
                for gathered_loss in [false, true] {
                    synchronised_batch_norm(world, kernel, gathered_loss);
                }
            }
        },
    );
}

/// `kernel`: the layer's own forward (pretext's batch-norm kernel, its sums all-reduced), as
/// training runs it; otherwise the same in burn's tensor ops (`PRETEXT_KERNELS=off`).
fn synchronised_batch_norm(world: World, kernel: bool, gathered_loss: bool) {
    let device = Device::flex().autodiff();
    device.seed(11);
    let (batch, channels, h, w) = (6, 4, 5, 3);
    let norm = BatchNormConfig::new(channels).init(&device);
    // Every rank draws the same whole batch and weights from the same seed.
    let x = Tensor::<4>::random(
        [batch, channels, h, w],
        Distribution::Normal(0.3, 2.0),
        &device,
    );
    let r = Tensor::<4>::random(x.dims(), Distribution::Normal(0.0, 1.0), &device);
    let share = batch / RANKS;
    let own = |t: Tensor<4>| t.narrow(0, world.rank * share, share);

    let whole = x.clone().detach().require_grad();
    let y = norm.forward(whole.clone());
    let grads = (y.clone() * r.clone()).sum().backward();
    let reference = (
        values(own(y.inner())),
        values(own(whole.grad(&grads).unwrap())),
        values(norm.gamma.val().grad(&grads).unwrap()),
        values(norm.beta.val().grad(&grads).unwrap()),
    );

    let part = own(x).detach().require_grad();
    let (gamma, beta) = (norm.gamma.val(), norm.beta.val());
    let y = if kernel {
        norm.forward_fast(part.clone())
    } else {
        batch_norm_over_ranks(part.clone(), gamma.clone(), beta.clone(), norm.epsilon).0
    };
    let loss = if gathered_loss {
        let rows = gather_rows(y.clone().reshape([share, channels * h * w]));
        (rows * r.reshape([batch, channels * h * w])).sum()
    } else {
        (y.clone() * own(r)).sum()
    };
    let grads = loss.backward();
    // Gradients as the loop averages them: every rank's loss counts 1/N.
    let scale = if gathered_loss { RANKS as f32 } else { 1.0 };
    let own_share = |g: Tensor<4>| values(g).iter().map(|v| v / scale).collect::<Vec<_>>();
    let summed = |g: Tensor<1>| {
        let mut v = values(g);
        world.sum(&mut v);
        v.iter().map(|v| v / scale).collect::<Vec<_>>()
    };
    let synced = (
        values(y.inner()),
        own_share(part.grad(&grads).unwrap()),
        summed(gamma.grad(&grads).unwrap()),
        summed(beta.grad(&grads).unwrap()),
    );
    let close = |what: &str, a: &[f32], b: &[f32]| {
        let worst = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        let size = b.iter().map(|q| q.abs()).fold(1f32, f32::max);
        assert!(
            worst < 1e-5 * size,
            "rank {} (kernel: {kernel}, gathered loss: {gathered_loss}): {what} differs by {worst}",
            world.rank
        );
    };
    close("output", &synced.0, &reference.0);
    close("input gradient", &synced.1, &reference.1);
    close("gamma gradient", &synced.2, &reference.2);
    close("beta gradient", &synced.3, &reference.3);
}

/// Two synchronised batch norms in a row (4-D, then 2-D after pooling and a linear map, as a
/// CNN and its projection head), the whole batch's loss on gathered rows: each rank's input
/// gradient is N times one process's on the whole batch.
#[test]
fn stacked_synchronised_batch_norms_equal_one_process() {
    on_ranks(
        "stacked_synchronised_batch_norms_equal_one_process",
        |world| {
            distributed::set_sync_batchnorm(true);
            let device = Device::flex().autodiff();
            device.seed(12);
            let (batch, channels, hidden, h, w) = (8, 4, 5, 3, 3);
            let first = BatchNormConfig::new(channels).init(&device);
            let second = BatchNormConfig::new(hidden).init(&device);
            let x = Tensor::<4>::random(
                [batch, channels, h, w],
                Distribution::Normal(0.3, 2.0),
                &device,
            );
            let m =
                Tensor::<2>::random([channels, hidden], Distribution::Normal(0.0, 1.0), &device);
            let r = Tensor::<2>::random([batch, hidden], Distribution::Normal(0.0, 1.0), &device);
            let share = batch / RANKS;
            let net = |x: Tensor<4>, synced: bool| -> Tensor<2> {
                let norm4 = |x: Tensor<4>| {
                    // The kernel synchronised, as training runs it.
                    if synced {
                        first.forward_fast(x)
                    } else {
                        first.forward(x)
                    }
                };
                let y = burn::tensor::activation::relu(norm4(x));
                let [b, c, _, _] = y.dims();
                let pooled: Tensor<2> = y.reshape([b, c, h * w]).mean_dim(2).reshape([b, c]);
                let pre = pooled.matmul(m.clone());
                if synced {
                    batch_norm_over_ranks(
                        pre,
                        second.gamma.val(),
                        second.beta.val(),
                        second.epsilon,
                    )
                    .0
                } else {
                    second.forward(pre)
                }
            };
            // Two views, as SimCLR's: the batch holds view 1 then view 2 of the same images; each
            // rank holds its images' two views, and the loss pairs the views' rows.
            let views =
                |x: Tensor<4>| Tensor::cat(vec![x.clone(), x.mul_scalar(-0.5).add_scalar(0.2)], 0);
            let loss = |z1: Tensor<2>, z2: Tensor<2>| {
                (z1.clone() * r.clone()).sum()
                    + (z1 * z2.clone()).sum()
                    + (z2.powi_scalar(2) * r.clone()).sum()
            };
            let halves = |z: Tensor<2>| {
                let n = z.dims()[0] / 2;
                (z.clone().narrow(0, 0, n), z.narrow(0, n, n))
            };
            let whole = x.clone().detach().require_grad();
            let (z1, z2) = halves(net(views(whole.clone()), false));
            let grads = loss(z1, z2).backward();
            let reference = values(whole.grad(&grads).unwrap().narrow(
                0,
                world.rank * share,
                share,
            ));

            let part = x
                .narrow(0, world.rank * share, share)
                .detach()
                .require_grad();
            let (z1, z2) = halves(net(views(part.clone()), true));
            let grads = loss(gather_rows(z1), gather_rows(z2)).backward();
            let got: Vec<f32> = values(part.grad(&grads).unwrap())
                .iter()
                .map(|v| v / RANKS as f32)
                .collect();
            let worst = got
                .iter()
                .zip(&reference)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            let size = reference.iter().map(|q| q.abs()).fold(1f32, f32::max);
            assert!(
                worst < 1e-5 * size,
                "rank {}: input gradient differs by {worst}",
                world.rank
            );
        },
    );
}
