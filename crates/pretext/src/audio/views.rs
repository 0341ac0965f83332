//! Views of a clip's log-mel image, and the batches of them the loop trains on.
//!
//! Every view starts as a random crop of `crop_frames` frames, normalised band by band with the
//! training set's statistics. BYOL-A's views (Niizumi et al. 2021) then mix in a background
//! clip (mixup in the power domain: `ln((1-λ) e^x + λ e^b)`, λ up to 0.4) and take a random
//! resize crop: a window of 0.6-1.5 times the image in each direction, on a canvas 1.5 times
//! as wide (zeros, the normalised mean, around the image), stretched back to the crop's size.
//! COLA's views are crops only; masked modelling takes one plain crop.
//!
//! Each view's randomness is seeded from (seed, epoch, clip, view), so runs are reproducible
//! and a resumed run sees the views it would have seen.

use std::sync::Arc;

use anyhow::Result;
use burn::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::stream::{ClipData, ClipStore};
use crate::core::loader::{FloatViewBatches, FloatViews, Schedule, view_rng};
use crate::vision::data::OnError;

/// The augmentation of one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioView {
    /// Largest share λ of a background clip mixed in (0: no mixup).
    pub mixup: f64,
    /// Random resize crop: the range of the window's size relative to the image, per axis
    /// (`[]`: none).
    pub rrc_scale: Vec<f64>,
    /// The canvas the window may wander over, relative to the image: [frequency, time].
    pub rrc_canvas: Vec<f64>,
    /// Random linear fader (BYOL-A v2, Niizumi et al. 2023): a gain ramping linearly over the
    /// crop from one end value to another, each drawn from [-fade, fade], added to the
    /// normalised log-mel image (0: off), so that loudness is no shortcut between views.
    pub fade: f64,
}

impl Default for AudioView {
    fn default() -> Self {
        AudioView::crop_only()
    }
}

impl AudioView {
    pub fn crop_only() -> AudioView {
        AudioView {
            mixup: 0.0,
            rrc_scale: Vec::new(),
            rrc_canvas: vec![1.0, 1.5],
            fade: 0.0,
        }
    }

    /// BYOL-A's view.
    pub fn byol_a() -> AudioView {
        AudioView {
            mixup: 0.4,
            rrc_scale: vec![0.6, 1.5],
            rrc_canvas: vec![1.0, 1.5],
            fade: 0.0,
        }
    }

    pub fn validate(&self, name: &str) -> Result<()> {
        if !(self.fade >= 0.0 && self.fade.is_finite()) {
            anyhow::bail!("{name}.fade = {}: expected 0 or more", self.fade);
        }
        if !(0.0..1.0).contains(&self.mixup) {
            anyhow::bail!("{name}.mixup = {}: expected [0, 1)", self.mixup);
        }
        match self.rrc_scale[..] {
            [] => {}
            [lo, hi] if lo > 0.0 && lo <= hi => {}
            _ => anyhow::bail!(
                "{name}.rrc_scale = {:?}: expected [] or [low, high] with 0 < low <= high",
                self.rrc_scale
            ),
        }
        match self.rrc_canvas[..] {
            [f, t] if f >= 1.0 && t >= 1.0 => Ok(()),
            _ => anyhow::bail!(
                "{name}.rrc_canvas = {:?}: expected [frequency, time], each at least 1",
                self.rrc_canvas
            ),
        }
    }
}

/// A log-mel image `[bands][frames]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    pub bands: usize,
    pub frames: usize,
    pub values: Vec<f32>,
}

impl Spectrogram {
    fn at(&self, band: usize, frame: usize) -> f32 {
        self.values[band * self.frames + frame]
    }
}

/// `frames` frames of `clip` (`[bands][clip_frames]`) from `start`, normalised per band.
pub fn crop(
    clip: &[f32],
    bands: usize,
    start: usize,
    frames: usize,
    mean: &[f32],
    std: &[f32],
) -> Spectrogram {
    let clip_frames = clip.len() / bands;
    let mut values = Vec::with_capacity(bands * frames);
    for m in 0..bands {
        let row = &clip[m * clip_frames + start..m * clip_frames + start + frames];
        values.extend(row.iter().map(|v| (v - mean[m]) / std[m]));
    }
    Spectrogram {
        bands,
        frames,
        values,
    }
}

/// Mix `background` into `x` with weight `lambda` in the power domain (BYOL-A's mixup).
pub fn mixup(x: &mut Spectrogram, background: &Spectrogram, lambda: f32) {
    for (v, b) in x.values.iter_mut().zip(&background.values) {
        *v = ((1.0 - lambda) * v.exp() + lambda * b.exp() + f32::EPSILON).ln();
    }
}

/// Add a gain ramping linearly from `start` at the first frame to `end` at the last.
pub fn fade(x: &mut Spectrogram, start: f32, end: f32) {
    let steps = (x.frames.max(2) - 1) as f32;
    for (i, v) in x.values.iter_mut().enumerate() {
        let t = (i % x.frames) as f32 / steps;
        *v += start + (end - start) * t;
    }
}

/// A window of `(h, w)` at `(top, left)` on a canvas of `canvas` (the image centred on it,
/// zeros around) resized bilinearly to the image's size.
pub fn resize_crop(
    x: &Spectrogram,
    canvas: (usize, usize),
    window: (usize, usize, usize, usize),
) -> Spectrogram {
    let (top, left, h, w) = window;
    let (off_f, off_t) = (
        (canvas.0 - x.bands) as f32 / 2.0,
        (canvas.1 - x.frames) as f32 / 2.0,
    );
    let sample = |f: f32, t: f32| -> f32 {
        let (fi, ti) = (f - off_f, t - off_t);
        // Outside the image's pixels: the canvas. Within its outer half pixels: its edge (as
        // torch's interpolate clamps).
        let (bands, frames) = (x.bands as f32, x.frames as f32);
        if fi < -0.5 || ti < -0.5 || fi > bands - 0.5 || ti > frames - 0.5 {
            return 0.0;
        }
        let (fi, ti) = (fi.clamp(0.0, bands - 1.0), ti.clamp(0.0, frames - 1.0));
        let (f0, t0) = (fi.floor() as usize, ti.floor() as usize);
        let (f1, t1) = ((f0 + 1).min(x.bands - 1), (t0 + 1).min(x.frames - 1));
        let (df, dt) = (fi - f0 as f32, ti - t0 as f32);
        let top = x.at(f0, t0) * (1.0 - dt) + x.at(f0, t1) * dt;
        let bottom = x.at(f1, t0) * (1.0 - dt) + x.at(f1, t1) * dt;
        top * (1.0 - df) + bottom * df
    };
    let mut values = Vec::with_capacity(x.bands * x.frames);
    for m in 0..x.bands {
        // Pixel centres of the output mapped into the window (align_corners = false).
        let f = top as f32 + (m as f32 + 0.5) * h as f32 / x.bands as f32 - 0.5;
        for t in 0..x.frames {
            let tt = left as f32 + (t as f32 + 0.5) * w as f32 / x.frames as f32 - 0.5;
            values.push(sample(f, tt));
        }
    }
    Spectrogram {
        bands: x.bands,
        frames: x.frames,
        values,
    }
}

/// What every view of a run shares: the clips, their band statistics, the crop length and
/// what to do with a streamed clip that cannot be used.
pub struct ViewSource {
    pub data: ClipStore,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub crop_frames: usize,
    pub on_error: OnError,
}

impl ViewSource {
    /// A random crop of `clip`, normalised per band: sliced from its image in memory, or
    /// only the crop's frames computed from its samples (the same values).
    fn random_crop(&self, clip: &ClipData, rng: &mut ChaCha8Rng) -> Spectrogram {
        let start = rng.random_range(0..=self.data.frames() - self.crop_frames);
        let (bands, frames) = (self.data.n_mels(), self.crop_frames);
        match clip {
            ClipData::Image(image) => crop(image, bands, start, frames, &self.mean, &self.std),
            ClipData::Samples(samples, logmel) => {
                let image = logmel.compute_frames(samples, start, frames);
                crop(&image, bands, 0, frames, &self.mean, &self.std)
            }
        }
    }

    /// One view drawn with `rng` from `clip` (read once for all its views); a background clip
    /// it mixes in is read here, and clips passed over as unusable on the way are added to
    /// `skipped`.
    pub fn view(
        &self,
        clip: &ClipData,
        spec: &AudioView,
        rng: &mut ChaCha8Rng,
        skipped: &mut Vec<String>,
    ) -> Result<Spectrogram> {
        let mut x = self.random_crop(clip, rng);
        if spec.mixup > 0.0 {
            let other = rng.random_range(0..self.data.len());
            let (background, passed) = self.data.readable_clip(other, self.on_error)?;
            skipped.extend(passed);
            let background = self.random_crop(&background, rng);
            let lambda = rng.random_range(0.0..spec.mixup) as f32;
            mixup(&mut x, &background, lambda);
        }
        if let [lo, hi] = spec.rrc_scale[..] {
            let canvas = (
                (x.bands as f64 * spec.rrc_canvas[0]).round() as usize,
                (x.frames as f64 * spec.rrc_canvas[1]).round() as usize,
            );
            let size = |n: usize, limit: usize, rng: &mut ChaCha8Rng| {
                ((n as f64 * rng.random_range(lo..=hi)).round() as usize).clamp(1, limit)
            };
            let h = size(x.bands, canvas.0, rng);
            let w = size(x.frames, canvas.1, rng);
            let top = rng.random_range(0..=canvas.0 - h);
            let left = rng.random_range(0..=canvas.1 - w);
            x = resize_crop(&x, canvas, (top, left, h, w));
        }
        if spec.fade > 0.0 {
            let (start, end) = (
                rng.random_range(-spec.fade..=spec.fade) as f32,
                rng.random_range(-spec.fade..=spec.fade) as f32,
            );
            fade(&mut x, start, end);
        }
        Ok(x)
    }
}

/// The batches of a run, built ahead of the model on the shared loader: every view
/// `[batch, 1, bands, frames]`.
pub fn audio_batches(
    source: Arc<ViewSource>,
    views: Arc<Vec<AudioView>>,
    schedule: Schedule,
    device: Device,
) -> FloatViewBatches<4> {
    let len = source.data.len();
    FloatViewBatches::spawn(
        len,
        schedule,
        device,
        "clip",
        move |epoch, _step, indices| {
            let per_clip: Vec<(Vec<Spectrogram>, Vec<String>)> = indices
                .par_iter()
                .map(|&clip| {
                    let (data, mut skipped) = source.data.readable_clip(clip, source.on_error)?;
                    let clip_views = views
                        .iter()
                        .enumerate()
                        .map(|(v, spec)| {
                            let mut rng = view_rng(schedule.seed, epoch, clip, v);
                            source.view(&data, spec, &mut rng, &mut skipped)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok((clip_views, skipped))
                })
                .collect::<Result<_>>()?;
            let mut out = vec![Vec::new(); views.len()];
            let mut skipped = Vec::new();
            for (clip_views, passed) in per_clip {
                for (v, s) in clip_views.into_iter().enumerate() {
                    out[v].extend(s.values);
                }
                skipped.extend(passed);
            }
            Ok(FloatViews {
                views: out,
                shape: [indices.len(), 1, source.data.n_mels(), source.crop_frames],
                epoch,
                skipped,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(bands: usize, frames: usize) -> Spectrogram {
        Spectrogram {
            bands,
            frames,
            values: (0..bands * frames).map(|i| (i % frames) as f32).collect(),
        }
    }

    #[test]
    fn a_full_window_on_a_plain_canvas_is_the_identity() {
        let x = ramp(4, 6);
        assert_eq!(resize_crop(&x, (4, 6), (0, 0, 4, 6)), x);
    }

    #[test]
    fn a_half_window_stretches_time_and_the_canvas_pads_with_the_mean() {
        let x = ramp(2, 4);
        // The left half (frames 0-1) stretched over 4 frames.
        let y = resize_crop(&x, (2, 4), (0, 0, 2, 2));
        assert_eq!(&y.values[..4], &[0.0, 0.25, 0.75, 1.25]);
        // A canvas twice as wide: the image sits in its middle, zeros on each side, and the
        // whole canvas squeezed into 4 frames samples it every 2 frames.
        let z = resize_crop(&x, (2, 8), (0, 0, 2, 8));
        assert_eq!(&z.values[..4], &[0.0, 0.5, 2.5, 0.0]);
    }

    #[test]
    fn mixup_is_a_mean_of_powers_and_crops_normalise_per_band() {
        let mut x = Spectrogram {
            bands: 1,
            frames: 2,
            values: vec![0.0, 2.0f32.ln()],
        };
        let b = Spectrogram {
            bands: 1,
            frames: 2,
            values: vec![4.0f32.ln(), 2.0f32.ln()],
        };
        mixup(&mut x, &b, 0.25);
        // 0.75 * 1 + 0.25 * 4 = 1.75; 0.75 * 2 + 0.25 * 2 = 2.
        assert!((x.values[0] - 1.75f32.ln()).abs() < 1e-5);
        assert!((x.values[1] - 2.0f32.ln()).abs() < 1e-5);
        let clip = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
        let c = crop(&clip, 2, 1, 2, &[2.0, 20.0], &[1.0, 10.0]);
        assert_eq!(c.values, vec![0.0, 1.0, 0.0, 1.0]);
        let mut f = Spectrogram {
            bands: 2,
            frames: 3,
            values: vec![0.0; 6],
        };
        fade(&mut f, -1.0, 1.0);
        assert_eq!(f.values, vec![-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]);
    }
}
