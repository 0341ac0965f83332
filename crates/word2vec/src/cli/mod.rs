//! `pretext word2vec ...` and `pretext fasttext ...`: train, similar, analogy, eval.
//!
//! The `pretext` binary embeds [`Word2VecCommand`] as a subcommand and calls [`run`]. With
//! `json = true` every command prints exactly one JSON object on stdout; progress and warnings
//! go to stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::eval::{self, Normalized};
use crate::format::{Embeddings, Format};
use crate::train::{self, Arch, TrainConfig, TrainReport};
use crate::vocab::{Vocab, VocabConfig};

mod fasttext;
pub use fasttext::{FastTextCommand, run as run_fasttext};

/// Word2Vec commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Word2VecCommand {
    /// Train word vectors on a text corpus (one sentence per line, whitespace-separated words).
    Train(TrainArgs),
    /// Print the words nearest to WORD.
    Similar(SimilarArgs),
    /// Solve the analogy "A is to B as C is to ?" (the words nearest to B - A + C).
    Analogy(AnalogyArgs),
    /// Evaluate vectors on analogy questions and/or word-pair similarity.
    Eval(EvalArgs),
}

/// Output format of `train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// word2vec binary.
    Bin,
    /// word2vec text.
    Text,
}

/// `word2vec train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Corpus file (streamed, never loaded whole).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Where to write the vectors.
    #[arg(long)]
    pub out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "bin")]
    pub format: FormatArg,
    /// Skip-gram: one draw of noise words shared by every context word of a window, so the
    /// updates become small matrix products (pWord2Vec's HogBatch; faster, see docs/word2vec.md).
    #[arg(long, conflicts_with_all = ["cbow", "hs"])]
    pub shared_negatives: bool,
    #[command(flatten)]
    pub options: TrainOptions,
}

/// The training flags Word2Vec and fastText share.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainOptions {
    /// Skip-gram (the default).
    #[arg(long, conflicts_with = "cbow")]
    pub sg: bool,
    /// CBOW instead of skip-gram.
    #[arg(long)]
    pub cbow: bool,
    /// CBOW: sum the context vectors instead of averaging them.
    #[arg(long, requires = "cbow")]
    pub cbow_sum: bool,
    /// Vector size.
    #[arg(long, default_value_t = 100)]
    pub dim: usize,
    /// Maximum context window.
    #[arg(long, default_value_t = 5)]
    pub window: usize,
    /// Negative samples (0 disables negative sampling).
    #[arg(long, default_value_t = 5)]
    pub negative: usize,
    /// Hierarchical softmax.
    #[arg(long)]
    pub hs: bool,
    /// Subsampling threshold for frequent words (0 disables).
    #[arg(long, default_value_t = 1e-3)]
    pub sample: f64,
    /// Ignore words seen fewer times.
    #[arg(long, default_value_t = 5)]
    pub min_count: u64,
    /// Keep only the most frequent words.
    #[arg(long)]
    pub max_vocab: Option<usize>,
    /// Passes over the corpus.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.025)]
    pub alpha: f32,
    /// Final learning rate.
    #[arg(long, default_value_t = 0.0001)]
    pub min_alpha: f32,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// With several threads: each trains private copies of this many most frequent words' rows
    /// and merges them into the shared rows every 50,000 words (0: every row shared; see
    /// docs/word2vec.md, "Hot rows").
    #[arg(long, default_value_t = 4096)]
    pub hot_rows: usize,
    /// Random seed (one thread + same seed = identical vectors).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lowercase the corpus.
    #[arg(long)]
    pub lowercase: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `word2vec similar`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimilarArgs {
    /// Vectors file (word2vec text or binary, detected).
    #[arg(long)]
    pub vectors: PathBuf,
    /// Query word.
    pub word: String,
    /// Number of neighbours.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub n: usize,
}

/// `word2vec analogy`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalogyArgs {
    /// Vectors file (word2vec text or binary, detected).
    #[arg(long)]
    pub vectors: PathBuf,
    /// A (as in A is to B as C is to ?).
    pub a: String,
    /// B.
    pub b: String,
    /// C.
    pub c: String,
    /// Number of answers.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub n: usize,
}

/// `word2vec eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Vectors file (word2vec text or binary, detected).
    #[arg(long)]
    pub vectors: PathBuf,
    #[command(flatten)]
    pub options: EvalOptions,
}

/// What to evaluate word vectors on (Word2Vec's and fastText's `eval`).
#[derive(Debug, Clone, clap::Args)]
pub struct EvalOptions {
    /// Analogy questions (questions-words.txt format).
    #[arg(long)]
    pub analogies: Option<PathBuf>,
    /// Word pairs with human scores (WordSim-353 tsv/csv).
    #[arg(long)]
    pub similarity: Option<PathBuf>,
    /// Analogies: only the most frequent words are candidates and questions (gensim: 30000).
    #[arg(long, default_value_t = 30_000)]
    pub restrict_vocab: usize,
    /// Similarity: vocabulary restriction (gensim's evaluate_word_pairs default: 300000).
    #[arg(long, default_value_t = 300_000)]
    pub similarity_restrict_vocab: usize,
    /// Compare words case-sensitively (gensim default: insensitive).
    #[arg(long)]
    pub case_sensitive: bool,
    /// Threads for the analogy search (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// An `f32` as the decimal it was written as (0.025, not 0.02500000037252903).
fn f32_json(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string(v).expect("serialisable"));
}

/// Runs one command. With `json`, prints exactly one JSON object on stdout.
pub fn run(cmd: Word2VecCommand, json: bool) -> Result<()> {
    match cmd {
        Word2VecCommand::Train(a) => run_train(a, json),
        Word2VecCommand::Similar(a) => {
            let emb = load(&a.vectors)?;
            let norm = Normalized::new(&emb, usize::MAX);
            let res = eval::most_similar(&emb, &norm, &a.word, a.n)?;
            output_neighbours(json, json!({"command": "similar", "word": a.word}), &res);
            Ok(())
        }
        Word2VecCommand::Analogy(a) => {
            let emb = load(&a.vectors)?;
            let norm = Normalized::new(&emb, usize::MAX);
            let res = eval::analogy(&emb, &norm, &a.a, &a.b, &a.c, a.n)?;
            output_neighbours(
                json,
                json!({"command": "analogy", "a": a.a, "b": a.b, "c": a.c}),
                &res,
            );
            Ok(())
        }
        Word2VecCommand::Eval(a) => run_eval(a, json),
    }
}

fn load(path: &Path) -> Result<Embeddings> {
    let (emb, _) = Embeddings::load(path)?;
    for w in emb.warnings() {
        eprintln!("warning: {w}");
    }
    if emb.is_empty() {
        bail!("{}: the file contains no vectors", path.display());
    }
    Ok(emb)
}

fn output_neighbours(json: bool, mut head: Value, res: &[(String, f32)]) {
    if json {
        head["results"] = res
            .iter()
            .map(|(w, s)| json!({"word": w, "similarity": s}))
            .collect();
        print_json(&head);
    } else {
        for (w, s) in res {
            println!("{w}\t{s:.4}");
        }
    }
}

/// The vocabulary and settings of a training run, from its flags.
struct Prepared {
    vocab: Vocab,
    cfg: TrainConfig,
    threads: usize,
    t_vocab: f64,
}

/// Checks the flags, then counts the vocabulary of `corpus` (warning about what it had to fix).
fn prepare(
    corpus: &Path,
    o: &TrainOptions,
    shared_negatives: bool,
    json: bool,
) -> Result<Prepared> {
    let t0 = Instant::now();
    let threads = o.threads.unwrap_or_else(default_threads).max(1);
    let vcfg = VocabConfig {
        min_count: o.min_count,
        max_vocab: o.max_vocab,
        lowercase: o.lowercase,
        threads,
    };
    let cfg = TrainConfig {
        arch: if o.cbow { Arch::Cbow } else { Arch::SkipGram },
        dim: o.dim,
        window: o.window,
        negative: o.negative,
        hs: o.hs,
        sample: o.sample,
        alpha: o.alpha,
        min_alpha: o.min_alpha,
        epochs: o.epochs,
        threads,
        seed: o.seed,
        cbow_mean: !o.cbow_sum,
        shared_negatives,
        hot_rows: o.hot_rows,
        progress: !o.no_progress && !json,
    };
    // Flags first: a bad one should not wait for the vocabulary scan of a large corpus.
    cfg.validate()?;
    let vocab = Vocab::from_file(corpus, &vcfg)?;
    let t_vocab = t0.elapsed().as_secs_f64();
    let scan = vocab.scan;
    if scan.invalid_utf8 > 0 {
        eprintln!(
            "warning: {} of {} tokens in {} are not valid UTF-8; they were decoded lossily (U+FFFD)",
            scan.invalid_utf8,
            scan.tokens,
            corpus.display()
        );
    }
    if scan.truncated > 0 {
        eprintln!(
            "warning: {} tokens longer than {} bytes were truncated",
            scan.truncated,
            crate::corpus::MAX_TOKEN_BYTES
        );
    }
    if !json {
        eprintln!(
            "vocabulary: {} words (of {} distinct, min_count {}), {} tokens, {} lines, {:.2}s",
            vocab.len(),
            vocab.distinct_words,
            o.min_count,
            scan.tokens,
            scan.newlines,
            t_vocab
        );
    }
    Ok(Prepared {
        vocab,
        cfg,
        threads,
        t_vocab,
    })
}

/// The JSON summary of a training run (the caller adds its outputs).
fn train_json(
    corpus: &Path,
    o: &TrainOptions,
    p: &Prepared,
    report: &TrainReport,
    t_save: f64,
    total: f64,
) -> Value {
    let (cfg, vocab, scan) = (&p.cfg, &p.vocab, &p.vocab.scan);
    json!({
        "command": "train",
        "corpus": corpus,
        "arch": cfg.arch.name(),
        "dim": cfg.dim, "window": cfg.window, "negative": cfg.negative, "hs": cfg.hs,
        "sample": cfg.sample, "min_count": o.min_count, "max_vocab": o.max_vocab,
        "epochs": cfg.epochs, "alpha": f32_json(cfg.alpha), "min_alpha": f32_json(cfg.min_alpha),
        "cbow_mean": cfg.cbow_mean, "threads": p.threads, "seed": cfg.seed,
        "shared_negatives": cfg.shared_negatives,
        "hot_rows": if p.threads > 1 { cfg.hot_rows.min(vocab.len()) } else { 0 },
        "vocab": {
            "size": vocab.len(),
            "distinct_words": vocab.distinct_words,
            "corpus_words": scan.tokens,
            "train_words": vocab.train_words(),
            "lines": scan.newlines,
            "invalid_utf8_tokens": scan.invalid_utf8,
            "truncated_tokens": scan.truncated,
        },
        "loss": report.epochs.iter().map(|e| json!({
            "epoch": e.epoch, "loss": e.loss, "examples": e.examples,
            "mean_loss": e.mean_loss(), "words": e.words, "kept_words": e.kept_words,
        })).collect::<Vec<_>>(),
        "seconds": {"vocab": p.t_vocab, "train": report.seconds, "save": t_save, "total": total},
        "raw_words_per_sec": report.raw_words_per_sec,
        "isa": report.isa,
    })
}

/// The per-epoch losses and the speed, as text.
fn print_training(p: &Prepared, report: &TrainReport, t_save: f64) {
    for e in &report.epochs {
        println!(
            "epoch {}: loss {:.6e} ({:.4} per example, {} examples, {} of {} words kept)",
            e.epoch,
            e.loss,
            e.mean_loss(),
            e.examples,
            e.kept_words,
            e.words
        );
    }
    println!(
        "trained {} on {} words × {} epochs in {:.2}s ({:.0} words/s, {} threads, {}); vocabulary {:.2}s, save {:.2}s",
        p.cfg.arch.name(),
        p.vocab.scan.tokens,
        p.cfg.epochs,
        report.seconds,
        report.raw_words_per_sec,
        p.threads,
        report.isa,
        p.t_vocab,
        t_save
    );
}

fn run_train(a: TrainArgs, json: bool) -> Result<()> {
    let t0 = Instant::now();
    let p = prepare(&a.corpus, &a.options, a.shared_negatives, json)?;
    let (emb, report) = train::train(&a.corpus, &p.vocab, &p.cfg)?;
    refuse_diverged(&emb, &a.out, a.options.alpha)?;
    let t1 = Instant::now();
    let format = match a.format {
        FormatArg::Bin => Format::Binary,
        FormatArg::Text => Format::Text,
    };
    emb.save(&a.out, format)
        .context("cannot write the word vectors")?;
    let t_save = t1.elapsed().as_secs_f64();
    if json {
        let mut out = train_json(
            &a.corpus,
            &a.options,
            &p,
            &report,
            t_save,
            t0.elapsed().as_secs_f64(),
        );
        out["out"] = json!(a.out);
        out["format"] = json!(format.name());
        print_json(&out);
    } else {
        print_training(&p, &report, t_save);
        println!(
            "wrote {} vectors of dimension {} to {} ({})",
            emb.len(),
            emb.dim(),
            a.out.display(),
            format.name()
        );
    }
    Ok(())
}

fn run_eval(a: EvalArgs, json: bool) -> Result<()> {
    a.options.check()?;
    let emb = load(&a.vectors)?;
    evaluate(
        &emb,
        json!({"command": "eval", "vectors": a.vectors}),
        &a.options,
        None,
        json,
    )
}

impl EvalOptions {
    fn check(&self) -> Result<()> {
        if self.analogies.is_none() && self.similarity.is_none() {
            bail!("nothing to evaluate: give --analogies FILE and/or --similarity FILE");
        }
        Ok(())
    }
}

/// Evaluates `emb` as `o` asks; `backoff` makes vectors for words outside the vocabulary
/// (fastText), whose word pairs are then scored apart.
fn evaluate(
    emb: &Embeddings,
    mut out: Value,
    a: &EvalOptions,
    backoff: Option<eval::Backoff<'_>>,
    json: bool,
) -> Result<()> {
    let threads = a.threads.unwrap_or_else(default_threads);
    out["words"] = json!(emb.len());
    out["dim"] = json!(emb.dim());
    if let Some(path) = &a.analogies {
        let r = eval::evaluate_analogies(emb, path, a.restrict_vocab, !a.case_sensitive, threads)?;
        let sec = |s: &eval::Section| {
            json!({"section": s.name, "correct": s.correct, "total": s.total(),
                   "accuracy": s.accuracy(), "oov": s.oov})
        };
        out["analogies"] = json!({
            "file": path, "restrict_vocab": r.restrict_vocab,
            "sections": r.sections.iter().map(sec).collect::<Vec<_>>(),
            "correct": r.total.correct, "total": r.total.total(),
            "accuracy": r.total.accuracy(), "oov": r.total.oov,
        });
        if !json {
            println!(
                "analogies: {} (restrict_vocab {})",
                path.display(),
                r.restrict_vocab
            );
            println!(
                "  {:<30} {:>8} {:>8} {:>9} {:>6}",
                "section", "correct", "total", "accuracy", "oov"
            );
            for s in r.sections.iter().chain(std::iter::once(&r.total)) {
                println!(
                    "  {:<30} {:>8} {:>8} {:>8.2}% {:>6}",
                    s.name,
                    s.correct,
                    s.total(),
                    100.0 * s.accuracy(),
                    s.oov
                );
            }
        }
    }
    if let Some(path) = &a.similarity {
        let (r, oov) = eval::evaluate_similarity_with(
            emb,
            path,
            a.similarity_restrict_vocab,
            !a.case_sensitive,
            backoff,
        )?;
        out["similarity"] = json!({
            "file": path, "pairs": r.pairs, "oov": r.oov, "used": r.pairs - r.oov,
            "spearman": r.spearman, "pearson": r.pearson, "restrict_vocab": r.restrict_vocab,
        });
        if !json {
            println!(
                "similarity: {}: Spearman {:.4}, Pearson {:.4} on {} of {} pairs ({} OOV)",
                path.display(),
                r.spearman,
                r.pearson,
                r.pairs - r.oov,
                r.pairs,
                r.oov
            );
        }
        if let Some(o) = oov {
            out["similarity"]["oov_from_ngrams"] = json!({
                "pairs": o.pairs, "unscored": o.unscored,
                "spearman": o.spearman, "spearman_all_pairs": o.spearman_all,
            });
            if !json {
                println!(
                    "  with n-gram vectors for the OOV words: Spearman {:.4} on those {} pairs, \
                     {:.4} on all {} scored pairs ({} pairs without n-grams)",
                    o.spearman,
                    o.pairs,
                    o.spearman_all,
                    r.pairs - r.oov + o.pairs,
                    o.unscored
                );
            }
        }
    }
    if json {
        print_json(&out);
    }
    Ok(())
}

/// Vectors of a diverged run (NaN or infinity) are never written: `out` keeps what it held.
fn refuse_diverged(emb: &Embeddings, out: &Path, alpha: f32) -> Result<()> {
    if let Some(row) = emb.first_non_finite() {
        bail!(
            "training diverged: the vector of '{}' (and maybe others) holds NaN or infinity; \
             nothing was written and {} is unchanged (try a lower --alpha than {alpha})",
            emb.words()[row],
            out.display(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverged_vectors_are_refused_naming_the_word() {
        // A diverging run is a knife edge to provoke (it needs scores inside the sigmoid's
        // range while the vectors overflow), so the guard is tested on its input.
        let words = vec!["cat".to_string(), "dog".to_string()];
        let out = Path::new("vectors.bin");
        let fine = Embeddings::new(words.clone(), 2, vec![0.5, -1.0, 2.0, 0.0]).unwrap();
        assert!(refuse_diverged(&fine, out, 0.025).is_ok());
        for bad in [f32::NAN, f32::INFINITY] {
            let diverged = Embeddings::new(words.clone(), 2, vec![0.5, -1.0, 2.0, bad]).unwrap();
            let err = refuse_diverged(&diverged, out, 1e9)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("'dog'") && err.contains("vectors.bin is unchanged"),
                "{err}"
            );
        }
    }
}
