//! Log-mel spectrograms: a Hann-windowed short-time FFT (`realfft`), the power of each bin, a
//! bank of triangular mel filters, and the natural log. The defaults and the filters follow
//! torchaudio's `MelSpectrogram` (HTK mel scale, no area normalisation, power 2, centred frames
//! with reflection padding), so that a PyTorch pipeline fed the same clips sees the same input.
//! The filterbank is ours: the crates that ship one pull in far more than these 40 lines.

use std::sync::Arc;

use anyhow::{Result, bail};
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

/// How clips become log-mel images: the `[data]` keys of an audio config that shape the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MelConfig {
    /// Every clip is resampled to this rate (Hz).
    pub sample_rate: u32,
    /// FFT size in samples.
    pub n_fft: usize,
    /// Hann window length in samples (at most `n_fft`; zero-padded to it).
    pub window: usize,
    /// Samples between frames.
    pub hop: usize,
    pub n_mels: usize,
    /// Lowest and highest filter edge (Hz); `f_max` at most half the sample rate.
    pub f_min: f64,
    pub f_max: f64,
}

impl Default for MelConfig {
    /// BYOL-A's front end: 16 kHz, 64 mel bands from 60 Hz to 7.8 kHz, 25 ms windows every
    /// 10 ms.
    fn default() -> Self {
        MelConfig {
            sample_rate: 16_000,
            n_fft: 512,
            window: 400,
            hop: 160,
            n_mels: 64,
            f_min: 60.0,
            f_max: 7_800.0,
        }
    }
}

impl MelConfig {
    pub fn validate(&self) -> Result<()> {
        if self.sample_rate == 0 {
            bail!("data.sample_rate must be positive");
        }
        if self.n_fft < 2 || self.window == 0 || self.window > self.n_fft || self.hop == 0 {
            bail!(
                "data: n_fft ({}) must be at least 2, window ({}) between 1 and n_fft, hop ({}) \
                 positive",
                self.n_fft,
                self.window,
                self.hop
            );
        }
        let nyquist = self.sample_rate as f64 / 2.0;
        if self.n_mels == 0 || !(0.0 <= self.f_min && self.f_min < self.f_max) {
            bail!(
                "data: n_mels must be positive and 0 <= f_min < f_max; got {} / {} / {}",
                self.n_mels,
                self.f_min,
                self.f_max
            );
        }
        if self.f_max > nyquist {
            bail!(
                "data.f_max = {} Hz is above half the sample rate ({nyquist} Hz)",
                self.f_max
            );
        }
        Ok(())
    }

    /// Frames of a clip of `samples` samples (centred frames: one per hop, plus one).
    pub fn frames(&self, samples: usize) -> usize {
        samples / self.hop + 1
    }
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

/// Triangular filters `[n_mels][n_fft / 2 + 1]` on the HTK mel scale, each rising from the
/// previous band's centre to its own and falling to the next one's, with a peak of 1.
pub fn mel_filterbank(config: &MelConfig) -> Vec<Vec<f32>> {
    let bins = config.n_fft / 2 + 1;
    let (lo, hi) = (hz_to_mel(config.f_min), hz_to_mel(config.f_max));
    let edges: Vec<f64> = (0..config.n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (config.n_mels + 1) as f64))
        .collect();
    let bin_hz = |k: usize| k as f64 * config.sample_rate as f64 / config.n_fft as f64;
    (0..config.n_mels)
        .map(|m| {
            let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
            (0..bins)
                .map(|k| {
                    let f = bin_hz(k);
                    let up = (f - left) / (centre - left);
                    let down = (right - f) / (right - centre);
                    up.min(down).max(0.0) as f32
                })
                .collect()
        })
        .collect()
}

/// A log-mel front end, planned once and shared by every thread.
#[derive(Clone)]
pub struct LogMel {
    pub config: MelConfig,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// Each band's nonzero filter weights: (first bin, weights).
    filters: Vec<(usize, Vec<f32>)>,
}

/// Added before the log, so that silence gives a finite floor (log 1e-6 = -13.8).
pub const LOG_FLOOR: f32 = 1e-6;

impl LogMel {
    pub fn new(config: &MelConfig) -> Result<LogMel> {
        config.validate()?;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(config.n_fft);
        // A periodic Hann window (torch.hann_window's default), centred in the FFT frame.
        let n = config.window;
        let offset = (config.n_fft - n) / 2;
        let mut window = vec![0f32; config.n_fft];
        for i in 0..n {
            let phase = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
            window[offset + i] = (0.5 - 0.5 * phase.cos()) as f32;
        }
        let filters = mel_filterbank(config)
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w > 0.0).map_or(first, |l| l + 1);
                (first, row[first..last].to_vec())
            })
            .collect();
        Ok(LogMel {
            config: config.clone(),
            fft,
            window,
            filters,
        })
    }

    /// The log-mel image of mono `samples` at the config's rate: `[n_mels][frames]` flattened
    /// band by band (a one-channel image, frequency up, time across).
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        self.compute_frames(samples, 0, self.config.frames(samples.len()))
    }

    /// Frames `first..first + frames` of [`Self::compute`]'s image, `[n_mels][frames]`, the
    /// same values bit for bit: each frame is computed on its own, so a streamed crop needs
    /// only the frames it shows (64 of a 4-second clip's 401).
    pub fn compute_frames(&self, samples: &[f32], first: usize, frames: usize) -> Vec<f32> {
        let c = &self.config;
        assert!(
            first + frames <= c.frames(samples.len()),
            "log-mel frames past the clip"
        );
        let half = c.n_fft / 2;
        // Reflection padding by half a frame on each side, as torch.stft(center=True) does.
        let at = |i: isize| -> f32 {
            let len = samples.len() as isize;
            if len == 0 {
                return 0.0;
            }
            let mut j = i;
            if len > 1 {
                let period = 2 * (len - 1);
                j = j.rem_euclid(period);
                if j >= len {
                    j = period - j;
                }
            } else {
                j = 0;
            }
            samples[j as usize]
        };
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; half + 1];
        let mut out = vec![0f32; c.n_mels * frames];
        for t in 0..frames {
            let start = ((first + t) * c.hop) as isize - half as isize;
            for (i, x) in input.iter_mut().enumerate() {
                *x = at(start + i as isize) * self.window[i];
            }
            // Lengths match the plan, so processing cannot fail.
            let _ = self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch);
            for (p, s) in power.iter_mut().zip(&spectrum) {
                *p = s.norm_sqr();
            }
            for (m, (first, weights)) in self.filters.iter().enumerate() {
                let energy: f32 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                out[m * frames + t] = (energy + LOG_FLOOR).ln();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_peak_at_their_centres_and_overlap_by_halves() {
        let config = MelConfig {
            n_fft: 4096,
            ..MelConfig::default()
        };
        let bank = mel_filterbank(&config);
        assert_eq!(bank.len(), 64);
        assert_eq!(bank[0].len(), 2049);
        let (lo, hi) = (hz_to_mel(60.0), hz_to_mel(7800.0));
        for (m, row) in bank.iter().enumerate() {
            let centre = mel_to_hz(lo + (hi - lo) * (m + 1) as f64 / 65.0);
            let peak = row
                .iter()
                .enumerate()
                .fold((0, 0f32), |b, (k, &w)| if w > b.1 { (k, w) } else { b })
                .0;
            let peak_hz = peak as f64 * 16000.0 / 4096.0;
            assert!((peak_hz - centre).abs() <= 16000.0 / 4096.0, "band {m}");
        }
        // Between two centres the two triangles sum to 1 (HTK filters without normalisation).
        let bin = (1000.0f64 * 4096.0 / 16000.0).round() as usize;
        let total: f32 = bank.iter().map(|row| row[bin]).sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        assert_eq!(hz_to_mel(mel_to_hz(1234.5)).round(), 1235.0);
        assert!(
            (hz_to_mel(1000.0) - 1000.0).abs() < 0.5,
            "1 kHz is ~1000 mel"
        );
    }

    #[test]
    fn a_sine_lights_the_band_around_its_frequency_with_its_energy() {
        let config = MelConfig::default();
        let logmel = LogMel::new(&config).unwrap();
        let (f, amplitude) = (1000.0f64, 0.5f64);
        let samples: Vec<f32> = (0..16000)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * f * i as f64 / 16000.0).sin()) as f32
            })
            .collect();
        let out = logmel.compute(&samples);
        let frames = config.frames(16000);
        assert_eq!(frames, 101);
        assert_eq!(out.len(), 64 * frames);
        let t = 50;
        let bands: Vec<f32> = (0..64).map(|m| out[m * frames + t]).collect();
        let loudest = (0..64).fold(0, |b, m| if bands[m] > bands[b] { m } else { b });
        let bank = mel_filterbank(&config);
        let bin = (f * 512.0 / 16000.0).round() as usize; // 1 kHz sits exactly on bin 32
        let expected_band = (0..64).fold(0, |b, m| if bank[m][bin] > bank[b][bin] { m } else { b });
        assert_eq!(loudest, expected_band);
        // A sine of amplitude A under a Hann window of N samples puts (A N / 4)^2 into its bin.
        let bin_power = (amplitude * 400.0 / 4.0).powi(2);
        let expected = (bank[expected_band][bin] as f64 * bin_power).ln();
        // The window (400 samples in a 512-point FFT) leaks into the neighbouring bins, each
        // of which holds less than the peak's power.
        let with_leak = ((bin - 3..=bin + 3)
            .map(|k| bank[expected_band][k] as f64)
            .sum::<f64>()
            * bin_power)
            .ln();
        let got = bands[loudest] as f64;
        assert!(
            got > expected - 0.05 && got < with_leak + 0.05,
            "{got} vs {expected}..{with_leak}"
        );
        // Silence gives the floor.
        let silent = logmel.compute(&vec![0.0; 1600]);
        assert!(silent.iter().all(|&v| (v - LOG_FLOOR.ln()).abs() < 1e-6));
    }

    /// A streamed crop's frames equal the whole image's, edges (reflection padding) included.
    #[test]
    fn frames_computed_alone_equal_the_whole_image() {
        let config = MelConfig::default();
        let logmel = LogMel::new(&config).unwrap();
        let samples: Vec<f32> = (0..16000)
            .map(|i| ((i as f32 * 0.37).sin() + (i as f32 * 0.011).cos()) * 0.3)
            .collect();
        let whole = logmel.compute(&samples);
        let frames = config.frames(samples.len());
        for (first, count) in [(0, 64), (37, 64), (frames - 5, 5), (0, frames)] {
            let part = logmel.compute_frames(&samples, first, count);
            for m in 0..config.n_mels {
                assert_eq!(
                    &part[m * count..(m + 1) * count],
                    &whole[m * frames + first..m * frames + first + count],
                    "band {m}, frames {first}..{}",
                    first + count
                );
            }
        }
    }
}
