//! `pretext data ...`: commands that build the data sets this project uses from what a Debian
//! machine ships, so users can rebuild them.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;
use pretext::audio::data::notes::{NoteSettings, build_notes};
use pretext::audio::data::spoken::{SpokenSettings, build_spoken};
use pretext::core::cache::default_cache_dir;
use pretext::video::data::moving::{MovingSettings, build as build_moving};
use pretext::vision::data::digit_sheet::{SheetSettings, read_sheet};
use pretext::vision::data::index::{FolderIndex, IndexSource};
use pretext::vision::data::letters::{LetterSettings, build, find_fonts};
use pretext::vision::data::shards::shards_from_folder;
use serde_json::json;

use crate::Global;

/// `0-127`, `24-96:4` (a step) or `0,8,16`: numbers up to `max`, as a flag `name` gives them.
fn parse_numbers(name: &str, text: &str, max: u8) -> Result<Vec<u8>> {
    let bad = || {
        anyhow::anyhow!(
            "{name} {text}: expected a list (0,8,16) or a range (24-96 or 24-96:4) of numbers 0-{max}"
        )
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (range, step) = match part.split_once(':') {
            Some((r, s)) => (r, s.parse::<usize>().map_err(|_| bad())?),
            None => (part, 1),
        };
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (
                a.parse::<u8>().map_err(|_| bad())?,
                b.parse::<u8>().map_err(|_| bad())?,
            ),
            None => {
                let v = range.parse::<u8>().map_err(|_| bad())?;
                (v, v)
            }
        };
        if lo > hi || hi > max || step == 0 {
            return Err(bad());
        }
        out.extend((lo..=hi).step_by(step));
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

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
    /// Handwritten digits cut from a sheet image, as OpenCV's samples ship them (Debian's
    /// opencv-doc: 5,000 digits of 20x20, each class a band of rows), in the MNIST layout with a
    /// stratified train and test split.
    Digits {
        /// The sheet (PNG or JPEG).
        #[arg(long, default_value = DIGIT_SHEET)]
        from: PathBuf,
        /// Output folder (IDX files, classes.txt).
        #[arg(long)]
        out: PathBuf,
        /// Side of one digit's cell in pixels.
        #[arg(long, default_value_t = 20)]
        cell: usize,
        /// Share of each class held out for the test split.
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f64,
    },
    /// Single notes rendered from a General MIDI SoundFont as NSynth was made (held 3 s,
    /// released 1 s, 16 kHz mono WAV): OUT/{train,test}/<instrument family>/*.wav with
    /// labels.tsv (program, pitch, velocity); test programs never appear in train.
    Notes {
        /// The SoundFont (SF2), e.g. /usr/share/sounds/sf2/FluidR3_GM.sf2 (fluid-soundfont-gm)
        /// or TimGM6mb.sf2 (timgm6mb-soundfont).
        #[arg(long)]
        soundfont: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// GM programs (0-127), e.g. 0-127 or 0,8,16.
        #[arg(long, default_value = "0-127")]
        programs: String,
        /// MIDI pitches: a range with a step (24-96:4) or a list; the full NSynth grid is 21-108.
        #[arg(long, default_value = "24-96:4")]
        pitches: String,
        /// Velocities; NSynth's are 25,50,75,100,127.
        #[arg(long, default_value = "100")]
        velocities: String,
        /// Programs of each family held out for the test split.
        #[arg(long, default_value_t = 2)]
        test_programs: usize,
    },
    /// Spoken words (ten digits and 24 more) synthesised by espeak-ng in its 7 English voices
    /// and a draw of its voice variants, at random speeds and pitches, with gain and noise;
    /// OUT/{train,test}/<word>/*.wav split by variant (speaker), and OUT/recorded/ with one
    /// real speaker's recordings of the same words where asterisk-core-sounds-en-wav is
    /// installed.
    Spoken {
        #[arg(long)]
        out: PathBuf,
        /// Voice variants used (each with all 7 voices).
        #[arg(long, default_value_t = 24)]
        variants: usize,
        /// Of those, held out for the test split.
        #[arg(long, default_value_t = 6)]
        test_variants: usize,
        /// Renderings per word, voice and variant.
        #[arg(long, default_value_t = 1)]
        per_voice: usize,
        /// Words to speak (comma-separated; default: the built-in 34).
        #[arg(long, value_delimiter = ',')]
        words: Vec<String>,
    },
    /// List an image folder (class subfolders, optionally under train/ and test/) into the
    /// file index pretraining reads, and cache it (under $PRETEXT_CACHE_DIR, else the user's
    /// cache folder); says whether it was built or taken from the cache, and how long it took.
    Index {
        /// The image folder.
        dir: PathBuf,
    },
    /// Write an image folder (class subfolders, optionally under train/ and test/) as
    /// WebDataset shards: OUT/train-000000.tar ... (and test-*), each sample the image file as
    /// it is (KEY.jpg, KEY.png) and its class number (KEY.cls), in a seeded order (--seed) so
    /// every shard mixes the classes; OUT/classes.txt names the classes.
    Shards {
        /// The image folder.
        #[arg(long)]
        from: PathBuf,
        /// Output folder (must not hold shards already).
        #[arg(long)]
        out: PathBuf,
        /// Samples per shard.
        #[arg(long, default_value_t = 1000)]
        shard_size: usize,
    },
    /// Moving MNIST (Srivastava et al. 2015) as OpenSTL generates it, on the objects of an
    /// MNIST-layout IDX folder (Fashion-MNIST: Moving Fashion-MNIST): each object bounces
    /// around a 64x64 canvas at 0.1 of the free range per frame, objects merged by maximum.
    /// Writes OUT/{train,test}-videos-idx4-ubyte.gz and OUT/{train,test}-labels.tsv (the
    /// classes present, each object's direction in 8 bins and, with --speed-jitter, its speed);
    /// the test set draws from the t10k objects with its own fixed seed.
    MovingMnist {
        /// Folder with train-/t10k- images and labels IDX files (gzipped or not).
        #[arg(long)]
        digits: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        train: usize,
        #[arg(long, default_value_t = 2_000)]
        test: usize,
        #[arg(long, default_value_t = 20)]
        frames: usize,
        /// Objects per video (1 gives a single direction label per video).
        #[arg(long, default_value_t = 2)]
        objects: usize,
        #[arg(long, default_value_t = 64)]
        canvas: usize,
        /// Share of the free range moved per frame.
        #[arg(long, default_value_t = 0.1)]
        step: f64,
        /// Each object's step drawn from step x [1 - J, 1 + J] (labelled slow/medium/fast).
        #[arg(long, default_value_t = 0.0)]
        speed_jitter: f64,
    },
}

/// Where Debian's opencv-doc puts OpenCV's sheet of handwritten digits.
const DIGIT_SHEET: &str = "/usr/share/doc/opencv-doc/examples/data/digits.png";

pub fn run(g: &Global, cmd: DataCommand) -> Result<()> {
    if g.config.is_some() || !g.set.is_empty() || g.device != "flex" {
        bail!("pretext data takes no --config, --set or --device: its settings are flags");
    }
    match cmd {
        DataCommand::MovingMnist {
            digits,
            out,
            train,
            test,
            frames,
            objects,
            canvas,
            step,
            speed_jitter,
        } => {
            let settings = MovingSettings {
                train,
                test,
                frames,
                objects,
                canvas,
                step,
                speed_jitter,
                seed: g.seed.unwrap_or(0),
            };
            let started = std::time::Instant::now();
            build_moving(&digits, &out, &settings)?;
            let seconds = started.elapsed().as_secs_f64();
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "data moving-mnist", "out": out, "train": train,
                            "test": test, "frames": frames, "objects": objects, "seconds": seconds })
                );
            } else {
                println!(
                    "wrote {}: {train} train and {test} test videos of {frames} {canvas}x{canvas} \
                     frames with {objects} object(s) in {seconds:.1}s",
                    out.display()
                );
            }
            Ok(())
        }
        DataCommand::Notes {
            soundfont,
            out,
            programs,
            pitches,
            velocities,
            test_programs,
        } => {
            let mut settings = NoteSettings::new(soundfont, out);
            settings.programs = parse_numbers("--programs", &programs, 127)?;
            settings.pitches = parse_numbers("--pitches", &pitches, 127)?;
            settings.velocities = parse_numbers("--velocities", &velocities, 127)?;
            settings.test_programs = test_programs;
            settings.seed = g.seed.unwrap_or(0);
            let report = build_notes(&settings)?;
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "data notes", "out": settings.out, "result": report })
                );
            } else {
                println!(
                    "wrote {}: {} train and {} test notes ({} silent notes skipped) in {:.1}s; \
                     test programs {:?}",
                    settings.out.display(),
                    report.train,
                    report.test,
                    report.silent,
                    report.seconds,
                    report.test_programs
                );
            }
            Ok(())
        }
        DataCommand::Spoken {
            out,
            variants,
            test_variants,
            per_voice,
            words,
        } => {
            let mut settings = SpokenSettings::new(out);
            settings.variants = variants;
            settings.test_variants = test_variants;
            settings.per_voice = per_voice;
            settings.seed = g.seed.unwrap_or(0);
            if !words.is_empty() {
                settings.words = words;
            }
            let report = build_spoken(&settings)?;
            if g.json {
                println!(
                    "{}",
                    json!({ "command": "data spoken", "out": settings.out, "result": report })
                );
            } else {
                println!(
                    "wrote {}: {} train and {} test clips ({} words; test variants {:?}), {} \
                     recorded clips, in {:.1}s",
                    settings.out.display(),
                    report.train,
                    report.test,
                    settings.words.len(),
                    report.test_variants,
                    report.recorded,
                    report.seconds
                );
            }
            Ok(())
        }
        DataCommand::Index { dir } => index(g, &dir),
        DataCommand::Shards {
            from,
            out,
            shard_size,
        } => shards(g, &from, &out, shard_size),
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
        DataCommand::Digits {
            from,
            out,
            cell,
            test_fraction,
        } => {
            if !from.exists() {
                bail!(
                    "{} does not exist (`apt-get install opencv-doc` puts OpenCV's digit sheet \
                     there; or give --from)",
                    from.display()
                );
            }
            let settings = SheetSettings {
                cell,
                classes: 10,
                test_fraction,
                seed: g.seed.unwrap_or(0),
            };
            let digits = read_sheet(&from, &settings)?;
            digits.write(&out)?;
            let (train, test) = (digits.train.1.len(), digits.test.1.len());
            if g.json {
                println!(
                    "{}",
                    json!({
                        "command": "data digits", "out": out, "train_images": train,
                        "test_images": test, "side": cell,
                    })
                );
            } else {
                println!(
                    "wrote {}: {train} train and {test} test images of {cell}x{cell}, 10 classes \
                     (0-9), from {}",
                    out.display(),
                    from.display()
                );
            }
            Ok(())
        }
    }
}

/// `pretext data shards --from FOLDER --out DIR`.
fn shards(g: &Global, from: &std::path::Path, out: &std::path::Path, size: usize) -> Result<()> {
    let started = std::time::Instant::now();
    let written = shards_from_folder(from, out, size, g.seed.unwrap_or(0))?;
    let seconds = started.elapsed().as_secs_f64();
    if g.json {
        let splits: Vec<_> = written
            .iter()
            .map(|(split, w)| json!({ "split": split, "shards": w.shards, "samples": w.samples, "bytes": w.bytes }))
            .collect();
        println!(
            "{}",
            json!({ "command": "data shards", "out": out, "splits": splits, "seconds": seconds })
        );
    } else {
        for (split, w) in &written {
            println!(
                "{}: {} samples in {} shards {split}-*.tar ({:.1} MB of images)",
                out.display(),
                w.samples,
                w.shards,
                w.bytes as f64 / 1e6
            );
        }
        println!("wrote in {seconds:.1} s");
    }
    Ok(())
}

/// `pretext data index DIR`.
fn index(g: &Global, dir: &std::path::Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    let splits: Vec<PathBuf> = ["train", "test"]
        .iter()
        .map(|s| dir.join(s))
        .filter(|d| d.is_dir())
        .collect();
    let splits = if splits.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        splits
    };
    let cache = default_cache_dir();
    let mut rows = Vec::new();
    for split in &splits {
        let started = std::time::Instant::now();
        let (index, source) = FolderIndex::open(split, cache.as_deref())?;
        let seconds = started.elapsed().as_secs_f64();
        let bytes: u64 = index
            .classes
            .iter()
            .flat_map(|c| &c.files)
            .chain(&index.loose)
            .map(|f| f.bytes)
            .sum();
        let how = match source {
            IndexSource::Built => "built",
            IndexSource::Cached => "cached",
        };
        if !g.json {
            println!(
                "{}: {} images in {} class folders ({:.1} MB), {how} in {seconds:.2} s",
                split.display(),
                index.len(),
                index.classes.len(),
                bytes as f64 / 1e6
            );
        }
        rows.push(json!({ "folder": split, "images": index.len(),
            "classes": index.classes.len(), "bytes": bytes, "index": how, "seconds": seconds }));
    }
    if g.json {
        println!(
            "{}",
            json!({ "command": "data index", "splits": rows, "cache": cache })
        );
    }
    Ok(())
}
