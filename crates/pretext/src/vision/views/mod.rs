//! Views: the random augmentations that turn one image into the inputs an SSL method compares.
//!
//! Each transform is a small [`Transform`] implementation over an [`Image`] (f32, `HWC`, values in
//! [0, 1]); a [`ViewConfig`] (one TOML table) builds the pipeline, and methods ask for one config
//! per view (BYOL's two views differ). All randomness comes from the RNG passed in, which the
//! loader seeds from (seed, epoch, image, view): the same seed gives the same views on any number
//! of threads.

mod transforms;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use transforms::{
    ColorJitter, GaussianBlur, HorizontalFlip, Normalize, RandomGrayscale, RandomResizedCrop,
    Solarize, resize_window,
};

/// An image as f32 values in `HWC` order.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn from_bytes(bytes: &[u8], height: usize, width: usize, channels: usize) -> Image {
        Image {
            height,
            width,
            channels,
            data: bytes.iter().map(|&b| b as f32 / 255.0).collect(),
        }
    }

    pub(crate) fn at(&self, y: usize, x: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// Luma per pixel (the value itself for grayscale images).
    pub(crate) fn luma(&self) -> Vec<f32> {
        self.data
            .chunks_exact(self.channels)
            .map(|p| {
                if p.len() == 3 {
                    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
                } else {
                    p[0]
                }
            })
            .collect()
    }

    /// Write the image as `CHW` into `out` (length h*w*c).
    pub fn write_chw(&self, out: &mut [f32]) {
        let plane = self.height * self.width;
        for (i, px) in self.data.chunks_exact(self.channels).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                out[c * plane + i] = v;
            }
        }
    }
}

/// One random image operation.
pub trait Transform: Send + Sync + std::fmt::Debug {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Image;
}

/// The transforms of one view, in order.
#[derive(Debug, Default)]
pub struct Pipeline(pub Vec<Box<dyn Transform>>);

impl Pipeline {
    pub fn apply(&self, mut image: Image, rng: &mut ChaCha8Rng) -> Image {
        for t in &self.0 {
            image = t.apply(image, rng);
        }
        image
    }
}

/// The augmentation recipe of one view; a TOML table under `[views.*]` in a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewConfig {
    /// Output side in pixels; 0 means the input's own size.
    pub crop_size: usize,
    pub crop_scale: (f32, f32),
    pub crop_ratio: (f32, f32),
    pub flip_p: f32,
    pub jitter_p: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    pub grayscale_p: f32,
    pub blur_p: f32,
    pub blur_sigma: (f32, f32),
    pub solarize_p: f32,
}

impl Default for ViewConfig {
    fn default() -> Self {
        Self::simclr()
    }
}

impl ViewConfig {
    /// SimCLR's recipe (Chen et al. 2020) with the crop scale of its small-image experiments.
    pub fn simclr() -> Self {
        ViewConfig {
            crop_size: 0,
            crop_scale: (0.2, 1.0),
            crop_ratio: (0.75, 4.0 / 3.0),
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 0.0,
            blur_sigma: (0.1, 2.0),
            solarize_p: 0.0,
        }
    }

    /// Supervised training on labels (fine-tuning, the from-scratch baseline): a milder crop
    /// and a flip, no colour distortion.
    pub fn finetune() -> Self {
        ViewConfig {
            crop_scale: (0.5, 1.0),
            jitter_p: 0.0,
            grayscale_p: 0.0,
            ..Self::simclr()
        }
    }

    /// FixMatch's strong view: the fine-tuning view's flip, a wider crop, and the colour,
    /// blur and solarisation distortions of SimCLR and BYOL at high rates (Sohn et al. 2020
    /// draw RandAugment operations; these are the ones the views module has).
    pub fn strong() -> Self {
        ViewConfig {
            crop_scale: (0.3, 1.0),
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur_p: 0.5,
            solarize_p: 0.2,
            ..Self::finetune()
        }
    }

    /// Masked image modelling (MAE, SimMIM): crop and flip only; hiding patches is the task.
    pub fn masked_modelling() -> Self {
        ViewConfig {
            crop_scale: (0.2, 1.0),
            jitter_p: 0.0,
            grayscale_p: 0.0,
            ..Self::simclr()
        }
    }

    /// BYOL's two asymmetric views (Grill et al. 2020): blur always on the first, rarely on the
    /// second, which alone is solarised.
    pub fn byol() -> [Self; 2] {
        // BYOL's jitter differs from SimCLR's only in a weaker saturation.
        let base = ViewConfig {
            saturation: 0.2,
            ..Self::simclr()
        };
        [
            ViewConfig {
                blur_p: 1.0,
                solarize_p: 0.0,
                ..base.clone()
            },
            ViewConfig {
                blur_p: 0.1,
                solarize_p: 0.2,
                ..base
            },
        ]
    }

    /// Multi-crop (SwAV, DINO): the `globals` at the image's size, then `[multi_crop]`'s
    /// `local_views` copies of `local` cut to `local_size` pixels, which see small parts of the
    /// image cheaply and must agree with the global views.
    pub fn multi_crop(globals: Vec<Self>, local: &Self, crop: &MultiCropConfig) -> Vec<Self> {
        let local = ViewConfig {
            crop_size: crop.local_size,
            ..local.clone()
        };
        let mut views = globals;
        views.extend(std::iter::repeat_n(local, crop.local_views));
        views
    }

    /// The pipeline for images of `input` size, ending in normalisation with the dataset's stats.
    pub fn build(&self, input: (usize, usize), mean: &[f32], std: &[f32]) -> Pipeline {
        let size = if self.crop_size == 0 {
            input
        } else {
            (self.crop_size, self.crop_size)
        };
        let mut t: Vec<Box<dyn Transform>> = vec![Box::new(RandomResizedCrop {
            size,
            scale: self.crop_scale,
            ratio: self.crop_ratio,
        })];
        if self.flip_p > 0.0 {
            t.push(Box::new(HorizontalFlip { p: self.flip_p }));
        }
        if self.jitter_p > 0.0 {
            t.push(Box::new(ColorJitter {
                p: self.jitter_p,
                brightness: self.brightness,
                contrast: self.contrast,
                saturation: self.saturation,
                hue: self.hue,
            }));
        }
        if self.grayscale_p > 0.0 {
            t.push(Box::new(RandomGrayscale {
                p: self.grayscale_p,
            }));
        }
        if self.blur_p > 0.0 {
            t.push(Box::new(GaussianBlur {
                p: self.blur_p,
                sigma: self.blur_sigma,
            }));
        }
        if self.solarize_p > 0.0 {
            t.push(Box::new(Solarize { p: self.solarize_p }));
        }
        t.push(Box::new(Normalize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        }));
        Pipeline(t)
    }

    /// Check ranges; errors name the field.
    pub fn validate(&self, name: &str) -> anyhow::Result<()> {
        let prob = [
            ("flip_p", self.flip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur_p", self.blur_p),
            ("solarize_p", self.solarize_p),
        ];
        for (field, p) in prob {
            if !(0.0..=1.0).contains(&p) {
                anyhow::bail!("{name}.{field} = {p}: a probability must lie in [0, 1]");
            }
        }
        let (s0, s1) = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            anyhow::bail!("{name}.crop_scale = [{s0}, {s1}]: need 0 < min <= max <= 1");
        }
        let (r0, r1) = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1) {
            anyhow::bail!("{name}.crop_ratio = [{r0}, {r1}]: need 0 < min <= max");
        }
        if !(self.blur_sigma.0 > 0.0 && self.blur_sigma.0 <= self.blur_sigma.1) {
            anyhow::bail!("{name}.blur_sigma: need 0 < min <= max");
        }
        Ok(())
    }
}

/// One entry of a config's `views` list: the keys it sets replace those of the method's preset
/// for that view, the others keep the preset's values, so `views = [{ flip_p = 0.0 }]` turns
/// the flip off and leaves BYOL's blur and solarisation (or DINO's local crops) as they were. A
/// list of one entry applies to every view; otherwise it has one entry per view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_scale: Option<(f32, f32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_ratio: Option<(f32, f32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flip_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brightness: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrast: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturation: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hue: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grayscale_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blur_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blur_sigma: Option<(f32, f32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solarize_p: Option<f32>,
}

impl ViewOverride {
    /// `preset` with this entry's keys in place of its own.
    pub fn apply(&self, preset: &ViewConfig) -> ViewConfig {
        ViewConfig {
            crop_size: self.crop_size.unwrap_or(preset.crop_size),
            crop_scale: self.crop_scale.unwrap_or(preset.crop_scale),
            crop_ratio: self.crop_ratio.unwrap_or(preset.crop_ratio),
            flip_p: self.flip_p.unwrap_or(preset.flip_p),
            jitter_p: self.jitter_p.unwrap_or(preset.jitter_p),
            brightness: self.brightness.unwrap_or(preset.brightness),
            contrast: self.contrast.unwrap_or(preset.contrast),
            saturation: self.saturation.unwrap_or(preset.saturation),
            hue: self.hue.unwrap_or(preset.hue),
            grayscale_p: self.grayscale_p.unwrap_or(preset.grayscale_p),
            blur_p: self.blur_p.unwrap_or(preset.blur_p),
            blur_sigma: self.blur_sigma.unwrap_or(preset.blur_sigma),
            solarize_p: self.solarize_p.unwrap_or(preset.solarize_p),
        }
    }
}

impl From<ViewConfig> for ViewOverride {
    /// Every key set: the view exactly as given.
    fn from(v: ViewConfig) -> Self {
        ViewOverride {
            crop_size: Some(v.crop_size),
            crop_scale: Some(v.crop_scale),
            crop_ratio: Some(v.crop_ratio),
            flip_p: Some(v.flip_p),
            jitter_p: Some(v.jitter_p),
            brightness: Some(v.brightness),
            contrast: Some(v.contrast),
            saturation: Some(v.saturation),
            hue: Some(v.hue),
            grayscale_p: Some(v.grayscale_p),
            blur_p: Some(v.blur_p),
            blur_sigma: Some(v.blur_sigma),
            solarize_p: Some(v.solarize_p),
        }
    }
}

/// `[multi_crop]`: how many small local views DINO and SwAV add to their two global views, and
/// their size. The crop scales of both kinds are the method's presets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiCropConfig {
    pub local_views: usize,
    /// Side of a local view in pixels (the papers: 96 of 224; 12 of Fashion-MNIST's 28).
    pub local_size: usize,
}

impl Default for MultiCropConfig {
    fn default() -> Self {
        MultiCropConfig {
            local_views: 6,
            local_size: 12,
        }
    }
}

impl MultiCropConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.local_views > 0 && self.local_size < 2 {
            anyhow::bail!(
                "multi_crop.local_size = {}: local views need at least 2 pixels (or set \
                 multi_crop.local_views = 0)",
                self.local_size
            );
        }
        Ok(())
    }
}

/// The evaluation "view": no augmentation, only normalisation.
pub fn eval_pipeline(mean: &[f32], std: &[f32]) -> Pipeline {
    Pipeline(vec![Box::new(Normalize {
        mean: mean.to_vec(),
        std: std.to_vec(),
    })])
}

#[cfg(test)]
mod tests {
    use super::transforms::{hsv_to_rgb, rgb_to_hsv};
    use super::*;
    use rand::SeedableRng;

    fn gradient_image(h: usize, w: usize, c: usize) -> Image {
        let bytes: Vec<u8> = (0..h * w * c).map(|i| (i * 7 % 256) as u8).collect();
        Image::from_bytes(&bytes, h, w, c)
    }

    #[test]
    fn same_seed_same_view_and_values_stay_in_range() {
        for c in [1, 3] {
            let cfg = ViewConfig {
                blur_p: 0.5,
                solarize_p: 0.5,
                ..ViewConfig::simclr()
            };
            let pipe = cfg.build((16, 12), &vec![0.0; c], &vec![1.0; c]);
            let image = gradient_image(20, 14, c);
            let a = pipe.apply(image.clone(), &mut ChaCha8Rng::seed_from_u64(3));
            let b = pipe.apply(image.clone(), &mut ChaCha8Rng::seed_from_u64(3));
            let d = pipe.apply(image.clone(), &mut ChaCha8Rng::seed_from_u64(4));
            assert_eq!(a, b);
            assert_ne!(a, d);
            assert_eq!((a.height, a.width, a.channels), (16, 12, c));
            assert!(
                a.data.iter().all(|v| (0.0..=1.0).contains(v)),
                "values left [0, 1]"
            );
        }
    }

    #[test]
    fn crop_window_respects_scale_bounds() {
        let crop = RandomResizedCrop {
            size: (8, 8),
            scale: (0.3, 0.6),
            ratio: (0.75, 4.0 / 3.0),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..500 {
            let (top, left, h, w) = crop.window(40, 40, &mut rng);
            assert!(top + h <= 40 && left + w <= 40);
            let frac = (h * w) as f32 / 1600.0;
            assert!((0.25..=0.67).contains(&frac), "area fraction {frac}");
        }
    }

    #[test]
    fn full_window_resize_is_identity_and_flip_mirrors() {
        let image = gradient_image(5, 4, 3);
        let same = resize_window(&image, (0, 0, 5, 4), (5, 4));
        for (a, b) in same.data.iter().zip(&image.data) {
            assert!((a - b).abs() < 1e-6);
        }
        let flipped =
            HorizontalFlip { p: 1.0 }.apply(image.clone(), &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(flipped.at(2, 0, 1), image.at(2, 3, 1));
    }

    #[test]
    fn hsv_round_trip_and_solarize() {
        for &(r, g, b) in &[(0.2f32, 0.5f32, 0.9f32), (0.9, 0.1, 0.3), (0.4, 0.4, 0.4)] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() < 1e-5 && (g - g2).abs() < 1e-5 && (b - b2).abs() < 1e-5);
        }
        let image = Image {
            height: 1,
            width: 2,
            channels: 1,
            data: vec![0.25, 0.75],
        };
        let out = Solarize { p: 1.0 }.apply(image, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(out.data, vec![0.25, 0.25]);
    }

    #[test]
    fn bad_probability_names_the_field() {
        let cfg = ViewConfig {
            blur_p: 1.5,
            ..ViewConfig::simclr()
        };
        let err = cfg.validate("views.first").unwrap_err().to_string();
        assert!(err.contains("views.first.blur_p"), "{err}");
    }
}
