//! # pretext-word2vec
//!
//! Word2Vec (Mikolov et al. 2013) and fastText's subword vectors (Bojanowski et al. 2017, in
//! [`fasttext`]) as a hand-written, lock-free multi-threaded SGD trainer:
//! skip-gram and CBOW, negative sampling and hierarchical softmax, subsampling of frequent
//! words, streaming corpora of any size, the word2vec text and binary formats (read and
//! written byte-compatibly with word2vec.c and gensim), and the standard evaluations
//! (analogies, word-pair similarity). No deep-learning framework is involved.
//!
//! ```no_run
//! use pretext_word2vec::{Vocab, VocabConfig, TrainConfig, Format, train};
//! # fn main() -> anyhow::Result<()> {
//! let corpus = std::path::Path::new("corpus.txt");
//! let vocab = Vocab::from_file(corpus, &VocabConfig::default())?;
//! let (vectors, report) = train(corpus, &vocab, &TrainConfig { threads: 4, ..TrainConfig::default() })?;
//! println!("loss per epoch: {:?}", report.epochs.iter().map(|e| e.loss).collect::<Vec<_>>());
//! vectors.save("vectors.bin".as_ref(), Format::Binary)?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod corpus;
pub mod eval;
pub mod fasttext;
pub mod format;
pub mod huffman;
pub mod rng;
pub mod sampling;
pub mod simd;
pub mod subwords;
pub mod train;
pub mod vocab;
mod weights;

pub use cli::{Word2VecCommand, run};
pub use fasttext::FastText;
pub use format::{Embeddings, Format, FormatError};
pub use subwords::NgramConfig;
pub use train::{Arch, EpochStats, TrainConfig, TrainError, TrainReport, train};
pub use vocab::{Vocab, VocabConfig, VocabError};
