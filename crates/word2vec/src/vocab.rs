//! Vocabulary: one streaming counting pass over the corpus, `min_count` / `max_vocab`
//! filtering and a frequency-descending order (as word2vec.c and gensim).

use std::fs::File;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use crate::corpus::{self, Event, ScanStats};

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
        let results: Vec<std::io::Result<(FxHashMap<Box<str>, u64>, ScanStats)>> =
            std::thread::scope(|s| {
                let handles: Vec<_> = ranges
                    .iter()
                    .map(|&(start, end)| {
                        s.spawn(move || {
                            let mut file = File::open(path)?;
                            let mut counts: FxHashMap<Box<str>, u64> = FxHashMap::default();
                            let stats = corpus::scan_range(&mut file, start, end, cfg.lowercase, |e| {
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
                handles.into_iter().map(|h| h.join().expect("counting thread panicked")).collect()
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
        let mut all: Vec<(Box<str>, u64)> = counts.into_iter().map(|(w, c)| (w.into(), c)).collect();
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
        let index = all.iter().enumerate().map(|(i, (w, _))| (w.clone(), i as u32)).collect();
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
        assert_eq!(v.words().iter().map(|w| &**w).collect::<Vec<_>>(), ["d", "a", "b"]);
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
        let err = Vocab::from_counts([("x", 1u64)], &cfg).unwrap_err();
        assert!(err.to_string().contains("min_count=2"), "{err}");
    }
}
