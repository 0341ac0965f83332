//! One AdamW update of a flattened parameter in one pass: the parameter, its gradient and both
//! moments read once, the new parameter and moments written once.
//!
//! Why: as tensor ops the update is about a dozen element-wise passes per parameter (scale the
//! gradient, two moment updates, a square, two bias corrections, a square root, a division, the
//! decay, the step), each allocating its output: 8% of a BERT-mini step.
//!
//! The arithmetic is `core::optim`'s, operation for operation and in the same order, so the
//! kernel and the tensor ops agree to the last bit or two (tested there).

use rayon::prelude::*;

use crate::with_avx2;

/// Elements per parallel task.
const TASK: usize = 1 << 15;

/// The step's scalars, already in `f32` as the tensor ops would convert them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamwScalars {
    /// Multiplies the gradient first (gradient clipping); 1 for none.
    pub grad_scale: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 − β₁ᵗ` and `1 − β₂ᵗ`.
    pub bias1: f32,
    pub bias2: f32,
    pub eps: f32,
    pub lr: f32,
    /// `1 − lr·wd`; `None` where the parameter takes no decay.
    pub decay: Option<f32>,
}

with_avx2! {
    #[allow(clippy::too_many_arguments)]
    fn update_chunk(
        p: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        s: &AdamwScalars,
    ) {
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            let g = if s.grad_scale != 1.0 { g * s.grad_scale } else { g };
            *m = *m * s.beta1 + g * s.one_minus_beta1;
            *v = *v * s.beta2 + (g * g) * s.one_minus_beta2;
            let m_hat = *m / s.bias1;
            let v_hat = *v / s.bias2;
            let decayed = match s.decay {
                Some(d) => *p * d,
                None => *p,
            };
            *p = decayed - (m_hat / (v_hat.sqrt() + s.eps)) * s.lr;
        }
    }
}

/// The new `(parameter, first moment, second moment)` from the old ones and the gradient.
pub fn step(
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    s: &AdamwScalars,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = p.len();
    assert!(
        g.len() == n && m.len() == n && v.len() == n,
        "adamw: parameter, gradient and moments differ in size"
    );
    let (mut p, mut m, mut v) = (p.to_vec(), m.to_vec(), v.to_vec());
    p.par_chunks_mut(TASK)
        .zip(m.par_chunks_mut(TASK))
        .zip(v.par_chunks_mut(TASK).zip(g.par_chunks(TASK)))
        .for_each(|((p, m), (v, g))| update_chunk(p, m, v, g, s));
    (p, m, v)
}
