//! Jigsaw puzzles (Noroozi & Favaro 2016): cut the image into a 3x3 grid of tiles, shuffle them
//! by one of a fixed set of permutations chosen far apart (maximal Hamming distance), encode
//! every tile with the shared backbone, and classify which permutation was applied from the
//! concatenated tile features. Tiles are encoded one by one, so the backbone must recognise a
//! part's place in the whole from the part alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use super::{ImageShape, Method, MethodStep};
use crate::core::distributed::world;
use crate::core::heads::{Mlp, MlpConfig};
use crate::core::losses::cross_entropy;
use crate::vision::backbones::Backbone;
use crate::vision::config::PretrainConfig;
use crate::vision::masking::gather_tokens;
use crate::vision::views::ViewConfig;

/// `[jigsaw]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JigsawConfig {
    /// Tiles per side: 3 (the paper's 3x3) or 2.
    pub grid: usize,
    /// Size of the permutation set, the number of classes (the paper's ablation: 100 keeps the
    /// task hard enough while its permutations stay far apart).
    pub permutations: usize,
    /// Hidden width of the classifier on the concatenated tile features.
    pub hidden: usize,
}

impl Default for JigsawConfig {
    fn default() -> Self {
        JigsawConfig {
            grid: 3,
            permutations: 100,
            hidden: 512,
        }
    }
}

/// The largest permutation set (Noroozi & Favaro's ablation went up to 1,000).
const MAX_PERMUTATIONS: usize = 1000;

impl JigsawConfig {
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.grid, 2 | 3) {
            bail!("jigsaw.grid = {}: expected 2 or 3", self.grid);
        }
        let all: usize = (1..=self.grid * self.grid).product();
        // The greedy search scans every permutation for each one it adds (9! = 362,880 on a
        // 3x3 grid, about 3 ms): 1,000, the paper's largest set, takes seconds; more would take
        // minutes and the paper found no gain past 1,000.
        let most = all.min(MAX_PERMUTATIONS);
        if self.permutations < 2 || self.permutations > most {
            bail!(
                "jigsaw.permutations = {}: must lie in [2, {most}] for a {g}x{g} grid{}",
                self.permutations,
                if most < all {
                    " (the paper's largest set; choosing more far-apart permutations takes \
                     minutes and gained nothing there)"
                } else {
                    ""
                },
                g = self.grid
            );
        }
        if self.hidden == 0 {
            bail!("jigsaw.hidden must be positive");
        }
        Ok(())
    }
}

/// Every permutation of `0..n`, in lexicographic order.
fn all_permutations(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current: Vec<u8> = (0..n as u8).collect();
    loop {
        out.push(current.clone());
        // Next lexicographic permutation.
        let Some(i) = (0..n.saturating_sub(1))
            .rev()
            .find(|&i| current[i] < current[i + 1])
        else {
            return out;
        };
        let j = (i + 1..n)
            .rev()
            .find(|&j| current[j] > current[i])
            .unwrap_or(i + 1);
        current.swap(i, j);
        current[i + 1..].reverse();
    }
}

/// `count` permutations of the `tiles` positions, chosen greedily for maximal Hamming distance
/// (the paper's algorithm, deterministic): start from the identity, then repeatedly add the
/// permutation whose smallest distance to those chosen is largest (the first such in
/// lexicographic order). Cached: methods are rebuilt for every evaluation.
pub fn permutation_set(tiles: usize, count: usize) -> Arc<Vec<Vec<usize>>> {
    type Sets = HashMap<(usize, usize), Arc<Vec<Vec<usize>>>>;
    static CACHE: OnceLock<Mutex<Sets>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(set) = cache
        .lock()
        .ok()
        .and_then(|c| c.get(&(tiles, count)).cloned())
    {
        return set;
    }
    let all = all_permutations(tiles);
    let mut nearest = vec![u8::MAX; all.len()];
    let mut chosen = vec![0usize];
    while chosen.len() < count {
        let last = &all[chosen[chosen.len() - 1]];
        for (d, p) in nearest.iter_mut().zip(&all) {
            let distance = p.iter().zip(last).filter(|(a, b)| a != b).count() as u8;
            *d = (*d).min(distance);
        }
        let best = (0..all.len()).fold(
            0,
            |best, i| if nearest[i] > nearest[best] { i } else { best },
        );
        chosen.push(best);
    }
    let set: Arc<Vec<Vec<usize>>> = Arc::new(
        chosen
            .iter()
            .map(|&i| all[i].iter().map(|&t| t as usize).collect())
            .collect(),
    );
    if let Ok(mut c) = cache.lock() {
        c.insert((tiles, count), set.clone());
    }
    set
}

/// The central `grid * t` square of `images` `[b, c, h, w]` (t = min(h, w) / grid) cut into tiles
/// `[b * grid², c, t, t]`, row-major within each image.
pub fn tiles(images: Tensor<4>, grid: usize) -> Result<Tensor<4>> {
    let [b, c, h, w] = images.dims();
    let t = h.min(w) / grid;
    if t == 0 {
        bail!("jigsaw: {h}x{w} images are too small for a {grid}x{grid} grid");
    }
    let side = grid * t;
    let (top, left) = ((h - side) / 2, (w - side) / 2);
    Ok(images
        .slice([0..b, 0..c, top..top + side, left..left + side])
        .reshape([b, c, grid, t, grid, t])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b * grid * grid, c, t, t]))
}

#[derive(Module, Debug)]
pub struct Jigsaw {
    encoder: Backbone,
    /// Concatenated tile features → which permutation.
    head: Mlp,
    #[module(skip)]
    permutations: Arc<Vec<Vec<usize>>>,
    #[module(skip)]
    grid: usize,
}

impl Method for Jigsaw {
    fn init(config: &PretrainConfig, image: ImageShape, device: &Device) -> Self {
        let c = &config.jigsaw;
        let encoder = config.backbone.init(image, device);
        let tiles = c.grid * c.grid;
        let head = MlpConfig {
            hidden: c.hidden,
            output: c.permutations,
            layers: 2,
            last_norm: false,
        }
        .init(tiles * encoder.out_dim(), device);
        Jigsaw {
            encoder,
            head,
            permutations: permutation_set(tiles, c.permutations),
            grid: c.grid,
        }
    }

    fn view_presets(_config: &PretrainConfig) -> Vec<ViewConfig> {
        vec![ViewConfig::finetune()]
    }

    fn loss(&self, mut views: Vec<Tensor<4>>) -> Result<MethodStep> {
        let images = views.remove(0);
        let [b, _, _, _] = images.dims();
        let device = images.device();
        let n = self.grid * self.grid;
        let features = self.encoder.forward(tiles(images, self.grid)?);
        let [_, dim] = features.dims();
        // One permutation per image; position k of the puzzle shows tile `permutation[k]`.
        // Shuffling the tiles' features is shuffling the tiles: each is encoded on its own.
        let classes = self.permutations.len();
        let draws = world()
            .random_rows([b], Distribution::Uniform(0.0, 1.0), &device)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        let labels: Vec<i64> = draws
            .iter()
            .map(|u| ((u * classes as f32) as usize).min(classes - 1) as i64)
            .collect();
        let order: Vec<i64> = labels
            .iter()
            .flat_map(|&l| self.permutations[l as usize].iter().map(|&t| t as i64))
            .collect();
        let order = Tensor::<2, Int>::from_data(TensorData::new(order, [b, n]), &device);
        let puzzle = gather_tokens(features.reshape([b, n, dim]), order).reshape([b, n * dim]);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &device);
        Ok(cross_entropy(self.head.forward(puzzle), labels).into())
    }

    fn backbone(&self) -> &Backbone {
        &self.encoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permutation_set_is_distinct_valid_and_far_apart() {
        assert_eq!(all_permutations(3).len(), 6);
        assert_eq!(all_permutations(9).len(), 362_880);
        let set = permutation_set(9, 100);
        assert_eq!(set.len(), 100);
        assert_eq!(
            set[0],
            (0..9).collect::<Vec<_>>(),
            "starts from the identity"
        );
        let mut min_distance = usize::MAX;
        for (i, p) in set.iter().enumerate() {
            let mut sorted = p.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..9).collect::<Vec<_>>(), "{p:?} is a permutation");
            for q in &set[..i] {
                min_distance = min_distance.min(p.iter().zip(q).filter(|(a, b)| a != b).count());
            }
        }
        // Greedy keeps every pair of the 100 at least 6 of 9 places apart; the first 100 in
        // lexicographic order have pairs only 2 apart.
        assert!(
            min_distance >= 6,
            "closest pair differs in {min_distance} places"
        );
        assert_eq!(permutation_set(4, 24).len(), 24, "2x2: every permutation");
    }

    #[test]
    fn permutation_sets_past_the_papers_largest_are_refused_before_the_search() {
        let config = |grid, permutations| JigsawConfig {
            grid,
            permutations,
            ..JigsawConfig::default()
        };
        assert!(config(3, 1000).validate().is_ok());
        let err = config(3, 1001).validate().unwrap_err().to_string();
        assert!(err.contains("[2, 1000]") && err.contains("paper"), "{err}");
        assert!(config(2, 24).validate().is_ok());
        let err = config(2, 25).validate().unwrap_err().to_string();
        assert!(
            err.contains("[2, 24] for a 2x2 grid") && !err.contains("paper"),
            "{err}"
        );
    }

    #[test]
    fn tiles_are_the_central_square_in_row_major_order() {
        let device = Device::flex();
        // A 7x7 image: 3x3 tiles of 2x2 from the central 6x6 (offset 0: (7 - 6) / 2 = 0).
        let image = Tensor::<4>::from_data(
            TensorData::new((0..49).map(|v| v as f32).collect(), [1, 1, 7, 7]),
            &device,
        );
        let t = tiles(image, 3).unwrap();
        assert_eq!(t.dims(), [9, 1, 2, 2]);
        let v = t.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(&v[..4], &[0., 1., 7., 8.], "tile (0, 0)");
        assert_eq!(&v[4..8], &[2., 3., 9., 10.], "tile (0, 1)");
        assert_eq!(&v[12..16], &[14., 15., 21., 22.], "tile (1, 0)");
        assert!(tiles(Tensor::zeros([1, 1, 2, 2], &device), 3).is_err());
    }
}
