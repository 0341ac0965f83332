//! Views: the random augmentations that turn one image into the inputs an SSL method compares.
//!
//! Each transform is a small [`Transform`] implementation over an [`Image`] (f32, `HWC`, values in
//! [0, 1]); a [`ViewConfig`] (one TOML table) builds the pipeline, and methods ask for one config
//! per view (BYOL's two views differ). All randomness comes from the RNG passed in, which the
//! loader seeds from (seed, epoch, image, view): the same seed gives the same views on any number
//! of threads.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

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

    fn at(&self, y: usize, x: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// Luma per pixel (the value itself for grayscale images).
    fn luma(&self) -> Vec<f32> {
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

/// Crop a random area fraction `scale` with aspect ratio `ratio`, resized to `size` (torchvision's
/// RandomResizedCrop: ten tries, then a centred crop).
#[derive(Debug, Clone)]
pub struct RandomResizedCrop {
    pub size: (usize, usize),
    pub scale: (f32, f32),
    pub ratio: (f32, f32),
}

impl RandomResizedCrop {
    fn window(&self, h: usize, w: usize, rng: &mut ChaCha8Rng) -> (usize, usize, usize, usize) {
        let area = (h * w) as f32;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.scale.0..=self.scale.1);
            let aspect = rng.random_range(lr0..=lr1).exp();
            let cw = (target * aspect).sqrt().round() as usize;
            let ch = (target / aspect).sqrt().round() as usize;
            if cw > 0 && ch > 0 && cw <= w && ch <= h {
                let top = rng.random_range(0..=h - ch);
                let left = rng.random_range(0..=w - cw);
                return (top, left, ch, cw);
            }
        }
        let in_ratio = w as f32 / h as f32;
        let (ch, cw) = if in_ratio < self.ratio.0 {
            ((w as f32 / self.ratio.0).round() as usize, w)
        } else if in_ratio > self.ratio.1 {
            (h, (h as f32 * self.ratio.1).round() as usize)
        } else {
            (h, w)
        };
        let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
        ((h - ch) / 2, (w - cw) / 2, ch, cw)
    }
}

/// Bilinear resize of the window (top, left, ch, cw) of `image` to `size` (half-pixel centres).
pub fn resize_window(
    image: &Image,
    window: (usize, usize, usize, usize),
    size: (usize, usize),
) -> Image {
    let (top, left, ch, cw) = window;
    let (oh, ow) = size;
    let c = image.channels;
    let mut data = vec![0f32; oh * ow * c];
    let sy = ch as f32 / oh as f32;
    let sx = cw as f32 / ow as f32;
    for y in 0..oh {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (ch - 1) as f32);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(ch - 1);
        let wy = fy - y0 as f32;
        for x in 0..ow {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (cw - 1) as f32);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(cw - 1);
            let wx = fx - x0 as f32;
            for k in 0..c {
                let a = image.at(top + y0, left + x0, k);
                let b = image.at(top + y0, left + x1, k);
                let d = image.at(top + y1, left + x0, k);
                let e = image.at(top + y1, left + x1, k);
                data[(y * ow + x) * c + k] =
                    (a * (1.0 - wx) + b * wx) * (1.0 - wy) + (d * (1.0 - wx) + e * wx) * wy;
            }
        }
    }
    Image {
        height: oh,
        width: ow,
        channels: c,
        data,
    }
}

impl Transform for RandomResizedCrop {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Image {
        let window = self.window(image.height, image.width, rng);
        resize_window(&image, window, self.size)
    }
}

/// Mirror left-right with probability `p`.
#[derive(Debug, Clone)]
pub struct HorizontalFlip {
    pub p: f32,
}

impl Transform for HorizontalFlip {
    fn apply(&self, mut image: Image, rng: &mut ChaCha8Rng) -> Image {
        if rng.random::<f32>() < self.p {
            let (w, c) = (image.width, image.channels);
            for row in image.data.chunks_exact_mut(w * c) {
                for x in 0..w / 2 {
                    for k in 0..c {
                        row.swap(x * c + k, (w - 1 - x) * c + k);
                    }
                }
            }
        }
        image
    }
}

/// Brightness, contrast, saturation and hue jitter in random order, applied with probability `p`.
/// Saturation and hue do nothing to a one-channel image.
#[derive(Debug, Clone)]
pub struct ColorJitter {
    pub p: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

fn factor(rng: &mut ChaCha8Rng, strength: f32) -> f32 {
    rng.random_range((1.0 - strength).max(0.0)..=1.0 + strength)
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / d + 2.0) / 6.0
    } else {
        ((r - g) / d + 4.0) / 6.0
    };
    let s = if max == 0.0 { 0.0 } else { d / max };
    (h, s, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

impl Transform for ColorJitter {
    fn apply(&self, mut image: Image, rng: &mut ChaCha8Rng) -> Image {
        if rng.random::<f32>() >= self.p {
            return image;
        }
        let mut order = [0usize, 1, 2, 3];
        for i in (1..4).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let color = image.channels == 3;
        for op in order {
            match op {
                0 if self.brightness > 0.0 => {
                    let f = factor(rng, self.brightness);
                    image
                        .data
                        .iter_mut()
                        .for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
                }
                1 if self.contrast > 0.0 => {
                    let f = factor(rng, self.contrast);
                    let luma = image.luma();
                    let mean = luma.iter().sum::<f32>() / luma.len().max(1) as f32;
                    image
                        .data
                        .iter_mut()
                        .for_each(|v| *v = ((*v - mean) * f + mean).clamp(0.0, 1.0));
                }
                2 if color && self.saturation > 0.0 => {
                    let f = factor(rng, self.saturation);
                    let luma = image.luma();
                    for (px, g) in image.data.chunks_exact_mut(3).zip(luma) {
                        px.iter_mut()
                            .for_each(|v| *v = (g + (*v - g) * f).clamp(0.0, 1.0));
                    }
                }
                3 if color && self.hue > 0.0 => {
                    let shift = rng.random_range(-self.hue..=self.hue);
                    for px in image.data.chunks_exact_mut(3) {
                        let (h, s, v) = rgb_to_hsv(px[0], px[1], px[2]);
                        let (r, g, b) = hsv_to_rgb(h + shift, s, v);
                        px.copy_from_slice(&[r, g, b]);
                    }
                }
                _ => {}
            }
        }
        image
    }
}

/// Replace colour by luma with probability `p` (no-op on grayscale).
#[derive(Debug, Clone)]
pub struct RandomGrayscale {
    pub p: f32,
}

impl Transform for RandomGrayscale {
    fn apply(&self, mut image: Image, rng: &mut ChaCha8Rng) -> Image {
        if image.channels == 3 && rng.random::<f32>() < self.p {
            let luma = image.luma();
            for (px, g) in image.data.chunks_exact_mut(3).zip(luma) {
                px.fill(g);
            }
        }
        image
    }
}

/// Gaussian blur with sigma drawn from `sigma`, kernel about a tenth of the image side (SimCLR),
/// applied with probability `p`; reflect padding.
#[derive(Debug, Clone)]
pub struct GaussianBlur {
    pub p: f32,
    pub sigma: (f32, f32),
}

fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * (n - 1) - i };
    }
    i as usize
}

impl Transform for GaussianBlur {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Image {
        if rng.random::<f32>() >= self.p {
            return image;
        }
        let sigma = rng.random_range(self.sigma.0..=self.sigma.1);
        let radius = (image.height.min(image.width) / 20).max(1);
        let kernel: Vec<f32> = (-(radius as isize)..=radius as isize)
            .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let norm: f32 = kernel.iter().sum();
        let kernel: Vec<f32> = kernel.iter().map(|k| k / norm).collect();
        let (h, w, c) = (image.height, image.width, image.channels);
        let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
            let mut out = vec![0f32; src.len()];
            for y in 0..h {
                for x in 0..w {
                    for k in 0..c {
                        let mut acc = 0.0;
                        for (t, &kv) in kernel.iter().enumerate() {
                            let d = t as isize - radius as isize;
                            let (yy, xx) = if horizontal {
                                (y, reflect(x as isize + d, w))
                            } else {
                                (reflect(y as isize + d, h), x)
                            };
                            acc += kv * src[(yy * w + xx) * c + k];
                        }
                        out[(y * w + x) * c + k] = acc;
                    }
                }
            }
            out
        };
        let data = pass(&pass(&image.data, true), false);
        Image { data, ..image }
    }
}

/// Invert values at or above 0.5, with probability `p`.
#[derive(Debug, Clone)]
pub struct Solarize {
    pub p: f32,
}

impl Transform for Solarize {
    fn apply(&self, mut image: Image, rng: &mut ChaCha8Rng) -> Image {
        if rng.random::<f32>() < self.p {
            image
                .data
                .iter_mut()
                .filter(|v| **v >= 0.5)
                .for_each(|v| *v = 1.0 - *v);
        }
        image
    }
}

/// Subtract the per-channel mean and divide by the standard deviation.
#[derive(Debug, Clone)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Transform for Normalize {
    fn apply(&self, mut image: Image, _rng: &mut ChaCha8Rng) -> Image {
        let c = image.channels;
        for (i, v) in image.data.iter_mut().enumerate() {
            *v = (*v - self.mean[i % c]) / self.std[i % c];
        }
        image
    }
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

/// The evaluation "view": no augmentation, only normalisation.
pub fn eval_pipeline(mean: &[f32], std: &[f32]) -> Pipeline {
    Pipeline(vec![Box::new(Normalize {
        mean: mean.to_vec(),
        std: std.to_vec(),
    })])
}

#[cfg(test)]
mod tests {
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
