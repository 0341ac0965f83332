//! Rows picked by index within each sequence, `out[b, j, :] = x[b, index[b, j], :]`, and the
//! backward that adds each picked row's gradient back where it came from.
//!
//! Why: masked models pick tokens this way three times a step (the visible tokens for the
//! encoder, the whole sequence back in order for the decoder, the hidden patches for the loss).
//! burn's `gather` takes an index per element, so the row's index is first expanded over its
//! `width` values (a copy), then read element by element, and its backward is a scatter-add
//! element by element: together about 5% of a VideoMAE step (docs/video.md). Here a row is one
//! copy, forward and back.

use rayon::prelude::*;

use super::uninit::par_written;

/// `batch` sequences of `rows` rows of `width` values, `picked` indices per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickShape {
    pub batch: usize,
    pub rows: usize,
    pub picked: usize,
    pub width: usize,
}

impl PickShape {
    fn check(&self, index: &[u32]) {
        assert_eq!(
            index.len(),
            self.batch * self.picked,
            "gather rows: index length"
        );
        if let Some(&bad) = index.iter().find(|&&i| i as usize >= self.rows) {
            panic!("gather rows: index {bad} out of {} rows", self.rows);
        }
    }
}

/// `[batch, picked, width]`: sequence `b`'s rows `index[b, ..]`.
pub fn forward(x: &[f32], index: &[u32], s: PickShape) -> Vec<f32> {
    s.check(index);
    assert_eq!(
        x.len(),
        s.batch * s.rows * s.width,
        "gather rows: input length"
    );
    let n = s.batch * s.picked * s.width;
    if n == 0 {
        return Vec::new();
    }
    // SAFETY: sequence `b`'s chunk is `picked` rows of `width`, each written by one copy.
    unsafe {
        par_written(n, s.picked * s.width, |first, out| {
            let b = first / (s.picked * s.width);
            let x = &x[b * s.rows * s.width..(b + 1) * s.rows * s.width];
            let index = &index[b * s.picked..(b + 1) * s.picked];
            for (row, &i) in out.chunks_mut(s.width).zip(index) {
                let i = i as usize;
                row.write_copy_of_slice(&x[i * s.width..(i + 1) * s.width]);
            }
        })
    }
}

/// `[batch, rows, width]`: each picked row's gradient added to the row it was picked from
/// (in index order, so a row picked twice sums the same way every time), zero elsewhere.
pub fn backward(dy: &[f32], index: &[u32], s: PickShape) -> Vec<f32> {
    s.check(index);
    assert_eq!(
        dy.len(),
        s.batch * s.picked * s.width,
        "gather rows backward: gradient length"
    );
    let mut dx = vec![0.0f32; s.batch * s.rows * s.width];
    if dy.is_empty() {
        return dx;
    }
    dx.par_chunks_mut(s.rows * s.width)
        .zip(dy.par_chunks(s.picked * s.width))
        .zip(index.par_chunks(s.picked))
        .for_each(|((dx, dy), index)| {
            for (row, &i) in dy.chunks(s.width).zip(index) {
                let i = i as usize;
                for (d, &g) in dx[i * s.width..(i + 1) * s.width].iter_mut().zip(row) {
                    *d += g;
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: PickShape = PickShape {
        batch: 2,
        rows: 4,
        picked: 3,
        width: 2,
    };

    #[test]
    fn picks_rows_and_adds_gradients_back_including_repeats() {
        let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        // Sequence 0 picks rows 3, 0, 3 (row 3 twice); sequence 1 picks rows 1, 2, 0.
        let index = [3, 0, 3, 1, 2, 0];
        let out = forward(&x, &index, SHAPE);
        assert_eq!(
            out,
            [6., 7., 0., 1., 6., 7., 10., 11., 12., 13., 8., 9.],
            "row r of sequence b holds b·8 + 2r and b·8 + 2r + 1"
        );
        let dy: Vec<f32> = (1..=12).map(|i| i as f32).collect();
        let dx = backward(&dy, &index, SHAPE);
        assert_eq!(
            dx,
            [
                3., 4., 0., 0., 0., 0., 6., 8., // row 3 took dy rows 0 and 2
                11., 12., 7., 8., 9., 10., 0., 0.
            ]
        );
    }

    #[test]
    #[should_panic(expected = "index 4 out of 4 rows")]
    fn an_index_past_the_rows_is_refused() {
        forward(&[0.0; 16], &[0, 1, 4, 0, 0, 0], SHAPE);
    }
}
