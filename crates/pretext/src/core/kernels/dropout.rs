//! Dropout whose mask comes from a counter-based generator: element `i` is kept when a hash of
//! `(key, i)` clears a threshold. The mask needs no random stream walked in order and no stored
//! state: the backward recomputes it from the key, and any thread can draw any element.
//!
//! Why: burn's dropout draws a Bernoulli tensor from its sequential generator and multiplies
//! twice, each step recorded for the backward; in BERT-mini that sampling alone was 8.5% of a
//! training step (attention probabilities are 16x4x128x128 per layer).
//!
//! The key is drawn from the device's random stream, which the training loop seeds from (seed,
//! step, micro-batch), so the same seed gives the same masks, also after `--resume`.
//!
//! The hash is two rounds of MurmurHash3's 32-bit finaliser, keyed by the two halves of the key:
//! each round is a bijection of `u32`, so distinct elements get distinct words, and 32-bit
//! multiplies and shifts vectorise on every x86-64 (AVX2 `vpmulld`).

use rayon::prelude::*;

use crate::with_avx2;

/// Elements per parallel task: large enough that scheduling costs nothing.
const TASK: usize = 1 << 14;

/// MurmurHash3's 32-bit finaliser.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A random 24-bit number for element `index` under `key`.
#[inline(always)]
fn draw(key: u64, index: u32) -> u32 {
    let (low, high) = (key as u32, (key >> 32) as u32);
    fmix32(fmix32(index ^ low) ^ high) >> 8
}

/// What to multiply the kept elements by and the 24-bit threshold under which an element is
/// dropped: `round(prob·2²⁴)`, so the drop probability is `prob` to within 6e-8.
fn scale_and_threshold(prob: f64) -> (f32, u32) {
    assert!(
        (0.0..1.0).contains(&prob),
        "dropout: probability {prob} not in [0, 1)"
    );
    let threshold = (prob * (1u64 << 24) as f64).round() as u32;
    let kept = 1.0 - threshold as f64 / (1u64 << 24) as f64;
    ((1.0 / kept) as f32, threshold)
}

/// `y_i = x_i / (1 − p)` where element `i` is kept, 0 where it is dropped. The backward is the
/// same map applied to the output gradient with the same key.
/// `first` is the index of `x[0]` in the draw.
pub fn apply(x: &[f32], key: u64, first: u32, prob: f64) -> Vec<f32> {
    assert!(
        x.len() <= u32::MAX as usize,
        "dropout: more than 2^32 elements in one tensor"
    );
    let mut y = x.to_vec();
    y.par_chunks_mut(TASK).enumerate().for_each(|(task, y)| {
        apply_in_place(y, key, prob, first.wrapping_add((task * TASK) as u32))
    });
    y
}

with_avx2! {
    /// [`apply`] in place to a run of elements whose first has index `first` in the tensor the
    /// mask is drawn for (the fused attention drops one head's probabilities at a time).
    pub fn apply_in_place(values: &mut [f32], key: u64, prob: f64, first: u32) {
        let (scale, threshold) = scale_and_threshold(prob);
        for (i, v) in values.iter_mut().enumerate() {
            let keep = draw(key, first.wrapping_add(i as u32)) >= threshold;
            *v = if keep { *v * scale } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(y: &[f32]) -> Vec<bool> {
        y.iter().map(|&v| v != 0.0).collect()
    }

    /// The share dropped is the probability (binomial 5 sigma), kept values are scaled by
    /// 1/(1 − p), and neighbouring elements are independent: both of a pair kept (1 − p)².
    #[test]
    fn drops_the_stated_share_independently_and_rescales_the_rest() {
        let n = 200_000;
        let x = vec![1.0f32; n];
        for prob in [0.1, 0.5, 0.9] {
            let y = apply(&x, 0xDEAD_BEEF_1234, 0, prob);
            let keep = kept(&y);
            let share = keep.iter().filter(|&&k| k).count() as f64 / n as f64;
            let sigma = (prob * (1.0 - prob) / n as f64).sqrt();
            assert!(
                (share - (1.0 - prob)).abs() < 5.0 * sigma,
                "p = {prob}: kept {share}"
            );
            for &v in y.iter().filter(|&&v| v != 0.0) {
                assert!((v as f64 - 1.0 / (1.0 - prob)).abs() < 1e-5);
            }
            let pairs = keep.windows(2).filter(|w| w[0] && w[1]).count() as f64 / (n - 1) as f64;
            let expect = (1.0 - prob) * (1.0 - prob);
            assert!((pairs - expect).abs() < 0.01, "p = {prob}: pairs {pairs}");
        }
    }

    /// The mask is a function of the key alone: the same key gives the same mask on any
    /// input (which is what lets the backward recompute it), another key another mask.
    #[test]
    fn the_key_decides_the_mask() {
        let n = 50_000;
        let ones = vec![1.0f32; n];
        let other: Vec<f32> = (0..n).map(|i| 1.0 + i as f32).collect();
        let a = kept(&apply(&ones, 7, 0, 0.5));
        assert_eq!(a, kept(&apply(&other, 7, 0, 0.5)));
        let b = kept(&apply(&ones, 8, 0, 0.5));
        let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / n as f64;
        assert!((agree - 0.5).abs() < 0.02, "keys 7 and 8 agree on {agree}");
        // Keys that differ only in their upper half also differ.
        let c = kept(&apply(&ones, 7 | (1 << 40), 0, 0.5));
        assert_ne!(a, c);
    }

    /// Two halves drawn with the second's first index after the first's give the whole
    /// tensor's mask (what each rank draws for its share of a global batch under MPI), with
    /// task boundaries falling elsewhere in the halves than in the whole.
    #[test]
    fn halves_drawn_from_their_first_index_equal_the_whole() {
        let x: Vec<f32> = (0..3 * TASK + 1234).map(|i| i as f32).collect();
        let whole = apply(&x, 0x5EED, 0, 0.3);
        let half = 40_001;
        let mut joined = apply(&x[..half], 0x5EED, 0, 0.3);
        joined.extend(apply(&x[half..], 0x5EED, half as u32, 0.3));
        assert_eq!(joined, whole);
        assert_ne!(apply(&x[half..], 0x5EED, 0, 0.3), whole[half..]);
    }

    #[test]
    fn a_probability_outside_zero_to_one_is_refused() {
        assert!(std::panic::catch_unwind(|| apply(&[1.0], 1, 0, 1.0)).is_err());
        assert_eq!(apply(&[2.0, -3.0], 1, 0, 0.0), vec![2.0, -3.0]);
    }
}
