//! A 2-D map of embeddings for people to look at: t-SNE (Barnes-Hut, the `bhtsne` crate),
//! started from the PCA projection so the same features give the same map; PCA alone for
//! sets too small for t-SNE's perplexity. The map says which it is.

use anyhow::Result;
use plotters::prelude::*;
use rayon::prelude::*;

use crate::core::eval::Features;
use crate::core::report::ARM_COLORS;

/// Points of a 2-D map and the method that drew them ("t-SNE" or "PCA").
#[derive(Debug, Clone)]
pub struct Map2d {
    pub method: &'static str,
    pub points: Vec<[f32; 2]>,
}

/// t-SNE's usual neighbourhood size.
const PERPLEXITY: f32 = 30.0;

/// Map `features` (L2-normalised first, as kNN sees them) to the plane.
pub fn map_2d(features: &Features) -> Map2d {
    let normalized = features.normalized();
    let pca = pca_2d(&normalized);
    let n = normalized.len();
    // bhtsne refuses a perplexity above (n - 1) / 3.
    if n < 3 * PERPLEXITY as usize + 1 {
        return Map2d {
            method: "PCA",
            points: pca,
        };
    }
    // openTSNE's initialisation: the PCA coordinates scaled to a standard deviation of 1e-4.
    let spread = (pca.iter().map(|p| p[0] * p[0]).sum::<f32>() / n as f32)
        .sqrt()
        .max(1e-12);
    let init: Vec<f32> = pca
        .iter()
        .flat_map(|p| [p[0] * 1e-4 / spread, p[1] * 1e-4 / spread])
        .collect();
    let rows: Vec<&[f32]> = normalized.values.chunks(normalized.dim).collect();
    let neighbors = nearest_neighbors(&normalized, 3 * PERPLEXITY as usize);
    let fit = || {
        let mut tsne = bhtsne::tSNE::<f32, &[f32], 2>::new(&rows);
        tsne.perplexity(PERPLEXITY)
            .epochs(750)
            .initial_embedding(init.clone())
            .barnes_hut_with_neighbors(0.5, &neighbors);
        tsne.embedding()
    };
    // Exact neighbours (bhtsne's own search starts from random vantage points) and one thread
    // (it sums forces in parallel, in an order that varies with timing) make the map the same
    // on every run.
    let embedding = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(fit),
        Err(_) => fit(),
    };
    Map2d {
        method: "t-SNE",
        points: embedding.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
    }
}

/// The `k` nearest rows of every row by Euclidean distance, ties broken by index.
fn nearest_neighbors(features: &Features, k: usize) -> Vec<Vec<bhtsne::Neighbor<f32>>> {
    let n = features.len();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut all: Vec<bhtsne::Neighbor<f32>> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let d2: f32 = features
                        .row(i)
                        .iter()
                        .zip(features.row(j))
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum();
                    bhtsne::Neighbor {
                        index: j,
                        distance: d2.sqrt(),
                    }
                })
                .collect();
            let by = |a: &bhtsne::Neighbor<f32>, b: &bhtsne::Neighbor<f32>| {
                a.distance
                    .total_cmp(&b.distance)
                    .then(a.index.cmp(&b.index))
            };
            let k = k.min(all.len());
            if k < all.len() {
                all.select_nth_unstable_by(k, by);
                all.truncate(k);
            }
            all.sort_by(by);
            all
        })
        .collect()
}

/// The projection on the two leading principal components (power iteration with deflation
/// from a fixed start, so it is deterministic).
pub fn pca_2d(features: &Features) -> Vec<[f32; 2]> {
    let (n, d) = (features.len(), features.dim);
    if n == 0 || d == 0 {
        return Vec::new();
    }
    let mut mean = vec![0f64; d];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(features.row(i)) {
            *m += v as f64 / n as f64;
        }
    }
    let centred = |i: usize| {
        features
            .row(i)
            .iter()
            .zip(&mean)
            .map(|(&v, m)| v as f64 - m)
    };
    // X^T X v without forming the covariance: two passes over the rows.
    let apply = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0f64; d];
        for i in 0..n {
            let dot: f64 = centred(i).zip(v).map(|(x, y)| x * y).sum();
            for (o, x) in out.iter_mut().zip(centred(i)) {
                *o += dot * x;
            }
        }
        out
    };
    let normalise = |v: &mut Vec<f64>| {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
        v.iter_mut().for_each(|x| *x /= norm);
    };
    let mut components: Vec<Vec<f64>> = Vec::new();
    for c in 0..2 {
        let mut v: Vec<f64> = (0..d)
            .map(|j| 1.0 + ((j * 7 + c * 3) % 11) as f64)
            .collect();
        for _ in 0..100 {
            let mut next = apply(&v);
            for prev in &components {
                let dot: f64 = next.iter().zip(prev).map(|(a, b)| a * b).sum();
                next.iter_mut().zip(prev).for_each(|(a, b)| *a -= dot * b);
            }
            normalise(&mut next);
            v = next;
        }
        components.push(v);
    }
    (0..n)
        .map(|i| {
            let project = |c: &[f64]| centred(i).zip(c).map(|(x, y)| x * y).sum::<f64>() as f32;
            [project(&components[0]), project(&components[1])]
        })
        .collect()
}

/// The map as an SVG scatter plot, one colour per class, with a legend.
pub fn scatter_svg(map: &Map2d, labels: &[u32], class_names: &[String]) -> Result<String> {
    draw_scatter(map, labels, class_names)
        .map_err(|e| anyhow::anyhow!("cannot draw the embedding map: {e}"))
}

fn draw_scatter(
    map: &Map2d,
    labels: &[u32],
    class_names: &[String],
) -> Result<String, Box<dyn std::error::Error>> {
    let range = |k: usize| {
        let lo = map
            .points
            .iter()
            .map(|p| p[k])
            .fold(f32::INFINITY, f32::min);
        let hi = map
            .points
            .iter()
            .map(|p| p[k])
            .fold(f32::NEG_INFINITY, f32::max);
        let pad = ((hi - lo) * 0.05).max(1e-6);
        if lo.is_finite() {
            (lo - pad)..(hi + pad)
        } else {
            -1.0..1.0
        }
    };
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let color = |c: usize| -> RGBColor {
        // Ten classes get the tab10 colours; more cycle through a wider palette.
        if c < ARM_COLORS.len() {
            ARM_COLORS[c]
        } else {
            let p = Palette99::pick(c).to_rgba();
            RGBColor(p.0, p.1, p.2)
        }
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("test embeddings ({}, coloured by class)", map.method),
                ("sans-serif", 20),
            )
            .margin(15)
            .build_cartesian_2d(range(0), range(1))?;
        for c in 0..classes {
            let name = class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
            let col = color(c);
            chart
                .draw_series(
                    map.points
                        .iter()
                        .zip(labels)
                        .filter(|(_, l)| **l as usize == c)
                        .map(|(p, _)| Circle::new((p[0], p[1]), 2, col.filled())),
                )?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, col.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_direction_of_largest_spread() {
        // Points along (1, 1, 0) with small noise in the third axis.
        let mut values = Vec::new();
        for i in 0..50 {
            let t = (i as f32 - 24.5) / 10.0;
            values.extend([t, t, 0.01 * ((i * 7 % 5) as f32 - 2.0)]);
        }
        let f = Features { dim: 3, values };
        let p = pca_2d(&f);
        // The first coordinate is the position along the line (up to sign): |x| = |t| sqrt(2).
        for (i, q) in p.iter().enumerate() {
            let t = (i as f32 - 24.5) / 10.0;
            assert!(
                (q[0].abs() - t.abs() * 2f32.sqrt()).abs() < 1e-3,
                "{i}: {q:?}"
            );
            assert!(q[1].abs() < 0.05);
        }
        assert_eq!(map_2d(&f).method, "PCA", "50 points are too few for t-SNE");
    }

    #[test]
    fn tsne_keeps_clusters_apart_and_repeats() {
        // Three tight clusters in 8 dimensions, 40 points each.
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for i in 0..120 {
            let c = i % 3;
            for j in 0..8 {
                let centre = if j == c { 1.0 } else { 0.0 };
                values.push(centre + 0.02 * (((i * 13 + j * 7) % 17) as f32 / 17.0 - 0.5));
            }
            labels.push(c as u32);
        }
        let f = Features { dim: 8, values };
        let map = map_2d(&f);
        assert_eq!(map.method, "t-SNE");
        let again = map_2d(&f);
        assert_eq!(map.points, again.points, "same features, same map");
        let centre = |c: u32| {
            let pts: Vec<&[f32; 2]> = map
                .points
                .iter()
                .zip(&labels)
                .filter(|(_, l)| **l == c)
                .map(|(p, _)| p)
                .collect();
            let n = pts.len() as f32;
            [
                pts.iter().map(|p| p[0]).sum::<f32>() / n,
                pts.iter().map(|p| p[1]).sum::<f32>() / n,
            ]
        };
        let spread = |c: u32| {
            let m = centre(c);
            let d: Vec<f32> = map
                .points
                .iter()
                .zip(&labels)
                .filter(|(_, l)| **l == c)
                .map(|(p, _)| ((p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2)).sqrt())
                .collect();
            d.iter().sum::<f32>() / d.len() as f32
        };
        let (a, b) = (centre(0), centre(1));
        let gap = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        assert!(gap > 2.0 * spread(0).max(spread(1)), "gap {gap}");
        let svg = scatter_svg(&map, &labels, &["a".into(), "b".into(), "c".into()]).unwrap();
        assert!(svg.contains("<circle") && svg.contains("t-SNE"));
    }
}
