//! A tiny, fast, seedable random number generator (wyrand).
//!
//! word2vec.c uses a 64-bit LCG; wyrand costs the same (one 64x64->128 multiply) and has
//! much better low bits, which matters because we use the low 32 bits for subsampling and
//! alias-table coin flips. Fully deterministic for a given seed.

/// wyrand generator. Not cryptographic.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose stream depends only on `seed` (and `stream`, e.g. a thread index).
    pub fn new(seed: u64, stream: u64) -> Self {
        // SplitMix64-style scrambling so that nearby seeds give unrelated streams.
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng { state: z }
    }

    /// Next 64 random bits.
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xA076_1D64_78BD_642F);
        let t = u128::from(self.state).wrapping_mul(u128::from(self.state ^ 0xE703_7ED1_A0B4_28DB));
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Next 32 random bits.
    #[inline(always)]
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift; bias < n / 2^32, irrelevant here).
    #[inline(always)]
    pub fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u32()) * u64::from(n)) >> 32) as u32
    }

    /// Uniform float in `[0, 1)`.
    #[inline(always)]
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_roughly_uniform() {
        let mut a = Rng::new(7, 0);
        let mut b = Rng::new(7, 0);
        let mut c = Rng::new(7, 1);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut hist = [0u32; 10];
        for _ in 0..100_000 {
            hist[a.below(10) as usize] += 1;
        }
        for h in hist {
            assert!((9_500..10_500).contains(&h), "{hist:?}");
        }
        let mean: f64 = (0..100_000).map(|_| f64::from(a.next_f32())).sum::<f64>() / 1e5;
        assert!((mean - 0.5).abs() < 0.01);
    }
}
