//! `pretext data spoken`: spoken words synthesised by `espeak-ng` (run as a program: it is
//! GPL-3 C, and its command line is stable) across its English voices and voice variants,
//! speeds and pitches, with gain and background-noise perturbation, 16 kHz mono. Train and
//! test are split by variant (the speaker: `m3`, `f2`, `croak`...), so no speaker is in both.
//! Where Debian's `asterisk-core-sounds-en-wav` is installed, its recordings of the same words
//! by one real speaker (8 kHz, left at that rate so the reader's resampler is exercised) go to
//! a third split, `recorded/`, as an out-of-domain test.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::decode::{read_audio, resample, write_wav};
use crate::core::loader::mix_seed;

/// The ten digits and words that one speaker's Asterisk prompts also hold, and commands.
pub const WORDS: [&str; 34] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
    "hello",
    "goodbye",
    "number",
    "time",
    "star",
    "pound",
    "minus",
    "hundred",
    "thousand",
    "million",
    "today",
    "tomorrow",
    "yesterday",
    "dollars",
];

/// espeak-ng's own English voices (the MBROLA ones need other packages).
pub const VOICES: [&str; 7] = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
];

/// Debian's recordings of one speaker (asterisk-core-sounds-en-wav).
pub const ASTERISK_DIR: &str = "/usr/share/asterisk/sounds/en_US_f_Allison";

#[derive(Debug, Clone)]
pub struct SpokenSettings {
    pub out: PathBuf,
    pub words: Vec<String>,
    /// How many of espeak-ng's voice variants to use (a seeded draw), and how many of those
    /// are held out for the test split.
    pub variants: usize,
    pub test_variants: usize,
    /// Renderings per word, voice and variant, each with its own speed, pitch, gain and noise.
    pub per_voice: usize,
    pub seed: u64,
    pub sample_rate: u32,
    /// Noise is added at a signal-to-noise ratio drawn from this range (dB).
    pub snr_db: (f64, f64),
    pub recorded: Option<PathBuf>,
}

impl SpokenSettings {
    pub fn new(out: PathBuf) -> SpokenSettings {
        SpokenSettings {
            out,
            words: WORDS.iter().map(|w| w.to_string()).collect(),
            variants: 24,
            test_variants: 6,
            per_voice: 1,
            seed: 0,
            sample_rate: 16_000,
            snr_db: (10.0, 40.0),
            recorded: Some(PathBuf::from(ASTERISK_DIR)).filter(|p| p.is_dir()),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SpokenReport {
    pub train: usize,
    pub test: usize,
    pub recorded: usize,
    pub test_variants: Vec<String>,
    pub seconds: f64,
}

fn espeak_missing() -> anyhow::Error {
    anyhow::anyhow!(
        "espeak-ng is not installed (or not on PATH); install it with `sudo apt-get install \
         espeak-ng`"
    )
}

/// espeak-ng's voice variants (`m1`, `f3`, `croak`, ...), sorted.
pub fn list_variants() -> Result<Vec<String>> {
    let out = Command::new("espeak-ng")
        .arg("--voices=variant")
        .output()
        .map_err(|_| espeak_missing())?;
    if !out.status.success() {
        bail!(
            "espeak-ng --voices=variant failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Rows: Pty Language Age/Gender VoiceName File ...; the file is `!v/<variant>`.
    let mut variants: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter_map(|f| f.strip_prefix("!v/"))
        .map(str::to_string)
        .collect();
    variants.sort();
    variants.dedup();
    Ok(variants)
}

/// One rendering of `word`: espeak-ng's WAV, read back.
fn speak(word: &str, voice: &str, speed: u32, pitch: u32, path: &Path) -> Result<()> {
    let status = Command::new("espeak-ng")
        .args([
            "-v",
            voice,
            "-s",
            &speed.to_string(),
            "-p",
            &pitch.to_string(),
            "-w",
        ])
        .arg(path)
        .arg(word)
        .output()
        .map_err(|_| espeak_missing())?;
    if !status.status.success() {
        bail!(
            "espeak-ng -v {voice} failed on '{word}': {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    Ok(())
}

/// Render every word in every voice and variant into `out/{train,test}/<word>/*.wav` (and the
/// recordings into `out/recorded/<word>/`), each split with a `labels.tsv` (voice, variant).
pub fn build_spoken(settings: &SpokenSettings) -> Result<SpokenReport> {
    let started = std::time::Instant::now();
    if settings.words.is_empty() {
        bail!("no words to speak");
    }
    for split in ["train", "test"] {
        if settings.out.join(split).join("labels.tsv").exists() {
            bail!(
                "{} already holds a data set; choose another --out or remove it",
                settings.out.display()
            );
        }
    }
    let mut variants = list_variants()?;
    if variants.len() < 2 {
        bail!(
            "espeak-ng lists {} voice variants; need at least 2",
            variants.len()
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    variants.shuffle(&mut rng);
    variants.truncate(settings.variants.max(2));
    let held = settings.test_variants.clamp(1, variants.len() - 1);
    let test_variants: Vec<String> = variants[..held].to_vec();
    let scratch = settings.out.join(".espeak");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut jobs = Vec::new();
    for word in &settings.words {
        for voice in VOICES {
            for variant in &variants {
                for take in 0..settings.per_voice {
                    jobs.push((word.as_str(), voice, variant.as_str(), take));
                }
            }
        }
    }
    let rows: Vec<(bool, String)> = jobs
        .par_iter()
        .enumerate()
        .map(
            |(i, &(word, voice, variant, take))| -> Result<(bool, String)> {
                let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[settings.seed, i as u64]));
                let speed = rng.random_range(120..=220);
                let pitch = rng.random_range(20..=80);
                let tmp = scratch.join(format!("{i}.wav"));
                speak(word, &format!("{voice}+{variant}"), speed, pitch, &tmp)?;
                let audio = read_audio(&tmp)?;
                std::fs::remove_file(&tmp).ok();
                let mut samples = resample(&audio.samples, audio.rate, settings.sample_rate)?;
                perturb(&mut samples, settings.snr_db, &mut rng);
                let test = test_variants.iter().any(|v| v == variant);
                let split = if test { "test" } else { "train" };
                let rel = format!("{word}/{voice}+{variant}_{take}.wav");
                let path = settings.out.join(split).join(&rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                write_wav(&path, &samples, settings.sample_rate)?;
                Ok((test, format!("{rel}\t{voice}\t{variant}\t{speed}\t{pitch}")))
            },
        )
        .collect::<Result<_>>()?;
    std::fs::remove_dir_all(&scratch).ok();
    let mut tables = [String::new(), String::new()];
    let (mut train, mut test) = (0, 0);
    for (is_test, line) in rows {
        tables[is_test as usize] += &(line + "\n");
        if is_test {
            test += 1;
        } else {
            train += 1;
        }
    }
    for (split, table) in ["train", "test"].iter().zip(tables) {
        crate::core::checkpoint::write_atomic(
            &settings.out.join(split).join("labels.tsv"),
            format!("file\tvoice\tvariant\tspeed\tpitch\n{table}").as_bytes(),
        )?;
    }
    let recorded = match &settings.recorded {
        Some(dir) => copy_recordings(dir, &settings.out.join("recorded"), &settings.words)?,
        None => 0,
    };
    Ok(SpokenReport {
        train,
        test,
        recorded,
        test_variants,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Random gain (-12 to +3 dB, peaks kept below 1) and white noise at a random SNR.
fn perturb(samples: &mut [f32], snr_db: (f64, f64), rng: &mut ChaCha8Rng) {
    let power =
        samples.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / samples.len().max(1) as f64;
    let snr = rng.random_range(snr_db.0..=snr_db.1.max(snr_db.0));
    let noise_std = (power / 10f64.powf(snr / 10.0)).sqrt();
    let gain = 10f64.powf(rng.random_range(-12.0..=3.0) / 20.0);
    for s in samples.iter_mut() {
        // Sum of uniforms: close enough to Gaussian noise, and cheap.
        let n: f64 = (0..4).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>() * (3f64 / 4.0).sqrt();
        *s = ((*s as f64 + noise_std * n) * gain) as f32;
    }
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak > 0.99 {
        samples.iter_mut().for_each(|s| *s *= 0.99 / peak);
    }
}

/// The recorded prompts for `words` (digits under `digits/N.wav`, words as `<word>.wav`), copied
/// as they are into `out/<word>/`.
fn copy_recordings(dir: &Path, out: &Path, words: &[String]) -> Result<usize> {
    let mut copied = 0;
    let mut table = String::from("file\tvoice\tvariant\tspeed\tpitch\n");
    for word in words {
        let found = match WORDS[..10].iter().position(|w| w == word) {
            Some(digit) => Some(dir.join("digits").join(format!("{digit}.wav"))),
            None => [
                dir.join(format!("{word}.wav")),
                dir.join("digits").join(format!("{word}.wav")),
            ]
            .into_iter()
            .find(|p| p.exists()),
        }
        .filter(|p| p.exists());
        if let Some(src) = found {
            let rel = format!("{word}/recorded.wav");
            let dest = out.join(&rel);
            std::fs::create_dir_all(out.join(word))?;
            std::fs::copy(&src, &dest)
                .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
            table += &format!("{rel}\trecorded\trecorded\t0\t0\n");
            copied += 1;
        }
    }
    if copied > 0 {
        crate::core::checkpoint::write_atomic(&out.join("labels.tsv"), table.as_bytes())?;
    }
    Ok(copied)
}
