//! Masked-language-model corruption, as Hugging Face's `DataCollatorForLanguageModeling`:
//! each non-special position is chosen with probability `probability` (15%); of the chosen,
//! 80% become the mask token, 10% a random non-special token, 10% stay as they are. Labels hold
//! the original id at chosen positions and [`IGNORE`] elsewhere.
//!
//! Masks are reproducible: each example's random stream is seeded by [`MaskingConfig::seed_mix`]
//! of (seed, example index) in [`MaskingMode::Static`] (BERT: one mask per example for the whole
//! run) or of (seed, epoch, example index) in [`MaskingMode::Dynamic`] (RoBERTa: a new mask every
//! epoch).

use std::collections::HashMap;

use anyhow::{Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::tokenizer::SpecialIds;

/// Label of positions that do not count in the loss (PyTorch's cross-entropy default).
pub const IGNORE: i64 = -100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskingMode {
    /// The mask of an example depends on (seed, example index) only.
    Static,
    /// The mask of an example also depends on the epoch.
    Dynamic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// Chance that a non-special position (or word, with `whole_word`) is chosen.
    pub probability: f64,
    /// Share of the chosen positions replaced by the mask token.
    pub mask_fraction: f64,
    /// Share of the chosen positions replaced by a random non-special token; the rest stay.
    pub random_fraction: f64,
    /// Choose whole words, then corrupt every piece of each chosen word.
    pub whole_word: bool,
    pub mode: MaskingMode,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        MaskingConfig {
            probability: 0.15,
            mask_fraction: 0.8,
            random_fraction: 0.1,
            whole_word: false,
            mode: MaskingMode::Dynamic,
        }
    }
}

/// A corrupted sequence and its MLM labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    pub input_ids: Vec<u32>,
    /// Original id at chosen positions, [`IGNORE`] elsewhere.
    pub labels: Vec<i64>,
}

impl Masked {
    /// A sequence left as it is, every label ignored (evaluation of hidden states, padding).
    pub fn unmasked(ids: &[u32]) -> Self {
        Masked {
            input_ids: ids.to_vec(),
            labels: vec![IGNORE; ids.len()],
        }
    }
}

/// SplitMix64's finaliser: spreads nearby inputs (example 7, example 8) over unrelated seeds.
fn splitmix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl MaskingConfig {
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !unit(self.probability) {
            bail!(
                "masking.probability = {}: must be in [0, 1]",
                self.probability
            );
        }
        if !unit(self.mask_fraction)
            || !unit(self.random_fraction)
            || self.mask_fraction + self.random_fraction > 1.0
        {
            bail!(
                "masking.mask_fraction = {}, random_fraction = {}: each in [0, 1], sum at most 1",
                self.mask_fraction,
                self.random_fraction
            );
        }
        Ok(())
    }

    /// Seed of the random stream that masks example `index` in `epoch`; the epoch is ignored in
    /// static mode.
    pub fn seed_mix(&self, seed: u64, epoch: u64, index: u64) -> u64 {
        let epoch = match self.mode {
            MaskingMode::Static => 0,
            MaskingMode::Dynamic => epoch.wrapping_add(1),
        };
        splitmix(splitmix(splitmix(seed) ^ epoch) ^ index)
    }
}

/// Corrupt `ids` for MLM with the random stream of `seed_mix` (see [`MaskingConfig::seed_mix`]).
///
/// `words` gives each position's word index (`None` for special tokens), as
/// [`super::tokenizer::TextTokenizer::encode_with_words`] returns; it is required with
/// `whole_word`. Special tokens, padding included, are never chosen. Random replacements are
/// drawn uniformly from the ids below `vocab_size` that are not special.
pub fn mask_tokens(
    ids: &[u32],
    words: Option<&[Option<u32>]>,
    config: &MaskingConfig,
    special: &SpecialIds,
    vocab_size: usize,
    seed_mix: u64,
) -> Result<Masked> {
    if let Some(words) = words
        && words.len() != ids.len()
    {
        bail!(
            "masking: {} word ids for {} token ids",
            words.len(),
            ids.len()
        );
    }
    let words = match (config.whole_word, words) {
        (true, None) => bail!("masking.whole_word needs the word id of every token"),
        (true, Some(w)) => Some(w),
        (false, _) => None,
    };
    let specials_below = special
        .all()
        .iter()
        .filter(|&&id| (id as usize) < vocab_size)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if vocab_size <= specials_below {
        bail!("masking: vocab_size = {vocab_size} leaves no non-special token to sample");
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed_mix);
    let chosen = choose_positions(ids, words, config.probability, special, &mut rng);
    let mut input_ids = ids.to_vec();
    let mut labels = vec![IGNORE; ids.len()];
    for (i, _) in chosen.iter().enumerate().filter(|(_, c)| **c) {
        labels[i] = i64::from(ids[i]);
        let u: f64 = rng.random();
        if u < config.mask_fraction {
            input_ids[i] = special.mask;
        } else if u < config.mask_fraction + config.random_fraction {
            input_ids[i] = loop {
                let id = rng.random_range(0..vocab_size as u32);
                if !special.contains(id) {
                    break id;
                }
            };
        }
    }
    Ok(Masked { input_ids, labels })
}

/// One Bernoulli(p) draw per non-special position, or per word: every piece of a word shares
/// the draw made at the word's first piece.
fn choose_positions(
    ids: &[u32],
    words: Option<&[Option<u32>]>,
    p: f64,
    special: &SpecialIds,
    rng: &mut ChaCha8Rng,
) -> Vec<bool> {
    let mut word_choice: HashMap<u32, bool> = HashMap::new();
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            if special.contains(id) {
                return false;
            }
            match words.and_then(|w| w[i]) {
                Some(word) => *word_choice
                    .entry(word)
                    .or_insert_with(|| rng.random::<f64>() < p),
                // A non-special token outside any word is a word of its own.
                None => rng.random::<f64>() < p,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECIAL: SpecialIds = SpecialIds {
        pad: 0,
        unk: 1,
        cls: 2,
        sep: 3,
        mask: 4,
    };
    const VOCAB: usize = 1000;

    /// `n` body tokens between CLS and SEP, then `pads` padding tokens.
    fn sequence(n: usize, pads: usize, salt: u32) -> Vec<u32> {
        let mut ids = vec![SPECIAL.cls];
        ids.extend((0..n as u32).map(|i| 5 + (i * 7919 + salt * 104_729) % (VOCAB as u32 - 5)));
        ids.push(SPECIAL.sep);
        ids.extend(std::iter::repeat_n(SPECIAL.pad, pads));
        ids
    }

    #[test]
    fn proportions_follow_15_80_10_10_and_skip_specials() {
        let config = MaskingConfig::default();
        let (mut eligible, mut chosen, mut masked, mut random, mut kept) = (0, 0, 0, 0, 0);
        for example in 0..200u32 {
            let ids = sequence(100, 20, example);
            let seed = config.seed_mix(7, 0, u64::from(example));
            let out = mask_tokens(&ids, None, &config, &SPECIAL, VOCAB, seed).unwrap();
            for (i, &id) in ids.iter().enumerate() {
                if SPECIAL.contains(id) {
                    assert_eq!(out.labels[i], IGNORE, "special token {id} chosen");
                    assert_eq!(out.input_ids[i], id, "special token {id} changed");
                    continue;
                }
                eligible += 1;
                if out.labels[i] == IGNORE {
                    assert_eq!(out.input_ids[i], id, "unchosen position changed");
                    continue;
                }
                assert_eq!(out.labels[i], i64::from(id));
                chosen += 1;
                let new = out.input_ids[i];
                if new == SPECIAL.mask {
                    masked += 1;
                } else if new != id {
                    assert!(!SPECIAL.contains(new) && (new as usize) < VOCAB);
                    random += 1;
                } else {
                    kept += 1;
                }
            }
        }
        assert_eq!(eligible, 20_000);
        // Standard deviations: 50 chosen of 20k; about 0.7%, 0.55%, 0.55% of the chosen.
        let rate = chosen as f64 / eligible as f64;
        assert!((rate - 0.15).abs() < 0.01, "chosen rate {rate}");
        let share = |k: usize| k as f64 / chosen as f64;
        assert!((share(masked) - 0.8).abs() < 0.03, "mask {}", share(masked));
        assert!(
            (share(random) - 0.1).abs() < 0.025,
            "random {}",
            share(random)
        );
        assert!((share(kept) - 0.1).abs() < 0.025, "kept {}", share(kept));
    }

    #[test]
    fn static_masks_repeat_across_epochs_dynamic_ones_change() {
        let ids = sequence(200, 0, 3);
        let run = |mode, epoch, index| {
            let config = MaskingConfig {
                mode,
                ..Default::default()
            };
            let seed = config.seed_mix(11, epoch, index);
            mask_tokens(&ids, None, &config, &SPECIAL, VOCAB, seed).unwrap()
        };
        let first = run(MaskingMode::Static, 0, 5);
        assert!(first.labels.iter().any(|&l| l != IGNORE));
        for epoch in 1..4 {
            assert_eq!(run(MaskingMode::Static, epoch, 5), first);
        }
        assert_ne!(run(MaskingMode::Static, 0, 6), first, "examples differ");
        let dynamic = run(MaskingMode::Dynamic, 0, 5);
        assert_eq!(run(MaskingMode::Dynamic, 0, 5), dynamic, "reproducible");
        assert_ne!(
            run(MaskingMode::Dynamic, 1, 5),
            dynamic,
            "new mask each epoch"
        );
        assert_ne!(run(MaskingMode::Dynamic, 0, 6), dynamic);
    }

    #[test]
    fn whole_word_masking_takes_all_pieces_of_a_word() {
        let config = MaskingConfig {
            whole_word: true,
            ..Default::default()
        };
        let (mut words_seen, mut words_chosen) = (0, 0);
        for example in 0..100u64 {
            // 60 words of 3 pieces each.
            let ids = sequence(180, 5, example as u32);
            let words: Vec<Option<u32>> = ids
                .iter()
                .enumerate()
                .map(|(i, &id)| (!SPECIAL.contains(id)).then(|| (i as u32 - 1) / 3))
                .collect();
            let seed = config.seed_mix(1, 0, example);
            let out = mask_tokens(&ids, Some(&words), &config, &SPECIAL, VOCAB, seed).unwrap();
            let body = &out.labels[1..181];
            for word in body.chunks(3) {
                let n = word.iter().filter(|&&l| l != IGNORE).count();
                assert!(n == 0 || n == 3, "word partly chosen: {word:?}");
                words_seen += 1;
                words_chosen += usize::from(n == 3);
            }
            assert!(out.labels[181..].iter().all(|&l| l == IGNORE));
        }
        let rate = words_chosen as f64 / words_seen as f64;
        // 6000 words: standard deviation 0.46%.
        assert!((rate - 0.15).abs() < 0.02, "word rate {rate}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ids = sequence(10, 0, 0);
        let whole = MaskingConfig {
            whole_word: true,
            ..Default::default()
        };
        assert!(mask_tokens(&ids, None, &whole, &SPECIAL, VOCAB, 0).is_err());
        let short = vec![Some(0); 3];
        let plain = MaskingConfig::default();
        assert!(mask_tokens(&ids, Some(&short), &plain, &SPECIAL, VOCAB, 0).is_err());
        assert!(mask_tokens(&ids, None, &plain, &SPECIAL, 5, 0).is_err());
        let bad = MaskingConfig {
            mask_fraction: 0.95,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(MaskingConfig::default().validate().is_ok());
    }
}
