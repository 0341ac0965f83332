//! The image transforms a view pipeline is made of: geometric (crop, flip) and photometric
//! (colour jitter, grayscale, blur, solarisation, normalisation).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Image, Transform};

/// Crop a random area fraction `scale` with aspect ratio `ratio`, resized to `size` (torchvision's
/// RandomResizedCrop: ten tries, then a centred crop).
#[derive(Debug, Clone)]
pub struct RandomResizedCrop {
    pub size: (usize, usize),
    pub scale: (f32, f32),
    pub ratio: (f32, f32),
}

impl RandomResizedCrop {
    pub(super) fn window(
        &self,
        h: usize,
        w: usize,
        rng: &mut ChaCha8Rng,
    ) -> (usize, usize, usize, usize) {
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

pub(super) fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
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

pub(super) fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
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
