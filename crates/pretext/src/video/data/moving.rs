//! Moving MNIST (Srivastava et al. 2015) as OpenSTL generates it, on Fashion-MNIST's objects:
//! a 64x64 canvas, two 28x28 objects each on a straight trajectory from a random start in a
//! random direction, moving 0.1 of the free range per frame and bouncing off the edges, merged
//! by pixel-wise max. The labels come for free: the classes present, each object's direction
//! of motion (8 bins) and, when speeds vary, its speed.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::core::checkpoint::write_atomic;
use crate::vision::data::idx::{IdxArray, encode_idx, read_idx};

/// The 8 direction bins, clockwise from "right" in image coordinates (y grows downwards).
pub const DIRECTIONS: [&str; 8] = [
    "right",
    "down-right",
    "down",
    "down-left",
    "left",
    "up-left",
    "up",
    "up-right",
];

/// `pretext data moving-mnist` settings.
#[derive(Debug, Clone)]
pub struct MovingSettings {
    pub train: usize,
    pub test: usize,
    pub frames: usize,
    pub objects: usize,
    pub canvas: usize,
    /// Share of the free range moved per frame (OpenSTL: 0.1).
    pub step: f64,
    /// Each object's step is drawn from `step * [1 - jitter, 1 + jitter]` (0: all equal).
    pub speed_jitter: f64,
    pub seed: u64,
}

impl Default for MovingSettings {
    fn default() -> Self {
        MovingSettings {
            train: 10_000,
            test: 2_000,
            frames: 20,
            objects: 2,
            canvas: 64,
            step: 0.1,
            speed_jitter: 0.0,
            seed: 0,
        }
    }
}

/// Grey square objects and their class names.
pub struct Objects {
    pub side: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub classes: Vec<String>,
}

impl Objects {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn object(&self, i: usize) -> &[u8] {
        let n = self.side * self.side;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// `prefix-images-idx3-ubyte[.gz]` and `prefix-labels-idx1-ubyte[.gz]` in `dir`, class
    /// names from `classes.txt` when there is one (Fashion-MNIST's otherwise).
    pub fn read(dir: &Path, prefix: &str) -> Result<Objects> {
        let find = |kind: &str, rank: usize| -> Result<IdxArray> {
            let name = format!("{prefix}-{kind}-idx{rank}-ubyte");
            let path = [dir.join(&name), dir.join(format!("{name}.gz"))]
                .into_iter()
                .find(|p| p.exists())
                .with_context(|| format!("{}: no {name} or {name}.gz", dir.display()))?;
            read_idx(&path)
        };
        let images = find("images", 3)?;
        let labels = find("labels", 1)?;
        if images.dims.len() != 3 || images.dims[1] != images.dims[2] {
            bail!(
                "{}: {prefix} images have dimensions {:?}, expected [n, side, side]",
                dir.display(),
                images.dims
            );
        }
        if labels.dims != [images.dims[0]] {
            bail!(
                "{}: {} {prefix} labels for {} images",
                dir.display(),
                labels.dims[0],
                images.dims[0]
            );
        }
        let classes: Vec<String> = match std::fs::read_to_string(dir.join("classes.txt")) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(_) => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        };
        if let Some(&l) = labels.data.iter().find(|&&l| l as usize >= classes.len()) {
            bail!(
                "{}: label {l} but only {} class names",
                dir.display(),
                classes.len()
            );
        }
        Ok(Objects {
            side: images.dims[1],
            pixels: images.data,
            labels: labels.data,
            classes,
        })
    }
}

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// One object's path: top-left corners per frame, its direction bin and its step.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    pub corners: Vec<(usize, usize)>,
    pub direction: usize,
    pub step: f64,
}

/// OpenSTL's `get_random_trajectory`: a position in the unit square moved `step` per frame
/// along `theta`, reflected at the edges; the first frame is already one step in.
pub fn trajectory(frames: usize, free: usize, step: f64, rng: &mut ChaCha8Rng) -> Trajectory {
    let (mut x, mut y) = (rng.random::<f64>(), rng.random::<f64>());
    let theta = rng.random::<f64>() * std::f64::consts::TAU;
    let (mut vx, mut vy) = (theta.cos(), theta.sin());
    let mut corners = Vec::with_capacity(frames);
    for _ in 0..frames {
        x += vx * step;
        y += vy * step;
        if x <= 0.0 {
            (x, vx) = (0.0, -vx);
        }
        if x >= 1.0 {
            (x, vx) = (1.0, -vx);
        }
        if y <= 0.0 {
            (y, vy) = (0.0, -vy);
        }
        if y >= 1.0 {
            (y, vy) = (1.0, -vy);
        }
        corners.push(((y * free as f64) as usize, (x * free as f64) as usize));
    }
    let direction = (theta / (std::f64::consts::TAU / 8.0)).round() as usize % 8;
    Trajectory {
        corners,
        direction,
        step,
    }
}

/// Sequences `[n, frames, canvas, canvas]` and one labels.tsv row per sequence.
pub struct MovingSet {
    pub videos: IdxArray,
    pub rows: Vec<String>,
}

/// Draw `n` sequences from `objects`.
pub fn generate(objects: &Objects, n: usize, s: &MovingSettings, seed: u64) -> Result<MovingSet> {
    if objects.side > s.canvas {
        bail!(
            "objects are {0}x{0}, larger than the {1}x{1} canvas",
            objects.side,
            s.canvas
        );
    }
    let (f, c) = (s.frames, s.canvas);
    let free = c - objects.side;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0u8; n * f * c * c];
    let mut rows = Vec::with_capacity(n);
    for (v, video) in data.chunks_mut(f * c * c).enumerate() {
        let mut classes = Vec::new();
        let mut directions = Vec::new();
        let mut speeds = Vec::new();
        for _ in 0..s.objects {
            let jitter = if s.speed_jitter > 0.0 {
                rng.random_range(-s.speed_jitter..=s.speed_jitter)
            } else {
                0.0
            };
            let path = trajectory(f, free, s.step * (1.0 + jitter), &mut rng);
            let pick = rng.random_range(0..objects.len());
            let object = objects.object(pick);
            for (frame, &(top, left)) in video.chunks_mut(c * c).zip(&path.corners) {
                for r in 0..objects.side {
                    let row = &mut frame[(top + r) * c + left..(top + r) * c + left + objects.side];
                    let src = &object[r * objects.side..(r + 1) * objects.side];
                    for (d, &p) in row.iter_mut().zip(src) {
                        *d = (*d).max(p);
                    }
                }
            }
            classes.push(objects.classes[objects.labels[pick] as usize].clone());
            directions.push(DIRECTIONS[path.direction].to_string());
            speeds.push(match jitter {
                j if j < -s.speed_jitter / 3.0 => "slow",
                j if j > s.speed_jitter / 3.0 => "fast",
                _ => "medium",
            });
        }
        let mut row = format!("{v}\t{}\t{}", classes.join(","), directions.join(","));
        if s.speed_jitter > 0.0 {
            row += &format!("\t{}", speeds.join(","));
        }
        rows.push(row);
    }
    Ok(MovingSet {
        videos: IdxArray {
            dims: vec![n, f, c, c],
            data,
        },
        rows,
    })
}

/// Build the train and test sets from the IDX files in `digits` into `out`:
/// `{train,test}-videos-idx4-ubyte.gz` and `{train,test}-labels.tsv`. The test set draws its
/// objects from the `t10k` files with its own fixed seed.
pub fn build(digits: &Path, out: &Path, s: &MovingSettings) -> Result<(usize, usize)> {
    if s.frames == 0 || s.objects == 0 || s.train + s.test == 0 {
        bail!("--frames, --objects and --train + --test must be positive");
    }
    if !((0.0..1.0).contains(&s.speed_jitter) && s.step > 0.0 && s.step <= 1.0) {
        bail!("--step must lie in (0, 1] and --speed-jitter in [0, 1)");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (split, prefix, n, seed) in [
        ("train", "train", s.train, s.seed),
        ("test", "t10k", s.test, s.seed ^ 0x7E57),
    ] {
        if n == 0 {
            continue;
        }
        let objects = Objects::read(digits, prefix)?;
        let set = generate(&objects, n, s, seed)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&encode_idx(&set.videos))?;
        write_atomic(
            &out.join(format!("{split}-videos-idx4-ubyte.gz")),
            &gz.finish()?,
        )?;
        let mut header = "index\tclasses\tdirection".to_string();
        if s.speed_jitter > 0.0 {
            header += "\tspeed";
        }
        let tsv = std::iter::once(header)
            .chain(set.rows)
            .map(|l| l + "\n")
            .collect::<String>();
        write_atomic(&out.join(format!("{split}-labels.tsv")), tsv.as_bytes())?;
    }
    Ok((s.train, s.test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trajectories_stay_on_the_canvas_move_one_step_and_bounce() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let t = trajectory(20, 36, 0.1, &mut rng);
            assert!(t.corners.iter().all(|&(r, c)| r <= 36 && c <= 36));
            for w in t.corners.windows(2) {
                let (dr, dc) = (w[1].0 as f64 - w[0].0 as f64, w[1].1 as f64 - w[0].1 as f64);
                // One step is 3.6 pixels (truncation moves it by under one pixel per axis).
                assert!((dr * dr + dc * dc).sqrt() <= 3.6 + 2.0f64.sqrt() + 1e-9);
            }
        }
        // Moving mostly sideways (the "right" and "left" bins: |vx| > 0.92) for 100 frames
        // covers over 9 widths of the unit square, so a path bounces off both side walls.
        let mut sideways = 0;
        for _ in 0..200 {
            let t = trajectory(100, 36, 0.1, &mut rng);
            if t.direction == 0 || t.direction == 4 {
                sideways += 1;
                let cols: Vec<usize> = t.corners.iter().map(|c| c.1).collect();
                assert!(cols.contains(&0) && cols.contains(&36), "{cols:?}");
            }
        }
        assert!(sideways > 20);
    }

    #[test]
    fn objects_are_merged_by_maximum_and_labelled() {
        let objects = Objects {
            side: 2,
            pixels: vec![10, 200, 30, 40, 100, 100, 100, 100],
            labels: vec![0, 1],
            classes: vec!["a".into(), "b".into()],
        };
        let s = MovingSettings {
            frames: 3,
            objects: 2,
            canvas: 4,
            ..MovingSettings::default()
        };
        let set = generate(&objects, 50, &s, 1).unwrap();
        assert_eq!(set.videos.dims, vec![50, 3, 4, 4]);
        for (v, row) in set.rows.iter().enumerate() {
            let cols: Vec<&str> = row.split('\t').collect();
            assert_eq!(cols[0], v.to_string());
            assert_eq!(cols[1].split(',').count(), 2);
            assert!(cols[2].split(',').all(|d| DIRECTIONS.contains(&d)));
            let frame = &set.videos.data[v * 48..v * 48 + 16];
            // Every frame holds the brightest pixel of each object it shows: max, not sum.
            assert!(
                frame
                    .iter()
                    .all(|&p| [0, 10, 30, 40, 100, 200].contains(&p))
            );
        }
    }
}
