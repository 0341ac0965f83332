//! The Hogwild trainer: skip-gram and CBOW with negative sampling and/or hierarchical softmax.
//!
//! Threads take chunks (byte ranges of up to 1 MiB) of the corpus file from a shared queue in
//! file order, stream them from disk, and update the shared weight matrices without locks, as
//! word2vec.c (which gives each thread one fixed byte range) does. The learning rate decays
//! linearly from `alpha` to `min_alpha` with the number of corpus words processed by all
//! threads (a shared atomic counter, updated every 10,000 words). With one thread and a given
//! seed the result is fully deterministic.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::corpus::{self, MAX_SENTENCE_WORDS, RawEvent};
use crate::format::Embeddings;
use crate::huffman::Huffman;
use crate::rng::Rng;
use crate::sampling::{Subsampler, UnigramTable};
use crate::simd::{self, Isa, LANE, Lane};
use crate::subwords::Subwords;
use crate::vocab::{Vocab, WordIds};
pub(crate) use crate::weights::Matrix;
use crate::weights::{Hogwild, HotRows};

/// Model architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Skip-gram: each context word predicts the centre word.
    SkipGram,
    /// Continuous bag of words: the context (mean or sum) predicts the centre word.
    Cbow,
}

impl Arch {
    /// `"skip-gram"` or `"cbow"`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::SkipGram => "skip-gram",
            Arch::Cbow => "cbow",
        }
    }
}

/// Training options (defaults as gensim: skip-gram aside, which is gensim's `sg=1`).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Skip-gram or CBOW.
    pub arch: Arch,
    /// Vector size.
    pub dim: usize,
    /// Maximum window (each word draws its own window in `1..=window`).
    pub window: usize,
    /// Negative samples per positive example (0 = none).
    pub negative: usize,
    /// Hierarchical softmax.
    pub hs: bool,
    /// Subsampling threshold (0 = off).
    pub sample: f64,
    /// Initial learning rate.
    pub alpha: f32,
    /// Final learning rate.
    pub min_alpha: f32,
    /// Passes over the corpus.
    pub epochs: usize,
    /// Worker threads.
    pub threads: usize,
    /// Seed of every random choice (initial weights, windows, subsampling, negatives).
    pub seed: u64,
    /// CBOW: mean of the context vectors (true) or their sum.
    pub cbow_mean: bool,
    /// Skip-gram with negative sampling: the context words of a window share one draw of noise
    /// words, so a window's updates become small matrix products over rows read once (pWord2Vec's
    /// HogBatch, Ji et al. 2016) instead of one dot product per word pair and noise word.
    pub shared_negatives: bool,
    /// With several threads, each trains private copies of the input and output rows of this
    /// many most frequent words and merges its changes into the shared rows every 50,000 words
    /// it reads, instead of passing those rows' cache lines back and forth with the other cores
    /// on every update (`weights::HotRows`). One thread always trains the shared rows, so its
    /// results do not depend on this.
    pub hot_rows: usize,
    /// Draw a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            arch: Arch::SkipGram,
            dim: 100,
            window: 5,
            negative: 5,
            hs: false,
            sample: 1e-3,
            alpha: 0.025,
            min_alpha: 0.0001,
            epochs: 5,
            threads: 1,
            seed: 1,
            cbow_mean: true,
            shared_negatives: false,
            hot_rows: 4096,
            progress: false,
        }
    }
}

/// Totals of one epoch over all threads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Sum of the losses (`-log σ` terms of every prediction), in f64.
    pub loss: f64,
    /// Predictions made: (context, centre) pairs for skip-gram, windows for CBOW.
    pub examples: u64,
    /// Vocabulary words read.
    pub words: u64,
    /// Words left after subsampling.
    pub kept_words: u64,
}

impl EpochStats {
    /// Mean loss per prediction.
    pub fn mean_loss(&self) -> f64 {
        if self.examples == 0 {
            0.0
        } else {
            self.loss / self.examples as f64
        }
    }

    fn add(&mut self, o: &EpochStats) {
        self.loss += o.loss;
        self.examples += o.examples;
        self.words += o.words;
        self.kept_words += o.kept_words;
    }
}

/// What training did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Per-epoch totals.
    pub epochs: Vec<EpochStats>,
    /// Wall time of training (not counting the vocabulary pass).
    pub seconds: f64,
    /// Corpus tokens processed (epochs × tokens of the file, in or out of the vocabulary).
    pub raw_words: u64,
    /// `raw_words / seconds`.
    pub raw_words_per_sec: f64,
    /// Instruction set of the hot loops.
    pub isa: &'static str,
    /// Threads used.
    pub threads: usize,
}

/// Errors before training starts.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Invalid options.
    #[error("invalid training options: {0}")]
    Config(String),
    /// Corpus read error.
    #[error("cannot read corpus {path}: {source}")]
    Io {
        /// Corpus path.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// Sigmoid table

const EXP_TABLE_SIZE: usize = 1000;
const MAX_EXP: f32 = 6.0;

/// σ(x) and -log σ(x) on `[-MAX_EXP, MAX_EXP]`, as word2vec.c's `expTable` (but sampled at
/// bin centres), so the hot loop never calls `exp` or `log`.
struct SigmoidTable {
    sig: [f32; EXP_TABLE_SIZE + 1],
    nls: [f32; EXP_TABLE_SIZE + 1],
}

impl SigmoidTable {
    fn new() -> Self {
        let mut sig = [0f32; EXP_TABLE_SIZE + 1];
        let mut nls = [0f32; EXP_TABLE_SIZE + 1];
        for i in 0..=EXP_TABLE_SIZE {
            let x = ((i as f64 + 0.5) / EXP_TABLE_SIZE as f64 * 2.0 - 1.0) * f64::from(MAX_EXP);
            sig[i] = (1.0 / (1.0 + (-x).exp())) as f32;
            nls[i] = (-x).exp().ln_1p() as f32;
        }
        SigmoidTable { sig, nls }
    }

    #[inline(always)]
    fn index(f: f32) -> usize {
        ((f + MAX_EXP) * (EXP_TABLE_SIZE as f32 / MAX_EXP / 2.0)) as usize
    }

    /// `(gradient / alpha, loss)` for a prediction with score `f` and label `label`
    /// (1 = true word, 0 = noise word), without branches. Callers skip the update beyond
    /// ±`MAX_EXP`; there the loss uses its asymptote (`-log σ(y) ≈ -y` for `y < -MAX_EXP`).
    #[inline(always)]
    fn grad_loss(&self, f: f32, label: f32) -> (f32, f32) {
        let fc = f.clamp(-MAX_EXP, MAX_EXP);
        let i = Self::index(fc).min(EXP_TABLE_SIZE);
        // -log σ(-f) = -log σ(f) + f; y = ±f is the score of the right answer.
        let y = (2.0 * label - 1.0) * f;
        let loss = self.nls[i] + (1.0 - label) * fc + (-y - MAX_EXP).max(0.0);
        (label - self.sig[i], loss)
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels

/// What a worker reads and writes: the shared weights (through its own view of them, see
/// [`HotRows`]) and the read-only tables.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    syn0: Hogwild<'a>,
    syn1neg: Hogwild<'a>,
    syn1: Hogwild<'a>,
    negative: usize,
    hs: Option<&'a Huffman>,
    table: &'a UnigramTable,
    sig: &'a SigmoidTable,
    window: u32,
    cbow_mean: bool,
    shared_negatives: bool,
    /// The input rows of each word: its own (Word2Vec), or its own and its n-grams' (fastText).
    subwords: &'a Subwords,
}

/// Per-thread scratch (allocated once).
struct Scratch {
    /// Noise words of the current prediction.
    negs: Vec<u32>,
    /// Noise words of the next prediction, drawn one prediction ahead so that their rows are
    /// already being fetched into the cache while the current one is computed.
    next_negs: Vec<u32>,
    neu1: Vec<Lane>,
    neu1e: Vec<Lane>,
    /// Shared negatives: the window's context words, its outputs (the centre word, then the
    /// noise words), their gradients `[contexts, outputs]`, and one hidden gradient per context
    /// word (`contexts` rows of the matrices' stride).
    contexts: Vec<u32>,
    outputs: Vec<u32>,
    grads: Vec<f32>,
    hidden: Vec<Lane>,
    /// The context words' input rows, for the blocked kernel.
    inputs: Vec<*const Lane>,
    /// fastText CBOW: per position of the widest window (a ring of `2·window + 1` slots), the
    /// sum of its word's input rows and the gradient it has taken as context so far.
    window_sums: Vec<Lane>,
    window_grads: Vec<Lane>,
    loss: f64,
    examples: u64,
}

impl Ctx<'_> {
    /// Negative sampling and/or hierarchical softmax for one prediction of `target` from the
    /// hidden vector `l1`, accumulating the hidden gradient in `neu1e`.
    ///
    /// # Safety
    /// `target` is a vocabulary id; `l1` is not a row of `syn1` / `syn1neg`.
    #[inline(always)]
    unsafe fn predict<const FMA: bool>(
        &self,
        l1: &[Lane],
        target: u32,
        alpha: f32,
        negs: &[u32],
        neu1e: &mut [Lane],
        loss: &mut f64,
    ) {
        let mut l = 0f32;
        if let Some(hs) = self.hs {
            for (&p, &code) in hs.points(target).iter().zip(hs.code(target)) {
                // SAFETY: points are internal nodes < V - 1 = rows of syn1.
                let r2 = unsafe { self.syn1.row(p) };
                let f = simd::dot::<FMA>(l1, r2);
                let label = 1.0 - f32::from(code);
                let (g, lo) = self.sig.grad_loss(f, label);
                l += lo;
                if f <= -MAX_EXP || f >= MAX_EXP {
                    continue; // saturated: no update (word2vec.c and gensim)
                }
                simd::update_pair::<FMA>(g * alpha, l1, r2, neu1e);
            }
        }
        if self.negative > 0 {
            for (d, &t) in std::iter::once(&target).chain(negs.iter()).enumerate() {
                if d > 0 && t == target {
                    continue; // a noise word equal to the true word is skipped (word2vec.c)
                }
                let label = if d == 0 { 1.0 } else { 0.0 };
                // SAFETY: t is a vocabulary id (< rows of syn1neg).
                let r2 = unsafe { self.syn1neg.row(t) };
                let f = simd::dot::<FMA>(l1, r2);
                let (g, lo) = self.sig.grad_loss(f, label);
                l += lo;
                if f <= -MAX_EXP || f >= MAX_EXP {
                    continue; // saturated: no update, as gensim (word2vec.c clips the gradient)
                }
                simd::update_pair::<FMA>(g * alpha, l1, r2, neu1e);
            }
        }
        *loss += f64::from(l);
    }

    /// Skip-gram with shared negatives for one window: every context word in `s.contexts`
    /// predicts `word` against the same noise words `s.negs`. Scores and gradients are computed
    /// first from the rows as they are (pWord2Vec's HogBatch); then each output row takes the
    /// updates of the context words in turn, in one fused pass per pair that also gathers the
    /// context word's hidden gradient (so an output row is read once per pair, not twice: the
    /// later context words see it already moved, as sequential SGD would), and last the input
    /// rows take their hidden gradients.
    ///
    /// # Safety
    /// `word`, the context and noise ids are vocabulary ids.
    #[inline(always)]
    unsafe fn shared_window<const FMA: bool>(&self, word: u32, alpha: f32, s: &mut Scratch) {
        s.outputs.clear();
        s.outputs.push(word);
        // A noise word equal to the true word is skipped (word2vec.c).
        s.outputs.extend(s.negs.iter().filter(|&&t| t != word));
        let (b, k, stride) = (s.contexts.len(), s.outputs.len(), self.syn0.stride);
        s.grads.clear();
        s.grads.resize(b * k, 0.0);
        s.hidden.clear();
        s.hidden.resize(b * stride, Lane::default());
        // With AVX2 the window runs as two register-blocked kernels (the same arithmetic in the
        // same order); a window whose noise words repeat takes the one-pair path, where the
        // repeated row moves twice in turn.
        let distinct = (1..k).all(|j| !s.outputs[..j].contains(&s.outputs[j]));
        let blocked = cfg!(target_arch = "x86_64") && FMA && k <= simd::WINDOW_OUTPUTS && distinct;
        let mut outs = [std::ptr::null_mut::<Lane>(); simd::WINDOW_OUTPUTS];
        let mut read = [std::ptr::null::<Lane>(); simd::WINDOW_OUTPUTS];
        if blocked {
            for ((slot, r), &t) in outs.iter_mut().zip(read.iter_mut()).zip(&s.outputs) {
                *slot = self.syn1neg.row_ptr(t);
                *r = slot.cast_const();
            }
        }
        let outs = &outs[..k.min(simd::WINDOW_OUTPUTS)];
        let mut scores = [0f32; simd::WINDOW_OUTPUTS];
        let mut l = 0f32;
        for (i, &c) in s.contexts.iter().enumerate() {
            if blocked {
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: vocabulary rows of `stride` lanes; called only when FMA is true,
                    // that is inside the avx2 instantiation.
                    unsafe {
                        simd::dots_avx2(self.syn0.row_ptr(c), &read[..k], stride, &mut scores[..k])
                    };
                }
            } else {
                // SAFETY: vocabulary ids; one row of each matrix at a time.
                let l1 = unsafe { self.syn0.row(c) };
                for (j, &t) in s.outputs.iter().enumerate() {
                    let r2 = unsafe { self.syn1neg.row(t) };
                    let f = simd::dot::<FMA>(l1, r2);
                    let (g, lo) = self.sig.grad_loss(f, if j == 0 { 1.0 } else { 0.0 });
                    l += lo;
                    // Saturated scores get no update, as in the one-pair path.
                    if f > -MAX_EXP && f < MAX_EXP {
                        s.grads[i * k + j] = g * alpha;
                    }
                }
                continue;
            }
            for (j, &f) in scores[..k].iter().enumerate() {
                let (g, lo) = self.sig.grad_loss(f, if j == 0 { 1.0 } else { 0.0 });
                l += lo;
                if f > -MAX_EXP && f < MAX_EXP {
                    s.grads[i * k + j] = g * alpha;
                }
            }
        }
        if blocked {
            #[cfg(target_arch = "x86_64")]
            {
                s.inputs.clear();
                s.inputs.extend(
                    s.contexts
                        .iter()
                        .map(|&c| self.syn0.row_ptr(c).cast_const()),
                );
                // SAFETY: as above; outputs are distinct rows of syn1neg, inputs rows of syn0,
                // `hidden` is scratch.
                unsafe {
                    simd::window_update_avx2(outs, &s.inputs, &s.grads, &mut s.hidden, stride)
                };
            }
        } else {
            // Output rows and hidden gradients, one fused pass per pair...
            for (j, &t) in s.outputs.iter().enumerate() {
                // SAFETY: vocabulary ids; syn0 and syn1neg rows never alias.
                let r2 = unsafe { self.syn1neg.row(t) };
                for ((i, &c), acc) in s
                    .contexts
                    .iter()
                    .enumerate()
                    .zip(s.hidden.chunks_exact_mut(stride))
                {
                    let g = s.grads[i * k + j];
                    if g != 0.0 {
                        simd::update_pair::<FMA>(g, unsafe { self.syn0.row(c) }, r2, acc);
                    }
                }
            }
        }
        // ...then the input rows.
        for (acc, &c) in s.hidden.chunks_exact(stride).zip(&s.contexts) {
            // SAFETY: vocabulary id.
            simd::add(acc, unsafe { self.syn0.row(c) });
        }
        s.loss += f64::from(l);
    }

    /// `out` = the mean of input rows `rows`.
    #[inline(always)]
    fn mean_of_rows(&self, rows: &[u32], out: &mut [Lane]) {
        simd::zero(out);
        for &r in rows {
            // SAFETY: subword rows are rows of syn0.
            simd::add(unsafe { self.syn0.row(r) }, out);
        }
        simd::scale(1.0 / rows.len() as f32, out);
    }

    /// Draws the noise words of the next prediction and prefetches their rows; the current
    /// ones become `s.negs`.
    #[inline(always)]
    fn advance_negatives(&self, rng: &mut Rng, s: &mut Scratch) {
        std::mem::swap(&mut s.negs, &mut s.next_negs);
        s.next_negs.clear();
        for _ in 0..self.negative {
            let t = self.table.sample(rng);
            self.syn1neg.prefetch(t);
            s.next_negs.push(t);
        }
    }

    /// fastText's CBOW over one sentence: the mean (or sum) of every input row of the context
    /// words (a word's own row and its n-grams', about ten a word, as gensim) predicts the
    /// centre word, and each of those rows takes the prediction's whole hidden gradient.
    ///
    /// A word is context for up to `2·window` centres in a row. Gathering its rows and
    /// scattering to them for each of those centres, as gensim and fastText do, reads and
    /// writes about sixty scattered rows per prediction; here each position's rows are summed
    /// once, when it enters the widest window, and the gradients it takes as context are summed
    /// and added to its rows once, when it leaves. Its rows then reach the later centres of its
    /// window without its own updates from the earlier ones, a delay of at most `2·window`
    /// predictions (what skip-gram's summed window gradients do too); the centre words' output
    /// rows are updated at once, as gensim does.
    #[inline(always)]
    fn subword_cbow_sentence<const FMA: bool>(
        &self,
        sen: &[u32],
        alpha: f32,
        rng: &mut Rng,
        s: &mut Scratch,
    ) {
        let n = sen.len();
        let w = self.window as usize;
        let (ring, stride) = (2 * w + 1, s.neu1.len());
        s.window_sums.resize(ring * stride, Lane::default());
        s.window_grads.resize(ring * stride, Lane::default());
        let slot = |p: usize| (p % ring) * stride..(p % ring + 1) * stride;
        // Positions `..gathered` have their rows' sum in their slot.
        let mut gathered = 0;
        for pos in 0..n {
            if let Some(&next) = sen.get(pos + 1) {
                self.syn1neg.prefetch(next);
            }
            let b = rng.below(self.window) as usize; // shrink the window at random, as word2vec.c
            // Positions up to `pos + w` can be context from this centre on. Each takes the slot
            // of the position `2w + 1` before it, which no window from here on reaches: that one
            // hands its summed gradient to its rows first.
            while gathered < n && gathered <= pos + w {
                let (word, sums) = (sen[gathered], &mut s.window_sums[slot(gathered)]);
                if gathered >= ring {
                    self.add_to_rows(sen[gathered - ring], &s.window_grads[slot(gathered)]);
                }
                simd::zero(sums);
                for &r in self.subwords.rows_of(word) {
                    // SAFETY: subword rows are rows of syn0.
                    simd::add(unsafe { self.syn0.row(r) }, sums);
                }
                simd::zero(&mut s.window_grads[slot(gathered)]);
                gathered += 1;
            }
            if let Some(&entering) = sen.get(pos + w + 1) {
                // The word the next centre gathers: its n-gram rows lie anywhere in the buckets.
                for &r in self.subwords.rows_of(entering) {
                    self.syn0.prefetch(r);
                }
            }
            let lo = pos.saturating_sub(w - b);
            let hi = (pos + w - b + 1).min(n);
            simd::zero(&mut s.neu1);
            let mut count = 0usize;
            for c in (lo..hi).filter(|&c| c != pos) {
                simd::add(&s.window_sums[slot(c)], &mut s.neu1);
                count += self.subwords.rows_of(sen[c]).len();
            }
            if !self.cbow_predict::<FMA>(count, sen[pos], alpha, rng, s) {
                continue;
            }
            for c in (lo..hi).filter(|&c| c != pos) {
                simd::add(&s.neu1e, &mut s.window_grads[slot(c)]);
            }
            s.examples += 1;
        }
        let first = gathered.saturating_sub(ring);
        for (p, &word) in sen.iter().enumerate().take(gathered).skip(first) {
            self.add_to_rows(word, &s.window_grads[slot(p)]);
        }
    }

    /// CBOW's prediction of `target` from `s.neu1`, the sum of `count` input rows (scaled to
    /// their mean when `cbow_mean`), leaving the rows' gradient in `s.neu1e`; false (and
    /// nothing done) when the context is empty.
    #[inline(always)]
    fn cbow_predict<const FMA: bool>(
        &self,
        count: usize,
        target: u32,
        alpha: f32,
        rng: &mut Rng,
        s: &mut Scratch,
    ) -> bool {
        if count == 0 {
            return false;
        }
        let inv = 1.0 / count as f32;
        if self.cbow_mean {
            simd::scale(inv, &mut s.neu1);
        }
        simd::zero(&mut s.neu1e);
        if self.negative > 0 {
            self.advance_negatives(rng, s);
        }
        // SAFETY: `target` is a vocabulary id; `neu1` is thread-local scratch.
        unsafe { self.predict::<FMA>(&s.neu1, target, alpha, &s.negs, &mut s.neu1e, &mut s.loss) };
        if !self.cbow_mean {
            simd::scale(inv, &mut s.neu1e); // gensim's convention for cbow_mean=0
        }
        true
    }

    /// Adds `grad` to every input row of `word`.
    #[inline(always)]
    fn add_to_rows(&self, word: u32, grad: &[Lane]) {
        for &r in self.subwords.rows_of(word) {
            // SAFETY: subword rows are rows of syn0; one row at a time.
            simd::add(grad, unsafe { self.syn0.row(r) });
        }
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // window positions index the sentence
    fn sentence<const FMA: bool>(
        &self,
        arch: Arch,
        sen: &[u32],
        alpha: f32,
        rng: &mut Rng,
        s: &mut Scratch,
    ) {
        let n = sen.len();
        let w = self.window as usize;
        if self.negative > 0 && s.next_negs.is_empty() {
            self.advance_negatives(rng, s);
        }
        if arch == Arch::Cbow && self.subwords.has_ngrams {
            return self.subword_cbow_sentence::<FMA>(sen, alpha, rng, s);
        }
        for pos in 0..n {
            if let Some(&next) = sen.get(pos + 1) {
                self.syn1neg.prefetch(next);
            }
            let b = rng.below(self.window) as usize; // shrink the window at random, as word2vec.c
            let lo = pos.saturating_sub(w - b);
            let hi = (pos + w - b + 1).min(n);
            let word = sen[pos];
            match arch {
                Arch::SkipGram if self.subwords.has_ngrams => {
                    // fastText: the centre word's rows (its own and its n-grams') predict each
                    // context word. Their mean is taken once per window and the window's
                    // gradients are summed before they reach those rows (fastText and gensim
                    // recompute the mean for every pair: twice the row traffic per pair).
                    let rows = self.subwords.rows_of(word);
                    self.mean_of_rows(rows, &mut s.neu1);
                    simd::zero(&mut s.neu1e);
                    for c in lo..hi {
                        if c == pos {
                            continue;
                        }
                        if self.negative > 0 {
                            self.advance_negatives(rng, s);
                        }
                        // SAFETY: ids in `sen` come from the vocabulary; `neu1` is scratch.
                        unsafe {
                            self.predict::<FMA>(
                                &s.neu1,
                                sen[c],
                                alpha,
                                &s.negs,
                                &mut s.neu1e,
                                &mut s.loss,
                            )
                        };
                        s.examples += 1;
                    }
                    for &r in rows {
                        // SAFETY: subword rows are below `input_rows`, the rows of syn0.
                        simd::add(&s.neu1e, unsafe { self.syn0.row(r) });
                    }
                    if let Some(&next) = sen.get(pos + 1) {
                        for &r in self.subwords.rows_of(next) {
                            self.syn0.prefetch(r);
                        }
                    }
                }
                Arch::SkipGram if self.shared_negatives => {
                    s.contexts.clear();
                    s.contexts
                        .extend((lo..hi).filter(|&c| c != pos).map(|c| sen[c]));
                    if s.contexts.is_empty() {
                        continue;
                    }
                    self.advance_negatives(rng, s);
                    // SAFETY: ids in `sen` and the noise words come from the vocabulary.
                    unsafe { self.shared_window::<FMA>(word, alpha, s) };
                    s.examples += s.contexts.len() as u64;
                }
                Arch::SkipGram => {
                    for c in lo..hi {
                        if c == pos {
                            continue;
                        }
                        if self.negative > 0 {
                            self.advance_negatives(rng, s);
                        }
                        // SAFETY: ids in `sen` come from the vocabulary; syn0 rows are not
                        // aliased by syn1/syn1neg rows.
                        unsafe {
                            let l1 = self.syn0.row(sen[c]);
                            simd::zero(&mut s.neu1e);
                            self.predict::<FMA>(
                                l1,
                                word,
                                alpha,
                                &s.negs,
                                &mut s.neu1e,
                                &mut s.loss,
                            );
                            simd::add(&s.neu1e, l1);
                        }
                        s.examples += 1;
                    }
                }
                Arch::Cbow => {
                    // Word2Vec: the mean (or sum) of the context words' rows (fastText's
                    // subword CBOW is `subword_cbow_sentence`).
                    simd::zero(&mut s.neu1);
                    let mut count = 0usize;
                    for c in lo..hi {
                        if c != pos {
                            for &r in self.subwords.rows_of(sen[c]) {
                                // SAFETY: subword rows are rows of syn0.
                                simd::add(unsafe { self.syn0.row(r) }, &mut s.neu1);
                                count += 1;
                            }
                        }
                    }
                    if !self.cbow_predict::<FMA>(count, word, alpha, rng, s) {
                        continue;
                    }
                    for c in lo..hi {
                        if c != pos {
                            for &r in self.subwords.rows_of(sen[c]) {
                                // SAFETY: a row of syn0; one row at a time.
                                simd::add(&s.neu1e, unsafe { self.syn0.row(r) });
                            }
                        }
                    }
                    s.examples += 1;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sentence_avx2(
    ctx: &Ctx<'_>,
    arch: Arch,
    sen: &[u32],
    alpha: f32,
    rng: &mut Rng,
    s: &mut Scratch,
) {
    ctx.sentence::<true>(arch, sen, alpha, rng, s)
}

fn sentence_generic(
    ctx: &Ctx<'_>,
    arch: Arch,
    sen: &[u32],
    alpha: f32,
    rng: &mut Rng,
    s: &mut Scratch,
) {
    ctx.sentence::<false>(arch, sen, alpha, rng, s)
}

// ---------------------------------------------------------------------------------------------
// Driver

/// Shared progress of all workers.
struct Progress {
    words: AtomicU64,
    finished: AtomicUsize,
    failed: AtomicBool,
}

const SYNC_WORDS: u64 = 10_000;

/// Words a thread trains on its own copies of the hot rows between merges (about 30 ms at
/// today's speed): long enough that merging costs little next to training, short enough that
/// accuracy stays within a point (docs/word2vec.md, "Hot rows").
const MERGE_WORDS: u64 = 50_000;

impl TrainConfig {
    /// Every setting in range: checked before any work (the vocabulary scan of a large corpus
    /// takes a while, and a bad flag should not wait for it).
    pub fn validate(&self) -> Result<(), TrainError> {
        let cfg = self;
        if cfg.dim == 0 {
            return Err(TrainError::Config("dim must be at least 1".into()));
        }
        if cfg.window == 0 {
            return Err(TrainError::Config("window must be at least 1".into()));
        }
        if cfg.negative == 0 && !cfg.hs {
            return Err(TrainError::Config(
                "nothing to train: use negative sampling (negative > 0) and/or hierarchical softmax"
                    .into(),
            ));
        }
        if cfg.epochs == 0 {
            return Err(TrainError::Config("epochs must be at least 1".into()));
        }
        if cfg.shared_negatives && (cfg.arch != Arch::SkipGram || cfg.negative == 0 || cfg.hs) {
            return Err(TrainError::Config(
                "shared negatives are for skip-gram with negative sampling alone (not CBOW, \
                 which already makes one prediction per window, nor hierarchical softmax)"
                    .into(),
            ));
        }
        if cfg.alpha.is_nan()
            || cfg.alpha <= 0.0
            || cfg.min_alpha < 0.0
            || !cfg.sample.is_finite()
            || cfg.sample < 0.0
        {
            return Err(TrainError::Config(
                "alpha must be > 0, min_alpha and sample >= 0".into(),
            ));
        }
        Ok(())
    }
}

/// Trains word vectors on the corpus file `path` (tokenised as when `vocab` was built).
pub fn train(
    path: &Path,
    vocab: &Vocab,
    cfg: &TrainConfig,
) -> Result<(Embeddings, TrainReport), TrainError> {
    let (syn0, report) = train_rows(path, vocab, cfg, &Subwords::words_only(vocab.len()))?;
    let mut vectors = Vec::with_capacity(vocab.len() * cfg.dim);
    for r in 0..vocab.len() {
        vectors.extend_from_slice(syn0.floats(r, cfg.dim));
    }
    let words = vocab.words().iter().map(|w| w.to_string()).collect();
    let emb = Embeddings::new(words, cfg.dim, vectors).expect("consistent shapes");
    Ok((emb, report))
}

/// Trains the input rows `subwords` gives each word (one per word for Word2Vec; a word's own
/// and its n-grams' for fastText) and returns them all.
pub(crate) fn train_rows(
    path: &Path,
    vocab: &Vocab,
    cfg: &TrainConfig,
    subwords: &Subwords,
) -> Result<(Matrix, TrainReport), TrainError> {
    cfg.validate()?;
    if subwords.has_ngrams && cfg.shared_negatives {
        return Err(TrainError::Config(
            "shared negatives are for Word2Vec's skip-gram; fastText's skip-gram already \
             shares one mean of the centre word's rows across its window"
                .into(),
        ));
    }
    let io_err = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_len = std::fs::metadata(path).map_err(io_err)?.len();
    let threads = cfg.threads.max(1);
    let v = vocab.len();
    let stride = simd::lanes_for(cfg.dim);
    let isa = Isa::detect();

    // gensim 4's initialisation: input vectors uniform in [-1, 1) / dim (word2vec.c uses half
    // that range), output vectors zero.
    let mut syn0 = Matrix::zeros(subwords.input_rows, stride);
    let mut init = Rng::new(cfg.seed, u64::MAX);
    for r in 0..subwords.input_rows {
        for k in 0..cfg.dim {
            syn0.data[r * stride + k / LANE].0[k % LANE] =
                (init.next_f32() * 2.0 - 1.0) / cfg.dim as f32;
        }
    }
    let mut syn1neg = Matrix::zeros(if cfg.negative > 0 { v } else { 0 }, stride);
    let mut syn1 = Matrix::zeros(if cfg.hs { v.saturating_sub(1) } else { 0 }, stride);
    let huffman = cfg.hs.then(|| Huffman::new(vocab.counts()));
    let table = UnigramTable::new(vocab.counts(), 0.75);
    let sub = Subsampler::new(vocab.counts(), cfg.sample);
    let ids = WordIds::new(vocab);
    let sig = SigmoidTable::new();
    let ctx = Ctx {
        syn0: syn0.shared(),
        syn1neg: syn1neg.shared(),
        syn1: syn1.shared(),
        negative: cfg.negative,
        hs: huffman.as_ref(),
        table: &table,
        sig: &sig,
        window: cfg.window as u32,
        cbow_mean: cfg.cbow_mean,
        shared_negatives: cfg.shared_negatives,
        subwords,
    };
    let train_words = vocab.train_words();
    let total = train_words * cfg.epochs as u64;
    let progress = Progress {
        words: AtomicU64::new(0),
        finished: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
    };
    let alpha_at = |done: u64| -> f32 {
        let p = (done as f64 / (total + 1) as f64).min(1.0);
        ((f64::from(cfg.alpha) - f64::from(cfg.alpha - cfg.min_alpha) * p) as f32)
            .max(cfg.min_alpha)
    };
    let bar = make_bar(cfg.progress, total);
    let chunks = Chunks::new(file_len, threads, cfg.epochs);
    let start = Instant::now();

    // Every thread's copies of the hot rows are taken before any thread trains. They are
    // words' rows only (fastText's n-gram buckets follow the words in `syn0`).
    let hot_rows = if threads > 1 { cfg.hot_rows.min(v) } else { 0 };
    let hot: Vec<[HotRows; 2]> = (0..threads)
        .map(|_| {
            [
                HotRows::new(&ctx.syn0, hot_rows),
                HotRows::new(&ctx.syn1neg, hot_rows),
            ]
        })
        .collect();
    let merges = Mutex::new(());
    // Merges come every `MERGE_WORDS` words a thread reads, and at least a hundred times a
    // thread on a small corpus (a thread's copies must not drift for a whole run).
    let merge_words = (total / (100 * threads as u64)).clamp(1, MERGE_WORDS);

    let results: Vec<std::io::Result<(Vec<EpochStats>, u64)>> = std::thread::scope(|s| {
        let main = std::thread::current();
        let handles: Vec<_> = (0..threads)
            .zip(hot)
            .map(|(t, hot)| {
                let (ctx, sub, ids, progress, main, alpha_at, chunks, merges) = (
                    &ctx,
                    &sub,
                    &ids,
                    &progress,
                    main.clone(),
                    &alpha_at,
                    &chunks,
                    &merges,
                );
                s.spawn(move || {
                    let shared = Shared {
                        ctx,
                        progress,
                        alpha_at,
                        merges,
                        merge_words,
                    };
                    let r = worker(path, vocab, ids, cfg, shared, hot, sub, isa, t, chunks);
                    if r.is_err() {
                        progress.failed.store(true, Ordering::Relaxed);
                    }
                    progress.finished.fetch_add(1, Ordering::Release);
                    main.unpark();
                    r
                })
            })
            .collect();
        while progress.finished.load(Ordering::Acquire) < threads {
            std::thread::park_timeout(Duration::from_millis(200));
            if let Some(bar) = &bar {
                let done = progress.words.load(Ordering::Relaxed);
                bar.set_position(done);
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "epoch {}/{}, {:.0}k words/s, alpha {:.5}",
                    (done / train_words.max(1) + 1).min(cfg.epochs as u64),
                    cfg.epochs,
                    done as f64 / secs / 1e3,
                    alpha_at(done)
                ));
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("training thread panicked"))
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut epochs: Vec<EpochStats> = (0..cfg.epochs)
        .map(|e| EpochStats {
            epoch: e + 1,
            ..EpochStats::default()
        })
        .collect();
    let mut raw_words = 0u64;
    for r in results {
        let (per_epoch, raw) = r.map_err(io_err)?;
        raw_words += raw;
        for (a, b) in epochs.iter_mut().zip(&per_epoch) {
            a.add(b);
        }
    }
    let report = TrainReport {
        epochs,
        seconds,
        raw_words,
        raw_words_per_sec: raw_words as f64 / seconds.max(1e-9),
        isa: isa.name(),
        threads,
    };
    Ok((syn0, report))
}

fn make_bar(enabled: bool, total: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {percent:>3}% {human_pos}/{human_len} words, {msg}, ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    Some(bar)
}

/// What the workers share.
struct Shared<'a, 'c> {
    /// The shared weights and tables.
    ctx: &'a Ctx<'c>,
    progress: &'a Progress,
    alpha_at: &'a (dyn Fn(u64) -> f32 + Sync),
    /// Held while a thread merges its hot rows.
    merges: &'a Mutex<()>,
    /// Words a thread reads between merges of its hot rows.
    merge_words: u64,
}

/// Per-thread training state.
struct Worker<'a, 'c> {
    shared: Shared<'a, 'c>,
    /// This thread's view of the weights: hot rows redirected to `hot`.
    ctx: Ctx<'c>,
    /// Private copies of the hot input and output rows.
    hot: [HotRows; 2],
    arch: Arch,
    isa: Isa,
    rng: Rng,
    scratch: Scratch,
    sen: Vec<u32>,
    alpha: f32,
    /// Words read but not yet added to the shared counter.
    pending: u64,
    /// Words read since this thread last merged its hot rows, and how many it reads between
    /// merges.
    unmerged: u64,
    merge_words: u64,
    /// Raw tokens of the current sentence (lines are cut at `MAX_SENTENCE_WORDS`).
    line_words: usize,
}

impl Worker<'_, '_> {
    /// Trains the buffered sentence, then refreshes the learning rate every `SYNC_WORDS` words.
    fn flush(&mut self) {
        if !self.sen.is_empty() {
            match self.isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Isa::Avx2Fma` is only detected on CPUs with AVX2 and FMA.
                Isa::Avx2Fma => unsafe {
                    sentence_avx2(
                        &self.ctx,
                        self.arch,
                        &self.sen,
                        self.alpha,
                        &mut self.rng,
                        &mut self.scratch,
                    )
                },
                _ => sentence_generic(
                    &self.ctx,
                    self.arch,
                    &self.sen,
                    self.alpha,
                    &mut self.rng,
                    &mut self.scratch,
                ),
            }
            self.sen.clear();
        }
        self.line_words = 0;
        if self.unmerged >= self.merge_words {
            self.merge_hot_rows();
        }
        if self.pending >= SYNC_WORDS {
            self.sync();
        }
    }

    /// Adds the words read to the shared count and takes the learning rate for it.
    fn sync(&mut self) {
        let done = self
            .shared
            .progress
            .words
            .fetch_add(self.pending, Ordering::Relaxed)
            + self.pending;
        self.pending = 0;
        self.alpha = (self.shared.alpha_at)(done);
    }

    /// Merges this thread's hot rows into the shared ones (see [`HotRows`]).
    fn merge_hot_rows(&mut self) {
        self.unmerged = 0;
        if self.ctx.syn0.hot() == 0 {
            return;
        }
        // A merge that panicked can have added part of one thread's change: no worse than a
        // lost Hogwild step, so a poisoned lock is taken as it is.
        let _lock = self.shared.merges.lock().unwrap_or_else(|e| e.into_inner());
        let [hot_in, hot_out] = &mut self.hot;
        // SAFETY: merges are serialised by the lock; no row slice is alive between sentences.
        unsafe {
            hot_in.merge(&self.shared.ctx.syn0);
            hot_out.merge(&self.shared.ctx.syn1neg);
        }
    }
}

/// The shared work queue: every epoch is cut into chunks of the file, handed out in file order
/// to whichever thread is free (so threads stay busy even when one core is slower, and the
/// corpus is visited roughly in order, as gensim's job queue does). Chunk `k` of the whole run
/// is chunk `k % count` of epoch `k / count`.
struct Chunks {
    len: u64,
    size: u64,
    count: u64,
    total: u64,
    next: AtomicU64,
}

impl Chunks {
    fn new(len: u64, threads: usize, epochs: usize) -> Chunks {
        let size = (len / (4 * threads as u64)).clamp(64 << 10, 1 << 20);
        let count = len.div_ceil(size).max(1);
        Chunks {
            len,
            size,
            count,
            total: count * epochs as u64,
            next: AtomicU64::new(0),
        }
    }

    /// Next (epoch, byte range), or `None` when the run is over.
    fn take(&self) -> Option<(usize, u64, u64)> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        if k >= self.total {
            return None;
        }
        let b = k % self.count;
        Some((
            (k / self.count) as usize,
            b * self.size,
            ((b + 1) * self.size).min(self.len),
        ))
    }
}

/// One thread: takes chunks until the run is over. Returns per-epoch stats and raw tokens read.
#[allow(clippy::too_many_arguments)]
fn worker(
    path: &Path,
    vocab: &Vocab,
    ids: &WordIds,
    cfg: &TrainConfig,
    shared: Shared<'_, '_>,
    mut hot: [HotRows; 2],
    sub: &Subsampler,
    isa: Isa,
    t: usize,
    chunks: &Chunks,
) -> std::io::Result<(Vec<EpochStats>, u64)> {
    let mut file = File::open(path)?;
    let stride = simd::lanes_for(cfg.dim);
    let ctx = Ctx {
        syn0: hot[0].view(shared.ctx.syn0),
        syn1neg: hot[1].view(shared.ctx.syn1neg),
        ..*shared.ctx
    };
    let (progress, alpha_at, merge_words) = (shared.progress, shared.alpha_at, shared.merge_words);
    let mut wk = Worker {
        shared,
        ctx,
        hot,
        arch: cfg.arch,
        isa,
        rng: Rng::new(cfg.seed, t as u64),
        scratch: Scratch {
            negs: Vec::with_capacity(cfg.negative),
            next_negs: Vec::with_capacity(cfg.negative),
            neu1: vec![Lane::default(); stride],
            neu1e: vec![Lane::default(); stride],
            contexts: Vec::with_capacity(2 * cfg.window),
            outputs: Vec::with_capacity(cfg.negative + 1),
            grads: Vec::with_capacity(2 * cfg.window * (cfg.negative + 1)),
            hidden: Vec::with_capacity(2 * cfg.window * stride),
            inputs: Vec::with_capacity(2 * cfg.window),
            window_sums: Vec::new(),
            window_grads: Vec::new(),
            loss: 0.0,
            examples: 0,
        },
        sen: Vec::with_capacity(MAX_SENTENCE_WORDS),
        alpha: alpha_at(0),
        pending: 0,
        unmerged: 0,
        merge_words,
        line_words: 0,
    };
    let mut stats: Vec<EpochStats> = (0..cfg.epochs)
        .map(|e| EpochStats {
            epoch: e + 1,
            ..EpochStats::default()
        })
        .collect();
    let mut raw = 0u64;
    let mut dec = corpus::Decoder::new(vocab.lowercase);
    let mut scanner = corpus::Scanner::new();
    while let Some((epoch, start, end)) = chunks.take() {
        if progress.failed.load(Ordering::Relaxed) {
            break;
        }
        wk.scratch.loss = 0.0;
        wk.scratch.examples = 0;
        let (mut words, mut kept) = (0u64, 0u64);
        let st = scanner.scan_raw(&mut file, start, end, |ev| match ev {
            RawEvent::Word(raw) => {
                wk.line_words += 1;
                // Fast path: the raw bytes are a vocabulary word. Otherwise decode (lossy UTF-8,
                // lowercasing) exactly as the vocabulary pass did and look up again.
                let id = match (vocab.lowercase, ids.get(raw)) {
                    (false, Some(id)) => Some(id),
                    _ => vocab.id(dec.decode(raw).0),
                };
                if let Some(id) = id {
                    words += 1;
                    wk.pending += 1;
                    wk.unmerged += 1;
                    if sub.keep(id, &mut wk.rng) {
                        wk.sen.push(id);
                        kept += 1;
                    }
                }
                if wk.line_words >= MAX_SENTENCE_WORDS {
                    wk.flush();
                }
            }
            RawEvent::EndOfLine => wk.flush(),
        })?;
        wk.flush();
        raw += st.tokens;
        stats[epoch].add(&EpochStats {
            epoch: epoch + 1,
            loss: wk.scratch.loss,
            examples: wk.scratch.examples,
            words,
            kept_words: kept,
        });
    }
    wk.sync();
    wk.merge_hot_rows();
    Ok((stats, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One window of shared-negative skip-gram against the same step written out in f64 with
    /// the exact sigmoid: every context word predicts the centre word against the same noise
    /// words, gradients from the rows as they were, then outputs and inputs updated.
    #[test]
    fn a_shared_window_is_the_batched_skip_gram_step() {
        check_shared_window(false);
        // The register-blocked kernels, where the CPU has them.
        if Isa::detect() == Isa::Avx2Fma {
            check_shared_window(true);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn shared_window_avx2(ctx: &Ctx<'_>, word: u32, alpha: f32, s: &mut Scratch) {
        // SAFETY: every id is below the matrices' rows.
        unsafe { ctx.shared_window::<true>(word, alpha, s) }
    }

    fn check_shared_window(avx2: bool) {
        let (v, dim, alpha) = (6usize, 8usize, 0.1f32);
        let stride = simd::lanes_for(dim);
        let value =
            |r: usize, k: usize, salt: f64| (((r * 31 + k * 7) as f64 + salt).sin() * 0.6) as f32;
        let mut syn0 = Matrix::zeros(v, stride);
        let mut syn1neg = Matrix::zeros(v, stride);
        for r in 0..v {
            for k in 0..dim {
                syn0.data[r * stride + k / LANE].0[k % LANE] = value(r, k, 0.3);
                syn1neg.data[r * stride + k / LANE].0[k % LANE] = value(r, k, 1.7);
            }
        }
        let get = |m: &Matrix, r: usize| -> Vec<f64> {
            (0..dim)
                .map(|k| f64::from(m.data[r * stride + k / LANE].0[k % LANE]))
                .collect()
        };
        let (in0, out0): (Vec<_>, Vec<_>) =
            (0..v).map(|r| (get(&syn0, r), get(&syn1neg, r))).unzip();
        let (word, contexts, negs) = (0u32, vec![1u32, 2, 3, 2], vec![4u32, 0, 5]);

        let table = UnigramTable::new(&[1; 6], 0.75);
        let sig = SigmoidTable::new();
        let mut syn1 = Matrix::zeros(0, stride);
        let ctx = Ctx {
            syn0: syn0.shared(),
            syn1neg: syn1neg.shared(),
            syn1: syn1.shared(),
            negative: negs.len(),
            hs: None,
            table: &table,
            sig: &sig,
            window: 2,
            cbow_mean: true,
            shared_negatives: true,
            subwords: &Subwords::words_only(v),
        };
        let mut s = Scratch {
            negs: negs.clone(),
            contexts: contexts.clone(),
            ..empty_scratch(stride)
        };
        // SAFETY: every id is below v.
        if avx2 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: called only where `Isa::detect` found AVX2 and FMA.
            unsafe {
                shared_window_avx2(&ctx, word, alpha, &mut s)
            };
        } else {
            unsafe { ctx.shared_window::<false>(word, alpha, &mut s) };
        }

        // The reference: the noise word equal to the centre word is skipped.
        let outputs = [0usize, 4, 5];
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let grad = |i: usize, j: usize| {
            let f = dot(&in0[contexts[i] as usize], &out0[outputs[j]]);
            (if j == 0 { 1.0 } else { 0.0 } - 1.0 / (1.0 + (-f).exp())) * f64::from(alpha)
        };
        // Gradients from the rows as they were; each output row then moves context word by
        // context word, and each hidden gradient reads it as it stands at its turn.
        let mut in1 = in0.clone();
        let mut out1 = out0.clone();
        for (j, &o) in outputs.iter().enumerate() {
            for (i, &c) in contexts.iter().enumerate() {
                let (c, g) = (c as usize, grad(i, j));
                for k in 0..dim {
                    in1[c][k] += g * out1[o][k];
                    out1[o][k] += g * in0[c][k];
                }
            }
        }
        let mut moved = 0.0f64;
        for r in 0..v {
            for (k, (a, b)) in get(&syn0, r).iter().zip(&in1[r]).enumerate() {
                assert!((a - b).abs() < 2e-3, "input row {r}[{k}]: {a} vs {b}");
                moved = moved.max((b - in0[r][k]).abs());
            }
            for (k, (a, b)) in get(&syn1neg, r).iter().zip(&out1[r]).enumerate() {
                assert!((a - b).abs() < 2e-3, "output row {r}[{k}]: {a} vs {b}");
            }
        }
        // The step is large next to the tolerance: the comparison can fail.
        assert!(moved > 0.02, "{moved}");
        assert_eq!(s.outputs, [0, 4, 5]);
    }

    /// Scratch space for rows of `stride` lanes, every list empty.
    fn empty_scratch(stride: usize) -> Scratch {
        Scratch {
            negs: Vec::new(),
            next_negs: Vec::new(),
            neu1: vec![Lane::default(); stride],
            neu1e: vec![Lane::default(); stride],
            contexts: Vec::new(),
            outputs: Vec::new(),
            grads: Vec::new(),
            hidden: Vec::new(),
            inputs: Vec::new(),
            window_sums: Vec::new(),
            window_grads: Vec::new(),
            loss: 0.0,
            examples: 0,
        }
    }

    /// The vocabulary "x", "cat", "cats" with 3-grams hashed into 7 buckets (so the two cat
    /// words share rows), every row set to fixed values, and one noise word that is always
    /// word 0: the fastText tests run one sentence through the trainer and compare every row
    /// with the same steps written out in f64 with the exact sigmoid.
    struct CatCats {
        dim: usize,
        stride: usize,
        subwords: Subwords,
        syn0: Matrix,
        syn1neg: Matrix,
    }

    impl CatCats {
        fn new() -> Self {
            use crate::subwords::NgramConfig;
            let dim = 8;
            let stride = simd::lanes_for(dim);
            let ngrams = NgramConfig {
                minn: 3,
                maxn: 3,
                bucket: 7,
            };
            let subwords = Subwords::with_ngrams(["x", "cat", "cats"].into_iter(), &ngrams);
            let value = |r: usize, k: usize, salt: f64| {
                (((r * 31 + k * 7) as f64 + salt).sin() * 0.6) as f32
            };
            let mut syn0 = Matrix::zeros(subwords.input_rows, stride);
            let mut syn1neg = Matrix::zeros(3, stride);
            for k in 0..dim {
                for r in 0..subwords.input_rows {
                    syn0.data[r * stride + k / LANE].0[k % LANE] = value(r, k, 0.3);
                }
                for r in 0..3 {
                    syn1neg.data[r * stride + k / LANE].0[k % LANE] = value(r, k, 1.7);
                }
            }
            CatCats {
                dim,
                stride,
                subwords,
                syn0,
                syn1neg,
            }
        }

        /// Input and output rows as they stand, in f64.
        fn rows(&self) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
            let get = |m: &Matrix, r: usize| -> Vec<f64> {
                m.floats(r, self.dim)
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect()
            };
            let inp = (0..self.subwords.input_rows).map(|r| get(&self.syn0, r));
            (
                inp.collect(),
                (0..3).map(|r| get(&self.syn1neg, r)).collect(),
            )
        }

        /// Every word's input rows (its own and its n-grams').
        fn own(&self) -> Vec<Vec<u32>> {
            (0..3).map(|w| self.subwords.rows_of(w).to_vec()).collect()
        }

        /// Trains on `sentence` (window 1, the mean of the rows), returning the predictions made.
        fn train(&mut self, arch: Arch, sentence: &[u32], alpha: f32) -> u64 {
            let table = UnigramTable::new(&[1, 0, 0], 0.75);
            let sig = SigmoidTable::new();
            let mut syn1 = Matrix::zeros(0, self.stride);
            let ctx = Ctx {
                syn0: self.syn0.shared(),
                syn1neg: self.syn1neg.shared(),
                syn1: syn1.shared(),
                negative: 1,
                hs: None,
                table: &table,
                sig: &sig,
                window: 1,
                cbow_mean: true,
                shared_negatives: false,
                subwords: &self.subwords,
            };
            let mut s = empty_scratch(self.stride);
            ctx.sentence::<false>(arch, sentence, alpha, &mut Rng::new(1, 0), &mut s);
            s.examples
        }

        /// One prediction of `target` (label 1) and the noise word 0 (label 0) from `h`:
        /// moves the output rows and returns the gradient for the input side.
        fn predict(out: &mut [Vec<f64>], h: &[f64], target: usize, alpha: f32) -> Vec<f64> {
            let mut e = vec![0.0; h.len()];
            for (target, label) in [(target, 1.0), (0, 0.0)] {
                let f: f64 = h.iter().zip(&out[target]).map(|(a, b)| a * b).sum();
                let g = (label - 1.0 / (1.0 + (-f).exp())) * f64::from(alpha);
                for (k, e) in e.iter_mut().enumerate() {
                    *e += g * out[target][k];
                    out[target][k] += g * h[k];
                }
            }
            e
        }

        /// Asserts every row equals the reference's, and that some n-gram row (not only the
        /// words' own rows) moved by more than the tolerance.
        fn assert_rows(&self, inp: &[Vec<f64>], out: &[Vec<f64>], before: &[Vec<f64>]) {
            let (got_inp, got_out) = self.rows();
            let mut moved = 0.0f64;
            for (r, (got, want)) in got_inp.iter().zip(inp).enumerate() {
                for (k, (a, b)) in got.iter().zip(want).enumerate() {
                    assert!((a - b).abs() < 2e-3, "input row {r}[{k}]: {a} vs {b}");
                    if r >= 3 {
                        moved = moved.max((b - before[r][k]).abs());
                    }
                }
            }
            for (r, (got, want)) in got_out.iter().zip(out).enumerate() {
                for (k, (a, b)) in got.iter().zip(want).enumerate() {
                    assert!((a - b).abs() < 2e-3, "output row {r}[{k}]: {a} vs {b}");
                }
            }
            assert!(moved > 0.02, "{moved}");
        }
    }

    /// fastText's skip-gram on "cat cats": the mean of the centre word's rows (its own and its
    /// n-grams', duplicates counted) predicts the context word and the noise word, then every
    /// one of those rows takes the summed gradient.
    #[test]
    fn a_fasttext_window_moves_every_row_of_the_centre_word() {
        let (mut m, alpha) = (CatCats::new(), 0.2f32);
        let (mut inp, mut out) = m.rows();
        let (own, dim) = (m.own(), m.dim);
        assert_eq!(m.train(Arch::SkipGram, &[1, 2], alpha), 2);

        let before = inp.clone();
        for (centre, context) in [(1usize, 2usize), (2, 1)] {
            let rows = &own[centre];
            let h: Vec<f64> = (0..dim)
                .map(|k| rows.iter().map(|&r| inp[r as usize][k]).sum::<f64>() / rows.len() as f64)
                .collect();
            let e = CatCats::predict(&mut out, &h, context, alpha);
            for &r in rows {
                for k in 0..dim {
                    inp[r as usize][k] += e[k];
                }
            }
        }
        m.assert_rows(&inp, &out, &before);
    }

    /// fastText's CBOW on "cat cats cat": each centre is predicted by the mean of every row of
    /// its context words as they stood when the position entered the window; output rows move
    /// at once, and each position's rows take the sum of the gradients it got as context when
    /// it leaves the window (here: at the sentence's end, in order).
    #[test]
    fn fasttext_cbow_sums_each_context_position_once() {
        let (mut m, alpha) = (CatCats::new(), 0.2f32);
        let (mut inp, mut out) = m.rows();
        let (own, dim) = (m.own(), m.dim);
        let sentence = [1u32, 2, 1];
        assert_eq!(m.train(Arch::Cbow, &sentence, alpha), 3);

        let before = inp.clone();
        let sums: Vec<Vec<f64>> = sentence
            .iter()
            .map(|&w| {
                (0..dim)
                    .map(|k| own[w as usize].iter().map(|&r| inp[r as usize][k]).sum())
                    .collect()
            })
            .collect();
        let mut grads = vec![vec![0.0f64; dim]; sentence.len()];
        for centre in 0..sentence.len() {
            let context: Vec<usize> = (centre.saturating_sub(1)..(centre + 2).min(3))
                .filter(|&c| c != centre)
                .collect();
            let count: usize = context
                .iter()
                .map(|&c| own[sentence[c] as usize].len())
                .sum();
            let h: Vec<f64> = (0..dim)
                .map(|k| context.iter().map(|&c| sums[c][k]).sum::<f64>() / count as f64)
                .collect();
            let e = CatCats::predict(&mut out, &h, sentence[centre] as usize, alpha);
            for &c in &context {
                for k in 0..dim {
                    grads[c][k] += e[k];
                }
            }
        }
        for (p, &w) in sentence.iter().enumerate() {
            for &r in &own[w as usize] {
                for k in 0..dim {
                    inp[r as usize][k] += grads[p][k];
                }
            }
        }
        m.assert_rows(&inp, &out, &before);
    }
}
