//! fastText subword vectors (Bojanowski et al. 2017) on the Word2Vec trainer.
//!
//! Training is Word2Vec's Hogwild loop with each word's input rows widened to its own row plus
//! its n-grams' bucket rows ([`crate::subwords`]). The model keeps every row, buckets
//! included, so words never seen in training still get vectors after the model is reloaded:
//! the mean of their n-grams' rows, as fastText's `getWordVector` computes it.
//!
//! The model file: a line `pretext-fasttext 1`, a JSON line of settings, one vocabulary word
//! per line (tokens never hold whitespace), then every row's `dim` little-endian `f32`s (the
//! vocabulary's rows, then the buckets'), then an xxh3-64 checksum of all that, little-endian.
//! Written atomically; a truncated or altered file is refused on load.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use rustc_hash::FxHashMap;
use serde_json::json;
use xxhash_rust::xxh3::Xxh3;

use crate::format::{Embeddings, FormatError, write_atomically};
use crate::simd::{self, Lane};
use crate::subwords::{NgramConfig, Subwords, ngram_rows};
use crate::train::{Matrix, TrainConfig, TrainError, TrainReport, train_rows};
use crate::vocab::Vocab;

const MAGIC: &str = "pretext-fasttext 1";

/// A trained fastText model: the vocabulary, its n-gram settings and every input row.
pub struct FastText {
    words: Vec<String>,
    index: FxHashMap<String, u32>,
    ngrams: NgramConfig,
    dim: usize,
    lowercase: bool,
    input: Matrix,
}

/// Why a word has no vector.
#[derive(Debug, thiserror::Error)]
#[error(
    "'{word}' is not in the vocabulary and has no character n-grams of {minn} to {maxn} \
     characters, so the model has no vector for it"
)]
pub struct NoVector {
    /// The word asked for.
    pub word: String,
    /// Shortest n-gram of the model.
    pub minn: usize,
    /// Longest n-gram of the model.
    pub maxn: usize,
}

/// Trains a fastText model on the corpus file `path` (tokenised as when `vocab` was built).
pub fn train(
    path: &Path,
    vocab: &Vocab,
    cfg: &TrainConfig,
    ngrams: &NgramConfig,
) -> Result<(FastText, TrainReport), TrainError> {
    ngrams.validate().map_err(TrainError::Config)?;
    let rows = vocab.len() as u64 + u64::from(ngrams.bucket);
    if rows > u64::from(u32::MAX) {
        return Err(TrainError::Config(format!(
            "vocabulary ({}) plus buckets ({}) exceed 2^32 rows",
            vocab.len(),
            ngrams.bucket
        )));
    }
    let words: Vec<String> = vocab.words().iter().map(|w| w.to_string()).collect();
    let subwords = Subwords::with_ngrams(words.iter().map(String::as_str), ngrams);
    let (input, report) = train_rows(path, vocab, cfg, &subwords)?;
    let model = FastText::new(words, *ngrams, cfg.dim, vocab.lowercase, input);
    Ok((model, report))
}

impl FastText {
    fn new(
        words: Vec<String>,
        ngrams: NgramConfig,
        dim: usize,
        lowercase: bool,
        input: Matrix,
    ) -> FastText {
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        FastText {
            words,
            index,
            ngrams,
            dim,
            lowercase,
            input,
        }
    }

    /// Vocabulary words, most frequent first.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Vector size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The n-gram settings.
    pub fn ngrams(&self) -> NgramConfig {
        self.ngrams
    }

    /// Whether the corpus was lowercased (queries are then lowercased too).
    pub fn lowercase(&self) -> bool {
        self.lowercase
    }

    /// The query as the training corpus was tokenised.
    fn normalise<'a>(&self, word: &'a str) -> std::borrow::Cow<'a, str> {
        if self.lowercase {
            word.to_lowercase().into()
        } else {
            word.into()
        }
    }

    /// Whether `word` is a vocabulary word.
    pub fn contains(&self, word: &str) -> bool {
        self.index.contains_key(self.normalise(word).as_ref())
    }

    /// The vector of any word: for a vocabulary word, the mean of its own row and its n-grams'
    /// rows; for any other, the mean of its n-grams' rows (fastText's `getWordVector`).
    pub fn word_vector(&self, word: &str) -> Result<Vec<f32>, NoVector> {
        let word = self.normalise(word);
        let v = self.words.len();
        let mut rows = ngram_rows(&word, v, &self.ngrams);
        if let Some(&id) = self.index.get(word.as_ref()) {
            rows.push(id);
        }
        if rows.is_empty() {
            return Err(NoVector {
                word: word.into_owned(),
                minn: self.ngrams.minn,
                maxn: self.ngrams.maxn,
            });
        }
        let mut sum = vec![Lane::default(); self.input.stride];
        for &r in &rows {
            simd::add(self.input.row(r as usize), &mut sum);
        }
        simd::scale(1.0 / rows.len() as f32, &mut sum);
        Ok(simd::as_floats(&sum)[..self.dim].to_vec())
    }

    /// The vocabulary words' vectors (what fastText writes as `.vec`).
    pub fn embeddings(&self) -> Embeddings {
        let mut data = Vec::with_capacity(self.words.len() * self.dim);
        for w in &self.words {
            data.extend(
                self.word_vector(w)
                    .expect("vocabulary words have their own row"),
            );
        }
        Embeddings::new(self.words.clone(), self.dim, data).expect("consistent shapes")
    }

    /// Writes the model atomically (see the module documentation for the layout).
    pub fn save(&self, path: &Path) -> Result<(), FormatError> {
        write_atomically(path, |w| {
            let mut out = Hashed {
                inner: w,
                hash: Xxh3::new(),
            };
            let settings = json!({
                "dim": self.dim, "minn": self.ngrams.minn, "maxn": self.ngrams.maxn,
                "bucket": self.ngrams.bucket, "words": self.words.len(),
                "lowercase": self.lowercase,
            });
            writeln!(out, "{MAGIC}\n{settings}")?;
            for word in &self.words {
                writeln!(out, "{word}")?;
            }
            let mut bytes = Vec::with_capacity(4 * self.dim);
            for r in 0..self.input.rows {
                bytes.clear();
                for x in self.input.floats(r, self.dim) {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                out.write_all(&bytes)?;
            }
            let sum = out.hash.digest();
            w.write_all(&sum.to_le_bytes())
        })
        .map_err(|source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a model written by [`FastText::save`].
    pub fn load(path: &Path) -> Result<FastText, FormatError> {
        let io_err = |source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |line: usize, msg: String| FormatError::Parse {
            path: path.to_path_buf(),
            line,
            msg,
        };
        let file = File::open(path).map_err(io_err)?;
        let mut r = HashedReader {
            inner: BufReader::with_capacity(1 << 20, file),
            hash: Xxh3::new(),
        };
        let mut line = Vec::new();
        r.line(&mut line).map_err(io_err)?;
        if line != MAGIC.as_bytes() {
            return Err(bad(
                1,
                format!(
                    "not a pretext fastText model (it should start with '{MAGIC}'; word vectors \
                     in word2vec or .vec format are read by `pretext word2vec`)"
                ),
            ));
        }
        r.line(&mut line).map_err(io_err)?;
        let settings: serde_json::Value = serde_json::from_slice(&line)
            .map_err(|e| bad(2, format!("unreadable settings: {e}")))?;
        let field = |name: &str| {
            settings[name]
                .as_u64()
                .ok_or_else(|| bad(2, format!("settings lack a number '{name}'")))
        };
        let (dim, words_len) = (field("dim")? as usize, field("words")? as usize);
        let ngrams = NgramConfig {
            minn: field("minn")? as usize,
            maxn: field("maxn")? as usize,
            bucket: u32::try_from(field("bucket")?)
                .map_err(|_| bad(2, "bucket is larger than 2^32".into()))?,
        };
        ngrams.validate().map_err(|e| bad(2, e))?;
        let lowercase = settings["lowercase"].as_bool().unwrap_or(false);
        let file_len = std::fs::metadata(path).map_err(io_err)?.len();
        let rows = words_len as u64 + u64::from(ngrams.bucket);
        // Refuse sizes the file cannot hold before allocating for them.
        if dim == 0 || rows.saturating_mul(4 * dim as u64) > file_len {
            return Err(bad(
                2,
                format!(
                    "the settings announce {rows} rows of {dim} floats, more than the file's \
                     {file_len} bytes: the file is truncated or not a model"
                ),
            ));
        }
        let mut words = Vec::with_capacity(words_len);
        for i in 0..words_len {
            r.line(&mut line).map_err(io_err)?;
            let word = String::from_utf8(line.clone())
                .ok()
                .filter(|w| !w.is_empty() && !w.contains(char::is_whitespace))
                .ok_or_else(|| bad(i + 3, "not a vocabulary word".into()))?;
            words.push(word);
        }
        let truncated = || {
            bad(
                words_len + 3,
                "the file ends before its last vector: it is truncated".into(),
            )
        };
        let stride = simd::lanes_for(dim);
        let mut input = Matrix::zeros(rows as usize, stride);
        let mut bytes = vec![0u8; 4 * dim];
        for row in input.data.chunks_exact_mut(stride) {
            r.read_exact(&mut bytes).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => truncated(),
                _ => io_err(e),
            })?;
            let floats: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            simd::to_lanes(&floats, row);
        }
        let expected = r.hash.digest();
        let mut sum = [0u8; 8];
        r.inner.read_exact(&mut sum).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => truncated(),
            _ => io_err(e),
        })?;
        let mut rest = [0u8; 1];
        let extra = r.inner.read(&mut rest).map_err(io_err)?;
        if u64::from_le_bytes(sum) != expected || extra > 0 {
            return Err(bad(
                words_len + 3,
                "the checksum does not match the content: the file was altered or damaged".into(),
            ));
        }
        Ok(FastText::new(words, ngrams, dim, lowercase, input))
    }
}

/// A writer that hashes what goes through it.
struct Hashed<'a, W: Write> {
    inner: &'a mut W,
    hash: Xxh3,
}

impl<W: Write> Write for Hashed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what it reads.
struct HashedReader<R: BufRead> {
    inner: R,
    hash: Xxh3,
}

impl<R: BufRead> HashedReader<R> {
    /// The next line, without its `\n` (at most 64 KiB: vocabulary words are short).
    fn line(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        (&mut self.inner).take(1 << 16).read_until(b'\n', out)?;
        self.hash.update(out);
        if out.pop() != Some(b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the file ends inside its header: it is truncated",
            ));
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hash.update(buf);
        Ok(())
    }
}
