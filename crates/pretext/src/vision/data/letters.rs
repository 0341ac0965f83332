//! `pretext data letters`: a second small image set, built from what Debian ships (the notMNIST
//! recipe): the 26 capital letters rendered from every TrueType/OpenType font found, as 28x28
//! grayscale images in the MNIST layout, split by font so that test letters come from fonts never
//! seen in training.
//!
//! Each glyph is scaled so its bounding box fills `glyph_box` pixels on its longer side (MNIST
//! fits digits in 20x20 of 28x28) and centred; every font gives `per_font` samples per letter, the
//! first as is, the others smaller by up to a quarter and shifted by up to two pixels.

use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontVec, PxScale};
use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::idx::write_mnist_layout;
use crate::core::checkpoint::write_atomic;
use crate::core::loader::{epoch_order, mix_seed};

/// The classes, in label order.
pub const LETTERS: [char; 26] = [
    'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', 'P', 'Q', 'R', 'S',
    'T', 'U', 'V', 'W', 'X', 'Y', 'Z',
];

/// Font families whose letters are not letters (symbols, dingbats, mathematical alphabets).
const NOT_LETTERS: [&str; 5] = ["symbol", "dingbat", "d050000l", "math", "emoji"];

/// How the set is built.
#[derive(Debug, Clone, PartialEq)]
pub struct LetterSettings {
    /// Side of the square images.
    pub size: usize,
    /// Longer side of each glyph's bounding box, before the random shrinking.
    pub glyph_box: usize,
    /// Samples per font and letter.
    pub per_font: usize,
    /// Share of fonts held out as the test split.
    pub test_fonts: f64,
    pub seed: u64,
}

impl Default for LetterSettings {
    fn default() -> Self {
        LetterSettings {
            size: 28,
            glyph_box: 20,
            per_font: 4,
            test_fonts: 0.2,
            seed: 0,
        }
    }
}

impl LetterSettings {
    pub fn validate(&self) -> Result<()> {
        if self.size < 8 || self.glyph_box == 0 || self.glyph_box > self.size {
            bail!(
                "--size {} and glyph box {}: need a size of at least 8 and a box that fits in it",
                self.size,
                self.glyph_box
            );
        }
        if self.per_font == 0 {
            bail!("--per-font must be at least 1");
        }
        if !(self.test_fonts > 0.0 && self.test_fonts < 1.0) {
            bail!("--test-fonts {}: must lie in (0, 1)", self.test_fonts);
        }
        Ok(())
    }
}

/// Every `.ttf` and `.otf` file under `dirs`, sorted, skipping the families in [`NOT_LETTERS`].
pub fn find_fonts(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
                continue;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let font = name.ends_with(".ttf") || name.ends_with(".otf");
            if font && !NOT_LETTERS.iter().any(|s| name.contains(s)) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for d in dirs {
        walk(d, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// A font that has an outline for every letter.
#[derive(Debug)]
pub struct LetterFont {
    pub path: PathBuf,
    font: FontVec,
}

impl LetterFont {
    /// `Ok(None)` when the font lacks a letter (its outlines are not the Latin alphabet).
    pub fn open(path: &Path) -> Result<Option<LetterFont>> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let font = FontVec::try_from_vec(bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a readable font ({e})", path.display()))?;
        let has_all = LETTERS.iter().all(|&c| {
            let id = font.glyph_id(c);
            id.0 != 0 && font.outline(id).is_some()
        });
        Ok(has_all.then(|| LetterFont {
            path: path.to_path_buf(),
            font,
        }))
    }

    /// `letter` as a `size x size` coverage image (0 background, 255 ink), its bounding box
    /// `box_side` pixels on the longer side, centred and then moved by `shift` pixels.
    pub fn render(&self, letter: char, size: usize, box_side: f32, shift: (i32, i32)) -> Vec<u8> {
        let mut image = vec![0u8; size * size];
        let id = self.font.glyph_id(letter);
        // Outline at a reference scale to measure the box, then at the scale that fits it.
        let reference = 100.0;
        let Some(probe) = self
            .font
            .outline_glyph(id.with_scale(PxScale::from(reference)))
        else {
            return image;
        };
        let b = probe.px_bounds();
        let longer = (b.max.x - b.min.x).max(b.max.y - b.min.y).max(1e-3);
        let scale = reference * box_side / longer;
        let Some(glyph) = self.font.outline_glyph(id.with_scale(PxScale::from(scale))) else {
            return image;
        };
        let b = glyph.px_bounds();
        let (w, h) = (b.max.x - b.min.x, b.max.y - b.min.y);
        let left = ((size as f32 - w) / 2.0).round() as i32 + shift.0;
        let top = ((size as f32 - h) / 2.0).round() as i32 + shift.1;
        glyph.draw(|x, y, coverage| {
            let (px, py) = (left + x as i32, top + y as i32);
            if (0..size as i32).contains(&px) && (0..size as i32).contains(&py) {
                let cell = &mut image[py as usize * size + px as usize];
                *cell = (*cell).max((coverage.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        });
        image
    }
}

/// The built set, before it is written.
#[derive(Debug)]
pub struct Letters {
    /// (pixels, labels) of the training and test splits, each in a seeded random order.
    pub train: (Vec<u8>, Vec<u8>),
    pub test: (Vec<u8>, Vec<u8>),
    pub train_fonts: Vec<PathBuf>,
    pub test_fonts: Vec<PathBuf>,
    /// Fonts found but skipped, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Render every letter of every usable font in `fonts`.
pub fn build(fonts: &[PathBuf], settings: &LetterSettings) -> Result<Letters> {
    settings.validate()?;
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in fonts {
        match LetterFont::open(path) {
            Ok(Some(font)) => {
                // The same outlines under two names (a font and its alias) would leak across
                // the split: keep the first.
                let key = ['A', 'R'].map(|c| font.render(c, 28, 20.0, (0, 0)));
                if seen.insert(key) {
                    usable.push(font);
                } else {
                    skipped.push((path.clone(), "same letters as an earlier font".into()));
                }
            }
            Ok(None) => skipped.push((path.clone(), "lacks some of A-Z".into())),
            Err(e) => skipped.push((path.clone(), format!("{e:#}"))),
        }
    }
    if usable.len() < 2 {
        bail!(
            "found {} usable font(s) among {} files; need at least 2 (one for each split). \
             Install some (e.g. apt-get install fonts-dejavu-core fonts-liberation2 \
             fonts-freefont-ttf fonts-urw-base35) or give --fonts DIR",
            usable.len(),
            fonts.len()
        );
    }
    let order = epoch_order(usable.len(), mix_seed(&[settings.seed, 0xF0175]), 0);
    let held =
        ((usable.len() as f64 * settings.test_fonts).round() as usize).clamp(1, usable.len() - 1);
    let (test_idx, train_idx) = order.split_at(held);
    let split = |indices: &[usize], salt: u64| -> (Vec<u8>, Vec<u8>) {
        let mut samples: Vec<(Vec<u8>, u8)> = Vec::new();
        for &f in indices {
            for (label, &letter) in LETTERS.iter().enumerate() {
                for k in 0..settings.per_font {
                    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[
                        settings.seed,
                        f as u64,
                        label as u64,
                        k as u64,
                    ]));
                    let (scale, shift) = if k == 0 {
                        (1.0, (0, 0))
                    } else {
                        (
                            rng.random_range(0.75..=1.0),
                            (rng.random_range(-2..=2), rng.random_range(-2..=2)),
                        )
                    };
                    let box_side = settings.glyph_box as f32 * scale;
                    samples.push((
                        usable[f].render(letter, settings.size, box_side, shift),
                        label as u8,
                    ));
                }
            }
        }
        let shuffled = epoch_order(samples.len(), mix_seed(&[settings.seed, salt]), 0);
        let mut pixels = Vec::with_capacity(samples.len() * settings.size * settings.size);
        let mut labels = Vec::with_capacity(samples.len());
        for i in shuffled {
            pixels.extend_from_slice(&samples[i].0);
            labels.push(samples[i].1);
        }
        (pixels, labels)
    };
    let fonts_of = |idx: &[usize]| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = idx.iter().map(|&i| usable[i].path.clone()).collect();
        v.sort();
        v
    };
    Ok(Letters {
        train: split(train_idx, 1),
        test: split(test_idx, 2),
        train_fonts: fonts_of(train_idx),
        test_fonts: fonts_of(test_idx),
        skipped,
    })
}

impl Letters {
    /// Write the MNIST layout (gzipped IDX files), `classes.txt` (A to Z, one per line, which
    /// the IDX reader uses as class names) and `fonts.txt` (which font went to which split).
    pub fn write(&self, dir: &Path, size: usize) -> Result<()> {
        let classes: Vec<String> = LETTERS.iter().map(|c| c.to_string()).collect();
        write_mnist_layout(dir, (size, size), &self.train, &self.test, &classes)?;
        let mut fonts = String::new();
        for (split, list) in [("train", &self.train_fonts), ("test", &self.test_fonts)] {
            for f in list {
                fonts += &format!("{split}\t{}\n", f.display());
            }
        }
        write_atomic(&dir.join("fonts.txt"), fonts.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs a system font: `.ci/run` installs Debian's fonts-dejavu-core and runs it with
    /// `--ignored`.
    #[test]
    #[ignore = "needs fonts-dejavu-core (run by .ci/run)"]
    fn letters_render_centred_and_split_by_font() {
        let dirs = vec![PathBuf::from("/usr/share/fonts/truetype/dejavu")];
        let fonts = find_fonts(&dirs).unwrap();
        assert!(
            fonts.len() >= 2,
            "install fonts-dejavu-core: found {fonts:?}"
        );
        let font = LetterFont::open(&fonts[0]).unwrap().unwrap();
        let a = font.render('A', 28, 20.0, (0, 0));
        let ink: Vec<(usize, usize)> = (0..28 * 28)
            .filter(|&i| a[i] > 127)
            .map(|i| (i % 28, i / 28))
            .collect();
        let (xs, ys): (Vec<usize>, Vec<usize>) = ink.iter().copied().unzip();
        let (x0, x1) = (*xs.iter().min().unwrap(), *xs.iter().max().unwrap());
        let (y0, y1) = (*ys.iter().min().unwrap(), *ys.iter().max().unwrap());
        assert!(
            (18..=21).contains(&(y1 - y0 + 1)),
            "an A fills the 20-pixel box: rows {y0}-{y1}"
        );
        assert!(
            x0 >= 3 && x1 <= 24 && y0 >= 3 && y1 <= 24,
            "centred: {x0}-{x1}, {y0}-{y1}"
        );
        assert_ne!(font.render('B', 28, 20.0, (0, 0)), a);
        assert_eq!(font.render('A', 28, 20.0, (0, 0)), a, "deterministic");

        let settings = LetterSettings {
            per_font: 2,
            test_fonts: 0.3,
            ..LetterSettings::default()
        };
        let letters = build(&fonts, &settings).unwrap();
        let n_train = letters.train_fonts.len();
        assert!(!letters.test_fonts.is_empty() && n_train > 0);
        assert!(
            letters
                .train_fonts
                .iter()
                .all(|f| !letters.test_fonts.contains(f))
        );
        assert_eq!(letters.train.1.len(), n_train * 26 * 2);
        for class in 0..26u8 {
            assert_eq!(
                letters.train.1.iter().filter(|&&l| l == class).count(),
                n_train * 2
            );
        }
        let again = build(&fonts, &settings).unwrap();
        assert_eq!(again.train, letters.train, "same seed, same set");

        let dir = std::env::temp_dir().join(format!("pretext-letters-{}", std::process::id()));
        letters.write(&dir, 28).unwrap();
        let splits = super::super::load_dir(&dir, None).unwrap();
        assert_eq!(splits.train.len(), letters.train.1.len());
        assert_eq!(splits.train.class_names[25], "Z");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn too_few_fonts_and_bad_settings_are_named() {
        let err = build(&[], &LetterSettings::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("usable font") && err.contains("fonts-dejavu-core"),
            "{err}"
        );
        let bad = LetterSettings {
            test_fonts: 1.0,
            ..LetterSettings::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("--test-fonts")
        );
        let dir = std::env::temp_dir().join(format!("pretext-nofonts-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/Broken.ttf"), b"not a font").unwrap();
        std::fs::write(dir.join("StandardSymbolsPS.otf"), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let found = find_fonts(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(
            found,
            vec![dir.join("sub/Broken.ttf")],
            "symbols and non-fonts are skipped"
        );
        let err = LetterFont::open(&found[0]).err().unwrap().to_string();
        assert!(
            err.contains("Broken.ttf") && err.contains("not a readable font"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
