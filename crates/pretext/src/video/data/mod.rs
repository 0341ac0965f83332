//! Video data: sequences of frames with their label columns. Two sources: the IDX videos
//! `pretext data moving-mnist` writes (with `{split}-labels.tsv`), and folders of video files
//! (class subfolders, optionally under `train/` and `test/`) decoded by `ffmpeg`.

pub mod ffmpeg;
pub mod moving;
pub mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::vision::data::OnError;
use crate::vision::data::idx::read_idx;
use ffmpeg::{DecodeSpec, check_ffmpeg, decode_many, is_video};

/// Files decoded by one ffmpeg process when a folder is read into memory.
const DECODE_TOGETHER: usize = 16;

/// `[data]` of a video config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoDataConfig {
    /// Consecutive stored frames per training clip.
    pub clip_frames: usize,
    /// Video files: keep every `frame_stride`-th decoded frame.
    pub frame_stride: usize,
    /// Video files: frames scaled to `size x size`.
    pub size: usize,
    /// Video files: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Video files: read at most this many frames (after the stride).
    pub max_frames: usize,
    /// Use only the first N training (test) videos (0: all).
    pub train_limit: usize,
    pub test_limit: usize,
    /// Pretraining decodes each video file when the loader needs it instead of decoding the
    /// whole training folder into memory first ([`stream`]).
    pub stream: bool,
    /// A streamed video that cannot be used mid-run (undecodable, too short, changed since the
    /// folder was listed): `"skip"` it (the next usable one takes its place, counted and
    /// named) or `"stop"` the run naming it.
    pub on_error: OnError,
}

impl Default for VideoDataConfig {
    fn default() -> Self {
        VideoDataConfig {
            clip_frames: 10,
            frame_stride: 1,
            size: 64,
            channels: 1,
            max_frames: 64,
            train_limit: 0,
            test_limit: 0,
            stream: false,
            on_error: OnError::Skip,
        }
    }
}

impl VideoDataConfig {
    pub fn validate(&self) -> Result<()> {
        if self.clip_frames == 0 || self.frame_stride == 0 || self.size == 0 {
            bail!("data.clip_frames, data.frame_stride and data.size must be positive");
        }
        if self.channels != 1 && self.channels != 3 {
            bail!("data.channels = {}: expected 1 or 3", self.channels);
        }
        if self.max_frames < self.clip_frames {
            bail!(
                "data.max_frames = {} is below data.clip_frames = {}",
                self.max_frames,
                self.clip_frames
            );
        }
        Ok(())
    }

    /// How evaluation reads: every video of both splits, and only each one's first `frames`
    /// frames (all that features and forecasts look at), so memory holds no more of a long
    /// video than that.
    pub fn first_frames_only(&self, frames: usize) -> VideoDataConfig {
        VideoDataConfig {
            clip_frames: frames,
            max_frames: frames,
            train_limit: 0,
            test_limit: 0,
            ..self.clone()
        }
    }

    fn decode_spec(&self) -> DecodeSpec {
        DecodeSpec {
            stride: self.frame_stride,
            size: self.size,
            channels: self.channels,
            max_frames: self.max_frames,
        }
    }
}

/// One label column; a video may hold several values (the classes present), a single-label
/// column holds exactly one per video.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSets {
    pub name: String,
    pub classes: Vec<String>,
    pub values: Vec<Vec<u32>>,
}

impl LabelSets {
    /// The labels, when every video has exactly one.
    pub fn single(&self) -> Option<Vec<u32>> {
        self.values
            .iter()
            .map(|v| (v.len() == 1).then(|| v[0]))
            .collect()
    }

    fn select(&self, rows: &[usize]) -> LabelSets {
        LabelSets {
            values: rows.iter().map(|&r| self.values[r].clone()).collect(),
            ..self.clone()
        }
    }
}

/// Videos of equal frame size, each `[frames][channels][height][width]` bytes.
#[derive(Debug, Clone)]
pub struct VideoSet {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pixels: Vec<u8>,
    /// Index of each video's first frame; one more entry than videos.
    starts: Vec<usize>,
    pub tasks: Vec<LabelSets>,
    /// Where the videos came from (for errors and the run's data fingerprint).
    pub source: String,
}

/// What reading met besides good videos.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadReport {
    pub videos: usize,
    pub unreadable: usize,
    pub too_short: usize,
    /// The first few skipped files and why.
    pub examples: Vec<String>,
}

impl ReadReport {
    pub fn summary(&self, what: &str) -> String {
        let mut s = format!("{what}: {} videos", self.videos);
        if self.unreadable + self.too_short > 0 {
            s += &format!(
                "; skipped {} unreadable, {} shorter than a clip (e.g. {})",
                self.unreadable,
                self.too_short,
                self.examples.join("; ")
            );
        }
        s
    }

    fn skip(&mut self, why: String) {
        if self.examples.len() < 3 {
            self.examples.push(why);
        }
    }
}

impl VideoSet {
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn frame_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn frames_of(&self, video: usize) -> usize {
        self.starts[video + 1] - self.starts[video]
    }

    /// Frame `t` of `video`: `[channels][height][width]`.
    pub fn frame(&self, video: usize, t: usize) -> &[u8] {
        let n = self.frame_len();
        let at = (self.starts[video] + t) * n;
        &self.pixels[at..at + n]
    }

    /// The shortest video's frame count.
    pub fn min_frames(&self) -> usize {
        (0..self.len())
            .map(|v| self.frames_of(v))
            .min()
            .unwrap_or(0)
    }

    /// The label column `name`, or an error listing those there are.
    pub fn task(&self, name: &str) -> Result<&LabelSets> {
        task_named(&self.tasks, name, &self.source)
    }

    /// The videos `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> VideoSet {
        let n = self.frame_len();
        let frames: usize = rows
            .iter()
            .map(|&r| self.starts[r + 1] - self.starts[r])
            .sum();
        let mut pixels = Vec::with_capacity(frames * n);
        let mut starts = Vec::with_capacity(rows.len() + 1);
        starts.push(0);
        for &r in rows {
            let (a, b) = (self.starts[r], self.starts[r + 1]);
            pixels.extend_from_slice(&self.pixels[a * n..b * n]);
            starts.push(starts.last().copied().unwrap_or(0) + b - a);
        }
        VideoSet {
            pixels,
            starts,
            tasks: self.tasks.iter().map(|t| t.select(rows)).collect(),
            source: self.source.clone(),
            ..*self
        }
    }

    /// The first `limit` videos (0: all).
    fn limited(self, limit: usize) -> VideoSet {
        if limit == 0 || limit >= self.len() {
            return self;
        }
        self.select(&(0..limit).collect::<Vec<_>>())
    }

    /// Identifies the training data in a checkpoint, so a resume on other data is refused.
    pub fn fingerprint(&self) -> serde_json::Value {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for &b in self.pixels.iter().step_by(4093) {
            hash = (hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        serde_json::json!({
            "source": self.source,
            "videos": self.len(),
            "frames": self.starts.last(),
            "frame": [self.channels, self.height, self.width],
            "sample_hash": format!("{hash:016x}"),
        })
    }
}

/// The label column `name` of `tasks` (the columns of the videos of `source`), or an error
/// listing those there are.
pub fn task_named<'a>(tasks: &'a [LabelSets], name: &str, source: &str) -> Result<&'a LabelSets> {
    tasks.iter().find(|t| t.name == name).with_context(|| {
        format!(
            "{source}: no label column '{name}' (there are: {})",
            tasks
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// `dir`'s IDX videos of `split` (`pretext data moving-mnist`), if it holds them.
fn idx_videos(dir: &Path, split: &str) -> Option<PathBuf> {
    ["", ".gz"]
        .iter()
        .map(|ext| dir.join(format!("{split}-videos-idx4-ubyte{ext}")))
        .find(|p| p.exists())
}

/// Read the training split (and the test split where there is one) of `dir`, as `config` says.
pub fn load_splits(
    dir: &Path,
    config: &VideoDataConfig,
) -> Result<(VideoSet, Option<VideoSet>, ReadReport, ReadReport)> {
    let idx = |split: &str| idx_videos(dir, split);
    let (train, test) = if let Some(train) = idx("train") {
        (
            read_idx_videos(&train, dir, "train")?,
            idx("test")
                .map(|p| read_idx_videos(&p, dir, "test"))
                .transpose()?,
        )
    } else if dir.join("train").is_dir() {
        let test = dir.join("test");
        (
            read_folder(&dir.join("train"), config)?,
            test.is_dir()
                .then(|| read_folder(&test, config))
                .transpose()?,
        )
    } else {
        (read_folder(dir, config)?, None)
    };
    let check = |(set, mut report): (VideoSet, ReadReport), limit: usize| {
        let set = set.limited(limit);
        let keep: Vec<usize> = (0..set.len())
            .filter(|&v| set.frames_of(v) >= config.clip_frames)
            .collect();
        report.too_short += set.len() - keep.len();
        if keep.len() < set.len() {
            report.skip(format!(
                "{} videos have fewer than data.clip_frames = {} frames",
                set.len() - keep.len(),
                config.clip_frames
            ));
        }
        // Every video long enough (the usual case) keeps the set as it is, without a copy.
        let set = if keep.len() == set.len() {
            set
        } else {
            set.select(&keep)
        };
        report.videos = set.len();
        if set.is_empty() {
            bail!(
                "{}: no video with at least data.clip_frames = {} frames ({})",
                set.source,
                config.clip_frames,
                report.summary("read")
            );
        }
        Ok((set, report))
    };
    let (train, train_report) = check(train, config.train_limit)?;
    let (test, test_report) = match test {
        Some(t) => {
            let (set, report) = check(t, config.test_limit)?;
            (Some(set), report)
        }
        None => (None, ReadReport::default()),
    };
    Ok((train, test, train_report, test_report))
}

/// `{split}-videos-idx4-ubyte[.gz]` `[n, frames, height, width]` and `{split}-labels.tsv`.
fn read_idx_videos(path: &Path, dir: &Path, split: &str) -> Result<(VideoSet, ReadReport)> {
    let array = read_idx(path)?;
    let [n, frames, height, width] = array.dims[..] else {
        bail!(
            "{}: dimensions {:?}, expected [videos, frames, height, width]",
            path.display(),
            array.dims
        );
    };
    if n == 0 || frames == 0 || height == 0 || width == 0 {
        bail!("{}: empty video array {:?}", path.display(), array.dims);
    }
    let labels = dir.join(format!("{split}-labels.tsv"));
    let tasks = if labels.exists() {
        read_label_tsv(&labels, n)?
    } else {
        Vec::new()
    };
    let set = VideoSet {
        channels: 1,
        height,
        width,
        pixels: array.data,
        starts: (0..=n).map(|v| v * frames).collect(),
        tasks,
        source: path.display().to_string(),
    };
    Ok((
        set,
        ReadReport {
            videos: n,
            ..ReadReport::default()
        },
    ))
}

/// A labels TSV: a header naming the columns (`index` first), one row per video in order;
/// a cell lists one value or several separated by commas.
fn read_label_tsv(path: &Path, n: usize) -> Result<Vec<LabelSets>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("{}: empty", path.display()))?
        .split('\t')
        .collect();
    if header.first() != Some(&"index") {
        bail!("{}:1: the header must start with 'index'", path.display());
    }
    let names = &header[1..];
    let mut cells: Vec<Vec<Vec<String>>> = vec![Vec::new(); names.len()];
    for (i, line) in lines.enumerate() {
        let row: Vec<&str> = line.split('\t').collect();
        if row.len() != header.len() || row[0] != i.to_string() {
            bail!(
                "{}:{}: expected index {i} and {} columns",
                path.display(),
                i + 2,
                header.len()
            );
        }
        for (c, cell) in row[1..].iter().enumerate() {
            cells[c].push(cell.split(',').map(str::to_string).collect());
        }
    }
    if cells.first().is_some_and(|c| c.len() != n) {
        bail!("{}: {} rows for {n} videos", path.display(), cells[0].len());
    }
    Ok(names
        .iter()
        .zip(cells)
        .map(|(name, column)| {
            let mut classes: Vec<String> = column.iter().flatten().cloned().collect();
            classes.sort();
            classes.dedup();
            let values = column
                .iter()
                .map(|vs| {
                    let mut ids: Vec<u32> = vs
                        .iter()
                        .filter_map(|v| classes.iter().position(|c| c == v))
                        .map(|i| i as u32)
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    ids
                })
                .collect();
            LabelSets {
                name: name.to_string(),
                classes,
                values,
            }
        })
        .collect())
}

/// The video files of `dir` with their class: in class subfolders, or directly in it (no class).
fn list_videos(dir: &Path) -> Result<Vec<(PathBuf, Option<String>)>> {
    let mut files: Vec<(PathBuf, Option<String>)> = Vec::new();
    for path in &sorted(dir)? {
        if path.is_dir() {
            let class = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for f in sorted(path)?.into_iter().filter(|p| is_video(p)) {
                files.push((f, Some(class.clone())));
            }
        } else if is_video(path) {
            files.push((path.clone(), None));
        }
    }
    if files.is_empty() {
        bail!(
            "{}: no video files (.mp4, .avi, .webm, .mkv, .mov, ...) in it or its subfolders",
            dir.display()
        );
    }
    Ok(files)
}

/// The `class` column of videos from class subfolders (none when some video has no class).
fn class_column(class_of: &[Option<String>]) -> Option<LabelSets> {
    if class_of.is_empty() || class_of.iter().any(Option::is_none) {
        return None;
    }
    let names: BTreeMap<&str, u32> = class_of
        .iter()
        .flatten()
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, i as u32))
        .collect();
    Some(LabelSets {
        name: "class".into(),
        classes: names.keys().map(|c| c.to_string()).collect(),
        values: class_of
            .iter()
            .flatten()
            .map(|c| vec![names[c.as_str()]])
            .collect(),
    })
}

/// Video files under `dir`: in class subfolders (the `class` column), or directly in it.
fn read_folder(dir: &Path, config: &VideoDataConfig) -> Result<(VideoSet, ReadReport)> {
    let files = list_videos(dir)?;
    check_ffmpeg()?;
    let spec = config.decode_spec();
    // A few files per ffmpeg process: its start-up costs more than decoding a short clip.
    let decoded: Vec<Result<(Vec<u8>, usize)>> = files
        .par_chunks(DECODE_TOGETHER)
        .map(|chunk| {
            let paths: Vec<&Path> = chunk.iter().map(|(f, _)| f.as_path()).collect();
            decode_many(&paths, &spec)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect();
    let mut report = ReadReport::default();
    let mut pixels = Vec::new();
    let mut starts = vec![0];
    let mut class_of = Vec::new();
    for ((_, class), result) in files.iter().zip(decoded) {
        match result {
            Ok((frames, n)) => {
                pixels.extend(frames);
                starts.push(starts.last().copied().unwrap_or(0) + n);
                class_of.push(class.clone());
            }
            Err(e) => {
                report.unreadable += 1;
                report.skip(format!("{e:#}"));
            }
        }
    }
    let set = VideoSet {
        channels: config.channels,
        height: config.size,
        width: config.size,
        pixels,
        starts,
        tasks: class_column(&class_of).into_iter().collect(),
        source: dir.display().to_string(),
    };
    Ok((set, report))
}

fn sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_cells_may_hold_several_values() {
        let dir = std::env::temp_dir().join(format!("pretext-video-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.tsv");
        std::fs::write(&path, "index\tclasses\tdirection\n0\tb,a\tup\n1\tb\tdown\n").unwrap();
        let tasks = read_label_tsv(&path, 2).unwrap();
        assert_eq!(tasks[0].classes, vec!["a", "b"]);
        assert_eq!(tasks[0].values, vec![vec![0, 1], vec![1]]);
        assert_eq!(tasks[0].single(), None);
        assert_eq!(tasks[1].single(), Some(vec![1, 0]));
        std::fs::write(&path, "index\tclasses\n0\ta\n2\tb\n").unwrap();
        let err = read_label_tsv(&path, 2).unwrap_err().to_string();
        assert!(err.contains("l.tsv:3"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
