//! `pretext data ...`: commands that build the data sets this project uses from what a Debian
//! machine ships, so users can rebuild them.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;
use pretext::vision::data::letters::{LetterSettings, build, find_fonts};
use serde_json::json;

use crate::Global;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// The 26 capital letters rendered from every TrueType/OpenType font found (the notMNIST
    /// recipe), 28x28 in the MNIST layout, train and test split by font.
    Letters {
        /// Output folder (IDX files, classes.txt, fonts.txt).
        #[arg(long)]
        out: PathBuf,
        /// Folders searched for .ttf/.otf files (repeatable; default /usr/share/fonts and, where
        /// TeX fonts are installed, /usr/share/texmf/fonts/opentype).
        #[arg(long)]
        fonts: Vec<PathBuf>,
        /// Samples per font and letter (the first as is, the others shrunk and shifted).
        #[arg(long, default_value_t = 4)]
        per_font: usize,
        /// Image side in pixels (glyphs fill 20/28 of it).
        #[arg(long, default_value_t = 28)]
        size: usize,
        /// Share of fonts held out for the test split.
        #[arg(long, default_value_t = 0.2)]
        test_fonts: f64,
    },
}

pub fn run(g: &Global, cmd: DataCommand) -> Result<()> {
    if g.config.is_some() || !g.set.is_empty() || g.device != "flex" {
        bail!("pretext data takes no --config, --set or --device: its settings are flags");
    }
    match cmd {
        DataCommand::Letters {
            out,
            fonts,
            per_font,
            size,
            test_fonts,
        } => {
            let dirs = if fonts.is_empty() {
                ["/usr/share/fonts", "/usr/share/texmf/fonts/opentype"]
                    .iter()
                    .map(PathBuf::from)
                    .filter(|d| d.is_dir())
                    .collect()
            } else {
                fonts
            };
            let settings = LetterSettings {
                size,
                glyph_box: (size * 20).div_ceil(28),
                per_font,
                test_fonts,
                seed: g.seed.unwrap_or(0),
            };
            let files = find_fonts(&dirs)?;
            let letters = build(&files, &settings)?;
            letters.write(&out, size)?;
            let (train, test) = (letters.train.1.len(), letters.test.1.len());
            if g.json {
                println!(
                    "{}",
                    json!({
                        "command": "data letters", "out": out, "train_images": train,
                        "test_images": test, "train_fonts": letters.train_fonts.len(),
                        "test_fonts": letters.test_fonts.len(), "skipped_fonts": letters.skipped.len(),
                    })
                );
            } else {
                for (path, why) in &letters.skipped {
                    eprintln!("skipped {}: {why}", path.display());
                }
                println!(
                    "wrote {}: {train} train images from {} fonts, {test} test images from {} other \
                     fonts, 26 classes (A-Z); {} font files skipped",
                    out.display(),
                    letters.train_fonts.len(),
                    letters.test_fonts.len(),
                    letters.skipped.len()
                );
            }
            Ok(())
        }
    }
}
