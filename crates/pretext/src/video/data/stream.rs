//! Video files streamed from disk (`data.stream = true`): memory holds the file index (path,
//! byte size, class), never the frames; each video is decoded when the loader needs it, by the
//! same ffmpeg call the in-memory reader makes, so a streamed run sees the frames an
//! in-memory run would.
//!
//! What the loader needs from a set, as for streamed image folders and audio clips
//! (docs/data.md): identity for `--resume` from the index, and a rule for a video that turns
//! out unusable mid-run (`data.on_error`: take the next usable one and count it, or stop naming
//! it). A video's length is only known once it is decoded, so a video shorter than a clip is
//! met there too, where the in-memory reader leaves it out before training.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::{
    LabelSets, VideoDataConfig, VideoSet, class_column, idx_videos, list_videos, load_splits,
    task_named,
};
use crate::core::file_index::FileIndex;
use crate::core::loader::{OnError, next_usable};
use crate::video::data::ffmpeg::{DecodeSpec, check_ffmpeg, decode, decode_many};

/// A folder of video files read from disk video by video.
pub struct StreamedVideos {
    spec: DecodeSpec,
    index: FileIndex,
    /// `class` (the subfolders), when every video is in one.
    pub tasks: Vec<LabelSets>,
}

impl StreamedVideos {
    /// The training split of `root` (`root/train` when there is one, else `root`), its first
    /// `data.train_limit` videos when that is set.
    pub fn open_train(root: &Path, config: &VideoDataConfig) -> Result<StreamedVideos> {
        if idx_videos(root, "train").is_some() {
            bail!(
                "{}: data.stream reads folders of video files; IDX videos (pretext data \
                 moving-mnist) are read into memory (leave data.stream = false)",
                root.display()
            );
        }
        StreamedVideos::open(&FileIndex::train_dir(root), config, config.train_limit)
    }

    /// Every video file of `dir` and its class subfolders (the first `limit`; all when 0),
    /// listed and labelled without decoding a frame.
    pub fn open(dir: &Path, config: &VideoDataConfig, limit: usize) -> Result<StreamedVideos> {
        config.validate()?;
        let mut listed = list_videos(dir)?;
        if limit > 0 {
            listed.truncate(limit);
        }
        check_ffmpeg()?;
        let classes: Vec<Option<String>> = listed.iter().map(|(_, c)| c.clone()).collect();
        Ok(StreamedVideos {
            spec: config.decode_spec(),
            index: FileIndex::new(dir, listed.into_iter().map(|(p, _)| p).collect())?,
            tasks: class_column(&classes).into_iter().collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Video `i` decoded, as a set of one video, when it has at least `frames` frames; or why
    /// it cannot be used, naming the file.
    pub fn video(&self, i: usize, frames: usize) -> Result<VideoSet> {
        let path = self.index.unchanged(i)?;
        self.one_video(i, decode(path, &self.spec)?, frames)
    }

    /// [`Self::video`] of each of `indices`, decoded by one ffmpeg process.
    pub fn videos(&self, indices: &[usize], frames: usize) -> Vec<Result<VideoSet>> {
        let checked: Vec<Result<&Path>> =
            indices.iter().map(|&i| self.index.unchanged(i)).collect();
        let paths: Vec<&Path> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().copied())
            .collect();
        let mut decoded = decode_many(&paths, &self.spec).into_iter();
        indices
            .iter()
            .zip(checked)
            .map(|(&i, check)| {
                check?;
                let video = decoded
                    .next()
                    .context("a video missing from the decoder")??;
                self.one_video(i, video, frames)
            })
            .collect()
    }

    /// Video `i`'s decoded frames as a set of one video, when there are at least `frames`.
    fn one_video(
        &self,
        i: usize,
        (pixels, n): (Vec<u8>, usize),
        frames: usize,
    ) -> Result<VideoSet> {
        let path = self.index.path(i);
        if n < frames {
            bail!(
                "{}: {n} frames, fewer than a clip's {frames}",
                path.display()
            );
        }
        Ok(VideoSet {
            channels: self.spec.channels,
            height: self.spec.size,
            width: self.spec.size,
            pixels,
            starts: vec![0, n],
            tasks: Vec::new(),
            source: path.display().to_string(),
        })
    }

    /// The index's size and an xxh3 hash of its relative paths, byte sizes and classes: what
    /// `--resume` checks, without decoding a frame.
    pub fn fingerprint(&self) -> serde_json::Value {
        let mut h = self.index.hash();
        for task in &self.tasks {
            for values in &task.values {
                h.update(
                    &values
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect::<Vec<_>>(),
                );
            }
        }
        serde_json::json!({
            "source": self.index.dir().display().to_string(),
            "videos": self.len(),
            "frame": [self.spec.channels, self.spec.size, self.spec.size],
            "index_xxh3": format!("{:016x}", h.digest()),
        })
    }
}

/// Where pretraining reads its videos: decoded into memory, or streamed from disk.
#[derive(Clone)]
pub enum VideoStore {
    Memory(Arc<VideoSet>),
    Disk(Arc<StreamedVideos>),
}

/// One video as the views read it: frame `t` of video `index` of `set`.
pub enum VideoRef<'a> {
    /// A video of a set in memory.
    Shared(&'a VideoSet, usize),
    /// A video just decoded from disk, alone in its set.
    Decoded(VideoSet),
}

impl VideoRef<'_> {
    /// The set the video is in, and its index there.
    pub fn parts(&self) -> (&VideoSet, usize) {
        match self {
            VideoRef::Shared(set, index) => (set, *index),
            VideoRef::Decoded(set) => (set, 0),
        }
    }
}

impl VideoStore {
    pub fn len(&self) -> usize {
        match self {
            VideoStore::Memory(set) => set.len(),
            VideoStore::Disk(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Channels, height and width of every frame.
    pub fn frame(&self) -> (usize, usize, usize) {
        match self {
            VideoStore::Memory(set) => (set.channels, set.height, set.width),
            VideoStore::Disk(set) => (set.spec.channels, set.spec.size, set.spec.size),
        }
    }

    pub fn tasks(&self) -> &[LabelSets] {
        match self {
            VideoStore::Memory(set) => &set.tasks,
            VideoStore::Disk(set) => &set.tasks,
        }
    }

    /// Where the videos come from: the file or folder.
    pub fn source(&self) -> String {
        match self {
            VideoStore::Memory(set) => set.source.clone(),
            VideoStore::Disk(set) => set.index.dir().display().to_string(),
        }
    }

    /// The label column `name`, or an error listing those there are.
    pub fn task(&self, name: &str) -> Result<&LabelSets> {
        task_named(self.tasks(), name, &self.source())
    }

    /// What `--resume` checks: the pixels' hash in memory, the index's when streamed.
    pub fn fingerprint(&self) -> serde_json::Value {
        match self {
            VideoStore::Memory(set) => set.fingerprint(),
            VideoStore::Disk(set) => set.fingerprint(),
        }
    }

    /// The videos at `indices` (each at least `frames` long); in place of one that cannot be
    /// used, under [`OnError::Skip`] the next one that can (the reason listed for each video
    /// passed over), under [`OnError::Stop`] the first failure, named. Videos in memory were
    /// checked when they were read; streamed ones are decoded a share of the batch per
    /// thread, one ffmpeg process each.
    pub fn readable_videos(
        &self,
        indices: &[usize],
        frames: usize,
        on_error: OnError,
    ) -> Result<Vec<(VideoRef<'_>, Vec<String>)>> {
        let set = match self {
            VideoStore::Memory(set) => {
                return Ok(indices
                    .iter()
                    .map(|&i| (VideoRef::Shared(set, i), Vec::new()))
                    .collect());
            }
            VideoStore::Disk(set) => set,
        };
        let share = indices.len().div_ceil(rayon::current_num_threads()).max(1);
        let decoded: Vec<Result<VideoSet>> = indices
            .par_chunks(share)
            .map(|chunk| set.videos(chunk, frames))
            .collect::<Vec<_>>()
            .into_iter()
            .flatten()
            .collect();
        indices
            .iter()
            .zip(decoded)
            .map(|(&index, video)| {
                let (video, skipped) = match video {
                    Ok(video) => (video, Vec::new()),
                    Err(_) => next_usable(set.len(), index, on_error, "video", |i| {
                        set.video(i, frames)
                    })?,
                };
                Ok((VideoRef::Decoded(video), skipped))
            })
            .collect()
    }
}

/// Both splits of `data` as evaluation reads them (`config` is usually
/// [`VideoDataConfig::first_frames_only`]): decoded into memory, or with `config.stream` only
/// listed, each video decoded when its batch is read (so memory holds features, never a
/// split's frames). With each split, a line saying what was read.
pub fn open_splits(
    data: &Path,
    config: &VideoDataConfig,
) -> Result<(VideoStore, Option<VideoStore>, [String; 2])> {
    let what = |split: &str| format!("{} ({split})", data.display());
    if config.stream {
        let train = StreamedVideos::open_train(data, config)?;
        let test_dir = data.join("test");
        let test = test_dir
            .is_dir()
            .then(|| StreamedVideos::open(&test_dir, config, config.test_limit))
            .transpose()?;
        let listed = |split: &str, n: usize| {
            format!("{}: {n} videos listed, streamed from disk", what(split))
        };
        let lines = [
            listed("train", train.len()),
            listed("test", test.as_ref().map_or(0, StreamedVideos::len)),
        ];
        let disk = |set| VideoStore::Disk(Arc::new(set));
        return Ok((disk(train), test.map(disk), lines));
    }
    let (train, test, train_report, test_report) = load_splits(data, config)?;
    let lines = [
        train_report.summary(&what("train")),
        test_report.summary(&what("test")),
    ];
    let memory = |set| VideoStore::Memory(Arc::new(set));
    Ok((memory(train), test.map(memory), lines))
}
