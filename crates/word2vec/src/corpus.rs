//! Streaming corpus reader: whitespace tokenisation of byte ranges of a file.
//!
//! The corpus is never loaded whole. Each worker opens the file itself, seeks to the start of
//! its byte range and reads it through a fixed buffer, as word2vec.c does. A token belongs to
//! the range in which its first byte lies, so the ranges of `split_ranges` partition the tokens
//! of the file exactly, even when the file is one enormous line.
//!
//! Tokens are separated by ASCII whitespace (space, `\t`, `\n`, `\r`, `\x0b`, `\x0c`); `\n`
//! also ends a sentence. Tokens that are not valid UTF-8 are decoded lossily (U+FFFD) and
//! counted. Tokens longer than [`MAX_TOKEN_BYTES`] are truncated (at a character boundary).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Lines longer than this many words are split into several sentences (as gensim's `LineSentence`).
pub const MAX_SENTENCE_WORDS: usize = 10_000;
/// Longer tokens are cut to this many bytes (word2vec.c cuts at 100).
pub const MAX_TOKEN_BYTES: usize = 1_000;

const BUF_SIZE: usize = 1 << 18;

/// What the scanner reports, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// One token, valid UTF-8 (lossily decoded if needed), lowercased if asked.
    Word(&'a str),
    /// A `\n`.
    EndOfLine,
}

/// Counts gathered while scanning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Tokens seen.
    pub tokens: u64,
    /// Tokens that were not valid UTF-8.
    pub invalid_utf8: u64,
    /// Tokens cut to [`MAX_TOKEN_BYTES`].
    pub truncated: u64,
    /// `\n` seen.
    pub newlines: u64,
    /// Bytes of the range (start..end).
    pub bytes: u64,
}

impl ScanStats {
    /// Adds another range's counts.
    pub fn add(&mut self, o: &ScanStats) {
        self.tokens += o.tokens;
        self.invalid_utf8 += o.invalid_utf8;
        self.truncated += o.truncated;
        self.newlines += o.newlines;
        self.bytes += o.bytes;
    }
}

/// Where the first NUL byte of a file is, as (1-based line, byte offset), streaming it: a
/// text corpus has none, while UTF-16 text and binary files are full of them.
pub fn first_nul(path: &Path) -> io::Result<Option<(u64, u64)>> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut offset, mut line) = (0u64, 1u64);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if let Some(at) = chunk.iter().position(|&b| b == 0) {
            line += chunk[..at].iter().filter(|&&b| b == b'\n').count() as u64;
            return Ok(Some((line, offset + at as u64)));
        }
        line += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        offset += n as u64;
    }
}

/// The refusal of a corpus that is not text, the same for every command that reads one.
pub fn not_text_message(path: &Path, line: u64, byte: u64) -> String {
    format!(
        "{} is not a text file: a NUL byte at line {line} (byte {byte}); give UTF-8 text, one \
         document or sentence per line (UTF-16 files are full of NUL bytes: convert them with \
         `iconv -f UTF-16 -t UTF-8`)",
        path.display()
    )
}

/// `n` contiguous byte ranges covering `0..len` (some may be empty).
pub fn split_ranges(len: u64, n: usize) -> Vec<(u64, u64)> {
    let n = n.max(1) as u64;
    (0..n).map(|i| (len * i / n, len * (i + 1) / n)).collect()
}

#[inline(always)]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Turns raw tokens into `&str`: lossy UTF-8 decoding and optional lowercasing, reusing its
/// buffers (no allocation per token on the common path).
#[derive(Debug, Default)]
pub struct Decoder {
    lowercase: bool,
    lower: String,
    lossy: String,
}

impl Decoder {
    /// A decoder that lowercases (Unicode-aware) if asked.
    pub fn new(lowercase: bool) -> Decoder {
        Decoder {
            lowercase,
            ..Decoder::default()
        }
    }

    /// The token as text, and whether it was invalid UTF-8 (then decoded with U+FFFD).
    #[inline]
    pub fn decode<'a>(&'a mut self, raw: &'a [u8]) -> (&'a str, bool) {
        let (s, invalid): (&str, bool) = match std::str::from_utf8(raw) {
            Ok(s) => (s, false),
            Err(_) => {
                self.lossy.clear();
                self.lossy.push_str(&String::from_utf8_lossy(raw));
                (&self.lossy, true)
            }
        };
        if self.lowercase && s.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
            self.lower.clear();
            if s.is_ascii() {
                self.lower
                    .extend(s.bytes().map(|b| b.to_ascii_lowercase() as char));
            } else {
                self.lower.extend(s.chars().flat_map(char::to_lowercase));
            }
            (&self.lower, invalid)
        } else {
            (s, invalid)
        }
    }
}

/// Raw scanner events: tokens as bytes (cut to [`MAX_TOKEN_BYTES`]), not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawEvent<'a> {
    /// One token's bytes.
    Word(&'a [u8]),
    /// A `\n`.
    EndOfLine,
}

/// Cuts an over-long token at a character boundary.
#[inline(always)]
fn cap<'a>(raw: &'a [u8], stats: &mut ScanStats) -> &'a [u8] {
    if raw.len() > MAX_TOKEN_BYTES {
        let mut k = MAX_TOKEN_BYTES;
        while k > 0 && (raw[k] & 0xC0) == 0x80 {
            k -= 1;
        }
        stats.truncated += 1;
        &raw[..k]
    } else {
        raw
    }
}

/// Scans the tokens whose first byte lies in `start..end` of `file`, in order, decoded.
///
/// `\n` bytes inside the range are reported as [`Event::EndOfLine`].
pub fn scan_range<F: FnMut(Event<'_>)>(
    file: &mut File,
    start: u64,
    end: u64,
    lowercase: bool,
    mut f: F,
) -> io::Result<ScanStats> {
    let mut dec = Decoder::new(lowercase);
    let mut invalid = 0;
    let mut stats = scan_range_raw(file, start, end, |e| match e {
        RawEvent::Word(raw) => {
            let (w, bad) = dec.decode(raw);
            invalid += u64::from(bad);
            f(Event::Word(w));
        }
        RawEvent::EndOfLine => f(Event::EndOfLine),
    })?;
    stats.invalid_utf8 = invalid;
    Ok(stats)
}

/// As [`scan_range`], with raw token bytes (for callers that can match bytes directly).
pub fn scan_range_raw<F: FnMut(RawEvent<'_>)>(
    file: &mut File,
    start: u64,
    end: u64,
    f: F,
) -> io::Result<ScanStats> {
    Scanner::new().scan_raw(file, start, end, f)
}

/// Reusable read buffers for scanning many ranges (no allocation per range).
#[derive(Debug)]
pub struct Scanner {
    buf: Vec<u8>,
    tok: Vec<u8>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    /// A scanner with a 256 KiB buffer.
    pub fn new() -> Scanner {
        Scanner {
            buf: vec![0u8; BUF_SIZE],
            tok: Vec::new(),
        }
    }

    /// As [`scan_range_raw`].
    pub fn scan_raw<F: FnMut(RawEvent<'_>)>(
        &mut self,
        file: &mut File,
        start: u64,
        end: u64,
        f: F,
    ) -> io::Result<ScanStats> {
        self.tok.clear();
        scan_impl(file, start, end, &mut self.buf, &mut self.tok, f)
    }
}

fn scan_impl<F: FnMut(RawEvent<'_>)>(
    file: &mut File,
    start: u64,
    end: u64,
    buf: &mut [u8],
    tok: &mut Vec<u8>,
    mut f: F,
) -> io::Result<ScanStats> {
    let mut stats = ScanStats {
        bytes: end.saturating_sub(start),
        ..ScanStats::default()
    };
    if start >= end {
        return Ok(stats);
    }
    // A token that started before `start` belongs to the previous range: skip its tail.
    let mut skipping = false;
    if start > 0 {
        file.seek(SeekFrom::Start(start - 1))?;
        let mut b = [0u8; 1];
        file.read_exact(&mut b)?;
        skipping = !is_space(b[0]);
    } else {
        file.seek(SeekFrom::Start(0))?;
    }
    // `tok` holds a token that crosses a buffer boundary.
    let mut in_token = false;
    let mut base = start; // file offset of buf[0]
    'outer: loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let b = &buf[..n];
        let mut i = 0;
        if skipping {
            while i < n && !is_space(b[i]) {
                i += 1;
            }
            if i == n {
                base += n as u64;
                continue;
            }
            skipping = false;
        }
        while i < n {
            if !in_token {
                while i < n && is_space(b[i]) {
                    if b[i] == b'\n' {
                        if base + i as u64 >= end {
                            break 'outer;
                        }
                        stats.newlines += 1;
                        f(RawEvent::EndOfLine);
                    }
                    i += 1;
                }
                if i == n {
                    break;
                }
                if base + i as u64 >= end {
                    break 'outer;
                }
            }
            let s = i;
            while i < n && !is_space(b[i]) {
                i += 1;
            }
            if i < n {
                stats.tokens += 1;
                if in_token {
                    push_capped(tok, &b[s..i]);
                    f(RawEvent::Word(cap(tok, &mut stats)));
                    tok.clear();
                    in_token = false;
                } else {
                    f(RawEvent::Word(cap(&b[s..i], &mut stats)));
                }
            } else {
                push_capped(tok, &b[s..n]);
                in_token = true;
            }
        }
        base += n as u64;
    }
    if in_token {
        stats.tokens += 1;
        f(RawEvent::Word(cap(tok, &mut stats)));
    }
    Ok(stats)
}

fn push_capped(tok: &mut Vec<u8>, bytes: &[u8]) {
    let room = (MAX_TOKEN_BYTES + 4).saturating_sub(tok.len());
    tok.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Scans a whole file in one range.
pub fn scan_file<F: FnMut(Event<'_>)>(path: &Path, lowercase: bool, f: F) -> io::Result<ScanStats> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    scan_range(&mut file, 0, len, lowercase, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tmp(name: &str, data: &[u8]) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("pretext-w2v-corpus-{}-{name}", std::process::id()));
        std::fs::File::create(&p).unwrap().write_all(data).unwrap();
        p
    }

    fn collect(path: &Path, start: u64, end: u64, lower: bool) -> (Vec<String>, ScanStats) {
        let mut out = Vec::new();
        let mut f = File::open(path).unwrap();
        let st = scan_range(&mut f, start, end, lower, |e| match e {
            Event::Word(w) => out.push(w.to_string()),
            Event::EndOfLine => out.push("\\n".into()),
        })
        .unwrap();
        (out, st)
    }

    #[test]
    fn ranges_partition_tokens_exactly() {
        let text = b"the quick  brown\tfox\njumps over\r\n\nthe lazy dog\n  end";
        let p = tmp("ranges", text);
        let (all, st) = collect(&p, 0, text.len() as u64, false);
        assert_eq!(
            all,
            [
                "the", "quick", "brown", "fox", "\\n", "jumps", "over", "\\n", "\\n", "the",
                "lazy", "dog", "\\n", "end"
            ]
        );
        assert_eq!(st.tokens, 10);
        // Every way of cutting the file into ranges yields the same token stream.
        for n in 1..=text.len() {
            let mut joined = Vec::new();
            let mut tokens = 0;
            for (s, e) in split_ranges(text.len() as u64, n) {
                let (part, st) = collect(&p, s, e, false);
                tokens += st.tokens;
                joined.extend(part);
            }
            assert_eq!(joined, all, "{n} ranges");
            assert_eq!(tokens, 10);
        }
        std::fs::remove_file(p).ok();
    }

    #[test]
    fn lossy_utf8_lowercase_and_truncation() {
        let mut text = b"Hello W\xF6rld \xC3\x89T\xC3\x89 ".to_vec();
        text.extend(std::iter::repeat_n(b'a', 3000));
        let p = tmp("utf8", &text);
        let (words, st) = collect(&p, 0, text.len() as u64, true);
        assert_eq!(words[0], "hello");
        assert_eq!(words[1], "w\u{FFFD}rld");
        assert_eq!(words[2], "été");
        assert_eq!(words[3].len(), MAX_TOKEN_BYTES);
        assert_eq!(st.invalid_utf8, 1);
        assert_eq!(st.truncated, 1);
        std::fs::remove_file(p).ok();
    }

    #[test]
    fn tokens_across_buffer_boundaries() {
        // ~1.5 MB: several buffers, many tokens straddle a buffer edge.
        let mut text = String::new();
        let mut rng = crate::rng::Rng::new(3, 0);
        for i in 0..200_000 {
            let len = 1 + rng.below(12) as usize;
            let w: String = (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect();
            text.push_str(&w);
            text.push(if i % 17 == 16 { '\n' } else { ' ' });
        }
        let p = tmp("big", text.as_bytes());
        let expected: Vec<String> = text
            .split(' ')
            .flat_map(|s| {
                let mut v: Vec<String> = Vec::new();
                for (k, part) in s.split('\n').enumerate() {
                    if k > 0 {
                        v.push("\\n".into());
                    }
                    if !part.is_empty() {
                        v.push(part.into());
                    }
                }
                v
            })
            .collect();
        for n in [1, 2, 3, 7] {
            let mut joined = Vec::new();
            for (s, e) in split_ranges(text.len() as u64, n) {
                joined.extend(collect(&p, s, e, false).0);
            }
            assert_eq!(joined, expected, "{n} ranges");
        }
        std::fs::remove_file(p).ok();
    }
}
