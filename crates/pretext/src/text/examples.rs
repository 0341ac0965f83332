//! Training examples from lines of text, and padded batches.
//!
//! Line by line: one example per non-empty line, truncated to `max_len` tokens with special
//! tokens. Packed ("group texts"): all lines concatenated and cut into blocks of `max_len - 2`
//! tokens, each framed by the start and end tokens; the incomplete last block is dropped, as
//! Hugging Face's `run_mlm.py` does.

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::masking::{IGNORE, Masked};
use super::tokenizer::{SpecialIds, TextTokenizer};

/// One sequence with special tokens, and the word index of each token (`None` for specials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub words: Vec<Option<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExampleMode {
    LineByLine,
    Packed,
}

/// Examples of `lines` in `mode`; see [`line_examples`] and [`packed_examples`].
pub fn build_examples<S: AsRef<str>>(
    tokenizer: &TextTokenizer,
    lines: &[S],
    max_len: usize,
    mode: ExampleMode,
) -> Result<Vec<Example>> {
    match mode {
        ExampleMode::LineByLine => line_examples(tokenizer, lines, max_len),
        ExampleMode::Packed => packed_examples(tokenizer, lines, max_len),
    }
}

pub fn check_max_len(max_len: usize) -> Result<()> {
    if max_len < 3 {
        bail!("max_len = {max_len}: needs room for the start token, one token and the end token");
    }
    Ok(())
}

/// Frame `body` with the start and end tokens.
fn framed(tokenizer: &TextTokenizer, body: &[u32], words: &[Option<u32>]) -> Example {
    Example::framed(&tokenizer.special_ids(), body, words)
}

impl Example {
    /// `body` between the start and end tokens, as [`TextTokenizer::wrap`] frames it.
    pub fn framed(special: &SpecialIds, body: &[u32], words: &[Option<u32>]) -> Self {
        let mut ids = Vec::with_capacity(body.len() + 2);
        ids.push(special.cls);
        ids.extend_from_slice(body);
        ids.push(special.sep);
        let mut framed_words = Vec::with_capacity(words.len() + 2);
        framed_words.push(None);
        framed_words.extend_from_slice(words);
        framed_words.push(None);
        Self {
            ids,
            words: framed_words,
        }
    }
}

/// Training examples by index: in memory, or cut on demand from a token cache
/// ([`super::token_cache::CachedExamples`]).
pub trait ExampleSet: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn example(&self, index: usize) -> Example;
}

impl ExampleSet for Vec<Example> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn example(&self, index: usize) -> Example {
        self[index].clone()
    }
}

/// The refusal of a corpus that made no example: `tokens` is how many it had.
pub fn check_example_count(
    origin: &str,
    tokens: usize,
    examples: usize,
    max_len: usize,
) -> Result<()> {
    if tokens == 0 {
        bail!("{origin}: the corpus has no non-empty line");
    }
    if examples == 0 {
        bail!(
            "{origin}: no chunk of {CHUNK_LINES} lines holds one packed block of max_len - 2 = {} \
             tokens ({tokens} tokens in all); lower data.max_len or use data.mode = \"line_by_line\"",
            max_len - 2
        );
    }
    Ok(())
}

/// One example per non-empty line, its body truncated so the example has at most `max_len`
/// tokens.
pub fn line_examples<S: AsRef<str>>(
    tokenizer: &TextTokenizer,
    lines: &[S],
    max_len: usize,
) -> Result<Vec<Example>> {
    check_max_len(max_len)?;
    let out = line_examples_of(tokenizer, lines, max_len)?;
    if out.is_empty() {
        bail!("the corpus has no non-empty line");
    }
    Ok(out)
}

fn line_examples_of<S: AsRef<str>>(
    tokenizer: &TextTokenizer,
    lines: &[S],
    max_len: usize,
) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for line in lines.iter().map(AsRef::as_ref) {
        if line.trim().is_empty() {
            continue;
        }
        let (mut body, mut words) = tokenizer.encode_body_with_words(line)?;
        body.truncate(max_len - 2);
        words.truncate(max_len - 2);
        if body.is_empty() {
            continue;
        }
        out.push(framed(tokenizer, &body, &words));
    }
    Ok(out)
}

/// All lines concatenated, cut into full blocks of `max_len - 2` tokens, each framed by the
/// start and end tokens. Word indices are renumbered across lines so no two words of a block
/// share one.
pub fn packed_examples<S: AsRef<str>>(
    tokenizer: &TextTokenizer,
    lines: &[S],
    max_len: usize,
) -> Result<Vec<Example>> {
    check_max_len(max_len)?;
    let (blocks, tokens) = packed_examples_of(tokenizer, lines, max_len)?;
    if tokens == 0 {
        bail!("the corpus has no non-empty line");
    }
    if blocks.is_empty() {
        bail!(
            "the corpus has {tokens} tokens, fewer than one packed block of max_len - 2 = {}",
            max_len - 2
        );
    }
    Ok(blocks)
}

/// Packed blocks of `lines` and the number of tokens they were cut from.
fn packed_examples_of<S: AsRef<str>>(
    tokenizer: &TextTokenizer,
    lines: &[S],
    max_len: usize,
) -> Result<(Vec<Example>, usize)> {
    let mut stream = Vec::new();
    let mut stream_words = Vec::new();
    let mut word_offset = 0u32;
    for line in lines.iter().map(AsRef::as_ref) {
        if line.trim().is_empty() {
            continue;
        }
        let (body, words) = tokenizer.encode_body_with_words(line)?;
        let line_words = words.iter().flatten().max().map_or(0, |&w| w + 1);
        stream_words.extend(words.iter().map(|w| w.map(|w| w + word_offset)));
        stream.extend(body);
        word_offset += line_words;
    }
    let block = max_len - 2;
    let blocks = stream
        .chunks_exact(block)
        .zip(stream_words.chunks_exact(block))
        .map(|(body, words)| framed(tokenizer, body, words))
        .collect();
    Ok((blocks, stream.len()))
}

/// Lines per tokenisation chunk of [`corpus_examples`]: `run_mlm.py`'s map batch size.
pub const CHUNK_LINES: usize = 1000;

/// Examples of a whole corpus, tokenised in parallel chunks of [`CHUNK_LINES`] lines on the
/// rayon pool, in corpus order. Packed blocks never cross a chunk boundary and each chunk's
/// incomplete last block is dropped, as `run_mlm.py`'s `group_texts` does over its map
/// batches. `origin` names the corpus in errors.
pub fn corpus_examples(
    tokenizer: &TextTokenizer,
    lines: &[String],
    max_len: usize,
    mode: ExampleMode,
    origin: &str,
) -> Result<Vec<Example>> {
    use rayon::prelude::*;
    check_max_len(max_len)?;
    let chunks: Vec<(Vec<Example>, usize)> = lines
        .par_chunks(CHUNK_LINES)
        .map(|chunk| match mode {
            ExampleMode::LineByLine => {
                let examples = line_examples_of(tokenizer, chunk, max_len)?;
                let tokens = examples.iter().map(|e| e.ids.len()).sum();
                Ok((examples, tokens))
            }
            ExampleMode::Packed => packed_examples_of(tokenizer, chunk, max_len),
        })
        .collect::<Result<_>>()?;
    let tokens: usize = chunks.iter().map(|c| c.1).sum();
    let examples: Vec<Example> = chunks.into_iter().flat_map(|c| c.0).collect();
    check_example_count(origin, tokens, examples.len(), max_len)?;
    Ok(examples)
}

/// Sequences padded to one length, row-major `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    /// True at real tokens, false at padding (Hugging Face's attention mask).
    pub attention_mask: Vec<bool>,
    pub batch_size: usize,
    pub seq_len: usize,
    /// The epoch the batch belongs to (set by the loader).
    pub epoch: usize,
}

/// Pad `rows` with `pad_id` (labels with [`IGNORE`]) to the longest row, or to `min_len` if
/// that is longer.
pub fn pad_batch(rows: &[Masked], pad_id: u32, min_len: usize) -> Result<Batch> {
    if rows.is_empty() {
        bail!("cannot pad an empty batch");
    }
    let seq_len = rows
        .iter()
        .map(|r| r.input_ids.len())
        .max()
        .unwrap_or(0)
        .max(min_len);
    let mut batch = Batch {
        input_ids: Vec::with_capacity(rows.len() * seq_len),
        labels: Vec::with_capacity(rows.len() * seq_len),
        attention_mask: Vec::with_capacity(rows.len() * seq_len),
        batch_size: rows.len(),
        seq_len,
        epoch: 0,
    };
    for (i, row) in rows.iter().enumerate() {
        if row.labels.len() != row.input_ids.len() {
            bail!(
                "batch row {i}: {} labels for {} ids",
                row.labels.len(),
                row.input_ids.len()
            );
        }
        let pad = seq_len - row.input_ids.len();
        batch.input_ids.extend(&row.input_ids);
        batch.input_ids.extend(std::iter::repeat_n(pad_id, pad));
        batch.labels.extend(&row.labels);
        batch.labels.extend(std::iter::repeat_n(IGNORE, pad));
        batch
            .attention_mask
            .extend(std::iter::repeat_n(true, row.input_ids.len()));
        batch.attention_mask.extend(std::iter::repeat_n(false, pad));
    }
    Ok(batch)
}

impl Batch {
    /// Positions that count in the loss.
    pub fn masked_count(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }

    pub fn input_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let ids: Vec<i64> = self.input_ids.iter().map(|&id| i64::from(id)).collect();
        Tensor::from_data(
            TensorData::new(ids, [self.batch_size, self.seq_len]),
            device,
        )
    }

    pub fn attention_tensor(&self, device: &Device) -> Tensor<2, Bool> {
        Tensor::from_data(
            TensorData::new(self.attention_mask.clone(), [self.batch_size, self.seq_len]),
            device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::test_support::{TempDir, grammar_corpus};
    use crate::text::tokenizer::Family;

    fn tokenizer(family: Family, name: &str) -> (TempDir, TextTokenizer) {
        let dir = TempDir::new(name);
        let corpus = dir.write("c.txt", &grammar_corpus(200, 3).join("\n"));
        let tok = TextTokenizer::train(family, &[corpus], 300, true).unwrap();
        (dir, tok)
    }

    #[test]
    fn line_examples_truncate_and_keep_special_tokens() {
        for family in [Family::Bert, Family::Roberta] {
            let (_dir, tok) = tokenizer(family, &format!("ex-lines-{}", family.name()));
            let sentence = grammar_corpus(1, 9).remove(0);
            let lines = ["the lazy fox", "", "   ", sentence.as_str()];
            let examples = line_examples(&tok, &lines, 8).unwrap();
            assert_eq!(examples.len(), 2, "empty lines are skipped");
            let s = tok.special_ids();
            assert_eq!(examples[0].ids, tok.encode("the lazy fox").unwrap());
            let long = &examples[1];
            assert_eq!(long.ids.len(), 8);
            assert_eq!((long.ids[0], long.ids[7]), (s.cls, s.sep));
            assert_eq!(long.ids[..7], tok.encode(lines[3]).unwrap()[..7]);
            assert_eq!(long.words.len(), 8);
            assert_eq!((long.words[0], long.words[7]), (None, None));
        }
    }

    #[test]
    fn packed_examples_fill_whole_blocks() {
        let (_dir, tok) = tokenizer(Family::Roberta, "ex-packed");
        let lines = grammar_corpus(20, 4);
        let total: usize = lines
            .iter()
            .map(|l| tok.encode_body_with_words(l).unwrap().0.len())
            .sum();
        let examples = packed_examples(&tok, &lines, 16).unwrap();
        assert_eq!(
            examples.len(),
            total / 14,
            "the incomplete last block is dropped"
        );
        let s = tok.special_ids();
        let mut body = Vec::new();
        let mut last_word = None;
        for ex in &examples {
            assert_eq!(ex.ids.len(), 16);
            assert_eq!((ex.ids[0], ex.ids[15]), (s.cls, s.sep));
            body.extend_from_slice(&ex.ids[1..15]);
            // Word indices keep growing across lines and blocks.
            for w in ex.words[1..15].iter().map(|w| w.unwrap()) {
                assert!(last_word.is_none_or(|last| w >= last));
                last_word = Some(w);
            }
        }
        let first_lines: Vec<u32> = lines
            .iter()
            .flat_map(|l| tok.encode_body_with_words(l).unwrap().0)
            .take(body.len())
            .collect();
        assert_eq!(body, first_lines);
    }

    #[test]
    fn corpus_errors_are_clear() {
        let (_dir, tok) = tokenizer(Family::Bert, "ex-errors");
        let err = line_examples(&tok, &["", " "], 16).unwrap_err();
        assert!(err.to_string().contains("no non-empty line"), "{err}");
        let err = packed_examples::<&str>(&tok, &[], 16).unwrap_err();
        assert!(err.to_string().contains("no non-empty line"), "{err}");
        let err = packed_examples(&tok, &["the lazy fox"], 64).unwrap_err();
        assert!(
            err.to_string().contains("fewer than one packed block"),
            "{err}"
        );
        assert!(line_examples(&tok, &["the fox"], 2).is_err());
    }

    #[test]
    fn padding_extends_ids_labels_and_mask() {
        let rows = [
            Masked {
                input_ids: vec![2, 10, 4, 3],
                labels: vec![IGNORE, IGNORE, 11, IGNORE],
            },
            Masked::unmasked(&[2, 12, 3]),
        ];
        let batch = pad_batch(&rows, 0, 0).unwrap();
        assert_eq!((batch.batch_size, batch.seq_len), (2, 4));
        assert_eq!(batch.input_ids, [2, 10, 4, 3, 2, 12, 3, 0]);
        assert_eq!(batch.labels[7], IGNORE);
        assert_eq!(
            batch.attention_mask,
            [true, true, true, true, true, true, true, false]
        );
        assert_eq!(batch.masked_count(), 1);
        assert_eq!(pad_batch(&rows, 0, 6).unwrap().seq_len, 6);
        assert!(pad_batch(&[], 0, 0).is_err());
    }
}
