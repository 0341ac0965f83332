//! fastText: subword vectors on a synthetic corpus (vocabulary and unseen words), the model
//! file (round trip, determinism, damage), and words without n-grams.

mod common;

use std::path::Path;

use pretext_word2vec::eval::{Normalized, nearest_to_vectors};
use pretext_word2vec::fasttext::{self, FastText};
use pretext_word2vec::rng::Rng;
use pretext_word2vec::{Arch, NgramConfig, TrainConfig, Vocab, VocabConfig};

const STEMS: usize = 40;

/// 40 random seven-letter stems, topic `i % 2`, and sentences of 10 stems of one topic: which
/// topic a stem belongs to has nothing to do with its spelling.
fn stem_corpus(path: &Path) -> Vec<String> {
    let mut rng = Rng::new(11, 0);
    let stems: Vec<String> = (0..STEMS)
        .map(|_| {
            (0..7)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let mut out = String::new();
    for _ in 0..3_000 {
        let topic = rng.below(2) as usize;
        let words: Vec<&str> = (0..10)
            .map(|_| stems[2 * rng.below(STEMS as u32 / 2) as usize + topic].as_str())
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
    stems
}

fn train(corpus: &Path, arch: Arch, alpha: f32, seed: u64) -> FastText {
    let vocab = Vocab::from_file(
        corpus,
        &VocabConfig {
            min_count: 1,
            ..VocabConfig::default()
        },
    )
    .unwrap();
    let cfg = TrainConfig {
        arch,
        dim: 24,
        window: 4,
        epochs: 5,
        sample: 0.0,
        alpha,
        min_alpha: alpha / 100.0,
        threads: 1,
        seed,
        ..TrainConfig::default()
    };
    let ngrams = NgramConfig {
        minn: 3,
        maxn: 6,
        bucket: 20_000,
    };
    fasttext::train(corpus, &vocab, &cfg, &ngrams).unwrap().0
}

/// For each stem, the unseen word stem + "s": the share of its 5 nearest vocabulary words
/// (the stem itself aside) from the stem's topic. Only training can put them there: spelling
/// ties the unseen word to its stem alone.
fn unseen_word_purity(model: &FastText, stems: &[String]) -> f64 {
    let emb = model.embeddings();
    let norm = Normalized::new(&emb, usize::MAX);
    let topic = |w: &str| stems.iter().position(|s| s == w).map(|i| i % 2);
    let (mut same, mut all) = (0, 0);
    for (i, stem) in stems.iter().enumerate() {
        let unseen = format!("{stem}s");
        assert!(!model.contains(&unseen));
        let v = model.word_vector(&unseen).unwrap();
        for (w, _) in nearest_to_vectors(&emb, &norm, &[(1.0, &v)], 5, &[stem]) {
            all += 1;
            same += usize::from(topic(&w) == Some(i % 2));
        }
    }
    same as f64 / all as f64
}

#[test]
fn unseen_words_land_among_their_stems_topic_after_training() {
    let dir = common::tmpdir("ft-topics");
    let corpus = dir.join("corpus.txt");
    let stems = stem_corpus(&corpus);
    for arch in [Arch::SkipGram, Arch::Cbow] {
        let trained = unseen_word_purity(&train(&corpus, arch, 0.05, 1), &stems);
        // The same run with a learning rate too small to move the rows: the n-grams alone.
        let untrained = unseen_word_purity(&train(&corpus, arch, 1e-7, 1), &stems);
        assert!(trained > 0.85, "{arch:?}: trained purity {trained}");
        assert!(untrained < 0.7, "{arch:?}: untrained purity {untrained}");
    }
}

#[test]
fn the_model_file_round_trips_and_refuses_damage() {
    let dir = common::tmpdir("ft-file");
    let corpus = dir.join("corpus.txt");
    let stems = stem_corpus(&corpus);
    let model = train(&corpus, Arch::SkipGram, 0.05, 2);
    let path = dir.join("model.ftm");
    model.save(&path).unwrap();
    let back = FastText::load(&path).unwrap();
    let unseen = format!("{}zq", stems[0]);
    for w in [stems[0].as_str(), &stems[7], &unseen, "qqqq"] {
        assert_eq!(
            model.word_vector(w).unwrap(),
            back.word_vector(w).unwrap(),
            "{w}"
        );
    }
    assert_eq!(back.words(), model.words());
    assert_eq!(back.ngrams(), model.ngrams());

    // One thread, same seed: the same bytes.
    let again = dir.join("again.ftm");
    train(&corpus, Arch::SkipGram, 0.05, 2)
        .save(&again)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, std::fs::read(&again).unwrap());

    let damaged = dir.join("damaged.ftm");
    let refused = |content: &[u8]| {
        std::fs::write(&damaged, content).unwrap();
        match FastText::load(&damaged) {
            Ok(_) => panic!("a damaged model was read"),
            Err(e) => format!("{e:#}"),
        }
    };
    let err = refused(&bytes[..bytes.len() - 100]);
    assert!(
        err.contains("truncated") && err.contains("damaged.ftm"),
        "{err}"
    );
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 4000] ^= 0x40;
    assert!(refused(&flipped).contains("checksum"));
    assert!(refused(b"40 24\nthe 0.1 0.2\n").contains("not a pretext fastText model"));
    let settings = String::from_utf8_lossy(&bytes[..200]).replace("\"dim\":24", "\"dim\":2400");
    let mut big = settings.into_bytes();
    big.extend_from_slice(&bytes[200..]);
    assert!(refused(&big).contains("more than the file's"));
}

#[test]
fn a_word_without_ngrams_has_no_vector() {
    let dir = common::tmpdir("ft-short");
    let corpus = dir.join("corpus.txt");
    stem_corpus(&corpus);
    let vocab = Vocab::from_file(&corpus, &VocabConfig::default()).unwrap();
    let cfg = TrainConfig {
        dim: 8,
        epochs: 1,
        ..TrainConfig::default()
    };
    let ngrams = NgramConfig {
        minn: 5,
        maxn: 5,
        bucket: 100,
    };
    let (model, _) = fasttext::train(&corpus, &vocab, &cfg, &ngrams).unwrap();
    let err = model.word_vector("ab").unwrap_err().to_string();
    assert!(err.contains("'ab'") && err.contains("5 to 5"), "{err}");
    assert_eq!(model.word_vector("abc").unwrap().len(), 8);
    let bad = NgramConfig {
        minn: 4,
        maxn: 3,
        bucket: 100,
    };
    let err = fasttext::train(&corpus, &vocab, &cfg, &bad)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("minn"), "{err}");
}
