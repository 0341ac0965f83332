//! Clips from videos, built on the shared background loader: each clip is `clip_frames`
//! consecutive frames from a random start, pixels in [0, 1], with one spatial augmentation
//! (a random resized crop, a horizontal flip) drawn per clip and applied to all its frames
//! alike, so that motion inside the clip stays intact (CVRL's temporally consistent
//! augmentation).

use std::sync::Arc;

use anyhow::{Result, bail};
use burn::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::VideoSet;
use super::data::stream::VideoStore;
use crate::core::loader::{FloatViewBatches, FloatViews, OnError, Schedule, view_rng};

/// How one clip is drawn from a video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipView {
    /// Area share of the random resized crop, drawn in [min, max]; [1, 1] keeps whole frames.
    pub crop_scale: [f64; 2],
    /// Flip every frame of the clip horizontally with probability 1/2.
    pub flip: bool,
}

impl Default for ClipView {
    fn default() -> Self {
        ClipView {
            crop_scale: [1.0, 1.0],
            flip: false,
        }
    }
}

impl ClipView {
    pub fn validate(&self, name: &str) -> Result<()> {
        let [lo, hi] = self.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            bail!("{name}.crop_scale = [{lo}, {hi}]: need 0 < min <= max <= 1");
        }
        Ok(())
    }
}

/// Frames `[t][c][h][w]` in [0, 1].
fn clip_pixels(
    set: &VideoSet,
    video: usize,
    start: usize,
    frames: usize,
    view: &ClipView,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let (c, h, w) = (set.channels, set.height, set.width);
    let [lo, hi] = view.crop_scale;
    let window = if lo < 1.0 {
        let area = rng.random_range(lo..=hi) * (h * w) as f64;
        let ratio = (rng.random_range((3.0f64 / 4.0).ln()..=(4.0f64 / 3.0).ln())).exp();
        let ch = ((area / ratio).sqrt().round() as usize).clamp(1, h);
        let cw = ((area * ratio).sqrt().round() as usize).clamp(1, w);
        (
            rng.random_range(0..=h - ch),
            rng.random_range(0..=w - cw),
            ch,
            cw,
        )
    } else {
        (0, 0, h, w)
    };
    let flip = view.flip && rng.random_bool(0.5);
    let mut out = Vec::with_capacity(frames * c * h * w);
    for t in start..start + frames {
        let frame = set.frame(video, t);
        for plane in frame.chunks(h * w) {
            resize_crop_into(plane, (h, w), window, flip, &mut out);
        }
    }
    out
}

/// Bilinear resize of the window `(top, left, rows, cols)` of a `size` plane back to `size`,
/// mirrored when `flip`, appended to `out` scaled to [0, 1].
fn resize_crop_into(
    plane: &[u8],
    (h, w): (usize, usize),
    (top, left, ch, cw): (usize, usize, usize, usize),
    flip: bool,
    out: &mut Vec<f32>,
) {
    let px = |r: usize, c: usize| plane[r * w + c] as f32 / 255.0;
    if (ch, cw) == (h, w) {
        for r in 0..h {
            for c in 0..w {
                out.push(px(r, if flip { w - 1 - c } else { c }));
            }
        }
        return;
    }
    // Pixel centres map to pixel centres (align_corners = false).
    let at = |i: usize, out_len: usize, in_len: usize| {
        ((i as f32 + 0.5) * in_len as f32 / out_len as f32 - 0.5).clamp(0.0, in_len as f32 - 1.0)
    };
    for r in 0..h {
        let y = at(r, h, ch);
        let (y0, fy) = (y.floor() as usize, y.fract());
        let y1 = (y0 + 1).min(ch - 1);
        for c in 0..w {
            let cc = if flip { w - 1 - c } else { c };
            let x = at(cc, w, cw);
            let (x0, fx) = (x.floor() as usize, x.fract());
            let x1 = (x0 + 1).min(cw - 1);
            let (a, b) = (px(top + y0, left + x0), px(top + y0, left + x1));
            let (d, e) = (px(top + y1, left + x0), px(top + y1, left + x1));
            out.push((a * (1.0 - fx) + b * fx) * (1.0 - fy) + (d * (1.0 - fx) + e * fx) * fy);
        }
    }
}

/// The first `frames` frames of `video`, unaugmented: what evaluation reads.
pub fn first_frames(set: &VideoSet, video: usize, frames: usize) -> Vec<f32> {
    (0..frames)
        .flat_map(|t| set.frame(video, t).iter().map(|&p| p as f32 / 255.0))
        .collect()
}

/// The first `frames` frames of the videos at `rows` of `store` as a batch `[n, frames, c, h,
/// w]`. A video that cannot give them (too short; streamed: undecodable or changed since the
/// folder was listed) stops the batch, named: evaluation scores every video it was given.
pub fn first_frames_batch(
    store: &VideoStore,
    rows: &[usize],
    frames: usize,
    device: &Device,
) -> Result<Tensor<5>> {
    let (c, h, w) = store.frame();
    let found = store.readable_videos(rows, frames, OnError::Stop)?;
    let mut values = Vec::with_capacity(rows.len() * frames * c * h * w);
    for (video, _) in &found {
        let (set, index) = video.parts();
        if set.frames_of(index) < frames {
            bail!(
                "{}: video {index} has {} frames, fewer than the {frames} read",
                set.source,
                set.frames_of(index)
            );
        }
        values.extend(first_frames(set, index, frames));
    }
    let shape = [rows.len(), frames, c, h, w];
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// The batches of a run, built ahead of the model on the shared loader: for each video, one
/// clip of `frames` frames per view, each at its own random start; every view `[batch, frames,
/// c, h, w]`. A streamed video is decoded once for all its views; one that cannot be used is
/// handled as `on_error` says.
pub fn video_batches(
    data: VideoStore,
    views: Arc<Vec<ClipView>>,
    frames: usize,
    on_error: OnError,
    schedule: Schedule,
    device: Device,
) -> FloatViewBatches<5> {
    FloatViewBatches::spawn(
        data.len(),
        schedule,
        device,
        "video",
        move |epoch, _step, indices| {
            let found = data.readable_videos(indices, frames, on_error)?;
            let per_video: Vec<Vec<Vec<f32>>> = found
                .par_iter()
                .zip(indices)
                .map(|((found, _), &video)| {
                    let (set, index) = found.parts();
                    views
                        .iter()
                        .enumerate()
                        .map(|(v, view)| {
                            let mut rng = view_rng(schedule.seed, epoch, video, v);
                            let start = rng.random_range(0..=set.frames_of(index) - frames);
                            clip_pixels(set, index, start, frames, view, &mut rng)
                        })
                        .collect()
                })
                .collect();
            let mut clips = vec![Vec::new(); views.len()];
            for video_clips in per_video {
                for (v, c) in video_clips.into_iter().enumerate() {
                    clips[v].extend(c);
                }
            }
            let skipped = found.into_iter().flat_map(|(_, s)| s).collect();
            let (c, h, w) = data.frame();
            Ok(FloatViews {
                views: clips,
                shape: [indices.len(), frames, c, h, w],
                epoch,
                skipped,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frame_crops_copy_and_flips_mirror() {
        let plane = [0u8, 51, 102, 153, 204, 255];
        let mut out = Vec::new();
        resize_crop_into(&plane, (2, 3), (0, 0, 2, 3), false, &mut out);
        assert_eq!(out, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        out.clear();
        resize_crop_into(&plane, (2, 3), (0, 0, 2, 3), true, &mut out);
        assert_eq!(out, vec![0.4, 0.2, 0.0, 1.0, 0.8, 0.6]);
        // A one-pixel window stretched over the whole frame.
        out.clear();
        resize_crop_into(&plane, (2, 3), (1, 2, 1, 1), false, &mut out);
        assert_eq!(out, vec![1.0; 6]);
    }
}
