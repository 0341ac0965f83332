//! Training behaviour: neighbours on a synthetic corpus, determinism, bad input.

mod common;

use pretext_word2vec::eval::{Normalized, most_similar};
use pretext_word2vec::{Arch, Embeddings, TrainConfig, Vocab, VocabConfig, VocabError, train};

fn vocab(path: &std::path::Path, min_count: u64) -> Vocab {
    Vocab::from_file(
        path,
        &VocabConfig {
            min_count,
            ..VocabConfig::default()
        },
    )
    .unwrap()
}

fn small_cfg(arch: Arch) -> TrainConfig {
    TrainConfig {
        arch,
        dim: 24,
        window: 4,
        negative: 5,
        epochs: 3,
        threads: 2,
        seed: 3,
        ..TrainConfig::default()
    }
}

/// Fraction of each topic word's 5 nearest neighbours that belong to the same topic.
fn topic_purity(emb: &Embeddings) -> f64 {
    let norm = Normalized::new(emb, usize::MAX);
    let (mut same, mut all) = (0, 0);
    for t in ['a', 'b'] {
        for i in 0..20 {
            let w = format!("{t}{i}");
            for (n, _) in most_similar(emb, &norm, &w, 5).unwrap() {
                all += 1;
                if n.starts_with(t) {
                    same += 1;
                }
            }
        }
    }
    same as f64 / all as f64
}

#[test]
fn words_sharing_contexts_become_neighbours() {
    let dir = common::tmpdir("topics");
    let corpus = dir.join("corpus.txt");
    common::two_topic_corpus(&corpus, 8_000, 1);
    let v = vocab(&corpus, 1);
    assert_eq!(v.len(), 43);
    // The two threads train private copies of every row of this small vocabulary (the
    // default hot rows), merged every 1,200 words; `hot_rows: 0` shares every row.
    for (arch, hs, negative, shared_negatives, hot_rows) in [
        (Arch::SkipGram, false, 5, false, 4096),
        (Arch::SkipGram, false, 5, false, 0),
        (Arch::SkipGram, false, 5, true, 4096),
        (Arch::SkipGram, false, 5, true, 0),
        (Arch::Cbow, false, 5, false, 4096),
        (Arch::SkipGram, true, 0, false, 4096),
        (Arch::Cbow, true, 0, false, 4096),
    ] {
        let cfg = TrainConfig {
            hs,
            negative,
            shared_negatives,
            hot_rows,
            ..small_cfg(arch)
        };
        let (emb, report) = train(&corpus, &v, &cfg).unwrap();
        let purity = topic_purity(&emb);
        assert!(
            purity > 0.97,
            "{arch:?} hs={hs} hot={hot_rows}: purity {purity}"
        );
        // Loss is reported per epoch in f64 and goes down from the first epoch to the last.
        assert_eq!(report.epochs.len(), 3);
        let first = report.epochs[0].mean_loss();
        let last = report.epochs[2].mean_loss();
        assert!(last < first, "{arch:?} hs={hs}: loss {first} -> {last}");
        assert_eq!(report.raw_words, 3 * 80_000);
        // Two threads share the chunks of every epoch: each epoch sees every word once.
        assert!(
            report.epochs.iter().all(|e| e.words == v.train_words()),
            "{:?}",
            report.epochs
        );
    }
    // Untrained (random) vectors are not topic-pure: the test can fail.
    let cfg = TrainConfig {
        alpha: 1e-9,
        min_alpha: 1e-9,
        epochs: 1,
        ..small_cfg(Arch::SkipGram)
    };
    let (emb, _) = train(&corpus, &v, &cfg).unwrap();
    assert!(topic_purity(&emb) < 0.8);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn one_thread_same_seed_is_deterministic() {
    let dir = common::tmpdir("determinism");
    let corpus = dir.join("corpus.txt");
    common::two_topic_corpus(&corpus, 2_000, 2);
    let v = vocab(&corpus, 1);
    for arch in [Arch::SkipGram, Arch::Cbow] {
        let cfg = TrainConfig {
            threads: 1,
            hs: true,
            ..small_cfg(arch)
        };
        let (a, ra) = train(&corpus, &v, &cfg).unwrap();
        let (b, rb) = train(&corpus, &v, &cfg).unwrap();
        assert_eq!(a.data(), b.data(), "{arch:?}");
        assert_eq!(ra.epochs, rb.epochs);
        // One thread trains the shared rows themselves: hot rows change nothing (a merge
        // would round: m + (p - m) is not always p).
        assert!(cfg.hot_rows > 0);
        let (d, _) = train(
            &corpus,
            &v,
            &TrainConfig {
                hot_rows: 0,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert!(
            a.data() == d.data(),
            "{arch:?}: hot rows changed a one-thread run"
        );
        let (c, _) = train(&corpus, &v, &TrainConfig { seed: 4, ..cfg }).unwrap();
        assert_ne!(a.data(), c.data());
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_corpora() {
    let dir = common::tmpdir("bad");
    // Empty (only whitespace).
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, " \n\n\t \n").unwrap();
    let err = Vocab::from_file(&empty, &VocabConfig::default()).unwrap_err();
    assert!(matches!(err, VocabError::Empty { .. }));
    assert!(err.to_string().contains("empty"), "{err}");
    // Nothing left after min_count.
    let rare = dir.join("rare.txt");
    std::fs::write(&rare, "one two three two\n").unwrap();
    let err = Vocab::from_file(&rare, &VocabConfig::default()).unwrap_err();
    assert!(err.to_string().contains("min_count=5"), "{err}");
    assert!(err.to_string().contains("occurs 2 times"), "{err}");
    // Missing file.
    let err = Vocab::from_file(&dir.join("nope.txt"), &VocabConfig::default()).unwrap_err();
    assert!(err.to_string().contains("nope.txt"), "{err}");
    // Invalid UTF-8 is decoded lossily and counted.
    let bad = dir.join("latin1.txt");
    let mut bytes = Vec::new();
    for _ in 0..10 {
        bytes.extend_from_slice(b"caf\xe9 na\xefve word word\n");
    }
    std::fs::write(&bad, &bytes).unwrap();
    let v = Vocab::from_file(&bad, &VocabConfig::default()).unwrap();
    assert_eq!(v.scan.invalid_utf8, 20);
    assert!(v.id("caf\u{FFFD}").is_some());
    let (emb, _) = train(
        &bad,
        &v,
        &TrainConfig {
            dim: 8,
            epochs: 1,
            ..TrainConfig::default()
        },
    )
    .unwrap();
    assert_eq!(emb.len(), 3);
    // UTF-16 (little-endian, with its byte-order mark) is refused, naming the line.
    let utf16 = dir.join("utf16.txt");
    let mut bytes = vec![0xFF, 0xFE];
    for unit in "the cat\nthe dog\n".repeat(10).encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    std::fs::write(&utf16, &bytes).unwrap();
    let err = Vocab::from_file(&utf16, &VocabConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, VocabError::NotText(_)), "{msg}");
    assert!(
        msg.contains("NUL byte at line 1 (byte 3)") && msg.contains("utf16.txt"),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn one_enormous_line() {
    let dir = common::tmpdir("oneline");
    let corpus = dir.join("line.txt");
    // 300,000 words and not a single newline: split into 10,000-word sentences and shared
    // between threads by byte ranges.
    common::two_topic_corpus(&corpus, 30_000, 5);
    let text = std::fs::read_to_string(&corpus).unwrap().replace('\n', " ");
    std::fs::write(&corpus, text.trim_end()).unwrap();
    let v = vocab(&corpus, 1);
    assert_eq!(v.scan.newlines, 0);
    let (emb, report) = train(
        &corpus,
        &v,
        &TrainConfig {
            epochs: 1,
            ..small_cfg(Arch::SkipGram)
        },
    )
    .unwrap();
    assert_eq!(report.raw_words, 300_000);
    assert_eq!(report.epochs[0].words, 300_000);
    assert!(emb.data().iter().all(|x| x.is_finite()));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn invalid_options_are_rejected() {
    let dir = common::tmpdir("opts");
    let corpus = dir.join("c.txt");
    common::two_topic_corpus(&corpus, 100, 1);
    let v = vocab(&corpus, 1);
    for cfg in [
        TrainConfig {
            negative: 0,
            hs: false,
            ..TrainConfig::default()
        },
        TrainConfig {
            dim: 0,
            ..TrainConfig::default()
        },
        TrainConfig {
            window: 0,
            ..TrainConfig::default()
        },
        TrainConfig {
            epochs: 0,
            ..TrainConfig::default()
        },
        TrainConfig {
            arch: Arch::Cbow,
            shared_negatives: true,
            ..TrainConfig::default()
        },
        TrainConfig {
            hs: true,
            shared_negatives: true,
            ..TrainConfig::default()
        },
    ] {
        assert!(train(&corpus, &v, &cfg).is_err());
    }
    std::fs::remove_dir_all(dir).ok();
}
