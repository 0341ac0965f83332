//! Video files decoded by Debian's `ffmpeg` program in a subprocess that streams raw frames on
//! its standard output: every container and codec ffmpeg knows, with no libav linked into
//! pretext (its C API changes between releases, and a crash in a decoder stays in the child).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

/// How to turn a file into frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeSpec {
    /// Keep every `stride`-th frame.
    pub stride: usize,
    /// Frames are scaled to `size x size`.
    pub size: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Stop after this many kept frames.
    pub max_frames: usize,
}

/// Whether `ffmpeg` runs, or the error that says how to install it.
pub fn check_ffmpeg() -> Result<()> {
    match Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => bail!(
            "reading video files needs the ffmpeg program, which was not found on PATH \
             (Debian/Ubuntu: sudo apt-get install ffmpeg)"
        ),
    }
}

/// Whether `path` names a video file ffmpeg is asked to read.
pub fn is_video(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    matches!(
        ext.as_deref(),
        Some("mp4" | "avi" | "webm" | "mkv" | "mov" | "mpg" | "mpeg" | "ogv" | "m4v" | "gif")
    )
}

impl DecodeSpec {
    /// The output options that turn a video stream into this spec's raw frames.
    fn output_args(&self) -> Vec<String> {
        let pix = if self.channels == 3 { "rgb24" } else { "gray" };
        let filter = format!(
            "select=not(mod(n\\,{})),scale={s}:{s}:flags=area",
            self.stride.max(1),
            s = self.size
        );
        [
            "-vf",
            &filter,
            "-fps_mode",
            "passthrough",
            "-an",
            "-pix_fmt",
            pix,
            "-frames:v",
            &self.max_frames.to_string(),
            "-f",
            "rawvideo",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Whole frames of `raw` (ffmpeg's interleaved bytes) as `[n][channels][size][size]`, and
    /// their count; none is an error naming `path`.
    fn frames(&self, mut raw: Vec<u8>, path: &Path) -> Result<(Vec<u8>, usize)> {
        let frame = self.channels * self.size * self.size;
        let n = raw.len() / frame;
        if n == 0 {
            bail!("{}: no video frames", path.display());
        }
        raw.truncate(n * frame);
        if self.channels == 3 {
            raw = interleaved_to_planar(&raw, self.size * self.size);
        }
        Ok((raw, n))
    }
}

fn ffmpeg_missing(path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot run ffmpeg for {} ({e}): sudo apt-get install ffmpeg",
        path.display()
    )
}

/// Decode `path`: frames `[n][channels][size][size]` as bytes, and their count. A file ffmpeg
/// cannot read, or that yields no frame, is an error naming it and quoting ffmpeg.
pub fn decode(path: &Path, spec: &DecodeSpec) -> Result<(Vec<u8>, usize)> {
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(spec.output_args())
        .arg("-")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ffmpeg_missing(path, e))?;
    let mut raw = Vec::new();
    child
        .stdout
        .take()
        .context("ffmpeg has no output pipe")?
        .read_to_end(&mut raw)
        .with_context(|| format!("{}: reading ffmpeg's output", path.display()))?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait()?;
    let frame = spec.channels * spec.size * spec.size;
    if !status.success() && raw.len() < frame {
        let first_line = err.lines().next().unwrap_or("").trim();
        bail!("{}: ffmpeg cannot decode it: {first_line}", path.display());
    }
    spec.frames(raw, path)
}

/// Decode `paths` as [`decode`] does each, with one ffmpeg process for all of them: starting
/// ffmpeg (loading its libraries) takes some 60 ms here, more than decoding a short clip, and
/// is paid once. Each input's frames go to their own raw file in a temporary folder. When
/// anything fails, every file is decoded on its own instead, so a bad file is named by its own
/// error and the others are still read.
pub fn decode_many(paths: &[&Path], spec: &DecodeSpec) -> Vec<Result<(Vec<u8>, usize)>> {
    if paths.len() > 1
        && let Ok(all) = decode_together(paths, spec)
    {
        return all.into_iter().map(Ok).collect();
    }
    paths.iter().map(|p| decode(p, spec)).collect()
}

fn decode_together(paths: &[&Path], spec: &DecodeSpec) -> Result<Vec<(Vec<u8>, usize)>> {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pretext-ffmpeg-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    let decoded = (|| {
        let mut command = Command::new("ffmpeg");
        command.args(["-v", "error", "-nostdin", "-y"]);
        for path in paths {
            command.arg("-i").arg(path);
        }
        for k in 0..paths.len() {
            command
                .args(["-map", &format!("{k}:v:0")])
                .args(spec.output_args())
                .arg(dir.join(format!("{k}.raw")));
        }
        let status = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| ffmpeg_missing(paths[0], e))?;
        if !status.success() {
            bail!("ffmpeg failed on one of {} files", paths.len());
        }
        paths
            .iter()
            .enumerate()
            .map(|(k, path)| spec.frames(std::fs::read(dir.join(format!("{k}.raw")))?, path))
            .collect()
    })();
    let _ = std::fs::remove_dir_all(&dir);
    decoded
}

/// RGB frames `[n][pixels][3]` → `[n][3][pixels]`.
fn interleaved_to_planar(raw: &[u8], pixels: usize) -> Vec<u8> {
    let mut out = vec![0u8; raw.len()];
    for (src, dst) in raw.chunks(3 * pixels).zip(out.chunks_mut(3 * pixels)) {
        for (p, rgb) in src.chunks(3).enumerate() {
            for (c, &v) in rgb.iter().enumerate() {
                dst[c * pixels + p] = v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_frames_become_planes() {
        let raw = [1, 2, 3, 4, 5, 6];
        assert_eq!(interleaved_to_planar(&raw, 2), vec![1, 4, 2, 5, 3, 6]);
    }
}
