//! Queries (nearest neighbours, analogies) and the standard evaluations: word analogies
//! (3CosAdd, gensim's `evaluate_word_analogies`) and word-pair similarity (Spearman rank
//! correlation, gensim's `evaluate_word_pairs`).

use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use crate::format::Embeddings;
use crate::simd::{self, Isa, Lane};

/// Errors of queries and evaluations.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Query words missing from the vectors.
    #[error("not in the vocabulary ({vocab} words): {}", .words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(", "))]
    Unknown {
        /// The missing words.
        words: Vec<String>,
        /// Vocabulary size searched.
        vocab: usize,
    },
    /// Evaluation file unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Malformed evaluation file.
    #[error("{path}: line {line}: {msg}")]
    Parse {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

/// Unit-length copies of the first `limit` vectors, padded for the SIMD kernels.
pub struct Normalized {
    data: Vec<Lane>,
    stride: usize,
    rows: usize,
    isa: Isa,
}

impl Normalized {
    /// Normalises the first `limit` rows of `emb` (all if `limit` is larger). Zero vectors stay zero.
    pub fn new(emb: &Embeddings, limit: usize) -> Normalized {
        let rows = emb.len().min(limit);
        let stride = simd::lanes_for(emb.dim());
        let mut data = vec![Lane::default(); rows * stride];
        for i in 0..rows {
            let v = emb.vector(i);
            let out = &mut data[i * stride..(i + 1) * stride];
            simd::to_lanes(v, out);
            let norm = v
                .iter()
                .map(|x| f64::from(*x) * f64::from(*x))
                .sum::<f64>()
                .sqrt();
            if norm > 0.0 {
                simd::scale((1.0 / norm) as f32, out);
            }
        }
        Normalized {
            data,
            stride,
            rows,
            isa: Isa::detect(),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `i` (unit length).
    pub fn row(&self, i: usize) -> &[Lane] {
        &self.data[i * self.stride..(i + 1) * self.stride]
    }

    /// Unit vector of `Σ w·row(i)` for the given (index, weight) terms.
    fn combine(&self, terms: &[(usize, f32)]) -> Vec<Lane> {
        let mut v = vec![Lane::default(); self.stride];
        for &(i, w) in terms {
            simd::axpy::<false>(w, self.row(i), &mut v);
        }
        let n = simd::dot::<false>(&v, &v).sqrt();
        if n > 0.0 {
            simd::scale(1.0 / n, &mut v);
        }
        v
    }

    /// The `n` rows most cosine-similar to the unit vector `q`, skipping `exclude`.
    fn nearest(&self, q: &[Lane], n: usize, exclude: &[usize]) -> Vec<(usize, f32)> {
        let mut scores = vec![0f32; self.rows];
        simd::dot_rows(self.isa, &self.data, self.stride, q, &mut scores);
        let mut idx: Vec<usize> = (0..self.rows).filter(|i| !exclude.contains(i)).collect();
        let n = n.min(idx.len());
        let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        if n < idx.len() && n > 0 {
            idx.select_nth_unstable_by(n - 1, by_score);
        }
        idx.truncate(n);
        idx.sort_by(by_score);
        idx.into_iter().map(|i| (i, scores[i])).collect()
    }
}

fn lookup(emb: &Embeddings, words: &[&str]) -> Result<Vec<usize>, EvalError> {
    let mut unknown = Vec::new();
    let mut ids = Vec::new();
    for w in words {
        match emb.index_of(w) {
            Some(i) => ids.push(i),
            None => unknown.push(w.to_string()),
        }
    }
    if unknown.is_empty() {
        Ok(ids)
    } else {
        Err(EvalError::Unknown {
            words: unknown,
            vocab: emb.len(),
        })
    }
}

/// The `n` words nearest to `word` by cosine similarity.
pub fn most_similar(
    emb: &Embeddings,
    norm: &Normalized,
    word: &str,
    n: usize,
) -> Result<Vec<(String, f32)>, EvalError> {
    let ids = lookup(emb, &[word])?;
    let q = norm.combine(&[(ids[0], 1.0)]);
    Ok(norm
        .nearest(&q, n, &ids)
        .into_iter()
        .map(|(i, s)| (emb.words()[i].clone(), s))
        .collect())
}

/// "`a` is to `b` as `c` is to ?": the `n` words nearest to `b - a + c` (3CosAdd on unit
/// vectors, as gensim's `most_similar(positive=[b, c], negative=[a])`), excluding `a`, `b`, `c`.
pub fn analogy(
    emb: &Embeddings,
    norm: &Normalized,
    a: &str,
    b: &str,
    c: &str,
    n: usize,
) -> Result<Vec<(String, f32)>, EvalError> {
    let ids = lookup(emb, &[a, b, c])?;
    let q = norm.combine(&[(ids[1], 1.0), (ids[2], 1.0), (ids[0], -1.0)]);
    Ok(norm
        .nearest(&q, n, &ids)
        .into_iter()
        .map(|(i, s)| (emb.words()[i].clone(), s))
        .collect())
}

/// The `n` words nearest to `Σ weight · v / |v|` over `terms`, skipping the words `exclude`
/// (for vectors that need not be rows of `emb`, such as fastText's vectors of unseen words).
pub fn nearest_to_vectors(
    emb: &Embeddings,
    norm: &Normalized,
    terms: &[(f32, &[f32])],
    n: usize,
    exclude: &[&str],
) -> Vec<(String, f32)> {
    let mut q = vec![Lane::default(); norm.stride];
    let mut lanes = vec![Lane::default(); norm.stride];
    for &(w, v) in terms {
        simd::to_lanes(v, &mut lanes);
        let len = simd::dot::<false>(&lanes, &lanes).sqrt();
        if len > 0.0 {
            simd::axpy::<false>(w / len, &lanes, &mut q);
        }
    }
    let len = simd::dot::<false>(&q, &q).sqrt();
    if len > 0.0 {
        simd::scale(1.0 / len, &mut q);
    }
    let ids: Vec<usize> = exclude.iter().filter_map(|w| emb.index_of(w)).collect();
    norm.nearest(&q, n, &ids)
        .into_iter()
        .map(|(i, s)| (emb.words()[i].clone(), s))
        .collect()
}

/// Results of one section of an analogy file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// Section name (the text after `: `).
    pub name: String,
    /// Questions answered correctly.
    pub correct: usize,
    /// Questions answered wrongly.
    pub incorrect: usize,
    /// Questions skipped because a word is outside the restricted vocabulary.
    pub oov: usize,
}

impl Section {
    /// Questions evaluated.
    pub fn total(&self) -> usize {
        self.correct + self.incorrect
    }

    /// `correct / total` (0 when nothing was evaluated).
    pub fn accuracy(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.correct as f64 / self.total() as f64
        }
    }
}

/// Analogy evaluation results.
#[derive(Debug, Clone)]
pub struct AnalogyReport {
    /// Per-section results, in file order.
    pub sections: Vec<Section>,
    /// All sections together (name `"Total accuracy"`, as gensim).
    pub total: Section,
    /// Vocabulary restriction used.
    pub restrict_vocab: usize,
}

/// Maps (optionally uppercased) words of the first `limit` rows to row indices, the most
/// frequent spelling winning (gensim's `ok_vocab`).
fn ok_vocab(emb: &Embeddings, limit: usize, case_insensitive: bool) -> FxHashMap<String, usize> {
    let limit = limit.min(emb.len());
    let mut m = FxHashMap::default();
    for i in (0..limit).rev() {
        let w = &emb.words()[i];
        m.insert(
            if case_insensitive {
                w.to_uppercase()
            } else {
                w.clone()
            },
            i,
        );
    }
    m
}

fn read_lines(path: &Path) -> Result<Vec<String>, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_string)
        .collect())
}

/// One resolved question.
struct Question {
    section: usize,
    ids: [usize; 3],
    words: [String; 3],
    expected: String,
}

const TOPN: usize = 5;

/// Evaluates word analogies (`questions-words.txt` format: `: section` lines, then lines of
/// four words `a b c d` meaning a:b = c:d) with gensim's semantics: only the first
/// `restrict_vocab` words are considered, questions with a word outside them are skipped and
/// counted as OOV, the answer is the word nearest to `b - a + c` (3CosAdd on unit vectors)
/// among the 5 best, skipping `a`, `b`, `c` (compared case-insensitively if asked).
pub fn evaluate_analogies(
    emb: &Embeddings,
    path: &Path,
    restrict_vocab: usize,
    case_insensitive: bool,
    threads: usize,
) -> Result<AnalogyReport, EvalError> {
    let norm = Normalized::new(emb, restrict_vocab);
    let ok = ok_vocab(emb, restrict_vocab, case_insensitive);
    let fold = |w: &str| {
        if case_insensitive {
            w.to_uppercase()
        } else {
            w.to_string()
        }
    };
    let mut sections: Vec<Section> = Vec::new();
    let mut questions = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(name) = t.strip_prefix(':') {
            sections.push(Section {
                name: name.trim().to_string(),
                ..Section::default()
            });
            continue;
        }
        let w: Vec<String> = t.split_whitespace().map(fold).collect();
        if w.len() != 4 {
            return Err(EvalError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                msg: format!("expected 4 words (a b c d), found {}", w.len()),
            });
        }
        if sections.is_empty() {
            sections.push(Section::default());
        }
        let section = sections.len() - 1;
        let ids: Vec<usize> = w.iter().filter_map(|x| ok.get(x).copied()).collect();
        if ids.len() < 4 {
            sections[section].oov += 1;
            continue;
        }
        let [a, b, c, d]: [String; 4] = w.try_into().expect("4 words");
        questions.push(Question {
            section,
            ids: [ids[0], ids[1], ids[2]],
            words: [a, b, c],
            expected: d,
        });
    }
    // Query vectors, then a blocked scan: a chunk of vocabulary rows stays in cache while every
    // question of this thread is scored against it, keeping each question's 5 best.
    let stride = norm.stride;
    let mut qv = vec![Lane::default(); questions.len() * stride];
    for (q, out) in questions.iter().zip(qv.chunks_exact_mut(stride.max(1))) {
        out.copy_from_slice(&norm.combine(&[(q.ids[1], 1.0), (q.ids[2], 1.0), (q.ids[0], -1.0)]));
    }
    let mut tops = vec![[(f32::NEG_INFINITY, usize::MAX); TOPN]; questions.len()];
    let threads = threads.max(1);
    let per = questions.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for ((qs, vs), ts) in questions
            .chunks(per)
            .zip(qv.chunks(per * stride))
            .zip(tops.chunks_mut(per))
        {
            let norm = &norm;
            s.spawn(move || scan_block(norm, qs, vs, ts));
        }
    });
    for (q, top) in questions.iter().zip(&tops) {
        let mut predicted = None;
        for &(_, i) in top.iter().filter(|t| t.1 != usize::MAX) {
            let p = fold(&emb.words()[i]);
            predicted = Some(p.clone());
            if !q.words.contains(&p) {
                break;
            }
        }
        let sec = &mut sections[q.section];
        if predicted.as_deref() == Some(q.expected.as_str()) {
            sec.correct += 1;
        } else {
            sec.incorrect += 1;
        }
    }
    let total = Section {
        name: "Total accuracy".into(),
        correct: sections.iter().map(|s| s.correct).sum(),
        incorrect: sections.iter().map(|s| s.incorrect).sum(),
        oov: sections.iter().map(|s| s.oov).sum(),
    };
    Ok(AnalogyReport {
        sections,
        total,
        restrict_vocab,
    })
}

fn scan_block(norm: &Normalized, qs: &[Question], vs: &[Lane], tops: &mut [[(f32, usize); TOPN]]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn fast(norm: &Normalized, qs: &[Question], vs: &[Lane], tops: &mut [[(f32, usize); TOPN]]) {
        scan_impl::<true>(norm, qs, vs, tops)
    }
    match norm.isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` is only detected on CPUs with AVX2 and FMA.
        Isa::Avx2Fma => unsafe { fast(norm, qs, vs, tops) },
        _ => scan_impl::<false>(norm, qs, vs, tops),
    }
}

#[inline(always)]
fn scan_impl<const FMA: bool>(
    norm: &Normalized,
    qs: &[Question],
    vs: &[Lane],
    tops: &mut [[(f32, usize); TOPN]],
) {
    const CHUNK: usize = 512;
    let stride = norm.stride;
    let mut start = 0;
    while start < norm.rows {
        let end = (start + CHUNK).min(norm.rows);
        for ((q, v), top) in qs.iter().zip(vs.chunks_exact(stride)).zip(tops.iter_mut()) {
            for j in start..end {
                let s = simd::dot::<FMA>(norm.row(j), v);
                if s > top[TOPN - 1].0 && !q.ids.contains(&j) {
                    let mut k = TOPN - 1;
                    while k > 0 && top[k - 1].0 < s {
                        top[k] = top[k - 1];
                        k -= 1;
                    }
                    top[k] = (s, j);
                }
            }
        }
        start = end;
    }
}

/// Word-pair similarity results.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityReport {
    /// Pairs in the file.
    pub pairs: usize,
    /// Pairs skipped because a word is outside the restricted vocabulary.
    pub oov: usize,
    /// Spearman rank correlation between human scores and cosine similarities.
    pub spearman: f64,
    /// Pearson correlation.
    pub pearson: f64,
    /// Vocabulary restriction used.
    pub restrict_vocab: usize,
}

/// Pairs with a word outside the vocabulary, scored with vectors made for such words (fastText's
/// n-gram vectors).
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffReport {
    /// Pairs with a word outside the restricted vocabulary that got vectors for both words.
    pub pairs: usize,
    /// Pairs that got none (a word without n-grams).
    pub unscored: usize,
    /// Spearman correlation on those pairs alone.
    pub spearman: f64,
    /// Spearman correlation on every scored pair, inside the vocabulary or not.
    pub spearman_all: f64,
}

/// A vector for a word outside the vocabulary, if the model can make one.
pub type Backoff<'a> = &'a dyn Fn(&str) -> Option<Vec<f32>>;

/// Evaluates word-pair similarity (WordSim-353, SimLex, ... : lines `word1 word2 score`
/// separated by tabs, commas or spaces; `#` comments and one header line are skipped), as
/// gensim's `evaluate_word_pairs`: pairs with a word outside the first `restrict_vocab` words
/// are skipped and counted; the score is the Spearman correlation of cosine similarities with
/// the human scores.
pub fn evaluate_similarity(
    emb: &Embeddings,
    path: &Path,
    restrict_vocab: usize,
    case_insensitive: bool,
) -> Result<SimilarityReport, EvalError> {
    evaluate_similarity_with(emb, path, restrict_vocab, case_insensitive, None).map(|(r, _)| r)
}

/// [`evaluate_similarity`], and with a `backoff` the skipped pairs scored apart with its
/// vectors for the words outside the vocabulary.
pub fn evaluate_similarity_with(
    emb: &Embeddings,
    path: &Path,
    restrict_vocab: usize,
    case_insensitive: bool,
    backoff: Option<Backoff<'_>>,
) -> Result<(SimilarityReport, Option<BackoffReport>), EvalError> {
    let norm = Normalized::new(emb, restrict_vocab);
    let ok = ok_vocab(emb, restrict_vocab, case_insensitive);
    let (mut gold, mut model) = (Vec::new(), Vec::new());
    let (mut oov_gold, mut oov_model, mut unscored) = (Vec::new(), Vec::new(), 0);
    let (mut pairs, mut oov, mut data_lines) = (0, 0, 0);
    let key = |w: &str| {
        if case_insensitive {
            w.to_uppercase()
        } else {
            w.to_string()
        }
    };
    for (i, line) in read_lines(path)?.iter().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        data_lines += 1;
        let fields: Vec<&str> = if t.contains('\t') {
            t.split('\t').map(str::trim).collect()
        } else if t.contains(',') {
            t.split(',').map(str::trim).collect()
        } else {
            t.split_whitespace().collect()
        };
        let score = fields.get(2).and_then(|s| s.parse::<f64>().ok());
        let Some(score) = score.filter(|_| fields.len() >= 3) else {
            if data_lines == 1 {
                continue; // header
            }
            return Err(EvalError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                msg: "expected 'word1 word2 score'".into(),
            });
        };
        pairs += 1;
        let (a, b) = (ok.get(&key(fields[0])), ok.get(&key(fields[1])));
        if let (Some(&a), Some(&b)) = (a, b) {
            gold.push(score);
            model.push(f64::from(simd::dot::<false>(norm.row(a), norm.row(b))));
            continue;
        }
        oov += 1;
        if let Some(backoff) = backoff {
            let vector = |w: &str, id: Option<&usize>| match id {
                Some(&i) => Some(emb.vector(i).to_vec()),
                None => backoff(w),
            };
            match (vector(fields[0], a), vector(fields[1], b)) {
                (Some(x), Some(y)) => {
                    oov_gold.push(score);
                    oov_model.push(cosine(&x, &y));
                }
                _ => unscored += 1,
            }
        }
    }
    let report = SimilarityReport {
        pairs,
        oov,
        spearman: spearman(&gold, &model),
        pearson: pearson(&gold, &model),
        restrict_vocab,
    };
    let backoff = backoff.map(|_| {
        let spearman_oov = spearman(&oov_gold, &oov_model);
        gold.extend(&oov_gold);
        model.extend(&oov_model);
        BackoffReport {
            pairs: oov_gold.len(),
            unscored,
            spearman: spearman_oov,
            spearman_all: spearman(&gold, &model),
        }
    });
    Ok((report, backoff))
}

/// Cosine similarity, in f64 (0 if either vector is zero).
fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum::<f64>()
    };
    let n = (dot(x, x) * dot(y, y)).sqrt();
    if n > 0.0 { dot(x, y) / n } else { 0.0 }
}

/// Ranks (1-based) with ties given their average rank.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation (NaN with fewer than 2 points or zero variance).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman rank correlation: Pearson correlation of the ranks, ties averaged (as scipy).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}
