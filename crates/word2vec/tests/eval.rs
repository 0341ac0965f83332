//! Evaluation: Spearman with ties, analogy sections and OOV handling, CLI end to end.

mod common;

use pretext_word2vec::cli::{self, Word2VecCommand};
use pretext_word2vec::eval::{self, Normalized, ranks, spearman};
use pretext_word2vec::{Embeddings, Format};

#[test]
fn spearman_with_ties() {
    assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), [2.0, 3.5, 3.5, 1.0]);
    // scipy.stats.spearmanr([1, 2, 2, 3, 4], [2, 1, 3, 3, 5]) = 0.7631578947368421 (scipy 1.x)
    let r = spearman(&[1.0, 2.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 3.0, 3.0, 5.0]);
    assert!((r - 0.763_157_894_736_842_1).abs() < 1e-12, "{r}");
    assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
}

/// Hand-made vectors where king - man + woman = queen exactly, and Paris - France + Italy = Rome.
fn toy() -> Embeddings {
    let rows: Vec<(&str, [f32; 4])> = vec![
        ("man", [1.0, 0.0, 0.0, 0.0]),
        ("woman", [1.0, 1.0, 0.0, 0.0]),
        ("king", [1.0, 0.0, 1.0, 0.0]),
        ("queen", [1.0, 1.0, 1.0, 0.0]),
        ("France", [0.0, 0.0, 0.0, 1.0]),
        ("Paris", [0.0, 0.0, 1.0, 1.0]),
        ("Italy", [0.0, 1.0, 0.0, 1.0]),
        ("Rome", [0.0, 1.0, 1.0, 1.0]),
        ("KING", [1.0, 0.05, 1.0, 0.0]),
        ("rare", [0.3, 0.3, 0.3, 0.3]),
    ];
    Embeddings::new(
        rows.iter().map(|r| r.0.to_string()).collect(),
        4,
        rows.iter().flat_map(|r| r.1).collect(),
    )
    .unwrap()
}

#[test]
fn analogies_by_section_with_oov() {
    let dir = common::tmpdir("analogy");
    let q = dir.join("q.txt");
    std::fs::write(
        &q,
        ": family\nman woman king queen\nMAN WOMAN KING QUEEN\nman woman king unicorn\n\
         : capitals\nFrance Paris Italy Rome\nFrance Paris Italy rare\nFrance Paris Spain Madrid\n",
    )
    .unwrap();
    let e = toy();
    let r = eval::evaluate_analogies(&e, &q, 30_000, true, 2).unwrap();
    assert_eq!(r.sections.len(), 2);
    assert_eq!(r.sections[0].name, "family");
    // "KING" (a case variant of an input word) is skipped as gensim does, so both are right.
    assert_eq!(
        (
            r.sections[0].correct,
            r.sections[0].incorrect,
            r.sections[0].oov
        ),
        (2, 0, 1)
    );
    assert_eq!(
        (
            r.sections[1].correct,
            r.sections[1].incorrect,
            r.sections[1].oov
        ),
        (1, 1, 1)
    );
    assert_eq!((r.total.correct, r.total.total(), r.total.oov), (3, 4, 2));
    // Restricting the vocabulary to the first 4 words makes the capitals OOV.
    let r = eval::evaluate_analogies(&e, &q, 4, true, 1).unwrap();
    assert_eq!(r.sections[1].oov, 3);
    // Case-sensitive: the upper-case question is OOV.
    let r = eval::evaluate_analogies(&e, &q, 30_000, false, 1).unwrap();
    assert_eq!(r.sections[0].oov, 2);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn queries_and_unknown_words() {
    let e = toy();
    let n = Normalized::new(&e, usize::MAX);
    let res = eval::analogy(&e, &n, "man", "woman", "king", 3).unwrap();
    assert_eq!(res[0].0, "queen");
    assert!(res[0].1 > res[1].1);
    let sim = eval::most_similar(&e, &n, "king", 2).unwrap();
    assert_eq!(sim[0].0, "KING");
    assert!(sim.iter().all(|(w, _)| w != "king"));
    let err = eval::analogy(&e, &n, "man", "zebra", "king", 3).unwrap_err();
    assert_eq!(err.to_string(), "not in the vocabulary (10 words): 'zebra'");
}

#[test]
fn similarity_file_with_header_and_oov() {
    let dir = common::tmpdir("pairs");
    let p = dir.join("ws.csv");
    std::fs::write(
        &p,
        "Word 1,Word 2,Human (mean)\nking,queen,9\nman,woman,8\nking,France,1\nman,zebra,3\n",
    )
    .unwrap();
    let r = eval::evaluate_similarity(&toy(), &p, 300_000, true).unwrap();
    assert_eq!((r.pairs, r.oov), (4, 1));
    assert!(r.spearman > 0.99, "{r:?}");
    std::fs::write(&p, "# comment\nking\tqueen\t9\nbad line\n").unwrap();
    let err = eval::evaluate_similarity(&toy(), &p, 300_000, true).unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn cli_train_then_query() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Word2VecCommand,
    }
    let dir = common::tmpdir("cli");
    let corpus = dir.join("c.txt");
    common::two_topic_corpus(&corpus, 2_000, 7);
    let out = dir.join("v.txt");
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("w2v").chain(args.iter().copied()))
            .unwrap()
            .cmd
    };
    let (c, o) = (corpus.to_str().unwrap(), out.to_str().unwrap());
    cli::run(
        parse(&[
            "train",
            "--corpus",
            c,
            "--out",
            o,
            "--format",
            "text",
            "--cbow",
            "--dim",
            "16",
            "--min-count",
            "1",
            "--threads",
            "2",
            "--epochs",
            "2",
        ]),
        true,
    )
    .unwrap();
    let (e, f) = Embeddings::load(&out).unwrap();
    assert_eq!((f, e.len(), e.dim()), (Format::Text, 43, 16));
    cli::run(parse(&["similar", "--vectors", o, "a1", "-n", "3"]), true).unwrap();
    let err = cli::run(parse(&["similar", "--vectors", o, "nosuchword"]), false).unwrap_err();
    assert!(err.to_string().contains("'nosuchword'"), "{err}");
    let err = cli::run(parse(&["eval", "--vectors", o]), false).unwrap_err();
    assert!(err.to_string().contains("nothing to evaluate"), "{err}");
    // Errors are plain: a missing corpus, --cbow-sum without --cbow is refused by clap.
    let err = cli::run(
        parse(&["train", "--corpus", "/nonexistent/x", "--out", o]),
        true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x"), "{err}");
    assert!(
        Cli::try_parse_from(["w2v", "train", "--corpus", c, "--out", o, "--cbow-sum"]).is_err()
    );
    std::fs::remove_dir_all(dir).ok();
}
