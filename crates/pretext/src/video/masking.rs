//! Tube masking (VideoMAE, Tong et al. 2022): one random spatial mask per clip, shared by
//! every tubelet slot in time, so a hidden patch cannot be copied from the same place in a
//! neighbouring frame; at 90% masked what is left to predict from is motion and content.

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::core::distributed::world;
use crate::vision::masking::{PatchMask, masked_count};

/// A mask over `slots x space` tokens (time-major) hiding the same [`masked_count`] spatial
/// positions in every slot.
pub fn tube_masking(
    batch: usize,
    slots: usize,
    space: usize,
    ratio: f64,
    device: &Device,
) -> PatchMask {
    let visible = space - masked_count(space, ratio);
    let noise = world().random_rows([batch, space], Distribution::Uniform(0.0, 1.0), device);
    let shuffle = noise.argsort(1);
    // The space-time order: every slot's visible positions first, then every slot's hidden.
    let in_slots = |part: Tensor<2, Int>| {
        Tensor::cat(
            (0..slots)
                .map(|t| part.clone().add_scalar((t * space) as i64))
                .collect(),
            1,
        )
    };
    let keep = in_slots(shuffle.clone().narrow(1, 0, visible));
    let hidden = in_slots(shuffle.clone().narrow(1, visible, space - visible));
    let restore = Tensor::cat(vec![keep.clone(), hidden.clone()], 1).argsort(1);
    let spatial = Tensor::cat(
        vec![
            Tensor::<2>::zeros([batch, visible], device),
            Tensor::<2>::ones([batch, space - visible], device),
        ],
        1,
    )
    .gather(1, shuffle.argsort(1));
    let mask = Tensor::cat(vec![spatial; slots], 1);
    PatchMask {
        keep,
        restore,
        mask,
        hidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(t: Tensor<2, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    #[test]
    fn tubes_hide_the_same_places_in_every_slot_and_restore_inverts() {
        let device = Device::flex();
        let (b, slots, space) = (3, 4, 10);
        let m = tube_masking(b, slots, space, 0.9, &device);
        assert_eq!(m.visible(), slots);
        let mask = m.mask.clone().into_data().try_to_vec::<f32>().unwrap();
        for row in mask.chunks(slots * space) {
            for t in 1..slots {
                assert_eq!(row[..space], row[t * space..(t + 1) * space]);
            }
            assert_eq!(row.iter().filter(|&&v| v == 1.0).count(), slots * 9);
        }
        // `restore` sends each visible position to its place among the kept tokens and each
        // hidden one past them, once each: it undoes the (kept ++ hidden) shuffle.
        let keep = ints(m.keep);
        let restore = ints(m.restore);
        let n = slots * space;
        for r in 0..b {
            let mut seen = vec![false; n];
            for p in 0..n {
                let at = restore[r * n + p] as usize;
                assert!(!seen[at]);
                seen[at] = true;
                if mask[r * n + p] == 0.0 {
                    assert!(at < slots);
                    assert_eq!(keep[r * slots + at], p as i64);
                } else {
                    assert!(at >= slots);
                }
            }
        }
        // The hidden indices are the masked positions, each once.
        let hidden = ints(m.hidden);
        let hidden_count = n - slots;
        for (r, row) in hidden.chunks(hidden_count).enumerate() {
            let mut sorted = row.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), hidden_count);
            assert!(sorted.iter().all(|&p| mask[r * n + p as usize] == 1.0));
        }
    }
}
