#![allow(dead_code)]
//! Shared helpers of the integration tests.

use std::path::{Path, PathBuf};

use pretext_word2vec::rng::Rng;

/// A fresh temporary directory for one test.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pretext-w2v-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sentences of 10 words, each drawn from one of two disjoint topics ("a0".."a19" and
/// "b0".."b19"), plus a few frequent function words shared by both topics.
pub fn two_topic_corpus(path: &Path, sentences: usize, seed: u64) {
    let mut rng = Rng::new(seed, 0);
    let mut out = String::new();
    for _ in 0..sentences {
        let topic = if rng.below(2) == 0 { 'a' } else { 'b' };
        for k in 0..10 {
            if k > 0 {
                out.push(' ');
            }
            if rng.below(5) == 0 {
                out.push_str(["the", "of", "and"][rng.below(3) as usize]);
            } else {
                out.push(topic);
                out.push_str(&rng.below(20).to_string());
            }
        }
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}
