//! Token embeddings that start from Word2Vec (`model.embedding_init = "word2vec"`): skip-gram
//! vectors of the tokenizer's pieces, trained by pretext's own Word2Vec on the token cache of
//! the same corpus (one pass, each piece's id written as a word), then rescaled to the spread of
//! BERT's initialisation so that the first steps see the sizes they expect. Pieces the pass
//! never saw keep their random rows. What it costs and buys is measured in docs/text.md.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pretext_word2vec::{TrainConfig as Word2VecConfig, Vocab, VocabConfig};

use super::token_cache::TokenLines;

/// Word2Vec vectors of token ids.
#[derive(Debug, Clone)]
pub struct TokenVectors {
    /// `[vocab_size, dim]` row-major: the seen rows centred on their mean row, with standard
    /// deviation `std`; rows of unseen ids are zero.
    pub rows: Vec<f32>,
    /// Which ids the pass saw.
    pub seen: Vec<bool>,
    /// Seconds spent writing the id corpus and training.
    pub secs: f64,
}

/// Train `dim`-wide skip-gram vectors of the ids in `lines` (ids below `vocab_size`), one
/// pass, and scale them to standard deviation `std`. `scratch` holds the temporary id corpus.
pub fn token_vectors(
    lines: &TokenLines,
    vocab_size: usize,
    dim: usize,
    std: f64,
    seed: u64,
    scratch: &Path,
) -> Result<TokenVectors> {
    let start = Instant::now();
    let corpus = scratch.join(format!(".token-ids-{}.txt", std::process::id()));
    let trained = write_ids(lines, &corpus).and_then(|()| train_ids(&corpus, dim, seed));
    let _ = std::fs::remove_file(&corpus);
    let embeddings = trained?;
    let mut rows = vec![0.0f32; vocab_size * dim];
    let mut seen = vec![false; vocab_size];
    for (i, word) in embeddings.words().iter().enumerate() {
        let Some(id) = word.parse::<usize>().ok().filter(|&id| id < vocab_size) else {
            bail!("the id corpus held \"{word}\", not a token id below {vocab_size}");
        };
        rows[id * dim..(id + 1) * dim].copy_from_slice(embeddings.vector(i));
        seen[id] = true;
    }
    // Skip-gram vectors share one large common direction (frequency); take out the mean row so
    // that pieces differ from the start, then scale to the asked-for spread.
    let count = seen.iter().filter(|s| **s).count().max(1);
    let mut mean_row = vec![0.0f64; dim];
    for (row, _) in rows.chunks(dim).zip(&seen).filter(|(_, s)| **s) {
        for (m, &v) in mean_row.iter_mut().zip(row) {
            *m += f64::from(v) / count as f64;
        }
    }
    let mut square = 0.0f64;
    for (row, _) in rows.chunks_mut(dim).zip(&seen).filter(|(_, s)| **s) {
        for (v, m) in row.iter_mut().zip(&mean_row) {
            *v -= *m as f32;
            square += f64::from(*v).powi(2);
        }
    }
    let spread = (square / (count * dim) as f64).sqrt();
    if spread > 0.0 {
        let scale = (std / spread) as f32;
        rows.iter_mut().for_each(|v| *v *= scale);
    }
    Ok(TokenVectors {
        rows,
        seen,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// One line of space-separated decimal ids per cached line.
fn write_ids(lines: &TokenLines, path: &Path) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for i in 0..lines.lines() {
        let ids = lines.line_ids(i);
        let mut text = String::with_capacity(ids.len() * 5);
        for (k, id) in ids.iter().enumerate() {
            if k > 0 {
                text.push(' ');
            }
            text.push_str(&id.to_string());
        }
        text.push('\n');
        out.write_all(text.as_bytes())?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

fn train_ids(corpus: &Path, dim: usize, seed: u64) -> Result<pretext_word2vec::Embeddings> {
    // One thread: Hogwild threads race on shared rows, so two threads would give the MLM run a
    // different starting point each time and break "same seed, same numbers".
    let threads = 1;
    let vocab = Vocab::from_file(
        corpus,
        &VocabConfig {
            min_count: 1,
            threads,
            ..VocabConfig::default()
        },
    )
    .context("counting the token ids for Word2Vec")?;
    let config = Word2VecConfig {
        dim,
        epochs: 1,
        threads,
        seed,
        ..Word2VecConfig::default()
    };
    let (embeddings, _) = pretext_word2vec::train(corpus, &vocab, &config)
        .context("training Word2Vec vectors of the token ids")?;
    Ok(embeddings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::test_support::TempDir;
    use crate::text::token_cache::TokenCache;
    use crate::text::tokenizer::{Family, TextTokenizer};

    /// Pieces that fill the same slot (animals in one sentence frame, verbs in another) end up
    /// nearer each other than to pieces of the other slot, every id the corpus uses is seen, and
    /// the rows have the asked-for spread.
    #[test]
    fn token_vectors_group_pieces_by_role_at_the_asked_spread() {
        let dir = TempDir::new("token-vectors");
        let (animals, verbs) = (["cat", "dog", "yak", "owl"], ["ran", "swam", "hid", "sang"]);
        let lines: Vec<String> = (0..6000usize)
            .map(|i| {
                let k = (i * 7 + i / 5) % 4;
                if i % 2 == 0 {
                    format!("the old {} sat on the mat", animals[k])
                } else {
                    format!("she {} away very quickly", verbs[k])
                }
            })
            .collect();
        let corpus = dir.write("c.txt", &lines.join("\n"));
        let tok =
            TextTokenizer::train(Family::Bert, std::slice::from_ref(&corpus), 200, true).unwrap();
        let cache = TokenCache::open_or_build(&corpus, &tok, 0, 0, dir.path(), false).unwrap();
        let dim = 16;
        let v = token_vectors(&cache.train, tok.vocab_size(), dim, 0.02, 1, dir.path()).unwrap();
        let id = |w: &str| tok.encode(w).unwrap()[1] as usize;
        let row = |i: usize| &v.rows[i * dim..(i + 1) * dim];
        let cos = |a: usize, b: usize| {
            let (x, y) = (row(a), row(b));
            let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let n = |z: &[f32]| z.iter().map(|p| p * p).sum::<f32>().sqrt();
            dot / (n(x) * n(y))
        };
        for (a, b, other) in [("cat", "dog", "ran"), ("swam", "hid", "yak")] {
            let (a, b, other) = (id(a), id(b), id(other));
            assert!(v.seen[a] && v.seen[b] && v.seen[other]);
            assert!(
                cos(a, b) > cos(a, other) + 0.3,
                "same slot {} vs other slot {}",
                cos(a, b),
                cos(a, other)
            );
        }
        let seen: Vec<f32> = v
            .rows
            .chunks(dim)
            .zip(&v.seen)
            .filter(|(_, s)| **s)
            .flat_map(|(r, _)| r.to_vec())
            .collect();
        // Same seed, same vectors: the MLM run that starts from them repeats.
        let again =
            token_vectors(&cache.train, tok.vocab_size(), dim, 0.02, 1, dir.path()).unwrap();
        assert_eq!(again.rows, v.rows);
        let mean = seen.iter().sum::<f32>() / seen.len() as f32;
        let std = (seen.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / seen.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 1e-3, "{std}");
        // No scratch file is left behind.
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".token-ids")
        }));
    }
}
