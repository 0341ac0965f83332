//! A fully connected layer on rows, `y[rows × out] = x[rows × in] · W[in × out] + b`, `f32`,
//! in burn's `Linear` layout (the weight stored `[in, out]`).
//!
//! Why not burn-flex's: every matrix product there allocates its output zeroed and then copies
//! it into a second, aligned buffer (two extra passes over the output, on fresh pages), the
//! bias is one more pass into one more buffer, and the backward transposes and sums in
//! separate ops. In a ViT those passes cost as much as the products. Here:
//!
//! - forward: the bias is where the sums start (AVX-512's register tiles, `head_products.rs`),
//!   or written into the output's rows for one `gemm` product to accumulate onto;
//! - input gradient: `dx = dy · Wᵀ`, weight gradient: `dW = xᵀ · dy` (on `gemm` the transposes
//!   are strides: nothing is copied);
//! - bias gradient: `db = Σ_rows dy`, summed in row order, so it does not depend on the
//!   threads (the products split their output among threads, never a sum); on AVX-512 while
//!   the weight gradient reads `dy`.

use gemm::Parallelism;

use super::head_products::{dense_product, weight_gradient};
use super::matmul::{matmul, matmul_new};
use crate::with_avx2;

/// Products below this many multiply-adds run on one thread (splitting costs more).
const PARALLEL_WORK: usize = 1 << 18;

/// The problem's sizes: `rows` input rows of `input` features mapped to `output` features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub input: usize,
    pub output: usize,
}

fn parallelism(work: usize) -> Parallelism {
    if work < PARALLEL_WORK || rayon::current_num_threads() < 2 {
        Parallelism::None
    } else {
        Parallelism::Rayon(rayon::current_num_threads())
    }
}

/// `x · W + b`, row-major `[rows, output]`.
pub fn forward(x: &[f32], w: &[f32], b: &[f32], s: LinearShape) -> Vec<f32> {
    let LinearShape {
        rows,
        input,
        output,
    } = s;
    assert_eq!(x.len(), rows * input, "linear: input of the wrong size");
    assert_eq!(w.len(), input * output, "linear: weight of the wrong size");
    assert_eq!(b.len(), output, "linear: bias of the wrong size");
    let parallel = !matches!(parallelism(rows * input * output), Parallelism::None);
    if let Some(y) = dense_product(x, w, false, Some(b), [rows, output, input], parallel) {
        return y;
    }
    let mut y = Vec::with_capacity(rows * output);
    for _ in 0..rows {
        y.extend_from_slice(b);
    }
    matmul(
        &mut y,
        true,
        (x, input, 1),
        (w, output, 1),
        [rows, output, input],
        parallelism(rows * input * output),
    );
    y
}

/// `(dx, dW, db)`, each present when asked for.
pub type LinearGradients = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

/// The gradients `(dx, dW, db)` of `x · W + b` for the upstream gradient `dy`, each only when
/// `want` asks for it.
pub fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    s: LinearShape,
    want: [bool; 3],
) -> LinearGradients {
    let LinearShape {
        rows,
        input,
        output,
    } = s;
    assert_eq!(
        dy.len(),
        rows * output,
        "linear: gradient of the wrong size"
    );
    let par = parallelism(rows * input * output);
    // dy[rows × out] · Wᵀ[out × in]: Wᵀ's row stride is 1, its column stride `output`.
    let parallel = !matches!(par, Parallelism::None);
    let dx = want[0].then(|| {
        dense_product(dy, w, true, None, [rows, input, output], parallel).unwrap_or_else(|| {
            matmul_new((dy, output, 1), (w, 1, output), [rows, input, output], par)
        })
    });
    // xᵀ[in × rows] · dy[rows × out], the bias gradient summed as `dy` goes by.
    let fast = want[1]
        .then(|| weight_gradient(x, dy, [rows, output, input], want[2], parallel))
        .flatten();
    let (dw, db) = match fast {
        Some((dw, db)) => (Some(dw), db),
        None => (
            want[1].then(|| matmul_new((x, 1, input), (dy, output, 1), [input, output, rows], par)),
            want[2].then(|| sum_rows(dy, output)),
        ),
    };
    (dx, dw, db)
}

with_avx2! {
    /// The sum of `x`'s rows of `width`, in row order (vectorised across the columns).
    fn sum_rows(x: &[f32], width: usize) -> Vec<f32> {
        let mut sum = vec![0.0; width];
        for row in x.chunks_exact(width) {
            sum.iter_mut().zip(row).for_each(|(acc, g)| *acc += g);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 1.3).fract())
            .collect()
    }

    const SHAPE: LinearShape = LinearShape {
        rows: 7,
        input: 5,
        output: 3,
    };

    /// Forward and the three gradients against the definitions, written out as loops.
    #[test]
    fn matches_the_definitions() {
        let LinearShape {
            rows,
            input,
            output,
        } = SHAPE;
        let (x, w, b, dy) = (
            data(rows * input, 0.1),
            data(input * output, 0.2),
            data(output, 0.3),
            data(rows * output, 0.4),
        );
        let y = forward(&x, &w, &b, SHAPE);
        let (dx, dw, db) = backward(&x, &w, &dy, SHAPE, [true; 3]);
        let (dx, dw, db) = (dx.unwrap(), dw.unwrap(), db.unwrap());
        let close =
            |a: f32, b: f32, what: &str| assert!((a - b).abs() < 1e-5, "{what}: {a} vs {b}");
        for r in 0..rows {
            for o in 0..output {
                let want = b[o]
                    + (0..input)
                        .map(|i| x[r * input + i] * w[i * output + o])
                        .sum::<f32>();
                close(y[r * output + o], want, "y");
            }
            for i in 0..input {
                let want = (0..output)
                    .map(|o| dy[r * output + o] * w[i * output + o])
                    .sum::<f32>();
                close(dx[r * input + i], want, "dx");
            }
        }
        for i in 0..input {
            for o in 0..output {
                let want = (0..rows)
                    .map(|r| x[r * input + i] * dy[r * output + o])
                    .sum::<f32>();
                close(dw[i * output + o], want, "dw");
            }
        }
        for o in 0..output {
            close(db[o], (0..rows).map(|r| dy[r * output + o]).sum(), "db");
        }
        // Only what is asked for is computed.
        let (none_x, some_w, none_b) = backward(&x, &w, &dy, SHAPE, [false, true, false]);
        assert!(none_x.is_none() && none_b.is_none());
        assert_eq!(some_w.unwrap(), dw);
    }

    /// Large enough to split among threads: the same bits with 1 and 3 threads.
    #[test]
    fn results_do_not_depend_on_the_threads() {
        let s = LinearShape {
            rows: 600,
            input: 96,
            output: 80,
        };
        let (x, w, b, dy) = (
            data(s.rows * s.input, 0.5),
            data(s.input * s.output, 0.6),
            data(s.output, 0.7),
            data(s.rows * s.output, 0.8),
        );
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| (forward(&x, &w, &b, s), backward(&x, &w, &dy, s, [true; 3])))
        };
        assert_eq!(run(1), run(3));
    }
}
