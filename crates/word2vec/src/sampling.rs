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
                    ((p * 4_294_967_296.0) as u64).saturating_sub(1).min(u64::from(u32::MAX)) as u32
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
        if t == u32::MAX { 1.0 } else { (f64::from(t) + 1.0) / 4_294_967_296.0 }
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
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
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
        if (r as u32) < self.prob[i] { i as u32 } else { self.alias[i] }
    }

    /// Exact probability the table gives `word`.
    pub fn probability(&self, word: u32) -> f64 {
        let n = self.prob.len() as f64;
        let mut p = 0.0;
        for i in 0..self.prob.len() {
            let keep = if self.prob[i] == u32::MAX { 1.0 } else { f64::from(self.prob[i]) / 4_294_967_296.0 };
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
