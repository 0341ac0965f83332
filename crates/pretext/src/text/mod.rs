//! Text: masked language modelling (BERT, RoBERTa), SimCSE sentence embeddings, and what reads
//! their checkpoints.
//!
//! Text flows [`tokenizer`] (ids and word ids) → [`examples`] (line-by-line or packed blocks,
//! padded batches) → [`masking`] (the 15% / 80-10-10 corruption and its labels) →
//! [`encoder`] (Transformer encoder with a tied MLM head and its loss), driven by the
//! [`mlm`] job under its [`config`]. A trained run is read back by [`checkpoint`] (logits,
//! fill-mask), scored on labelled texts ([`tsv`]) by [`probe`], and exported by [`hf`].
//! [`simcse`] trains such an encoder further into a sentence encoder.

pub mod checkpoint;
pub mod config;
pub mod electra;
pub mod encoder;
pub mod examples;
pub mod hf;
pub mod labels;
pub mod masking;
pub mod mlm;
pub mod probe;
pub mod report;
pub mod simcse;
pub mod text_file;
pub mod token_cache;
pub mod token_vectors;
pub mod tokenizer;
pub mod tsv;

/// Scratch folders and a synthetic corpus shared by the tests of this module.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    /// A fresh folder under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("pretext-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const ADJECTIVES: [&str; 8] = [
        "lazy", "quick", "brown", "jolly", "fuzzy", "vexed", "wise", "grumpy",
    ];
    const NOUNS: [&str; 8] = [
        "fox", "dog", "cat", "zebra", "whale", "knight", "queen", "yak",
    ];
    const VERBS: [&str; 8] = [
        "jumps over",
        "chases",
        "watches",
        "follows",
        "greets",
        "admires",
        "avoids",
        "helps",
    ];

    /// `n` sentences of two clauses "the ADJ NOUN VERB the NOUN'". Within a clause every word
    /// follows from the clause's subject index, so a masked word is predictable from its
    /// neighbours; the two clauses are independent, so the sentences vary. Deterministic in
    /// `seed`.
    pub fn grammar_corpus(n: usize, seed: u64) -> Vec<String> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            // xorshift64: enough variety for a test corpus, no dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 8) as usize
        };
        let clause = |k: usize| {
            format!(
                "the {} {} {} the {}",
                ADJECTIVES[k],
                NOUNS[k],
                VERBS[k],
                NOUNS[(k + 1) % 8]
            )
        };
        (0..n)
            .map(|_| format!("{} and {}.", clause(next()), clause(next())))
            .collect()
    }

    /// A tiny RoBERTa on line-by-line examples of the test grammar (byte-level BPE training is
    /// reproducible, so two runs share their tokenizer).
    pub fn tiny_mlm_config(
        dir: &TempDir,
        name: &str,
        steps: usize,
    ) -> crate::text::config::MlmConfig {
        let mut c = crate::text::config::MlmConfig {
            steps,
            batch_size: 16,
            ..crate::text::config::MlmConfig::default()
        };
        c.tokenizer.family = crate::text::tokenizer::Family::Roberta;
        c.tokenizer.vocab_size = 600;
        c.model.size = crate::text::encoder::SizePreset::Tiny;
        c.data.mode = crate::text::examples::ExampleMode::LineByLine;
        c.data.max_len = 32;
        c.data.holdout_every = 10;
        c.optimizer.lr = 1e-3;
        c.optimizer.warmup_steps = 10;
        c.train.out_dir = dir.path().join(name).display().to_string();
        c.data.cache_dir = dir.path().join("token-cache").display().to_string();
        c.eval.max_sequences = 0;
        c
    }

    /// Texts of two topics (animals, people) that share their verbs, alternating.
    pub fn two_topics(n: usize) -> (Vec<String>, Vec<u32>) {
        let animals = ["fox", "dog", "cat", "yak"];
        let people = ["knight", "queen", "king", "bishop"];
        let verbs = ["chases", "greets", "helps", "watches"];
        (0..n)
            .map(|i| {
                let class = (i % 2) as u32;
                let nouns = if class == 0 { animals } else { people };
                let text = format!(
                    "the {} {} the {} today",
                    nouns[i % 4],
                    verbs[(i / 2) % 4],
                    nouns[(i / 3) % 4]
                );
                (text, class)
            })
            .unzip()
    }

    /// A tiny MLM trained for `steps` on the test grammar in `dir`; returns its run folder.
    pub fn tiny_mlm_run(dir: &TempDir, steps: usize) -> PathBuf {
        let corpus = dir.write("corpus.txt", &grammar_corpus(300, 3).join("\n"));
        let config = tiny_mlm_config(dir, "run", steps);
        let options = crate::core::train::TrainOptions {
            quiet: true,
            ..Default::default()
        };
        let device = burn::prelude::Device::flex();
        crate::text::mlm::train_mlm(&config, &corpus, &device, &options).unwrap();
        dir.path().join("run")
    }

    /// 120 texts of [`two_topics`] as a labelled set.
    pub fn two_topic_texts() -> crate::text::tsv::LabelledTexts {
        let (texts, labels) = two_topics(120);
        crate::text::tsv::LabelledTexts {
            texts,
            labels,
            classes: vec!["animals".into(), "people".into()],
            warnings: Vec::new(),
        }
    }
}
