//! Audio data: folders of clips (class subfolders, optionally under `train/` and `test/`, with
//! an optional `labels.tsv` of further label columns) decoded ([`decode`]), resampled, cut or
//! padded to one length and turned into log-mel images ([`logmel`]), held in memory as a
//! [`ClipSet`]; and the commands that build data sets from Debian packages: single notes from
//! a General MIDI SoundFont ([`notes`]) and spoken words from `espeak-ng` ([`spoken`]).

pub mod decode;
pub mod logmel;
pub mod notes;
pub mod spoken;
pub mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use decode::{is_audio_file, read_audio, resample};
use logmel::{LogMel, MelConfig};

use crate::vision::data::OnError;

/// `[data]` of an audio config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioDataConfig {
    /// `[data.mel]`: the log-mel front end.
    pub mel: MelConfig,
    /// Every clip is cut or padded with silence to this length.
    pub clip_seconds: f64,
    /// Frames of the crops the views take.
    pub crop_frames: usize,
    /// A clip shorter than one crop: `"pad"` it with silence (as BYOL-A pads short clips) or
    /// `"skip"` it; counted either way.
    pub short_clips: ShortClips,
    /// Use only the first N clips of the training split (0: all).
    pub train_limit: usize,
    pub test_limit: usize,
    /// Clips whose loudest sample is below this are silence: skipped and counted.
    pub silence_threshold: f32,
    /// Pretraining reads each clip from disk when the loader asks for it instead of decoding
    /// the whole training split into memory first ([`stream`]).
    pub stream: bool,
    /// A streamed clip that cannot be used mid-run: `"skip"` it (the next usable one takes its
    /// place, counted) or `"stop"` the run naming it.
    pub on_error: OnError,
}

impl Default for AudioDataConfig {
    fn default() -> Self {
        AudioDataConfig {
            mel: MelConfig::default(),
            clip_seconds: 1.0,
            crop_frames: 64,
            short_clips: ShortClips::Pad,
            train_limit: 0,
            test_limit: 0,
            silence_threshold: 1e-4,
            stream: false,
            on_error: OnError::Skip,
        }
    }
}

impl AudioDataConfig {
    pub fn validate(&self) -> Result<()> {
        self.mel.validate()?;
        if !(self.clip_seconds > 0.0 && self.clip_seconds <= 600.0) {
            bail!(
                "data.clip_seconds = {}: expected (0, 600]",
                self.clip_seconds
            );
        }
        if self.crop_frames == 0 || self.crop_frames > self.frames() {
            bail!(
                "data.crop_frames = {}: expected 1 to the {} frames of a {} s clip",
                self.crop_frames,
                self.frames(),
                self.clip_seconds
            );
        }
        Ok(())
    }

    pub fn clip_samples(&self) -> usize {
        (self.clip_seconds * self.mel.sample_rate as f64).round() as usize
    }

    /// Frames of every clip's log-mel image.
    pub fn frames(&self) -> usize {
        self.mel.frames(self.clip_samples())
    }

    /// Samples a clip needs to fill one crop.
    pub(crate) fn crop_samples(&self) -> usize {
        (self.crop_frames.saturating_sub(1)) * self.mel.hop
    }
}

/// What to do with a clip shorter than one crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShortClips {
    Pad,
    Skip,
}

/// One label per clip for one task: its name, its class names, and each clip's class.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelColumn {
    pub name: String,
    pub classes: Vec<String>,
    pub labels: Vec<u32>,
}

impl LabelColumn {
    /// The labels of the clips at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> LabelColumn {
        LabelColumn {
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            ..self.clone()
        }
    }
}

/// Log-mel images of equal size, `[clips][n_mels][frames]` flattened, with every label column.
#[derive(Debug, Clone)]
pub struct ClipSet {
    pub n_mels: usize,
    pub frames: usize,
    pub values: Vec<f32>,
    /// `class` (the subfolder) first, then the columns of `labels.tsv`.
    pub tasks: Vec<LabelColumn>,
    pub files: Vec<PathBuf>,
}

/// What reading a folder met besides good clips.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadReport {
    pub clips: usize,
    pub resampled: usize,
    pub mixed_down: usize,
    pub padded: usize,
    /// Of the padded clips, those shorter than one crop.
    pub shorter_than_crop: usize,
    pub silent: usize,
    pub too_short: usize,
    pub unreadable: usize,
    /// The first few skipped files and why.
    pub examples: Vec<String>,
}

impl ReadReport {
    pub fn skipped(&self) -> usize {
        self.silent + self.too_short + self.unreadable
    }

    /// One line for the terminal.
    pub fn summary(&self, what: &str) -> String {
        let mut s = format!("{what}: {} clips", self.clips);
        if self.resampled + self.mixed_down + self.padded > 0 {
            s += &format!(
                " ({} resampled, {} mixed down to mono, {} padded with silence, {} of them \
                 shorter than a crop)",
                self.resampled, self.mixed_down, self.padded, self.shorter_than_crop
            );
        }
        if self.skipped() > 0 {
            s += &format!(
                "; skipped {} unreadable, {} silent, {} shorter than a crop (e.g. {})",
                self.unreadable,
                self.silent,
                self.too_short,
                self.examples.join("; ")
            );
        }
        s
    }
}

impl ClipSet {
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn clip_len(&self) -> usize {
        self.n_mels * self.frames
    }

    pub fn clip(&self, i: usize) -> &[f32] {
        let n = self.clip_len();
        &self.values[i * n..(i + 1) * n]
    }

    /// The label column `name`, or an error listing those there are.
    pub fn task(&self, name: &str) -> Result<&LabelColumn> {
        task_named(&self.tasks, name)
    }

    /// Clips at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ClipSet {
        let mut values = Vec::with_capacity(indices.len() * self.clip_len());
        for &i in indices {
            values.extend_from_slice(self.clip(i));
        }
        ClipSet {
            values,
            tasks: self.tasks.iter().map(|t| t.select(indices)).collect(),
            files: indices.iter().map(|&i| self.files[i].clone()).collect(),
            ..*self
        }
    }

    /// The first `limit` clips (all when 0).
    pub fn limited(self, limit: usize) -> ClipSet {
        if limit == 0 || limit >= self.len() {
            return self;
        }
        self.select(&(0..limit).collect::<Vec<_>>())
    }

    /// Mean and standard deviation of every mel band over all clips and frames: the
    /// per-band normalisation, computed on the training set.
    pub fn band_stats(&self) -> (Vec<f32>, Vec<f32>) {
        band_stats(
            (0..self.len()).map(|i| self.clip(i)),
            self.n_mels,
            self.frames,
        )
    }

    /// Size and an xxh3 hash of the values and labels: what `--resume` checks.
    pub fn fingerprint(&self) -> serde_json::Value {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for v in &self.values {
            h.update(&v.to_le_bytes());
        }
        fingerprint_json(h, "xxh3", &self.tasks, [self.n_mels, self.frames])
    }
}

/// A set's fingerprint: `h` (over its values or its index) with every label added, under
/// `key`, beside the clip count and image shape.
pub(crate) fn fingerprint_json(
    mut h: xxhash_rust::xxh3::Xxh3,
    key: &str,
    tasks: &[LabelColumn],
    [n_mels, frames]: [usize; 2],
) -> serde_json::Value {
    for t in tasks {
        for l in &t.labels {
            h.update(&l.to_le_bytes());
        }
    }
    serde_json::json!({
        "clips": tasks.first().map_or(0, |t| t.labels.len()),
        "shape": [1, n_mels, frames],
        key: format!("{:016x}", h.digest()),
    })
}

/// The label column `name` of `tasks`, or an error listing those there are.
pub fn task_named<'a>(tasks: &'a [LabelColumn], name: &str) -> Result<&'a LabelColumn> {
    tasks.iter().find(|t| t.name == name).with_context(|| {
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        format!("no label column '{name}'; this data has {names:?}")
    })
}

/// Mean and standard deviation of every mel band over all frames of `clips` (`[n_mels][frames]`
/// each), summed in `f64` in the clips' order.
pub fn band_stats<'a>(
    clips: impl Iterator<Item = &'a [f32]>,
    n_mels: usize,
    frames: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0f64; n_mels];
    let mut sq = vec![0f64; n_mels];
    let mut count = 0usize;
    for clip in clips {
        for m in 0..n_mels {
            for &v in &clip[m * frames..(m + 1) * frames] {
                sum[m] += v as f64;
                sq[m] += (v as f64) * (v as f64);
            }
        }
        count += 1;
    }
    let n = (count * frames).max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sq
        .iter()
        .zip(&sum)
        .map(|(q, s)| ((q / n - (s / n).powi(2)).max(0.0).sqrt().max(1e-3)) as f32)
        .collect();
    (mean, std)
}

/// The train and test splits of `root`: `root/train` and `root/test` when they exist, else
/// `root` itself as the training split and no test split.
pub fn load_splits(
    root: &Path,
    config: &AudioDataConfig,
) -> Result<(ClipSet, Option<ClipSet>, ReadReport, ReadReport)> {
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    if train_dir.is_dir() {
        let (train, train_report) = load_folder(&train_dir, config)?;
        let (test, test_report) = if test_dir.is_dir() {
            let (t, r) = load_folder(&test_dir, config)?;
            (Some(t), r)
        } else {
            (None, ReadReport::default())
        };
        if let Some(test) = &test {
            let names = |s: &ClipSet| s.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
            if names(&train) != names(test) {
                bail!(
                    "{}: train and test have different label columns ({:?} and {:?})",
                    root.display(),
                    names(&train),
                    names(test)
                );
            }
        }
        let train = train.limited(config.train_limit);
        let test = test.map(|t| t.limited(config.test_limit));
        return Ok((train, test, train_report, test_report));
    }
    let (train, report) = load_folder(root, config)?;
    Ok((
        train.limited(config.train_limit),
        None,
        report,
        ReadReport::default(),
    ))
}

/// Every audio file of `dir`'s class subfolders (files directly in `dir` form one class named
/// after the folder), read in parallel into one [`ClipSet`].
pub fn load_folder(dir: &Path, config: &AudioDataConfig) -> Result<(ClipSet, ReadReport)> {
    config.validate()?;
    let files = list_clips(dir)?;
    if files.is_empty() {
        bail!(
            "{}: no audio files (.wav, .flac, .ogg, .mp3) in it or its class subfolders",
            dir.display()
        );
    }
    let logmel = LogMel::new(&config.mel)?;
    // Each clip's image is written straight into its slot of one buffer and the slots of the
    // clips left out are closed up afterwards, so the set is held once (a set of 4-second notes
    // is 2.5 GB) rather than once per clip and again joined.
    let clip_len = config.mel.n_mels * config.frames();
    let mut values = vec![0f32; files.len() * clip_len];
    let outcomes: Vec<ClipOutcome> = values
        .par_chunks_mut(clip_len)
        .zip(files.par_iter())
        .map(|(slot, (path, _))| {
            let outcome = read_clip(path, config, &logmel);
            if let ClipOutcome::Clip(v, _) = &outcome {
                slot.copy_from_slice(v);
            }
            // Only the flags are kept: the image is in its slot.
            match outcome {
                ClipOutcome::Clip(_, flags) => ClipOutcome::Clip(Vec::new(), flags),
                skip => skip,
            }
        })
        .collect();
    let mut report = ReadReport::default();
    let mut kept = Vec::new();
    for (i, (outcome, (path, class))) in outcomes.into_iter().zip(&files).enumerate() {
        match outcome {
            ClipOutcome::Clip(_, [r, m, p, short]) => {
                let slot = kept.len();
                if slot != i {
                    values.copy_within(i * clip_len..(i + 1) * clip_len, slot * clip_len);
                }
                kept.push((path.clone(), class.clone()));
                report.clips += 1;
                report.resampled += r as usize;
                report.mixed_down += m as usize;
                report.padded += p as usize;
                report.shorter_than_crop += short as usize;
            }
            ClipOutcome::Skip(kind, why) => {
                match kind {
                    SkipKind::Silent => report.silent += 1,
                    SkipKind::Short => report.too_short += 1,
                    SkipKind::Unreadable => report.unreadable += 1,
                }
                if report.examples.len() < 3 {
                    report.examples.push(why);
                }
            }
        }
    }
    values.truncate(kept.len() * clip_len);
    if kept.is_empty() {
        bail!(
            "{}: none of its {} audio files could be used ({})",
            dir.display(),
            files.len(),
            report.examples.join("; ")
        );
    }
    let mut tasks = vec![label_column(
        "class",
        kept.iter().map(|(_, c)| c.clone()).collect(),
    )];
    tasks.extend(read_label_table(dir, &kept)?);
    let set = ClipSet {
        n_mels: config.mel.n_mels,
        frames: config.frames(),
        values,
        tasks,
        files: kept.into_iter().map(|(p, _)| p).collect(),
    };
    Ok((set, report))
}

/// Why a clip was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipKind {
    Unreadable,
    Short,
    Silent,
}

/// One file read: its samples or log-mel image and what was done to it (resampled, mixed
/// down, padded, shorter than a crop), or why it was left out, naming the file.
pub enum ClipOutcome {
    Clip(Vec<f32>, [bool; 4]),
    Skip(SkipKind, String),
}

/// Read, resample, cut or pad one file and compute its log-mel image, as every reader does.
pub fn read_clip(path: &Path, config: &AudioDataConfig, logmel: &LogMel) -> ClipOutcome {
    match read_samples(path, config) {
        ClipOutcome::Clip(samples, flags) => ClipOutcome::Clip(logmel.compute(&samples), flags),
        skip => skip,
    }
}

/// Read one file, mix it down, resample it to the config's rate and cut or pad it to the
/// clip length: the samples its log-mel image is computed from.
pub fn read_samples(path: &Path, config: &AudioDataConfig) -> ClipOutcome {
    let (want, min) = (config.clip_samples(), config.crop_samples());
    let audio = match read_audio(path) {
        Ok(a) => a,
        Err(e) => return ClipOutcome::Skip(SkipKind::Unreadable, format!("{e:#}")),
    };
    let resampled = audio.rate != config.mel.sample_rate;
    let mut samples = match resample(&audio.samples, audio.rate, config.mel.sample_rate) {
        Ok(s) => s,
        Err(e) => {
            return ClipOutcome::Skip(SkipKind::Unreadable, format!("{}: {e:#}", path.display()));
        }
    };
    let short = samples.len() < min.max(1);
    if samples.is_empty() || (short && config.short_clips == ShortClips::Skip) {
        return ClipOutcome::Skip(
            SkipKind::Short,
            format!(
                "{}: {:.3} s, less than one crop",
                path.display(),
                samples.len() as f64 / config.mel.sample_rate as f64
            ),
        );
    }
    if samples.iter().all(|s| s.abs() < config.silence_threshold) {
        return ClipOutcome::Skip(
            SkipKind::Silent,
            format!("{}: silence only", path.display()),
        );
    }
    let padded = samples.len() < want;
    samples.resize(want, 0.0);
    ClipOutcome::Clip(samples, [resampled, audio.channels > 1, padded, short])
}

/// (file, class) for every audio file of `dir`'s subfolders (or `dir` itself), sorted.
pub(crate) fn list_clips(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let entries = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .with_context(|| format!("reading folder {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut files = Vec::new();
    let top = entries(dir)?;
    let own_class = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for path in top {
        if path.is_dir() {
            let class = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for f in entries(&path)? {
                if f.is_file() && is_audio_file(&f) {
                    files.push((f, class.clone()));
                }
            }
        } else if is_audio_file(&path) {
            files.push((path, own_class.clone()));
        }
    }
    Ok(files)
}

/// A label column from one class name per clip; classes sorted, numerically when they are
/// all numbers (pitches, programs).
pub(crate) fn label_column(name: &str, values: Vec<String>) -> LabelColumn {
    let mut classes: Vec<String> = values.clone();
    classes.sort();
    classes.dedup();
    if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
        classes.sort_by(|a, b| {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            x.total_cmp(&y)
        });
    }
    let index: BTreeMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let labels = values.iter().map(|v| index[v.as_str()]).collect();
    LabelColumn {
        name: name.into(),
        classes,
        labels,
    }
}

/// The columns of `dir/labels.tsv` (a header `file<TAB>name...`, then one line per clip, the
/// file relative to `dir`) for the clips `kept`; none when there is no such file.
pub(crate) fn read_label_table(dir: &Path, kept: &[(PathBuf, String)]) -> Result<Vec<LabelColumn>> {
    let path = dir.join("labels.tsv");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, l)| l.split('\t').collect())
        .unwrap_or_default();
    if header.first() != Some(&"file") || header.len() < 2 {
        bail!(
            "{}:1: the header must be `file<TAB>label name...`",
            path.display()
        );
    }
    let mut rows: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != header.len() {
            bail!(
                "{}:{}: {} fields, the header has {}",
                path.display(),
                i + 1,
                fields.len(),
                header.len()
            );
        }
        rows.insert(
            dir.join(fields[0]),
            fields[1..].iter().map(|s| s.to_string()).collect(),
        );
    }
    let mut columns: Vec<Vec<String>> = vec![Vec::with_capacity(kept.len()); header.len() - 1];
    for (file, _) in kept {
        let row = rows.get(file).with_context(|| {
            format!(
                "{}: no line for {}",
                path.display(),
                file.strip_prefix(dir).unwrap_or(file).display()
            )
        })?;
        for (c, v) in columns.iter_mut().zip(row) {
            c.push(v.clone());
        }
    }
    Ok(header[1..]
        .iter()
        .zip(columns)
        .map(|(name, values)| label_column(name, values))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use decode::write_wav;

    #[test]
    fn a_folder_reads_into_labelled_log_mels_and_bad_clips_are_counted() {
        let dir = std::env::temp_dir().join(format!("pretext-audio-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for class in ["high", "low"] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
        }
        let tone = |f: f64, rate: u32, seconds: f64| -> Vec<f32> {
            (0..(rate as f64 * seconds) as usize)
                .map(|i| {
                    (0.3 * (2.0 * std::f64::consts::PI * f * i as f64 / rate as f64).sin()) as f32
                })
                .collect()
        };
        write_wav(&dir.join("high/a.wav"), &tone(3000.0, 16000, 1.2), 16000).unwrap();
        // 8 kHz: resampled on the way in; short: padded.
        write_wav(&dir.join("high/b.wav"), &tone(3000.0, 8000, 0.8), 8000).unwrap();
        write_wav(&dir.join("low/c.wav"), &tone(200.0, 16000, 1.0), 16000).unwrap();
        write_wav(&dir.join("low/silent.wav"), &vec![0.0; 16000], 16000).unwrap();
        write_wav(&dir.join("low/tiny.wav"), &tone(200.0, 16000, 0.05), 16000).unwrap();
        std::fs::write(dir.join("low/broken.wav"), b"RIFF....WAVEjunk").unwrap();
        std::fs::write(
            dir.join("labels.tsv"),
            "file\tpitch\nhigh/a.wav\t90\nhigh/b.wav\t90\nlow/c.wav\t55\nlow/tiny.wav\t55\n",
        )
        .unwrap();
        let config = AudioDataConfig {
            short_clips: ShortClips::Skip,
            ..AudioDataConfig::default()
        };
        let (set, report) = load_folder(&dir, &config).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!((set.n_mels, set.frames), (64, 101));
        assert_eq!(
            (
                report.resampled,
                report.padded,
                report.silent,
                report.too_short,
                report.unreadable
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(set.task("class").unwrap().labels, vec![0, 0, 1]);
        let pitch = set.task("pitch").unwrap();
        assert_eq!(pitch.classes, vec!["55", "90"]);
        assert_eq!(pitch.labels, vec![1, 1, 0]);
        assert!(set.task("family").is_err());
        // Padded instead of skipped, the tiny clip is kept and counted.
        let padding = AudioDataConfig::default();
        let (all, report) = load_folder(&dir, &padding).unwrap();
        assert_eq!(
            (all.len(), report.shorter_than_crop, report.too_short),
            (4, 1, 0)
        );
        // The high tone is loud in a high band, the low one in a low band.
        let band_energy = |clip: usize, band: usize| -> f32 {
            let c = set.clip(clip);
            // Frames 10..70 hold sound in every clip (the short one is padded after 0.8 s).
            c[band * set.frames + 10..band * set.frames + 70]
                .iter()
                .sum::<f32>()
                / 60.0
        };
        // 3 kHz sits between the centres of bands 41 and 42, 200 Hz between 3 and 4.
        assert!(band_energy(0, 42) > band_energy(2, 42) + 5.0);
        assert!(band_energy(2, 4) > band_energy(0, 4) + 5.0);
        // The resampled 8 kHz clip matches the 16 kHz one in the bands it shares.
        assert!((band_energy(1, 42) - band_energy(0, 42)).abs() < 1.5);
        std::fs::remove_dir_all(&dir).ok();
    }
}
