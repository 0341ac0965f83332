//! Text files as UTF-8, whole or one line at a time: a file with a NUL byte is refused as
//! binary (naming the line), and invalid UTF-8 sequences are replaced by U+FFFD with one
//! warning naming how many and the first line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pretext_word2vec::corpus::not_text_message;

/// Warn once per file and process: the MLM job reads its corpus twice (the tokenizer, then the
/// token cache), and one warning is enough.
fn warn_replaced(path: &Path, replaced: usize, first_line: u64) {
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.iter().any(|p| p == path) {
        warned.push(path.to_path_buf());
        eprintln!(
            "warning: {}: {replaced} invalid UTF-8 sequences replaced, the first at line {first_line}",
            path.display()
        );
    }
}

/// The whole of a text file (see the module doc).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let line_of = |offset: usize| bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        let line = line_of(nul) as u64;
        bail!("{}", not_text_message(path, line, nul as u64));
    }
    match String::from_utf8(bytes.clone()) {
        Ok(text) => Ok(text),
        Err(e) => {
            let first = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let replaced = text.matches('\u{FFFD}').count();
            warn_replaced(path, replaced, line_of(first) as u64);
            Ok(text)
        }
    }
}

/// The lines of a text file read one at a time through a buffer, split as `str::lines` splits
/// them (at `\n`, a `\r` before it dropped), so memory does not grow with the file.
pub struct TextLines {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    /// Lines read so far, and the bytes they took.
    line: u64,
    offset: u64,
    replaced: usize,
    first_replaced_line: u64,
    done: bool,
}

impl TextLines {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 18, file),
            buf: Vec::new(),
            line: 0,
            offset: 0,
            replaced: 0,
            first_replaced_line: 0,
            done: false,
        })
    }

    /// Bytes read so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    fn next_line(&mut self) -> Result<Option<String>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        if n == 0 {
            if self.replaced > 0 {
                warn_replaced(&self.path, self.replaced, self.first_replaced_line);
            }
            return Ok(None);
        }
        self.line += 1;
        if let Some(nul) = self.buf.iter().position(|&b| b == 0) {
            let byte = self.offset + nul as u64;
            bail!("{}", not_text_message(&self.path, self.line, byte));
        }
        self.offset += n as u64;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        Ok(Some(match std::str::from_utf8(&self.buf) {
            Ok(text) => text.to_string(),
            Err(_) => {
                let text = String::from_utf8_lossy(&self.buf).into_owned();
                if self.replaced == 0 {
                    self.first_replaced_line = self.line;
                }
                self.replaced += text.matches('\u{FFFD}').count();
                text
            }
        }))
    }
}

impl Iterator for TextLines {
    type Item = Result<String>;

    /// The next line; after an error, the end.
    fn next(&mut self) -> Option<Result<String>> {
        if self.done {
            return None;
        }
        let next = self.next_line().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::test_support::TempDir;

    #[test]
    fn lines_are_split_as_str_lines_splits_them_and_binary_is_refused() {
        let dir = TempDir::new("text-lines");
        let text = "one\r\ntwo\n\n  three \nlast";
        let path = dir.write("a.txt", text);
        let streamed: Vec<String> = TextLines::open(&path)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(streamed, text.lines().collect::<Vec<_>>());
        assert_eq!(read_text(&path).unwrap(), text);

        let latin1 = dir.path().join("latin1.txt");
        std::fs::write(&latin1, b"ok\nthe caf\xe9 is open\n").unwrap();
        let lines: Vec<String> = TextLines::open(&latin1)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(lines, ["ok", "the caf\u{FFFD} is open"]);

        let binary = dir.path().join("model.bin");
        std::fs::write(&binary, b"a\nb\nc\0d\n").unwrap();
        let results: Vec<Result<String>> = TextLines::open(&binary).unwrap().collect();
        assert_eq!(results.len(), 3, "two lines, then the error, then the end");
        let err = results[2].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("model.bin is not a text file") && err.contains("line 3"),
            "{err}"
        );
        assert!(err.contains("byte 5"), "{err}");
        let whole = read_text(&binary).unwrap_err().to_string();
        assert!(
            whole.contains("line 3") && whole.contains("byte 5"),
            "{whole}"
        );
        assert!(TextLines::open(&dir.path().join("missing.txt")).is_err());
    }
}
