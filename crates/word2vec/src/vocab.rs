//! Vocabulary: one streaming counting pass over the corpus, `min_count` / `max_vocab`
//! filtering and a frequency-descending order (as word2vec.c and gensim).

use std::fs::File;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use crate::corpus::{self, Event, ScanStats};

/// Word counts of one byte range.
type Counts = FxHashMap<Box<str>, u64>;

/// Vocabulary options.
#[derive(Debug, Clone)]
pub struct VocabConfig {
    /// Words seen fewer times are dropped.
    pub min_count: u64,
    /// Keep at most this many words (the most frequent ones), if set.
    pub max_vocab: Option<usize>,
    /// Lowercase every token (Unicode-aware).
    pub lowercase: bool,
    /// Threads for the counting pass (each counts one byte range of the file).
    pub threads: usize,
}

impl Default for VocabConfig {
    fn default() -> Self {
        VocabConfig {
            min_count: 5,
            max_vocab: None,
            lowercase: false,
            threads: 1,
        }
    }
}

/// Errors while building a vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// The corpus could not be read.
    #[error("cannot read corpus {path}: {source}")]
    Io {
        /// Corpus path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A NUL byte: UTF-16 or binary, not a text corpus.
    #[error("{0}")]
    NotText(String),
    /// No token at all.
    #[error("corpus {path} is empty: it contains no words")]
    Empty {
        /// Corpus path.
        path: PathBuf,
    },
    /// Every word is rarer than `min_count`.
    #[error(
        "no word is left after min_count={min_count}: the corpus has {distinct} distinct words, \
         the most frequent occurs {max_count} times (lower --min-count)"
    )]
    NothingLeft {
        /// The threshold.
        min_count: u64,
        /// Distinct words in the corpus.
        distinct: usize,
        /// Count of the most frequent word.
        max_count: u64,
    },
}

/// A frequency-sorted vocabulary. Word ids are indices `0..len()`, most frequent first.
#[derive(Debug, Clone)]
pub struct Vocab {
    words: Vec<Box<str>>,
    counts: Vec<u64>,
    index: FxHashMap<Box<str>, u32>,
    /// Whether tokens are lowercased (training must tokenise the same way).
    pub lowercase: bool,
    /// Statistics of the counting pass (all tokens, including dropped words).
    pub scan: ScanStats,
    /// Distinct words before filtering.
    pub distinct_words: usize,
}

impl Vocab {
    /// Counts the words of `path` in one streaming pass and filters them.
    pub fn from_file(path: &Path, cfg: &VocabConfig) -> Result<Vocab, VocabError> {
        let io_err = |source| VocabError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io_err)?.len();
        let ranges = corpus::split_ranges(len, cfg.threads.max(1));
        let results: Vec<std::io::Result<(Counts, ScanStats)>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|&(start, end)| {
                    s.spawn(move || {
                        let mut file = File::open(path)?;
                        let mut counts: FxHashMap<Box<str>, u64> = FxHashMap::default();
                        let stats =
                            corpus::scan_range(&mut file, start, end, cfg.lowercase, |e| {
                                if let Event::Word(w) = e {
                                    if let Some(c) = counts.get_mut(w) {
                                        *c += 1;
                                    } else {
                                        counts.insert(w.into(), 1);
                                    }
                                }
                            })?;
                        Ok((counts, stats))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("counting thread panicked"))
                .collect()
        });
        let mut total: FxHashMap<Box<str>, u64> = FxHashMap::default();
        let mut scan = ScanStats::default();
        for r in results {
            let (counts, stats) = r.map_err(io_err)?;
            scan.add(&stats);
            if total.is_empty() {
                total = counts;
            } else {
                for (w, c) in counts {
                    *total.entry(w).or_insert(0) += c;
                }
            }
        }
        // Every whitespace-free run of bytes is a word, so a NUL byte shows as a word holding
        // one: then find the first, for the message.
        if total.keys().any(|w| w.contains('\0'))
            && let Some((line, byte)) = corpus::first_nul(path).map_err(io_err)?
        {
            return Err(VocabError::NotText(corpus::not_text_message(
                path, line, byte,
            )));
        }
        if scan.tokens == 0 {
            return Err(VocabError::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut v = Self::from_counts(total, cfg)?;
        v.scan = scan;
        Ok(v)
    }

    /// Builds a vocabulary from (word, count) pairs, applying `min_count` and `max_vocab`.
    pub fn from_counts<I, S>(counts: I, cfg: &VocabConfig) -> Result<Vocab, VocabError>
    where
        I: IntoIterator<Item = (S, u64)>,
        S: Into<Box<str>>,
    {
        let mut all: Vec<(Box<str>, u64)> =
            counts.into_iter().map(|(w, c)| (w.into(), c)).collect();
        let distinct = all.len();
        let max_count = all.iter().map(|x| x.1).max().unwrap_or(0);
        let tokens: u64 = all.iter().map(|x| x.1).sum();
        all.retain(|(_, c)| *c >= cfg.min_count.max(1));
        if all.is_empty() {
            return Err(VocabError::NothingLeft {
                min_count: cfg.min_count,
                distinct,
                max_count,
            });
        }
        // Most frequent first; ties by word so the order never depends on hashing or threads.
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(m) = cfg.max_vocab {
            all.truncate(m.max(1));
        }
        let index = all
            .iter()
            .enumerate()
            .map(|(i, (w, _))| (w.clone(), i as u32))
            .collect();
        let (words, counts): (Vec<_>, Vec<_>) = all.into_iter().unzip();
        Ok(Vocab {
            words,
            counts,
            index,
            lowercase: cfg.lowercase,
            scan: ScanStats {
                tokens,
                ..ScanStats::default()
            },
            distinct_words: distinct,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there is no word (never true for a built vocabulary).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Id of a word.
    #[inline]
    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// Word of an id.
    pub fn word(&self, id: u32) -> &str {
        &self.words[id as usize]
    }

    /// All words, most frequent first.
    pub fn words(&self) -> &[Box<str>] {
        &self.words
    }

    /// Counts, aligned with [`Vocab::words`].
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Occurrences of kept words in the corpus (word2vec.c's `train_words`).
    pub fn train_words(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A word → id map specialised for the training pass, which looks up every token of the
/// corpus once per epoch: open addressing with 16-byte slots that hold the word's length and
/// first 8 bytes, so that most look-ups (words of up to 8 bytes) touch one cache line; raw-byte
/// keys, so words that are found need no UTF-8 validation.
#[derive(Debug, Clone)]
pub struct WordIds {
    slots: Vec<Slot>,
    mask: usize,
    arena: Vec<u8>,
    offsets: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct Slot {
    prefix: u64,
    /// id + 1; 0 = empty.
    id1: u32,
    len: u32,
}

/// The first (up to) 8 bytes, little-endian, zero-padded.
#[inline(always)]
fn prefix(b: &[u8]) -> u64 {
    if b.len() >= 8 {
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
    } else {
        let mut p = 0u64;
        for (k, &x) in b.iter().enumerate() {
            p |= u64::from(x) << (8 * k);
        }
        p
    }
}

impl WordIds {
    /// The map of a vocabulary's words.
    pub fn new(vocab: &Vocab) -> WordIds {
        let n = vocab.len();
        let cap = (n * 2).next_power_of_two().max(16);
        let mut arena = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        for w in vocab.words() {
            arena.extend_from_slice(w.as_bytes());
            offsets.push(u32::try_from(arena.len()).expect("vocabulary text under 4 GiB"));
        }
        let mut slots = vec![Slot::default(); cap];
        for (id, w) in vocab.words().iter().enumerate() {
            let w = w.as_bytes();
            let mut i = hash_bytes(w) as usize & (cap - 1);
            while slots[i].id1 != 0 {
                i = (i + 1) & (cap - 1);
            }
            slots[i] = Slot {
                prefix: prefix(w),
                id1: id as u32 + 1,
                len: w.len() as u32,
            };
        }
        WordIds {
            slots,
            mask: cap - 1,
            arena,
            offsets,
        }
    }

    /// Id of the word spelled by these bytes.
    #[inline]
    pub fn get(&self, w: &[u8]) -> Option<u32> {
        let (p, len) = (prefix(w), w.len() as u32);
        let mut i = hash_bytes(w) as usize & self.mask;
        loop {
            let s = self.slots[i];
            if s.id1 == 0 {
                return None;
            }
            if s.len == len && s.prefix == p {
                let id = s.id1 - 1;
                if len <= 8 {
                    return Some(id);
                }
                let start = self.offsets[id as usize] as usize;
                if eq_bytes(&self.arena[start + 8..start + len as usize], &w[8..]) {
                    return Some(id);
                }
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// FxHash-style hash of a byte string, 8 bytes at a time, finished with a multiply-xorshift so
/// that both halves (slot index, tag) are well mixed.
#[inline(always)]
fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let mut h = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(26) ^ u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .wrapping_mul(K);
    }
    let r = chunks.remainder();
    if !r.is_empty() {
        let mut last = 0u64;
        for (k, &x) in r.iter().enumerate() {
            last |= u64::from(x) << (8 * k);
        }
        h = (h.rotate_left(26) ^ last).wrapping_mul(K);
    }
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// Byte-string equality without a library call for short words.
#[inline(always)]
fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        if u64::from_le_bytes(x.try_into().expect("8 bytes"))
            != u64::from_le_bytes(y.try_into().expect("8 bytes"))
        {
            return false;
        }
    }
    ca.remainder()
        .iter()
        .zip(cb.remainder())
        .all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_and_order() {
        let cfg = VocabConfig {
            min_count: 2,
            max_vocab: None,
            ..VocabConfig::default()
        };
        let v = Vocab::from_counts([("b", 3u64), ("a", 3), ("c", 1), ("d", 7)], &cfg).unwrap();
        assert_eq!(
            v.words().iter().map(|w| &**w).collect::<Vec<_>>(),
            ["d", "a", "b"]
        );
        assert_eq!(v.counts(), [7, 3, 3]);
        assert_eq!(v.id("b"), Some(2));
        assert_eq!(v.id("c"), None);
        assert_eq!(v.train_words(), 13);
        let cfg2 = VocabConfig {
            min_count: 1,
            max_vocab: Some(2),
            ..VocabConfig::default()
        };
        let v = Vocab::from_counts([("b", 3u64), ("a", 3), ("c", 1), ("d", 7)], &cfg2).unwrap();
        assert_eq!(v.len(), 2);
        let ids = WordIds::new(&v);
        for (i, w) in v.words().iter().enumerate() {
            assert_eq!(ids.get(w.as_bytes()), Some(i as u32));
        }
        assert_eq!(ids.get(b"c"), None);
        assert_eq!(ids.get(b"dd"), None);
        assert_eq!(ids.get(b""), None);
        let many = Vocab::from_counts(
            (0..5000).map(|i| (format!("word{i}-{}", "x".repeat(i % 19)), 1u64)),
            &cfg2,
        );
        let many = many.unwrap();
        let ids = WordIds::new(&many);
        for (i, w) in many.words().iter().enumerate() {
            assert_eq!(ids.get(w.as_bytes()), Some(i as u32));
        }
        let err = Vocab::from_counts([("x", 1u64)], &cfg).unwrap_err();
        assert!(err.to_string().contains("min_count=2"), "{err}");
    }
}
