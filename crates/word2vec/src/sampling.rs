//! Sampling tables: subsampling of frequent words and the unigram^0.75 noise distribution.

use crate::rng::Rng;

/// Probability of keeping one occurrence of a word seen `count` times among `train_words`
/// (occurrences of vocabulary words), with threshold `sample`.
///
/// This is word2vec.c's formula, also used by gensim:
/// `p = (sqrt(f / (sample * total)) + 1) * (sample * total) / f`, capped at 1,
/// where `f` is the word's count and `total` is `train_words`. `sample <= 0` keeps everything.
pub fn keep_probability(count: u64, sample: f64, train_words: u64) -> f64 {
    if sample <= 0.0 || count == 0 {
        return 1.0;
    }
    let f = count as f64;
    let t = sample * train_words as f64;
    ((f / t).sqrt() + 1.0) * t / f
}

/// Per-word keep thresholds: an occurrence is kept when a uniform `u32` is `<=` the threshold.
#[derive(Debug, Clone)]
pub struct Subsampler {
    thresholds: Vec<u32>,
}

impl Subsampler {
    /// Thresholds for every word of a vocabulary.
    pub fn new(counts: &[u64], sample: f64) -> Subsampler {
        let total: u64 = counts.iter().sum();
        let thresholds = counts
            .iter()
            .map(|&c| {
                let p = keep_probability(c, sample, total);
                if p >= 1.0 {
                    u32::MAX
                } else {
                    ((p * 4_294_967_296.0) as u64)
                        .saturating_sub(1)
                        .min(u64::from(u32::MAX)) as u32
                }
            })
            .collect();
        Subsampler { thresholds }
    }

    /// Whether to keep this occurrence of `word`.
    #[inline(always)]
    pub fn keep(&self, word: u32, rng: &mut Rng) -> bool {
        let t = self.thresholds[word as usize];
        t == u32::MAX || rng.next_u32() <= t
    }

    /// Keep probability of `word` as the table realises it.
    pub fn probability(&self, word: u32) -> f64 {
        let t = self.thresholds[word as usize];
        if t == u32::MAX {
            1.0
        } else {
            (f64::from(t) + 1.0) / 4_294_967_296.0
        }
    }
}

/// The noise distribution of negative sampling, `P(w) ∝ count(w)^power` (power 0.75), stored as
/// a Walker/Vose alias table: exact, O(1) per sample, 8 bytes per word (word2vec.c's table
/// approximates the same distribution with 10^8 ints = 400 MB, gensim bisects a cumulative table).
#[derive(Debug, Clone)]
pub struct UnigramTable {
    prob: Vec<u32>,
    alias: Vec<u32>,
}

impl UnigramTable {
    /// Table for `counts^power`.
    pub fn new(counts: &[u64], power: f64) -> UnigramTable {
        let n = counts.len();
        let w: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(power)).collect();
        let z: f64 = w.iter().sum();
        let mut scaled: Vec<f64> = w.iter().map(|x| x / z * n as f64).collect();
        let mut prob = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = (scaled[s] * 4_294_967_296.0).min(4_294_967_295.0) as u32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers (rounding) keep probability 1 of themselves.
        UnigramTable { prob, alias }
    }

    /// Draws one word.
    #[inline(always)]
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let r = rng.next_u64();
        let n = self.prob.len() as u64;
        let i = (((r >> 32) * n) >> 32) as usize;
        // `i < n` by construction (multiply-shift of a 32-bit fraction by n).
        if (r as u32) < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }

    /// Exact probability the table gives `word`.
    pub fn probability(&self, word: u32) -> f64 {
        let n = self.prob.len() as f64;
        let mut p = 0.0;
        for i in 0..self.prob.len() {
            let keep = if self.prob[i] == u32::MAX {
                1.0
            } else {
                f64::from(self.prob[i]) / 4_294_967_296.0
            };
            if i as u32 == word {
                p += keep / n;
            }
            if self.alias[i] == word && self.alias[i] != i as u32 {
                p += (1.0 - keep) / n;
            }
        }
        p
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.prob.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.prob.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsampling_formula() {
        // f = 10_000 of total 1_000_000, sample 1e-3: t = 1000, p = (sqrt(10) + 1) * 0.1.
        let p = keep_probability(10_000, 1e-3, 1_000_000);
        assert!((p - (10f64.sqrt() + 1.0) * 0.1).abs() < 1e-12);
        // Rare words are always kept (p >= 1), sample 0 disables.
        assert!(keep_probability(10, 1e-3, 1_000_000) > 1.0);
        assert_eq!(keep_probability(10_000, 0.0, 1_000_000), 1.0);
        // The table realises the probability.
        let counts = [10_000u64, 5_000, 985_000];
        let s = Subsampler::new(&counts, 1e-3);
        let mut rng = Rng::new(5, 0);
        for w in 0..3u32 {
            let expected = keep_probability(counts[w as usize], 1e-3, 1_000_000).min(1.0);
            assert!((s.probability(w) - expected).abs() < 1e-9);
            let n = 200_000;
            let kept = (0..n).filter(|_| s.keep(w, &mut rng)).count() as f64 / n as f64;
            assert!(
                (kept - expected).abs() < 0.005,
                "word {w}: kept {kept}, expected {expected}"
            );
        }
    }

    #[test]
    fn unigram_table_distribution() {
        let counts: Vec<u64> = vec![1000, 500, 200, 100, 50, 20, 10, 5, 2, 1];
        let t = UnigramTable::new(&counts, 0.75);
        let z: f64 = counts.iter().map(|&c| (c as f64).powf(0.75)).sum();
        let mut rng = Rng::new(9, 0);
        let n = 2_000_000;
        let mut hist = vec![0u64; counts.len()];
        for _ in 0..n {
            hist[t.sample(&mut rng) as usize] += 1;
        }
        for (w, &c) in counts.iter().enumerate() {
            let p = (c as f64).powf(0.75) / z;
            assert!(
                (t.probability(w as u32) - p).abs() < 1e-8,
                "exact table, word {w}"
            );
            let freq = hist[w] as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (freq - p).abs() < 5.0 * sd + 1e-6,
                "word {w}: {freq} vs {p}"
            );
        }
        // 0.75 flattens: the rarest word is drawn far more often than its unigram share.
        assert!(t.probability(9) > 1.0 / counts.iter().sum::<u64>() as f64 * 3.0);
    }
}
