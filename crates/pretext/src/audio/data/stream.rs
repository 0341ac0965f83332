//! Clips streamed from disk (`data.stream = true`): memory holds the file index (path, byte
//! size, labels), never the log-mel images; each clip is read, resampled and turned into its
//! log-mel image when the loader asks for it, by the same [`read_clip`] the in-memory reader
//! uses, so a streamed run sees the numbers an in-memory run would.
//!
//! What the loader needs from a set, as for streamed image folders (docs/data.md): band
//! statistics from a fixed-seed sample of clips (all of them in a small set), identity for
//! `--resume` from the index, and a rule for a clip that turns out unreadable mid-run
//! (`data.on_error`: take the next readable one and count it, or stop naming it).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rayon::prelude::*;

use super::{
    AudioDataConfig, ClipOutcome, ClipSet, LabelColumn, band_stats, fingerprint_json, label_column,
    list_clips, load_folder, load_splits, read_label_table, read_samples, task_named,
};
use crate::audio::data::logmel::LogMel;
use crate::core::file_index::FileIndex;
use crate::core::loader::{OnError, next_usable, stop_hint};
use crate::vision::data::source::stats_sample;

/// A folder of clips read from disk clip by clip.
pub struct StreamedClips {
    config: AudioDataConfig,
    logmel: LogMel,
    index: FileIndex,
    /// `class` (the subfolder) first, then the columns of `labels.tsv`.
    pub tasks: Vec<LabelColumn>,
    pub n_mels: usize,
    pub frames: usize,
}

impl StreamedClips {
    /// The training split of `root` (`root/train` when there is one, else `root`), its first
    /// `data.train_limit` clips when that is set.
    pub fn open_train(root: &Path, config: &AudioDataConfig) -> Result<StreamedClips> {
        StreamedClips::open(&FileIndex::train_dir(root), config, config.train_limit)
    }

    /// Every audio file of `dir`'s class subfolders (the first `limit`; all when 0), listed
    /// and labelled without reading a sample.
    pub fn open(dir: &Path, config: &AudioDataConfig, limit: usize) -> Result<StreamedClips> {
        config.validate()?;
        let mut listed = list_clips(dir)?;
        if limit > 0 {
            listed.truncate(limit);
        }
        if listed.is_empty() {
            bail!(
                "{}: no audio files (.wav, .flac, .ogg, .mp3) in it or its class subfolders",
                dir.display()
            );
        }
        let mut tasks = vec![label_column(
            "class",
            listed.iter().map(|(_, c)| c.clone()).collect(),
        )];
        tasks.extend(read_label_table(dir, &listed)?);
        Ok(StreamedClips {
            config: config.clone(),
            logmel: LogMel::new(&config.mel)?,
            index: FileIndex::new(dir, listed.into_iter().map(|(p, _)| p).collect())?,
            tasks,
            n_mels: config.mel.n_mels,
            frames: config.frames(),
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The clips at `indices`, in that order (still read from disk).
    pub fn select(&self, indices: &[usize]) -> StreamedClips {
        StreamedClips {
            config: self.config.clone(),
            logmel: self.logmel.clone(),
            index: self.index.select(indices),
            tasks: self.tasks.iter().map(|t| t.select(indices)).collect(),
            n_mels: self.n_mels,
            frames: self.frames,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Clip `i`'s samples, cut or padded to the clip length (its log-mel image is computed
    /// from them a crop at a time), or why it cannot be used, naming the file.
    pub fn samples(&self, i: usize) -> Result<Vec<f32>> {
        match read_samples(self.index.unchanged(i)?, &self.config) {
            ClipOutcome::Clip(samples, _) => Ok(samples),
            ClipOutcome::Skip(_, why) => Err(anyhow!(why)),
        }
    }

    /// Band statistics over the [`stats_sample`] of the clips (all of them up to 1,024), read
    /// in parallel; clips that cannot be used are left out under [`OnError::Skip`] and listed.
    pub fn band_stats(&self, on_error: OnError) -> Result<(BandStats, Vec<String>)> {
        let read: Vec<Result<Vec<f32>>> = stats_sample(self.len())
            .into_par_iter()
            .map(|i| Ok(self.logmel.compute(&self.samples(i)?)))
            .collect();
        let mut clips = Vec::with_capacity(read.len());
        let mut skipped = Vec::new();
        for r in read {
            match r {
                Ok(clip) => clips.push(clip),
                Err(e) if on_error == OnError::Skip => skipped.push(format!("{e:#}")),
                Err(e) => return Err(e.context(stop_hint("clip"))),
            }
        }
        if clips.is_empty() {
            bail!(
                "none of the {} clips sampled for the band statistics could be used ({})",
                skipped.len(),
                skipped.first().map_or("", String::as_str)
            );
        }
        let stats = band_stats(clips.iter().map(Vec::as_slice), self.n_mels, self.frames);
        Ok((stats, skipped))
    }

    /// The index's size and an xxh3 hash of its relative paths, byte sizes and labels: what
    /// `--resume` checks, without reading a sample.
    pub fn fingerprint(&self) -> serde_json::Value {
        let h = self.index.hash();
        fingerprint_json(h, "index_xxh3", &self.tasks, [self.n_mels, self.frames])
    }
}

/// Each mel band's mean and standard deviation.
pub type BandStats = (Vec<f32>, Vec<f32>);

/// Where pretraining reads its clips: decoded into memory, or streamed from disk.
#[derive(Clone)]
pub enum ClipStore {
    Memory(Arc<ClipSet>),
    Disk(Arc<StreamedClips>),
}

impl ClipStore {
    pub fn len(&self) -> usize {
        match self {
            ClipStore::Memory(set) => set.len(),
            ClipStore::Disk(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn n_mels(&self) -> usize {
        match self {
            ClipStore::Memory(set) => set.n_mels,
            ClipStore::Disk(set) => set.n_mels,
        }
    }

    pub fn frames(&self) -> usize {
        match self {
            ClipStore::Memory(set) => set.frames,
            ClipStore::Disk(set) => set.frames,
        }
    }

    pub fn tasks(&self) -> &[LabelColumn] {
        match self {
            ClipStore::Memory(set) => &set.tasks,
            ClipStore::Disk(set) => &set.tasks,
        }
    }

    /// The label column `name`, or an error listing those there are.
    pub fn task(&self, name: &str) -> Result<&LabelColumn> {
        task_named(self.tasks(), name)
    }

    /// The clips at `indices`, in that order, where they were.
    pub fn select(&self, indices: &[usize]) -> ClipStore {
        match self {
            ClipStore::Memory(set) => ClipStore::Memory(Arc::new(set.select(indices))),
            ClipStore::Disk(set) => ClipStore::Disk(Arc::new(set.select(indices))),
        }
    }

    /// Clip `i`'s whole log-mel image `[n_mels][frames]`: borrowed from memory, or computed
    /// from its samples.
    pub fn image(&self, i: usize) -> Result<Cow<'_, [f32]>> {
        Ok(match self.clip(i)? {
            ClipData::Image(image) => Cow::Borrowed(image),
            ClipData::Samples(samples, logmel) => Cow::Owned(logmel.compute(&samples)),
        })
    }

    /// Clip `i`: its log-mel image borrowed from memory, or its samples read from disk.
    pub fn clip(&self, i: usize) -> Result<ClipData<'_>> {
        match self {
            ClipStore::Memory(set) => Ok(ClipData::Image(set.clip(i))),
            ClipStore::Disk(set) => Ok(ClipData::Samples(set.samples(i)?, &set.logmel)),
        }
    }

    /// Clip `index`, or under [`OnError::Skip`] the next one that can be used (its reason
    /// listed for each clip passed over); under [`OnError::Stop`] the first failure, named.
    pub fn readable_clip(
        &self,
        index: usize,
        on_error: OnError,
    ) -> Result<(ClipData<'_>, Vec<String>)> {
        next_usable(self.len(), index, on_error, "clip", |i| self.clip(i))
    }

    /// Band statistics: over every clip in memory, over a sample of a streamed set (the
    /// clips passed over listed).
    pub fn band_stats(&self, on_error: OnError) -> Result<(BandStats, Vec<String>)> {
        match self {
            ClipStore::Memory(set) => Ok((set.band_stats(), Vec::new())),
            ClipStore::Disk(set) => set.band_stats(on_error),
        }
    }

    /// What `--resume` checks: the values' hash in memory, the index's when streamed.
    pub fn fingerprint(&self) -> serde_json::Value {
        match self {
            ClipStore::Memory(set) => set.fingerprint(),
            ClipStore::Disk(set) => set.fingerprint(),
        }
    }
}

/// One clip as the views read it.
pub enum ClipData<'a> {
    /// Its whole log-mel image `[n_mels][frames]`, in memory.
    Image(&'a [f32]),
    /// Its samples, read from disk, and the front end that turns the frames a crop shows into
    /// the same values the whole image would hold.
    Samples(Vec<f32>, &'a LogMel),
}

/// The train split of `data` and the test clips (`test_dir`, else `data/test`) as `config`
/// reads them: streamed from disk when `data.stream` is set, else decoded into memory (what
/// reading met printed).
pub fn read_splits(
    data: &Path,
    test_dir: Option<&Path>,
    config: &AudioDataConfig,
) -> Result<(ClipStore, ClipStore)> {
    if config.stream {
        let train = StreamedClips::open_train(data, config)?;
        let test_dir = match test_dir {
            Some(dir) => dir.to_path_buf(),
            None => {
                let dir = data.join("test");
                if !dir.is_dir() {
                    bail!("{}: no test/ split (or give --test DIR)", data.display());
                }
                dir
            }
        };
        let test = StreamedClips::open(&test_dir, config, config.test_limit)?;
        eprintln!(
            "train: {} clips, test: {} clips, streamed from disk",
            train.len(),
            test.len()
        );
        return Ok((
            ClipStore::Disk(Arc::new(train)),
            ClipStore::Disk(Arc::new(test)),
        ));
    }
    let (train, test, train_report, test_report) = load_splits(data, config)?;
    eprintln!("{}", train_report.summary("train"));
    let (test, test_report) = match test_dir {
        Some(dir) => load_folder(dir, config)?,
        None => (
            test.with_context(|| {
                format!("{}: no test/ split (or give --test DIR)", data.display())
            })?,
            test_report,
        ),
    };
    eprintln!("{}", test_report.summary("test"));
    Ok((
        ClipStore::Memory(Arc::new(train)),
        ClipStore::Memory(Arc::new(test)),
    ))
}
