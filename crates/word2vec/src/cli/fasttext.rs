//! `pretext fasttext ...`: train, similar, analogy, eval, on a model file that keeps the
//! n-gram buckets, so words never seen in training get vectors too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::{
    EvalOptions, TrainOptions, evaluate, output_neighbours, prepare, print_json, print_training,
    refuse_diverged, train_json,
};
use crate::eval::{self, Normalized};
use crate::fasttext::{self, FastText};
use crate::format::Format;
use crate::subwords::NgramConfig;

/// fastText commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FastTextCommand {
    /// Train subword vectors on a text corpus (one sentence per line, whitespace-separated
    /// words): writes the model (with its n-gram buckets) and the words' vectors as `.vec`.
    Train(TrainArgs),
    /// Print the vocabulary words nearest to WORD (which need not be in the vocabulary).
    Similar(SimilarArgs),
    /// Solve the analogy "A is to B as C is to ?" (any words with n-grams).
    Analogy(AnalogyArgs),
    /// Evaluate the model on analogy questions and/or word-pair similarity (pairs with words
    /// outside the vocabulary are also scored with their n-gram vectors).
    Eval(EvalArgs),
    /// Print the vectors of the given words (or of each line of stdin), one `word v1 v2 ...`
    /// line each, words outside the vocabulary included (fastText's `print-word-vectors`).
    PrintVectors(PrintVectorsArgs),
}

/// `fasttext print-vectors`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrintVectorsArgs {
    /// Model file written by `pretext fasttext train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Words (default: one per line on stdin).
    pub words: Vec<String>,
}

/// `fasttext train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Corpus file (streamed, never loaded whole).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Where to write the model (the vocabulary's rows and the n-gram buckets).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the vocabulary words' vectors as word2vec text (fastText's `.vec`;
    /// default: --out with the extension `.vec`).
    #[arg(long)]
    pub vec: Option<PathBuf>,
    /// Also write the words' vectors in word2vec's binary format here.
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Shortest character n-gram.
    #[arg(long, default_value_t = 3)]
    pub minn: usize,
    /// Longest character n-gram.
    #[arg(long, default_value_t = 6)]
    pub maxn: usize,
    /// Rows the n-grams are hashed into.
    #[arg(long, default_value_t = 2_000_000)]
    pub bucket: u32,
    #[command(flatten)]
    pub options: TrainOptions,
}

impl TrainArgs {
    /// The `.vec` output.
    pub fn vec_path(&self) -> PathBuf {
        self.vec
            .clone()
            .unwrap_or_else(|| self.out.with_extension("vec"))
    }

    fn ngrams(&self) -> NgramConfig {
        NgramConfig {
            minn: self.minn,
            maxn: self.maxn,
            bucket: self.bucket,
        }
    }
}

/// `fasttext similar`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimilarArgs {
    /// Model file written by `pretext fasttext train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Query word.
    pub word: String,
    /// Number of neighbours.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub n: usize,
}

/// `fasttext analogy`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnalogyArgs {
    /// Model file written by `pretext fasttext train`.
    #[arg(long)]
    pub model: PathBuf,
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

/// `fasttext eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Model file written by `pretext fasttext train`.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub options: EvalOptions,
}

/// Runs one command. With `json`, prints exactly one JSON object on stdout.
pub fn run(cmd: FastTextCommand, json: bool) -> Result<()> {
    match cmd {
        FastTextCommand::Train(a) => run_train(a, json),
        FastTextCommand::Similar(a) => {
            let model = load(&a.model)?;
            let query = model.word_vector(&a.word)?;
            let emb = model.embeddings();
            let norm = Normalized::new(&emb, usize::MAX);
            let res = eval::nearest_to_vectors(&emb, &norm, &[(1.0, &query)], a.n, &[&a.word]);
            let head = json!({"command": "similar", "word": a.word,
                              "in_vocabulary": model.contains(&a.word)});
            output_neighbours(json, head, &res);
            Ok(())
        }
        FastTextCommand::Analogy(a) => {
            let model = load(&a.model)?;
            let (va, vb, vc) = (
                model.word_vector(&a.a)?,
                model.word_vector(&a.b)?,
                model.word_vector(&a.c)?,
            );
            let emb = model.embeddings();
            let norm = Normalized::new(&emb, usize::MAX);
            let terms = [(1.0, &vb[..]), (1.0, &vc[..]), (-1.0, &va[..])];
            let exclude = [a.a.as_str(), &a.b, &a.c];
            let res = eval::nearest_to_vectors(&emb, &norm, &terms, a.n, &exclude);
            output_neighbours(
                json,
                json!({"command": "analogy", "a": a.a, "b": a.b, "c": a.c}),
                &res,
            );
            Ok(())
        }
        FastTextCommand::Eval(a) => {
            a.options.check()?;
            let model = load(&a.model)?;
            let emb = model.embeddings();
            let backoff = |w: &str| model.word_vector(w).ok();
            let head = json!({"command": "eval", "model": a.model});
            evaluate(&emb, head, &a.options, Some(&backoff), json)
        }
        FastTextCommand::PrintVectors(a) => print_vectors(a, json),
    }
}

fn print_vectors(a: PrintVectorsArgs, json: bool) -> Result<()> {
    let model = load(&a.model)?;
    let words = if a.words.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the words from stdin")?;
        text.lines().map(|l| l.trim().to_string()).collect()
    } else {
        a.words
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut rows = Vec::new();
    for word in words.iter().filter(|w| !w.is_empty()) {
        // A word without n-grams is named and skipped: one odd line should not sink a batch.
        let v = match model.word_vector(word) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("warning: {e}; skipped");
                continue;
            }
        };
        if json {
            rows.push(json!({"word": word, "in_vocabulary": model.contains(word), "vector": v}));
        } else {
            let mut line = word.clone();
            for x in v {
                line.push_str(&format!(" {x}"));
            }
            writeln!(out, "{line}")?;
        }
    }
    if json {
        writeln!(
            out,
            "{}",
            json!({"command": "print-vectors", "vectors": rows})
        )?;
    }
    out.flush()?;
    Ok(())
}

fn load(path: &Path) -> Result<FastText> {
    Ok(FastText::load(path)?)
}

fn run_train(a: TrainArgs, json: bool) -> Result<()> {
    let t0 = Instant::now();
    let ngrams = a.ngrams();
    // Flags first: a bad one should not wait for the vocabulary scan of a large corpus.
    ngrams.validate().map_err(anyhow::Error::msg)?;
    let vec = a.vec_path();
    let p = prepare(&a.corpus, &a.options, false, json)?;
    let (model, report) = fasttext::train(&a.corpus, &p.vocab, &p.cfg, &ngrams)?;
    let emb = model.embeddings();
    refuse_diverged(&emb, &a.out, a.options.alpha)?;
    let t1 = Instant::now();
    model.save(&a.out).context("cannot write the model")?;
    emb.save(&vec, Format::Text)
        .context("cannot write the word vectors")?;
    if let Some(bin) = &a.bin {
        emb.save(bin, Format::Binary)
            .context("cannot write the word vectors")?;
    }
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
        out["model"] = json!(a.out);
        out["vec"] = json!(vec);
        out["bin"] = json!(a.bin);
        out["ngrams"] = json!({"minn": a.minn, "maxn": a.maxn, "bucket": a.bucket});
        print_json(&out);
    } else {
        print_training(&p, &report, t_save);
        println!(
            "wrote the model ({} words, {} buckets, dimension {}) to {} and the words' vectors to {}{}",
            emb.len(),
            a.bucket,
            emb.dim(),
            a.out.display(),
            vec.display(),
            a.bin
                .as_ref()
                .map(|b| format!(" and {}", b.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}
