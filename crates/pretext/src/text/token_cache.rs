//! The tokenised corpus of `mlm train`, on disk and memory-mapped, as Megatron-LM's indexed
//! datasets and Hugging Face's Arrow caches keep theirs: the corpus is tokenised once, streamed
//! line by line, and examples are cut from the mapped files on demand, so memory does not grow
//! with the corpus (the page cache holds what is read, and gives it back under pressure).
//!
//! A cache directory, `CACHE/tokens/KEY/`, holds for each split (`train`, `heldout`):
//! `SPLIT.ids` (u32 little-endian token ids of every line's body, lines concatenated),
//! `SPLIT.words` (u32 word numbers, counted across the split; [`NO_WORD`] for a token outside any
//! word) and `SPLIT.offsets` (u64: where each line starts, then the end); and `meta.json`, which
//! names the corpus (canonical path, size, modification time), the tokenizer (a hash of its
//! JSON) and the split settings. KEY hashes the corpus path and split settings: a run of the
//! same corpus and tokenizer reuses the cache, and one whose corpus or tokenizer changed
//! rebuilds it in place. A cache is built under a temporary name and renamed into place: it is whole or
//! absent, and its files are never written again once there, which is what makes mapping them
//! sound.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result, bail};
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::examples::{
    CHUNK_LINES, Example, ExampleMode, ExampleSet, check_example_count, check_max_len,
};
use super::text_file::TextLines;
use super::tokenizer::{SpecialIds, TextTokenizer};
use crate::core::checkpoint::remove_orphaned_temporaries;

/// Bumped whenever the layout changes, so older caches are rebuilt rather than misread.
const VERSION: u32 = 1;
/// The word number of a token outside any word.
pub const NO_WORD: u32 = u32::MAX;
/// Lines tokenised in parallel at a time while building.
const BUILD_BATCH: usize = 16 * CHUNK_LINES;

/// What a cache was built from: any difference rebuilds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheKey {
    version: u32,
    corpus: PathBuf,
    bytes: u64,
    modified_ns: u128,
    tokenizer: String,
    holdout_every: usize,
    max_lines: usize,
}

impl CacheKey {
    fn of(
        corpus: &Path,
        tokenizer: &TextTokenizer,
        holdout_every: usize,
        max_lines: usize,
    ) -> Result<Self> {
        let canonical = corpus
            .canonicalize()
            .with_context(|| format!("cannot read {}", corpus.display()))?;
        let meta = std::fs::metadata(&canonical)
            .with_context(|| format!("cannot read {}", corpus.display()))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(Self {
            version: VERSION,
            corpus: canonical,
            bytes: meta.len(),
            modified_ns,
            tokenizer: tokenizer.fingerprint()?,
            holdout_every,
            max_lines,
        })
    }

    /// The directory name: the corpus and split settings, not the corpus's size or time nor
    /// the tokenizer, so that a changed corpus or tokenizer replaces its cache rather than
    /// adding one. (Hugging Face's WordPiece trainer numbers pieces in hash-map order, so a
    /// BERT tokenizer trained again on the same corpus differs; caches keyed by it would pile
    /// up, one a run.)
    fn dir_name(&self) -> String {
        let named = format!(
            "{}|{}|{}",
            self.corpus.display(),
            self.holdout_every,
            self.max_lines
        );
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(named.as_bytes()))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheMeta {
    key: CacheKey,
    train_lines: u64,
    heldout_lines: u64,
    /// xxh3 of the training split's ids and line ends, computed while building.
    train_xxh3: String,
}

/// A file mapped read-only; an empty file maps to no bytes (a zero-length map is an error).
struct Mapped(Option<Mmap>);

impl Mapped {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(Self(None));
        }
        // SAFETY: cache files are written under a temporary directory name and never written
        // again once renamed into place (a rebuild writes a new directory), so the mapped bytes
        // do not change under us. A file deleted while mapped stays readable on Unix.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        Ok(Self(Some(map)))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }

    fn u32_at(&self, i: u64) -> u32 {
        let at = i as usize * 4;
        let mut word = [0; 4];
        word.copy_from_slice(&self.bytes()[at..at + 4]);
        u32::from_le_bytes(word)
    }

    fn u64_at(&self, i: u64) -> u64 {
        let at = i as usize * 8;
        let mut word = [0; 8];
        word.copy_from_slice(&self.bytes()[at..at + 8]);
        u64::from_le_bytes(word)
    }
}

/// One split of a cache: the token ids and word numbers of its lines, mapped.
pub struct TokenLines {
    ids: Mapped,
    words: Mapped,
    offsets: Mapped,
    lines: u64,
}

impl TokenLines {
    /// Map `dir/split.*`, checking that the three files agree with each other and with `lines`.
    fn open(dir: &Path, split: &str, lines: u64) -> Result<Self> {
        let map = |ext: &str| Mapped::open(&dir.join(format!("{split}.{ext}")));
        let this = Self {
            ids: map("ids")?,
            words: map("words")?,
            offsets: map("offsets")?,
            lines,
        };
        let tokens = this.ids.bytes().len() as u64 / 4;
        let agree = this.ids.bytes().len().is_multiple_of(4)
            && this.words.bytes().len() == this.ids.bytes().len()
            && this.offsets.bytes().len() as u64 == 8 * (lines + 1)
            && this.offsets.u64_at(lines) == tokens;
        if !agree {
            bail!("{}: the {split} files disagree", dir.display());
        }
        Ok(this)
    }

    /// Non-empty lines in the split.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn tokens(&self) -> u64 {
        self.offsets.u64_at(self.lines)
    }

    /// Where line `i` starts in the split's tokens (`i == lines()`: the end).
    fn start(&self, i: u64) -> u64 {
        self.offsets.u64_at(i)
    }

    /// The token ids of line `i`.
    pub fn line_ids(&self, i: u64) -> Vec<u32> {
        let (start, end) = (self.start(i), self.start(i + 1));
        (start..end).map(|t| self.ids.u32_at(t)).collect()
    }

    /// The ids and word numbers of tokens `from..from + len`.
    fn body(&self, from: u64, len: u64) -> (Vec<u32>, Vec<Option<u32>>) {
        let ids = (from..from + len).map(|i| self.ids.u32_at(i)).collect();
        let words = (from..from + len)
            .map(|i| Some(self.words.u32_at(i)).filter(|&w| w != NO_WORD))
            .collect();
        (ids, words)
    }
}

/// Writes one split while the cache is built.
struct SplitWriter {
    ids: BufWriter<File>,
    words: BufWriter<File>,
    offsets: BufWriter<File>,
    tokens: u64,
    lines: u64,
    next_word: u32,
    hash: xxhash_rust::xxh3::Xxh3,
}

impl SplitWriter {
    fn create(dir: &Path, split: &str) -> Result<Self> {
        let create = |ext: &str| -> Result<BufWriter<File>> {
            let path = dir.join(format!("{split}.{ext}"));
            let file =
                File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(BufWriter::with_capacity(1 << 18, file))
        };
        let mut offsets = create("offsets")?;
        offsets.write_all(&0u64.to_le_bytes())?;
        Ok(Self {
            ids: create("ids")?,
            words: create("words")?,
            offsets,
            tokens: 0,
            lines: 0,
            next_word: 0,
            hash: xxhash_rust::xxh3::Xxh3::new(),
        })
    }

    /// Append one line. Word numbers are offset by the words before it, so no two lines share
    /// one and a packed block's words stay apart, as in memory (wrapping after 2^32 words,
    /// which could only join two words billions of tokens apart).
    fn push(&mut self, ids: &[u32], words: &[Option<u32>]) -> Result<()> {
        for &id in ids {
            self.ids.write_all(&id.to_le_bytes())?;
            self.hash.update(&id.to_le_bytes());
        }
        self.hash.update(b"|");
        for word in words {
            let number = word.map_or(NO_WORD, |w| w.wrapping_add(self.next_word));
            self.words.write_all(&number.to_le_bytes())?;
        }
        let line_words = words.iter().flatten().max().map_or(0, |&w| w + 1);
        self.next_word = self.next_word.wrapping_add(line_words);
        self.tokens += ids.len() as u64;
        self.lines += 1;
        self.offsets.write_all(&self.tokens.to_le_bytes())?;
        Ok(())
    }

    /// Flush and sync the files (a cache renamed into place is whole on disk); the line count
    /// and the hash of the ids.
    fn finish(self) -> Result<(u64, String)> {
        for writer in [self.ids, self.words, self.offsets] {
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        Ok((self.lines, format!("{:016x}", self.hash.digest())))
    }
}

/// A corpus tokenised on disk: its training and held-out lines.
pub struct TokenCache {
    pub dir: PathBuf,
    pub train: Arc<TokenLines>,
    pub heldout: Arc<TokenLines>,
    /// True when an earlier run's cache was used as it was.
    pub reused: bool,
    /// xxh3 of the training split's ids, line by line: with the example settings, what the
    /// examples are, so `--resume` can check them without reading the corpus again.
    pub train_xxh3: String,
}

impl TokenCache {
    /// The cache of `corpus` under `cache_root`, built when missing, stale or damaged. Every
    /// `holdout_every`-th non-empty line is held out, of the first `max_lines` (0: all).
    pub fn open_or_build(
        corpus: &Path,
        tokenizer: &TextTokenizer,
        holdout_every: usize,
        max_lines: usize,
        cache_root: &Path,
        show_progress: bool,
    ) -> Result<Self> {
        let key = CacheKey::of(corpus, tokenizer, holdout_every, max_lines)?;
        let parent = cache_root.join("tokens");
        let dir = parent.join(key.dir_name());
        if let Ok(cache) = Self::open(&dir, &key) {
            return Ok(cache);
        }
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create the token cache {}", parent.display()))?;
        // A run killed while tokenising leaves its half-built cache; the next build removes it.
        remove_orphaned_temporaries(&parent, &key.dir_name());
        let building = parent.join(format!(".{}.tmp-{}", key.dir_name(), std::process::id()));
        let built = Self::build(corpus, tokenizer, &key, &building, show_progress);
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&building);
            return Err(e);
        }
        // Move a stale cache aside before ours takes its name; another run may have finished
        // the same cache meanwhile, and then either copy serves.
        if dir.exists() {
            let stale = parent.join(format!(".{}.stale-{}", key.dir_name(), std::process::id()));
            if std::fs::rename(&dir, &stale).is_ok() {
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        let mut cache = Self::open(&dir, &key)
            .with_context(|| format!("the token cache {} was just built", dir.display()))?;
        cache.reused = false;
        Ok(cache)
    }

    fn open(dir: &Path, key: &CacheKey) -> Result<Self> {
        let path = dir.join("meta.json");
        let text = std::fs::read_to_string(&path)?;
        let meta: CacheMeta = serde_json::from_str(&text)?;
        if meta.key != *key {
            bail!("{}: built from another corpus or tokenizer", path.display());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            train: Arc::new(TokenLines::open(dir, "train", meta.train_lines)?),
            heldout: Arc::new(TokenLines::open(dir, "heldout", meta.heldout_lines)?),
            reused: true,
            train_xxh3: meta.train_xxh3,
        })
    }

    fn build(
        corpus: &Path,
        tokenizer: &TextTokenizer,
        key: &CacheKey,
        dir: &Path,
        show_progress: bool,
    ) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the token cache {}", dir.display()))?;
        let mut train = SplitWriter::create(dir, "train")?;
        let mut heldout = SplitWriter::create(dir, "heldout")?;
        let mut lines = TextLines::open(corpus)?;
        let bar = if show_progress {
            indicatif::ProgressBar::new(key.bytes)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "tokenising [{bar:30}] {binary_bytes}/{binary_total_bytes} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let limit = match key.max_lines {
            0 => usize::MAX,
            n => n,
        };
        let mut taken = 0usize;
        let mut batch: Vec<(bool, String)> = Vec::with_capacity(BUILD_BATCH);
        loop {
            batch.clear();
            while batch.len() < BUILD_BATCH && taken < limit {
                let Some(line) = lines.next() else { break };
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                taken += 1;
                let held = key.holdout_every > 0 && taken.is_multiple_of(key.holdout_every);
                batch.push((held, line));
            }
            if batch.is_empty() {
                break;
            }
            let encoded = batch
                .par_iter()
                .map(|(_, line)| tokenizer.encode_body_with_words(line))
                .collect::<Result<Vec<_>>>()?;
            for ((held, _), (ids, words)) in batch.iter().zip(&encoded) {
                let split = if *held { &mut heldout } else { &mut train };
                split
                    .push(ids, words)
                    .with_context(|| format!("cannot write the token cache {}", dir.display()))?;
            }
            bar.set_position(lines.bytes_read());
        }
        bar.finish_and_clear();
        if taken == 0 {
            bail!("{}: empty corpus (no non-empty line)", corpus.display());
        }
        if train.lines == 0 {
            bail!(
                "{}: every line is held out; raise data.holdout_every",
                corpus.display()
            );
        }
        let (train_lines, train_xxh3) = train.finish()?;
        let meta = CacheMeta {
            key: key.clone(),
            train_lines,
            heldout_lines: heldout.finish()?.0,
            train_xxh3,
        };
        let json = serde_json::to_string_pretty(&meta)?;
        crate::core::checkpoint::write_atomic(&dir.join("meta.json"), json.as_bytes())
    }
}

/// Examples cut from one split of a [`TokenCache`] on demand: only where each starts and how
/// long it is stays in memory (12 bytes an example), the tokens stay on disk. They equal what
/// [`super::examples::corpus_examples`] makes from the same lines in memory: packed blocks
/// never cross a chunk of [`CHUNK_LINES`] lines, and each chunk's incomplete last block is
/// dropped.
pub struct CachedExamples {
    lines: Arc<TokenLines>,
    /// (first token, tokens) of each example's body.
    table: Vec<(u64, u32)>,
    special: SpecialIds,
}

impl CachedExamples {
    pub fn new(
        lines: Arc<TokenLines>,
        special: SpecialIds,
        max_len: usize,
        mode: ExampleMode,
        origin: &str,
    ) -> Result<Self> {
        check_max_len(max_len)?;
        let body = (max_len - 2) as u64;
        let mut table = Vec::new();
        match mode {
            ExampleMode::LineByLine => {
                for i in 0..lines.lines() {
                    let (start, end) = (lines.start(i), lines.start(i + 1));
                    if end > start {
                        table.push((start, (end - start).min(body) as u32));
                    }
                }
            }
            ExampleMode::Packed => {
                for first in (0..lines.lines()).step_by(CHUNK_LINES) {
                    let last = (first + CHUNK_LINES as u64).min(lines.lines());
                    let (start, end) = (lines.start(first), lines.start(last));
                    let blocks = (end - start) / body;
                    table.extend((0..blocks).map(|k| (start + k * body, body as u32)));
                }
            }
        }
        check_example_count(origin, lines.tokens() as usize, table.len(), max_len)?;
        Ok(Self {
            lines,
            table,
            special,
        })
    }
}

impl CachedExamples {
    /// Tokens in all the examples, special tokens included.
    pub fn tokens(&self) -> u64 {
        self.table.iter().map(|&(_, len)| u64::from(len) + 2).sum()
    }
}

impl ExampleSet for CachedExamples {
    fn len(&self) -> usize {
        self.table.len()
    }

    fn example(&self, index: usize) -> Example {
        let (start, len) = self.table[index];
        let (ids, words) = self.lines.body(start, u64::from(len));
        Example::framed(&self.special, &ids, &words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::examples::corpus_examples;
    use crate::text::mlm::read_corpus;
    use crate::text::test_support::{TempDir, grammar_corpus};
    use crate::text::tokenizer::Family;

    /// Word numbers renamed by first appearance: what whole-word masking depends on.
    fn grouping(words: &[Option<u32>]) -> Vec<Option<usize>> {
        let mut seen: Vec<u32> = Vec::new();
        words
            .iter()
            .map(|w| {
                w.map(|w| match seen.iter().position(|&s| s == w) {
                    Some(p) => p,
                    None => {
                        seen.push(w);
                        seen.len() - 1
                    }
                })
            })
            .collect()
    }

    #[test]
    fn cached_examples_equal_the_in_memory_ones_and_the_cache_is_reused_until_the_corpus_changes() {
        let dir = TempDir::new("token-cache");
        // Over two chunks of lines, with blank lines and a held-out share.
        let mut lines = grammar_corpus(2500, 7);
        lines.insert(3, "   ".into());
        lines.insert(10, String::new());
        let corpus = dir.write("corpus.txt", &lines.join("\n"));
        let tok =
            TextTokenizer::train(Family::Bert, std::slice::from_ref(&corpus), 300, true).unwrap();
        let cache_root = dir.path().join("cache");
        let cache = TokenCache::open_or_build(&corpus, &tok, 20, 0, &cache_root, false).unwrap();
        assert!(!cache.reused);
        let in_memory = read_corpus(&corpus, 20, 0).unwrap();
        assert_eq!(cache.train.lines() as usize, in_memory.train.len());
        assert_eq!(cache.heldout.lines() as usize, in_memory.heldout.len());
        for mode in [ExampleMode::LineByLine, ExampleMode::Packed] {
            for (split, lines) in [
                (&cache.train, &in_memory.train),
                (&cache.heldout, &in_memory.heldout),
            ] {
                let expected = corpus_examples(&tok, lines, 24, mode, "c").unwrap();
                let cached =
                    CachedExamples::new(split.clone(), tok.special_ids(), 24, mode, "c").unwrap();
                assert_eq!(cached.len(), expected.len(), "{mode:?}");
                let tokens: usize = expected.iter().map(|e| e.ids.len()).sum();
                assert_eq!(cached.tokens() as usize, tokens);
                for (i, want) in expected.iter().enumerate() {
                    let got = cached.example(i);
                    assert_eq!(got.ids, want.ids, "{mode:?} example {i}");
                    assert_eq!(grouping(&got.words), grouping(&want.words), "{mode:?} {i}");
                }
            }
        }

        let again = TokenCache::open_or_build(&corpus, &tok, 20, 0, &cache_root, false).unwrap();
        assert!(again.reused && again.dir == cache.dir);
        assert_eq!(again.train_xxh3, cache.train_xxh3);
        // Other split settings: another cache beside it.
        let other = TokenCache::open_or_build(&corpus, &tok, 0, 0, &cache_root, false).unwrap();
        assert!(!other.reused && other.dir != cache.dir && other.heldout.lines() == 0);

        // A changed corpus rebuilds the cache in place; so does a damaged one.
        let shorter = dir.write("corpus.txt", &lines[..600].join("\n"));
        let rebuilt = TokenCache::open_or_build(&shorter, &tok, 20, 0, &cache_root, false).unwrap();
        assert!(!rebuilt.reused && rebuilt.dir == cache.dir);
        assert_ne!(rebuilt.train_xxh3, cache.train_xxh3);
        assert_eq!(
            rebuilt.train.lines() as usize,
            read_corpus(&shorter, 20, 0).unwrap().train.len()
        );
        let ids = rebuilt.dir.join("train.ids");
        let bytes = std::fs::read(&ids).unwrap();
        std::fs::write(&ids, &bytes[..bytes.len() - 4]).unwrap();
        let repaired =
            TokenCache::open_or_build(&shorter, &tok, 20, 0, &cache_root, false).unwrap();
        assert!(!repaired.reused);
        assert_eq!(repaired.train.tokens(), rebuilt.train.tokens());
        // A build abandoned by a process that is gone is cleaned up by the next one.
        let abandoned = cache_root.join("tokens").join(format!(
            ".{}.tmp-999999999",
            cache.dir.file_name().unwrap().to_str().unwrap()
        ));
        std::fs::create_dir_all(&abandoned).unwrap();
        std::fs::write(abandoned.join("train.ids"), b"1234").unwrap();
        std::fs::remove_file(cache.dir.join("meta.json")).unwrap();
        let repaired =
            TokenCache::open_or_build(&shorter, &tok, 20, 0, &cache_root, false).unwrap();
        assert!(!repaired.reused && !abandoned.exists());
        let leftovers: Vec<_> = std::fs::read_dir(cache_root.join("tokens"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            2,
            "no temporary or stale directory is left: {leftovers:?}"
        );

        // Another tokenizer: rebuilt in place too.
        let roberta =
            TextTokenizer::train(Family::Roberta, std::slice::from_ref(&corpus), 300, true)
                .unwrap();
        let theirs =
            TokenCache::open_or_build(&shorter, &roberta, 20, 0, &cache_root, false).unwrap();
        assert!(!theirs.reused && theirs.dir == cache.dir);
        assert_ne!(theirs.train_xxh3, rebuilt.train_xxh3);

        let empty = dir.write("empty.txt", "\n \n");
        let err = TokenCache::open_or_build(&empty, &tok, 20, 0, &cache_root, false);
        assert!(format!("{:#}", err.err().unwrap()).contains("empty corpus"));
    }
}
