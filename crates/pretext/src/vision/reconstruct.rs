//! `pretext reconstruct`: what a reconstructing method (MAE, SimMIM, the autoencoders) makes of
//! images, as one PNG: bands of three rows, the originals, the masked or corrupted inputs the
//! model saw, and its reconstructions.

use anyhow::{Result, bail};
use burn::prelude::*;
use image::{Rgb, RgbImage};

use super::checkpoint::ImageCheckpoint;
use super::data::ImageSource;
use super::eval::normalized_batch;

/// Images per band of the grid.
const PER_BAND: usize = 16;
/// Pixels between cells and between bands.
const GAP: u32 = 2;
const BAND_GAP: u32 = 10;

/// The grid for `n` images spread evenly over `set`, or `None` when the checkpoint's method does
/// not reconstruct (SimCLR, BYOL, rotation, jigsaw). Masks and noise are drawn from `seed`.
pub fn reconstruction_grid(
    ckpt: &ImageCheckpoint,
    set: &dyn ImageSource,
    n: usize,
    seed: u64,
    device: &Device,
) -> Result<Option<Vec<u8>>> {
    ckpt.check_compatible(set)?;
    let n = n.min(set.len());
    if n == 0 {
        bail!("no images to reconstruct");
    }
    let indices: Vec<usize> = (0..n).map(|i| i * set.len() / n).collect();
    let device = device.clone().without_autodiff();
    let originals = normalized_batch(set, &indices, &ckpt.mean, &ckpt.std, &device)?;
    let Some(shown) = ckpt.reconstruct(originals.clone(), seed, &device)? else {
        return Ok(None);
    };
    let rows = [originals, shown.input, shown.output].map(|t| {
        t.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    });
    let c = set.channels();
    let (h, w) = set.size();
    let pixel = |row: usize, image: usize, ch: usize, y: usize, x: usize| -> u8 {
        let v = rows[row][((image * c + ch) * h + y) * w + x];
        let v = v * ckpt.std.get(ch).copied().unwrap_or(1.0)
            + ckpt.mean.get(ch).copied().unwrap_or(0.0);
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    };
    let scale = (56 / h.max(w) as u32).max(1);
    let (cell_w, cell_h) = (w as u32 * scale + GAP, h as u32 * scale + GAP);
    let bands = n.div_ceil(PER_BAND) as u32;
    let cols = n.min(PER_BAND) as u32;
    let mut img = RgbImage::from_pixel(
        cols * cell_w + GAP,
        bands * (3 * cell_h + BAND_GAP),
        Rgb([255, 255, 255]),
    );
    for image in 0..n {
        let (band, col) = ((image / PER_BAND) as u32, (image % PER_BAND) as u32);
        for row in 0..3 {
            let (x0, y0) = (
                GAP + col * cell_w,
                band * (3 * cell_h + BAND_GAP) + row as u32 * cell_h,
            );
            for y in 0..h as u32 * scale {
                for x in 0..w as u32 * scale {
                    let (sy, sx) = ((y / scale) as usize, (x / scale) as usize);
                    let rgb = if c == 3 {
                        [0, 1, 2].map(|ch| pixel(row, image, ch, sy, sx))
                    } else {
                        [pixel(row, image, 0, sy, sx); 3]
                    };
                    img.put_pixel(x0 + x, y0 + y, Rgb(rgb));
                }
            }
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(Some(png))
}
