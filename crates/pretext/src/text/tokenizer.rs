//! Subword tokenizers for masked language modelling, trained and stored with Hugging Face's
//! `tokenizers` crate so a `tokenizer.json` written here loads in Python and vice versa.
//!
//! BERT: BertNormalizer (lowercasing optional) → BertPreTokenizer → WordPiece, template
//! `[CLS] $A [SEP]`. RoBERTa: byte-level BPE (never an unknown token), `<s> $A </s>`.

use std::path::{Path, PathBuf};

use super::text_file::TextLines;
use crate::core::checkpoint::write_atomic;
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::{BertNormalizer, Lowercase};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// The two tokenizer (and model) families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Bert,
    Roberta,
}

/// The special tokens of a family, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    pub pad: &'static str,
    pub unk: &'static str,
    /// Starts every sequence: `[CLS]` / `<s>`.
    pub cls: &'static str,
    /// Ends every sequence: `[SEP]` / `</s>`.
    pub sep: &'static str,
    pub mask: &'static str,
}

impl Family {
    pub fn special_tokens(self) -> SpecialTokens {
        match self {
            Family::Bert => SpecialTokens {
                pad: "[PAD]",
                unk: "[UNK]",
                cls: "[CLS]",
                sep: "[SEP]",
                mask: "[MASK]",
            },
            Family::Roberta => SpecialTokens {
                pad: "<pad>",
                unk: "<unk>",
                cls: "<s>",
                sep: "</s>",
                mask: "<mask>",
            },
        }
    }

    /// Special tokens in the order the trainer assigns ids 0..5. RoBERTa's order reproduces
    /// Hugging Face's roberta-base ids (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3), which the
    /// encoder's position offset (padding id + 1) relies on.
    fn training_order(self) -> [&'static str; 5] {
        let s = self.special_tokens();
        match self {
            Family::Bert => [s.pad, s.unk, s.cls, s.sep, s.mask],
            Family::Roberta => [s.cls, s.pad, s.sep, s.unk, s.mask],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
        }
    }
}

/// Ids of the special tokens of a trained or loaded tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

impl SpecialIds {
    pub fn all(&self) -> [u32; 5] {
        [self.pad, self.unk, self.cls, self.sep, self.mask]
    }

    pub fn contains(&self, id: u32) -> bool {
        self.all().contains(&id)
    }
}

/// A tokenizer of one [`Family`], with its special-token ids resolved.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    family: Family,
    special: SpecialIds,
}

fn tk_err(context: String) -> impl FnOnce(tokenizers::Error) -> anyhow::Error {
    move |e| anyhow!("{context}: {e}")
}

impl TextTokenizer {
    /// Train a tokenizer of `family` on the lines of `files`; `vocab_size` includes the five
    /// special tokens. Byte-level BPE training is reproducible; WordPiece training in
    /// `tokenizers` 0.22 is not quite (its trainer numbers the `##` alphabet in hash-map order,
    /// which breaks a few ties between equally frequent merges differently from run to run), so
    /// the MLM job trains once and keeps the result beside its checkpoint. `lowercase` folds case (and, for BERT, strips accents as uncased BERT
    /// does).
    pub fn train(
        family: Family,
        files: &[PathBuf],
        vocab_size: usize,
        lowercase: bool,
    ) -> Result<Self> {
        if files.is_empty() {
            bail!("tokenizer training needs at least one text file");
        }
        // Streamed line by line, so memory grows with the vocabulary and not the corpus, and
        // through our reader rather than the library's, which stops at the first invalid UTF-8
        // byte with a message naming no file.
        let readers = files
            .iter()
            .map(|f| TextLines::open(f))
            .collect::<Result<Vec<_>>>()?;
        let failure = std::sync::Mutex::new(None);
        let any_text = std::sync::atomic::AtomicBool::new(false);
        let specials: Vec<AddedToken> = family
            .training_order()
            .iter()
            // RoBERTa's mask swallows the space before it (as Hugging Face's `<mask>` does),
            // so "over the <mask>" asks for the word piece "Ġdog", not for what follows a "Ġ".
            .map(|t| {
                AddedToken::from(t.to_string(), true)
                    .lstrip(family == Family::Roberta && *t == family.special_tokens().mask)
            })
            .collect();
        if vocab_size <= specials.len() {
            bail!(
                "vocab_size = {vocab_size}: must exceed the {} special tokens",
                specials.len()
            );
        }

        let (mut inner, mut trainer) = match family {
            Family::Bert => {
                let mut inner = Tokenizer::new(WordPiece::default());
                inner
                    .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
                    .with_pre_tokenizer(Some(BertPreTokenizer))
                    .with_decoder(Some(WordPieceDecoder::default()));
                let trainer = WordPieceTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(0)
                    .show_progress(false)
                    .special_tokens(specials)
                    .build();
                (inner, TrainerWrapper::WordPieceTrainer(trainer))
            }
            Family::Roberta => {
                // A prefix space makes a sentence's first word tokenize like any other word,
                // so line-by-line and packed examples see the same pieces.
                let byte_level = ByteLevel::new(true, true, true);
                let mut inner = Tokenizer::new(BPE::default());
                if lowercase {
                    inner.with_normalizer(Some(Lowercase));
                }
                inner
                    .with_pre_tokenizer(Some(byte_level))
                    .with_decoder(Some(ByteLevelDecoder::new(true, true, true)));
                let trainer = BpeTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(0)
                    .show_progress(false)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .build();
                (inner, TrainerWrapper::BpeTrainer(trainer))
            }
        };
        let lines = readers
            .into_iter()
            .flatten()
            .map_while(|line| match line {
                Ok(line) => Some(line),
                Err(e) => {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    None
                }
            })
            .inspect(|line| {
                if !line.trim().is_empty() {
                    any_text.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            });
        let trained = inner.train(&mut trainer, lines).map(|_| ());
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        if !any_text.into_inner() {
            bail!("empty corpus: the tokenizer training files {files:?} have no non-empty line");
        }
        trained.map_err(tk_err(format!(
            "training a {} tokenizer on {files:?}",
            family.name()
        )))?;

        let special = resolve_special(&inner, family, "trained tokenizer")?;
        let processor: PostProcessorWrapper = match family {
            Family::Bert => {
                let s = family.special_tokens();
                let single = format!("{} $A {}", s.cls, s.sep);
                let pair = format!("{} $A {} $B:1 {}:1", s.cls, s.sep, s.sep);
                let mut builder = TemplateProcessing::builder();
                builder
                    .try_single(single.as_str())
                    .map_err(|e| anyhow!("BERT template '{single}': {e}"))?;
                builder
                    .try_pair(pair.as_str())
                    .map_err(|e| anyhow!("BERT template '{pair}': {e}"))?;
                builder.special_tokens(vec![(s.cls, special.cls), (s.sep, special.sep)]);
                builder
                    .build()
                    .map_err(|e| anyhow!("BERT template: {e}"))?
                    .into()
            }
            Family::Roberta => {
                let s = family.special_tokens();
                RobertaProcessing::new(
                    (s.sep.to_string(), special.sep),
                    (s.cls.to_string(), special.cls),
                )
                .trim_offsets(true)
                .add_prefix_space(true)
                .into()
            }
        };
        inner.with_post_processor(Some(processor));
        Ok(TextTokenizer {
            inner,
            family,
            special,
        })
    }

    /// An xxh3 hash of the tokenizer's JSON: what caches of its output are keyed by.
    pub fn fingerprint(&self) -> Result<String> {
        let json = self
            .inner
            .to_string(false)
            .map_err(tk_err("serialising the tokenizer".to_string()))?;
        Ok(format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(json.as_bytes())
        ))
    }

    /// Write `tokenizer.json` (Hugging Face's format).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(tk_err(format!("writing tokenizer {}", path.display())))?;
        write_atomic(path, json.as_bytes())
    }

    /// Read a `tokenizer.json`. The family follows from the model (WordPiece → BERT, BPE →
    /// RoBERTa), and the file must hold that family's special tokens.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading tokenizer {}", path.display()))?;
        // tokenizers 0.22 panics on some malformed files (an unwrap in its decoder parser, found
        // by tests/fuzz.rs): check the JSON first, and catch what slips through.
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| anyhow!("{}: not valid JSON: {e}", path.display()))?;
        let inner: Tokenizer = std::panic::catch_unwind(|| text.parse::<Tokenizer>())
            .map_err(|_| {
                anyhow!(
                    "{}: not a Hugging Face tokenizer.json (the tokenizers library could not read it)",
                    path.display()
                )
            })?
            .map_err(|e| anyhow!("{}: not a Hugging Face tokenizer.json: {e}", path.display()))?;
        let family = match inner.get_model() {
            ModelWrapper::WordPiece(_) => Family::Bert,
            ModelWrapper::BPE(_) => Family::Roberta,
            other => bail!(
                "{}: model {} is neither WordPiece (BERT) nor BPE (RoBERTa)",
                path.display(),
                model_kind(other)
            ),
        };
        let special = resolve_special(&inner, family, &path.display().to_string())?;
        Ok(TextTokenizer {
            inner,
            family,
            special,
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn special_ids(&self) -> SpecialIds {
        self.special
    }

    pub fn mask_id(&self) -> u32 {
        self.special.mask
    }

    pub fn pad_id(&self) -> u32 {
        self.special.pad
    }

    /// Size of the id space (model vocabulary plus added tokens): the embedding table size.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Ids of `text` with the family's special tokens around it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with_words(text)?.0)
    }

    /// Ids with special tokens, and for each token the index of the word it came from
    /// (`None` for special tokens); all pieces of one word share an index.
    pub fn encode_with_words(&self, text: &str) -> Result<(Vec<u32>, Vec<Option<u32>>)> {
        self.encode_inner(text, true)
    }

    /// Like [`Self::encode_with_words`] without special tokens, for packing lines into blocks.
    pub fn encode_body_with_words(&self, text: &str) -> Result<(Vec<u32>, Vec<Option<u32>>)> {
        self.encode_inner(text, false)
    }

    fn encode_inner(&self, text: &str, special: bool) -> Result<(Vec<u32>, Vec<Option<u32>>)> {
        let encoding = self.inner.encode(text, special).map_err(|e| {
            let head: String = text.chars().take(40).collect();
            anyhow!("tokenizing \"{head}\": {e}")
        })?;
        Ok((
            encoding.get_ids().to_vec(),
            encoding.get_word_ids().to_vec(),
        ))
    }

    /// `body` with the family's start and end tokens, as the post-processor adds them.
    pub fn wrap(&self, body: &[u32]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(body.len() + 2);
        ids.push(self.special.cls);
        ids.extend_from_slice(body);
        ids.push(self.special.sep);
        ids
    }
}

fn model_kind(model: &ModelWrapper) -> &'static str {
    match model {
        ModelWrapper::BPE(_) => "BPE",
        ModelWrapper::WordPiece(_) => "WordPiece",
        ModelWrapper::WordLevel(_) => "WordLevel",
        ModelWrapper::Unigram(_) => "Unigram",
    }
}

fn resolve_special(inner: &Tokenizer, family: Family, source: &str) -> Result<SpecialIds> {
    let s = family.special_tokens();
    let id = |token: &str| {
        inner.token_to_id(token).ok_or_else(|| {
            anyhow!(
                "{source}: a {} tokenizer needs the special token {token}, which is missing",
                family.name()
            )
        })
    };
    Ok(SpecialIds {
        pad: id(s.pad)?,
        unk: id(s.unk)?,
        cls: id(s.cls)?,
        sep: id(s.sep)?,
        mask: id(s.mask)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::test_support::{TempDir, grammar_corpus};

    fn trained(family: Family, dir: &TempDir, vocab: usize) -> TextTokenizer {
        let corpus = dir.write("corpus.txt", &grammar_corpus(300, 1).join("\n"));
        TextTokenizer::train(family, &[corpus], vocab, true).unwrap()
    }

    #[test]
    fn save_load_round_trip_keeps_ids_and_specials() {
        for family in [Family::Bert, Family::Roberta] {
            let dir = TempDir::new(&format!("tok-roundtrip-{}", family.name()));
            // Above the 256-byte alphabet, so byte-level BPE gets merges too.
            let tok = trained(family, &dir, 400);
            let path = dir.path().join("tokenizer.json");
            tok.save(&path).unwrap();
            let back = TextTokenizer::load(&path).unwrap();
            assert_eq!(back.family(), family);
            assert_eq!(back.special_ids(), tok.special_ids());
            assert_eq!(back.vocab_size(), tok.vocab_size());
            let text = "The quick fox sees a lazy dog, twice!";
            let ids = tok.encode(text).unwrap();
            assert_eq!(back.encode(text).unwrap(), ids);
            let s = family.special_tokens();
            assert_eq!(ids.first(), Some(&tok.special_ids().cls));
            assert_eq!(ids.last(), Some(&tok.special_ids().sep));
            assert_eq!(tok.id_to_token(tok.mask_id()).as_deref(), Some(s.mask));
            assert_eq!(tok.id_to_token(tok.pad_id()).as_deref(), Some(s.pad));
            assert!(tok.vocab_size() > 5 && tok.vocab_size() <= 400);
            // The post-processor adds exactly the tokens `wrap` adds.
            let (body, _) = tok.encode_body_with_words(text).unwrap();
            assert_eq!(tok.wrap(&body), ids);
        }
    }

    #[test]
    fn roberta_ids_match_hugging_face_layout() {
        let dir = TempDir::new("tok-roberta-ids");
        let tok = trained(Family::Roberta, &dir, 300);
        let s = tok.special_ids();
        assert_eq!((s.cls, s.pad, s.sep, s.unk, s.mask), (0, 1, 2, 3, 4));
        // Byte-level BPE has no unknowns, even for characters never seen in training.
        let ids = tok.encode("zebra ünïcode ✓").unwrap();
        assert!(!ids.contains(&s.unk), "{ids:?}");
    }

    #[test]
    fn word_ids_group_the_pieces_of_a_word() {
        for family in [Family::Bert, Family::Roberta] {
            let dir = TempDir::new(&format!("tok-words-{}", family.name()));
            // A small vocabulary forces rare words into several pieces.
            let tok = trained(family, &dir, 60);
            let (ids, words) = tok.encode_with_words("the zigzagging cat").unwrap();
            assert_eq!(ids.len(), words.len());
            assert_eq!(words.first(), Some(&None));
            assert_eq!(words.last(), Some(&None));
            let inner: Vec<u32> = words[1..words.len() - 1]
                .iter()
                .map(|w| w.unwrap())
                .collect();
            assert!(inner.windows(2).all(|w| w[0] <= w[1]), "{inner:?}");
            assert_eq!(inner.first(), Some(&0));
            assert_eq!(inner.last(), Some(&2));
            let pieces_of_word_1 = inner.iter().filter(|&&w| w == 1).count();
            assert!(pieces_of_word_1 > 1, "{family:?}: {inner:?}");
        }
    }

    #[test]
    fn lowercase_is_optional() {
        let dir = TempDir::new("tok-case");
        let corpus = dir.write("c.txt", &grammar_corpus(100, 2).join("\n"));
        let lower =
            TextTokenizer::train(Family::Bert, std::slice::from_ref(&corpus), 200, true).unwrap();
        let cased = TextTokenizer::train(Family::Bert, &[corpus], 200, false).unwrap();
        assert_eq!(lower.encode("The").unwrap(), lower.encode("the").unwrap());
        assert_ne!(cased.encode("THE").unwrap(), cased.encode("the").unwrap());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = TempDir::new("tok-errors");
        let missing = dir.path().join("nope.json");
        let err = TextTokenizer::load(&missing).unwrap_err();
        assert!(format!("{err:#}").contains("nope.json"), "{err:#}");

        let garbage = dir.write("garbage.json", "{not json");
        let err = TextTokenizer::load(&garbage).unwrap_err();
        assert!(format!("{err:#}").contains("garbage.json"), "{err:#}");

        // A valid WordPiece tokenizer without BERT's special tokens is not a BERT tokenizer.
        let plain = dir.path().join("plain.json");
        Tokenizer::new(WordPiece::default())
            .save(&plain, false)
            .unwrap();
        let err = format!("{:#}", TextTokenizer::load(&plain).unwrap_err());
        assert!(err.contains("plain.json") && err.contains("[PAD]"), "{err}");
    }

    #[test]
    fn train_rejects_bad_input() {
        let dir = TempDir::new("tok-train-errors");
        let missing = dir.path().join("missing.txt");
        let err = format!(
            "{:#}",
            TextTokenizer::train(Family::Bert, &[missing], 100, true).unwrap_err()
        );
        assert!(err.contains("missing.txt"), "{err}");
        let empty = dir.write("empty.txt", "");
        assert!(TextTokenizer::train(Family::Roberta, &[empty], 100, true).is_err());
        assert!(TextTokenizer::train(Family::Bert, &[], 100, true).is_err());
    }

    #[test]
    fn a_binary_file_is_refused_by_line_and_stray_bytes_are_replaced() {
        let dir = TempDir::new("tok-train-bytes");
        let binary = dir.path().join("model.bin");
        std::fs::write(&binary, b"the fox\nthe dog\n\x7fELF\x00\x01\x02").unwrap();
        for family in [Family::Bert, Family::Roberta] {
            let err = format!(
                "{:#}",
                TextTokenizer::train(family, std::slice::from_ref(&binary), 100, true).unwrap_err()
            );
            assert!(
                err.contains("model.bin is not a text file") && err.contains("line 3"),
                "{err}"
            );
        }
        // Latin-1 bytes in otherwise good text: the library's own file reader stopped there
        // ("stream did not contain valid UTF-8"); decoded with replacements, it trains.
        let latin1 = dir.path().join("latin1.txt");
        let mut bytes = b"the caf\xe9 is open\n".to_vec();
        for line in grammar_corpus(50, 1) {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        std::fs::write(&latin1, &bytes).unwrap();
        let text = crate::text::text_file::read_text(&latin1).unwrap();
        assert_eq!(text.matches('\u{FFFD}').count(), 1);
        for family in [Family::Bert, Family::Roberta] {
            let tok = TextTokenizer::train(family, std::slice::from_ref(&latin1), 120, true);
            assert!(tok.is_ok(), "{family:?}: {:#}", tok.err().unwrap());
        }
    }
}
