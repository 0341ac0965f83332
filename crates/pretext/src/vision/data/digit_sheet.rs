//! Handwritten digits cut from one sheet image, the way OpenCV's samples ship them: Debian's
//! `opencv-doc` has `examples/data/digits.png`, 2000x1000 grey pixels holding 5,000 digits of
//! 20x20, 100 to a row, each class filling a band of 5 rows (0 at the top). `pretext data
//! digits` turns it into the MNIST layout: a second handwritten set, unlike Fashion-MNIST and
//! never used to tune a recipe, to check label savings on.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::idx::write_mnist_layout;
use crate::core::loader::{epoch_order, mix_seed};

/// How the sheet is cut and split.
#[derive(Debug, Clone)]
pub struct SheetSettings {
    /// Side of one digit's cell in pixels.
    pub cell: usize,
    /// Classes, each a band of equal height from the top.
    pub classes: usize,
    /// Share of each class held out for the test split.
    pub test_fraction: f64,
    pub seed: u64,
}

impl Default for SheetSettings {
    fn default() -> Self {
        SheetSettings {
            cell: 20,
            classes: 10,
            test_fraction: 0.2,
            seed: 0,
        }
    }
}

/// The cut digits: (pixels, labels) of each split, and the cell side.
pub struct SheetDigits {
    pub train: (Vec<u8>, Vec<u8>),
    pub test: (Vec<u8>, Vec<u8>),
    pub cell: usize,
}

/// Cut a sheet's grey pixels (`width x height`, row-major) into cells: per class, a seeded
/// order of its cells sends `round(n * test_fraction)` to the test split, the rest to train.
pub fn cut_sheet(
    pixels: &[u8],
    (width, height): (usize, usize),
    settings: &SheetSettings,
) -> Result<SheetDigits> {
    let SheetSettings {
        cell,
        classes,
        test_fraction,
        seed,
    } = *settings;
    if cell == 0 || classes == 0 {
        bail!("--cell and --classes must be positive");
    }
    if !(0.0..1.0).contains(&test_fraction) {
        bail!("--test-fraction = {test_fraction}: must lie in [0, 1)");
    }
    let band = cell * classes;
    if width % cell != 0 || height % band != 0 || width == 0 || height == 0 {
        bail!(
            "a {width}x{height} sheet does not cut into {cell}x{cell} cells in {classes} bands of \
             equal height (the width must be a multiple of {cell}, the height of {band})"
        );
    }
    if pixels.len() != width * height {
        bail!("{} pixels for a {width}x{height} sheet", pixels.len());
    }
    let (columns, rows_per_class) = (width / cell, height / band);
    let per_class = columns * rows_per_class;
    let cut = |class: usize, k: usize| -> Vec<u8> {
        let (row, col) = (class * rows_per_class + k / columns, k % columns);
        let mut out = Vec::with_capacity(cell * cell);
        for y in 0..cell {
            let start = (row * cell + y) * width + col * cell;
            out.extend_from_slice(&pixels[start..start + cell]);
        }
        out
    };
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let order = epoch_order(per_class, mix_seed(&[seed, class as u64, 0xD161]), 0);
        let held = (per_class as f64 * test_fraction).round() as usize;
        for (i, &k) in order.iter().enumerate() {
            let side = if i < held { &mut test } else { &mut train };
            side.push((cut(class, k), class as u8));
        }
    }
    // One seeded order per split, so a prefix (`data.train_limit`) holds every class.
    let shuffle = |items: Vec<(Vec<u8>, u8)>, salt: u64| -> (Vec<u8>, Vec<u8>) {
        let order = epoch_order(items.len(), mix_seed(&[seed, salt]), 0);
        let mut pixels = Vec::with_capacity(items.len() * cell * cell);
        let mut labels = Vec::with_capacity(items.len());
        for k in order {
            pixels.extend_from_slice(&items[k].0);
            labels.push(items[k].1);
        }
        (pixels, labels)
    };
    Ok(SheetDigits {
        train: shuffle(train, 1),
        test: shuffle(test, 2),
        cell,
    })
}

/// Read the sheet at `path` (PNG or JPEG, converted to grey) and cut it.
pub fn read_sheet(path: &Path, settings: &SheetSettings) -> Result<SheetDigits> {
    let image = image::open(path)
        .with_context(|| format!("cannot read {} as an image", path.display()))?
        .into_luma8();
    let size = (image.width() as usize, image.height() as usize);
    cut_sheet(image.as_raw(), size, settings).with_context(|| format!("{}", path.display()))
}

impl SheetDigits {
    /// Write the MNIST layout with `classes.txt` naming the digits 0-9.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let classes: usize = self
            .train
            .1
            .iter()
            .chain(&self.test.1)
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        let names: Vec<String> = (0..classes).map(|c| c.to_string()).collect();
        write_mnist_layout(dir, (self.cell, self.cell), &self.train, &self.test, &names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sheet_cuts_into_class_bands_and_splits_per_class() {
        // 2 classes, cells of 2x2, 3 columns and 2 rows per class: 6 cells a class. Each
        // cell's pixels hold its class and position so the cut can be checked.
        let (cell, columns, rows) = (2, 3, 4);
        let (width, height) = (cell * columns, cell * rows);
        let mut pixels = vec![0u8; width * height];
        for y in 0..height {
            for x in 0..width {
                let (row, col) = (y / cell, x / cell);
                pixels[y * width + x] = (10 * row + col) as u8;
            }
        }
        let settings = SheetSettings {
            cell,
            classes: 2,
            test_fraction: 1.0 / 3.0,
            seed: 4,
        };
        let digits = cut_sheet(&pixels, (width, height), &settings).unwrap();
        assert_eq!(digits.train.1.len(), 8);
        assert_eq!(digits.test.1.len(), 4);
        for (pixels, labels) in [&digits.train, &digits.test] {
            for (img, &label) in pixels.chunks(cell * cell).zip(labels) {
                assert!(img.iter().all(|&p| p == img[0]), "one cell, whole: {img:?}");
                let row = img[0] as usize / 10;
                assert_eq!(row / 2, label as usize, "rows 0-1 are class 0, 2-3 class 1");
            }
            assert_eq!(labels.iter().filter(|&&l| l == 0).count() * 2, labels.len());
        }
        // Every cell lands in exactly one split.
        let mut all: Vec<u8> = digits
            .train
            .0
            .chunks(4)
            .chain(digits.test.0.chunks(4))
            .map(|c| c[0])
            .collect();
        all.sort_unstable();
        let mut expected: Vec<u8> = (0..4)
            .flat_map(|r| (0..3).map(move |c| 10 * r + c))
            .collect();
        expected.sort_unstable();
        assert_eq!(all, expected);
        let again = cut_sheet(&pixels, (width, height), &settings).unwrap();
        assert_eq!(again.train, digits.train, "same seed, same split");

        let err = cut_sheet(&pixels, (width, height - 2), &settings)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("6x6 sheet") && err.contains("the height of 4"),
            "{err}"
        );
    }
}
