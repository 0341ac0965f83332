//! Word vectors and the word2vec text and binary formats.
//!
//! Both formats start with the header line `"<count> <dim>\n"`. Text rows are
//! `word v1 v2 ... vdim\n` (values printed in the shortest form that reads back to the same
//! `f32`, as gensim's `repr`); binary rows are `word`, a space, `dim` little-endian `f32`s and
//! `\n` — exactly what word2vec.c writes and what gensim's
//! `KeyedVectors.load_word2vec_format(binary=True/False)` reads. The reader also accepts binary
//! rows without the trailing newline (gensim 4 writes none) and text rows with a trailing space
//! (word2vec.c writes one). Errors name the offending line (for binary files: the record, the
//! header being line 1).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// word2vec binary (`-binary 1`).
    Binary,
    /// word2vec text (`-binary 0`, also fastText `.vec`).
    Text,
}

impl Format {
    /// `"bin"` or `"text"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Binary => "bin",
            Format::Text => "text",
        }
    }
}

/// Errors reading or writing vectors.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// I/O failure (the cause is the error's source, so a chain prints it once).
    #[error("{path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Malformed content.
    #[error("{path}: line {line}: {msg}")]
    Parse {
        /// File.
        path: PathBuf,
        /// 1-based line (record) number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

/// Words and their vectors, in file (frequency) order.
#[derive(Debug, Clone)]
pub struct Embeddings {
    words: Vec<String>,
    dim: usize,
    data: Vec<f32>,
    index: FxHashMap<String, u32>,
    /// What the reader found odd but could read (duplicate words, rows past the header's
    /// count), each naming its line.
    warnings: Vec<String>,
}

impl Embeddings {
    /// Vectors for `words` (`data` is row-major, `words.len() × dim`). With duplicate words, the
    /// first one wins in look-ups.
    pub fn new(words: Vec<String>, dim: usize, data: Vec<f32>) -> Result<Embeddings, String> {
        if data.len() != words.len() * dim {
            return Err(format!(
                "{} words × {dim} ≠ {} values",
                words.len(),
                data.len()
            ));
        }
        let mut index = FxHashMap::default();
        index.reserve(words.len());
        for (i, w) in words.iter().enumerate() {
            index.entry(w.clone()).or_insert(i as u32);
        }
        Ok(Embeddings {
            words,
            dim,
            data,
            index,
            warnings: Vec::new(),
        })
    }

    /// What the reader of this file found odd but could read, each naming its line.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Vector size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Words, in order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The first word (by row) whose vector holds NaN or an infinity: what a diverged
    /// training run leaves, and no similarity or probe can use.
    pub fn first_non_finite(&self) -> Option<usize> {
        (0..self.len()).find(|&i| self.vector(i).iter().any(|v| !v.is_finite()))
    }

    /// All values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Row of word `i`.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Index of a word.
    pub fn index_of(&self, word: &str) -> Option<usize> {
        self.index.get(word).map(|&i| i as usize)
    }

    /// Vector of a word.
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        self.index_of(word).map(|i| self.vector(i))
    }

    /// Writes the vectors in `format`, atomically: to a temporary file beside `path`, synced,
    /// then renamed over it, so a full disk or a kill never leaves a truncated file in place of
    /// the previous good one.
    pub fn save(&self, path: &Path, format: Format) -> Result<(), FormatError> {
        write_atomically(path, |w| self.write_to(w, format)).map_err(|source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the vectors in `format` to any writer.
    pub fn write_to<W: Write>(&self, w: &mut W, format: Format) -> io::Result<()> {
        writeln!(w, "{} {}", self.words.len(), self.dim)?;
        let mut line = Vec::with_capacity(16 * self.dim + 64);
        for (i, word) in self.words.iter().enumerate() {
            line.clear();
            line.extend_from_slice(word.as_bytes());
            match format {
                Format::Binary => {
                    line.push(b' ');
                    for v in self.vector(i) {
                        line.extend_from_slice(&v.to_le_bytes());
                    }
                }
                Format::Text => {
                    for v in self.vector(i) {
                        write!(line, " {v}")?;
                    }
                }
            }
            line.push(b'\n');
            w.write_all(&line)?;
        }
        Ok(())
    }

    /// Reads a file in either format, detected from its first row.
    pub fn load(path: &Path) -> Result<(Embeddings, Format), FormatError> {
        let format = detect(path)?;
        Ok((Self::load_as(path, format)?, format))
    }

    /// Reads a file in a given format.
    pub fn load_as(path: &Path, format: Format) -> Result<Embeddings, FormatError> {
        let io_err = |source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut r = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err)?);
        match format {
            Format::Text => read_text(&mut r, path),
            Format::Binary => read_binary(&mut r, path),
        }
    }
}

/// Writes a file atomically: to a temporary file beside `path`, synced, then renamed over it,
/// so a full disk or a kill never leaves a truncated file in place of the previous good one.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Build the vectors of a file, warning (with line numbers) about duplicate words and about
/// content past the `n` rows the header announced.
fn finish<R: BufRead>(
    r: &mut R,
    path: &Path,
    words: Vec<String>,
    dim: usize,
    data: Vec<f32>,
) -> Result<Embeddings, FormatError> {
    let n = words.len();
    let mut warnings = Vec::new();
    let mut first: FxHashMap<&str, usize> = FxHashMap::default();
    for (i, w) in words.iter().enumerate() {
        if let Some(&j) = first.get(w.as_str()) {
            warnings.push(format!(
                "{}: line {}: word '{w}' appears again (first on line {}); the first vector is used",
                path.display(),
                i + 2,
                j + 2
            ));
        } else {
            first.insert(w, i);
        }
    }
    let mut rest = Vec::new();
    let _ = r.take(1 << 16).read_to_end(&mut rest);
    if rest.iter().any(|b| !b.is_ascii_whitespace()) {
        warnings.push(format!(
            "{}: line {}: the header announces {n} vectors but the file goes on; the rest is ignored",
            path.display(),
            n + 2
        ));
    }
    let mut e = Embeddings::new(words, dim, data).map_err(|e| perr(path, 1, e))?;
    if let Some(row) = e.first_non_finite() {
        let msg = format!(
            "the vector of '{}' holds NaN or infinity (vectors of a training run that \
             diverged; train again with a lower --alpha)",
            e.words[row]
        );
        return Err(perr(path, row + 2, msg));
    }
    e.warnings = warnings;
    Ok(e)
}

fn perr(path: &Path, line: usize, msg: impl Into<String>) -> FormatError {
    FormatError::Parse {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// Reads and parses the header line.
fn read_header<R: BufRead>(r: &mut R, path: &Path) -> Result<(usize, usize), FormatError> {
    let mut line = Vec::new();
    r.take(4096)
        .read_until(b'\n', &mut line)
        .map_err(|source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&line);
    let bad = || {
        let binary = std::str::from_utf8(&line).is_err()
            || line.iter().any(|&b| b < 0x20 && !b"\t\r\n".contains(&b));
        let found = if binary {
            format!("{}, not a word2vec file", describe_binary(&line))
        } else {
            format!("'{}'", text.trim_end().chars().take(60).collect::<String>())
        };
        perr(
            path,
            1,
            format!("header must be '<number of words> <dimension>', found {found}"),
        )
    };
    if !line.ends_with(b"\n") {
        return Err(bad());
    }
    let mut parts = text.split_ascii_whitespace();
    let (Some(n), Some(d), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (Ok(n), Ok(d)) = (n.parse::<usize>(), d.parse::<usize>()) else {
        return Err(bad());
    };
    if d == 0 {
        return Err(perr(path, 1, "dimension is 0"));
    }
    Ok((n, d))
}

/// What a file that opens with `bytes` (not text) seems to be, for an error message.
fn describe_binary(bytes: &[u8]) -> &'static str {
    if bytes.len() > 8 && bytes[8] == b'{' {
        "a safetensors file (a checkpoint?)"
    } else if bytes.starts_with(b"\x93NUMPY") {
        "a NumPy .npy array"
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        "gzip-compressed data (decompress it first)"
    } else if bytes.starts_with(b"PK") {
        "a zip archive"
    } else {
        "binary data"
    }
}

fn read_text<R: BufRead>(r: &mut R, path: &Path) -> Result<Embeddings, FormatError> {
    let (n, dim) = read_header(r, path)?;
    let io_err = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut words = Vec::with_capacity(n.min(1 << 24));
    let mut data = Vec::with_capacity(n.min(1 << 24) * dim);
    let mut buf = Vec::new();
    for i in 0..n {
        let lineno = i + 2;
        buf.clear();
        if r.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
            return Err(perr(
                path,
                lineno,
                format!("file ends after {i} of the {n} vectors announced in the header"),
            ));
        }
        let text = String::from_utf8_lossy(&buf);
        let mut parts = text.split_ascii_whitespace();
        let Some(word) = parts.next() else {
            return Err(perr(path, lineno, "empty line"));
        };
        let start = data.len();
        for p in parts {
            let v: f32 = p.parse().map_err(|_| {
                perr(
                    path,
                    lineno,
                    format!("'{p}' is not a number (word '{word}')"),
                )
            })?;
            data.push(v);
        }
        let got = data.len() - start;
        if got != dim {
            return Err(perr(
                path,
                lineno,
                format!("word '{word}' has {got} values, expected {dim}"),
            ));
        }
        words.push(word.to_string());
    }
    finish(r, path, words, dim, data)
}

fn read_binary<R: BufRead>(r: &mut R, path: &Path) -> Result<Embeddings, FormatError> {
    let (n, dim) = read_header(r, path)?;
    let io_err = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut words = Vec::with_capacity(n.min(1 << 24));
    let mut data = Vec::with_capacity(n.min(1 << 24) * dim);
    let mut word = Vec::new();
    let mut row = vec![0u8; dim * 4];
    for i in 0..n {
        let lineno = i + 2;
        word.clear();
        // The word runs up to a space; skip the newline that ends the previous row (if any).
        loop {
            let buf = r.fill_buf().map_err(io_err)?;
            if buf.is_empty() {
                return Err(perr(
                    path,
                    lineno,
                    format!("file ends after {i} of the {n} vectors announced in the header"),
                ));
            }
            let mut used = 0;
            let mut done = false;
            for &b in buf {
                used += 1;
                if b == b' ' {
                    done = true;
                    break;
                }
                if b == b'\n' && word.is_empty() {
                    continue;
                }
                word.push(b);
            }
            r.consume(used);
            if done {
                break;
            }
            if word.len() > 1 << 16 {
                return Err(perr(
                    path,
                    lineno,
                    "no space after the word within 64 KiB: not a word2vec binary row",
                ));
            }
        }
        let mut got = 0;
        while got < row.len() {
            match r.read(&mut row[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        // A word that is not text means the rows are misaligned: the header's dimension does
        // not match the vectors (reading on would give garbage vectors).
        let Some(w) = std::str::from_utf8(&word)
            .ok()
            .filter(|w| !w.is_empty() && !w.chars().any(char::is_control))
            .map(str::to_string)
        else {
            return Err(perr(
                path,
                lineno,
                format!(
                    "the word is not text ({} bytes, starting {:02x?}): the rows do not have the \
                     header's {dim} values each, or the file is not word2vec binary",
                    word.len(),
                    &word[..word.len().min(8)]
                ),
            ));
        };
        if got < row.len() {
            return Err(perr(
                path,
                lineno,
                format!(
                    "vector of word '{w}' is short: {got} bytes, expected {} ({dim} floats)",
                    row.len()
                ),
            ));
        }
        data.extend(
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        words.push(w);
    }
    finish(r, path, words, dim, data)
}

/// Guesses the format of a vectors file: text if its first row parses as a word and `dim`
/// numbers, binary otherwise.
pub fn detect(path: &Path) -> Result<Format, FormatError> {
    let io_err = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut r = BufReader::new(File::open(path).map_err(io_err)?);
    let (n, dim) = read_header(&mut r, path)?;
    if n == 0 {
        return Ok(Format::Text);
    }
    let mut line = Vec::new();
    r.take(64 * 1024 + 64 * dim as u64)
        .read_until(b'\n', &mut line)
        .map_err(io_err)?;
    let text_like = std::str::from_utf8(&line).is_ok_and(|s| {
        let mut p = s.split_ascii_whitespace();
        p.next().is_some() && {
            let vals: Vec<&str> = p.collect();
            vals.len() == dim && vals.iter().all(|v| v.parse::<f32>().is_ok())
        }
    });
    Ok(if text_like {
        Format::Text
    } else {
        Format::Binary
    })
}
