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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};

use super::{LabelSets, VideoDataConfig, VideoSet, class_column, idx_videos, list_videos};
use crate::core::loader::{OnError, next_usable};
use crate::video::data::ffmpeg::{DecodeSpec, check_ffmpeg, decode};

/// A folder of video files read from disk video by video.
pub struct StreamedVideos {
    dir: PathBuf,
    spec: DecodeSpec,
    files: Vec<PathBuf>,
    /// Each file's byte size when the folder was listed: a file rewritten since is refused.
    sizes: Vec<u64>,
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
        let train = root.join("train");
        let dir = if train.is_dir() { train } else { root.into() };
        StreamedVideos::open(&dir, config, config.train_limit)
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
        let sizes = listed
            .iter()
            .map(|(path, _)| {
                std::fs::metadata(path)
                    .map(|m| m.len())
                    .map_err(|e| anyhow!("{}: {e}", path.display()))
            })
            .collect::<Result<Vec<u64>>>()?;
        let classes: Vec<Option<String>> = listed.iter().map(|(_, c)| c.clone()).collect();
        Ok(StreamedVideos {
            dir: dir.into(),
            spec: config.decode_spec(),
            files: listed.into_iter().map(|(p, _)| p).collect(),
            sizes,
            tasks: class_column(&classes).into_iter().collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Video `i` decoded, as a set of one video, when it has at least `frames` frames; or why
    /// it cannot be used, naming the file.
    pub fn video(&self, i: usize, frames: usize) -> Result<VideoSet> {
        let path = &self.files[i];
        let size = std::fs::metadata(path)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?
            .len();
        if size != self.sizes[i] {
            bail!(
                "{}: {size} bytes, {} when the folder was listed: the file changed during the run",
                path.display(),
                self.sizes[i]
            );
        }
        let (pixels, n) = decode(path, &self.spec)?;
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
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (path, size) in self.files.iter().zip(&self.sizes) {
            let rel = path.strip_prefix(&self.dir).unwrap_or(path);
            h.update(rel.to_string_lossy().as_bytes());
            h.update(&[0]);
            h.update(&size.to_le_bytes());
        }
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
            "source": self.dir.display().to_string(),
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

    /// What `--resume` checks: the pixels' hash in memory, the index's when streamed.
    pub fn fingerprint(&self) -> serde_json::Value {
        match self {
            VideoStore::Memory(set) => set.fingerprint(),
            VideoStore::Disk(set) => set.fingerprint(),
        }
    }

    /// Video `index` (at least `frames` long), or under [`OnError::Skip`] the next one that
    /// can be used (the reason listed for each video passed over); under [`OnError::Stop`]
    /// the first failure, named. Videos in memory were checked when they were read.
    pub fn readable_video(
        &self,
        index: usize,
        frames: usize,
        on_error: OnError,
    ) -> Result<(VideoRef<'_>, Vec<String>)> {
        let set = match self {
            VideoStore::Memory(set) => return Ok((VideoRef::Shared(set, index), Vec::new())),
            VideoStore::Disk(set) => set,
        };
        let (video, skipped) = next_usable(set.len(), index, on_error, "video", |i| {
            set.video(i, frames)
        })?;
        Ok((VideoRef::Decoded(video), skipped))
    }
}
