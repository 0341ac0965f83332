//! `pretext data notes`: single notes rendered from a General MIDI SoundFont the way NSynth was
//! made (Engel et al. 2017): one program, one MIDI pitch, one velocity, the note held 3 s and
//! released for 1 s, 16 kHz mono. `rustysynth` renders (a maintained pure-Rust SoundFont
//! synthesiser; it reads SF2, not SF3), `hound` writes. Labels: the instrument family (the
//! class folder: the 16 GM families of 8 programs), the program and the pitch (`labels.tsv`).
//! The split keeps programs apart: in every family a seeded draw of programs is held out for
//! the test split, so the family probe is scored on instruments it never saw.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use rustysynth::{SoundFont, Synthesizer, SynthesizerSettings};

use super::decode::write_wav;

/// The 16 General MIDI instrument families, programs 8k..8k+7 each.
pub const GM_FAMILIES: [&str; 16] = [
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "synth_effects",
    "ethnic",
    "percussive",
    "sound_effects",
];

/// What to render.
#[derive(Debug, Clone)]
pub struct NoteSettings {
    pub soundfont: PathBuf,
    pub out: PathBuf,
    pub programs: Vec<u8>,
    pub pitches: Vec<u8>,
    pub velocities: Vec<u8>,
    /// Programs of each family held out for the test split.
    pub test_programs: usize,
    pub seed: u64,
    pub sample_rate: u32,
    pub held_seconds: f64,
    pub release_seconds: f64,
}

impl NoteSettings {
    /// The default set: every program, pitches 24-96 in steps of 4, velocity 100 (2,432
    /// clips, ~310 MB); the full NSynth-like grid is pitches 21-108 and velocities 25-127.
    pub fn new(soundfont: PathBuf, out: PathBuf) -> NoteSettings {
        NoteSettings {
            soundfont,
            out,
            programs: (0..128).collect(),
            pitches: (24..=96).step_by(4).collect(),
            velocities: vec![100],
            test_programs: 2,
            seed: 0,
            sample_rate: 16_000,
            held_seconds: 3.0,
            release_seconds: 1.0,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotesReport {
    pub train: usize,
    pub test: usize,
    /// Notes the SoundFont renders as silence (no sample for that key): not written.
    pub silent: usize,
    pub test_programs: Vec<u8>,
    pub seconds: f64,
}

/// Read a SoundFont, with an error that says what is wrong.
pub fn open_soundfont(path: &Path) -> Result<Arc<SoundFont>> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("opening SoundFont {}", path.display()))?;
    let font = SoundFont::new(&mut file).map_err(|e| {
        anyhow!(
            "{}: not a SoundFont that rustysynth reads ({e:?}); it takes SF2 files (SF3's \
             compressed samples are not supported)",
            path.display()
        )
    })?;
    Ok(Arc::new(font))
}

/// Render `program` playing `pitch` at `velocity`: held, then released, mono.
pub fn render_note(
    font: &Arc<SoundFont>,
    settings: &NoteSettings,
    program: u8,
    pitch: u8,
    velocity: u8,
) -> Result<Vec<f32>> {
    let mut synth_settings = SynthesizerSettings::new(settings.sample_rate as i32);
    // NSynth's notes are dry: no reverb or chorus tail from the synthesiser.
    synth_settings.enable_reverb_and_chorus = false;
    let mut synth = Synthesizer::new(font, &synth_settings)
        .map_err(|e| anyhow!("starting the synthesiser: {e:?}"))?;
    synth.process_midi_message(0, 0xC0, program as i32, 0);
    synth.note_on(0, pitch as i32, velocity as i32);
    let rate = settings.sample_rate as f64;
    let held = (settings.held_seconds * rate).round() as usize;
    let release = (settings.release_seconds * rate).round() as usize;
    let mut left = vec![0f32; held + release];
    let mut right = vec![0f32; held + release];
    synth.render(&mut left[..held], &mut right[..held]);
    synth.note_off(0, pitch as i32);
    synth.render(&mut left[held..], &mut right[held..]);
    Ok(left
        .iter()
        .zip(&right)
        .map(|(l, r)| 0.5 * (l + r))
        .collect())
}

/// Render the grid into `out/{train,test}/<family>/p<program>_n<pitch>_v<velocity>.wav` with a
/// `labels.tsv` (program, pitch, velocity) in each split.
pub fn build_notes(settings: &NoteSettings) -> Result<NotesReport> {
    let started = std::time::Instant::now();
    if settings.programs.iter().any(|&p| p > 127)
        || settings.pitches.iter().any(|&p| p > 127)
        || settings.velocities.iter().any(|&v| v == 0 || v > 127)
    {
        bail!("programs and pitches must lie in 0-127 and velocities in 1-127");
    }
    if settings.programs.is_empty() || settings.pitches.is_empty() || settings.velocities.is_empty()
    {
        bail!("nothing to render: the program, pitch or velocity list is empty");
    }
    let font = open_soundfont(&settings.soundfont)?;
    for split in ["train", "test"] {
        let dir = settings.out.join(split);
        if dir.join("labels.tsv").exists() {
            bail!(
                "{} already holds a data set; choose another --out or remove it",
                dir.display()
            );
        }
    }
    // Hold out `test_programs` of each family's programs that the grid includes.
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut test_programs = Vec::new();
    for family in 0..16u8 {
        let mut members: Vec<u8> = settings
            .programs
            .iter()
            .copied()
            .filter(|p| p / 8 == family)
            .collect();
        members.shuffle(&mut rng);
        let held = settings.test_programs.min(members.len().saturating_sub(1));
        test_programs.extend_from_slice(&members[..held]);
    }
    test_programs.sort_unstable();
    let mut jobs = Vec::new();
    for &program in &settings.programs {
        for &pitch in &settings.pitches {
            for &velocity in &settings.velocities {
                jobs.push((program, pitch, velocity));
            }
        }
    }
    let written: Vec<Option<(bool, String)>> = jobs
        .par_iter()
        .map(
            |&(program, pitch, velocity)| -> Result<Option<(bool, String)>> {
                let samples = render_note(&font, settings, program, pitch, velocity)?;
                if samples.iter().all(|s| s.abs() < 1e-4) {
                    return Ok(None);
                }
                let test = test_programs.binary_search(&program).is_ok();
                let family = GM_FAMILIES[program as usize / 8];
                let rel = format!("{family}/p{program:03}_n{pitch:03}_v{velocity:03}.wav");
                let split = if test { "test" } else { "train" };
                let path = settings.out.join(split).join(&rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                write_wav(&path, &samples, settings.sample_rate)?;
                Ok(Some((
                    test,
                    format!("{rel}\t{program}\t{pitch}\t{velocity}"),
                )))
            },
        )
        .collect::<Result<_>>()?;
    let mut report = NotesReport {
        train: 0,
        test: 0,
        silent: 0,
        test_programs,
        seconds: 0.0,
    };
    let mut tables = [String::new(), String::new()];
    for row in written {
        match row {
            None => report.silent += 1,
            Some((test, line)) => {
                let t = &mut tables[test as usize];
                t.push_str(&line);
                t.push('\n');
                if test {
                    report.test += 1;
                } else {
                    report.train += 1;
                }
            }
        }
    }
    for (split, table) in ["train", "test"].iter().zip(tables) {
        let dir = settings.out.join(split);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::core::checkpoint::write_atomic(
            &dir.join("labels.tsv"),
            format!("file\tprogram\tpitch\tvelocity\n{table}").as_bytes(),
        )?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_soundfont_is_named() {
        let path = std::env::temp_dir().join(format!("pretext-bad-{}.sf2", std::process::id()));
        std::fs::write(&path, b"RIFF\0\0\0\0sfbkLIST").unwrap();
        let e = format!("{:#}", open_soundfont(&path).err().unwrap());
        assert!(
            e.contains("SoundFont") && e.contains(&path.display().to_string()),
            "{e}"
        );
        std::fs::remove_file(&path).ok();
    }
}
