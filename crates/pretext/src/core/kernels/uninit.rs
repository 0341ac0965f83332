//! Outputs a kernel writes in full, handed to it without being zeroed first: zeroing is a pass
//! over fresh memory of its own (the memsets of the layer norm's and the row gather's outputs
//! were about 1.5% of a VideoMAE step).

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// `n` floats, every one written by `fill`, which gets them uninitialised.
///
/// # Safety
/// `fill` must write every element of the slice it gets (`MaybeUninit::write`), on every path
/// that returns: the vector exposes all `n` after it.
pub unsafe fn written(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    fill(&mut out.spare_capacity_mut()[..n]);
    // SAFETY: the capacity is `n`, and the caller vouches that `fill` wrote each element.
    unsafe { out.set_len(n) };
    out
}

/// [`written`] in parallel tasks of `task` elements (the last may be shorter): `fill(first,
/// chunk)` writes elements `first..first + chunk.len()`.
///
/// # Safety
/// As [`written`]: `fill` must write every element of every chunk it gets.
pub unsafe fn par_written(
    n: usize,
    task: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let task = task.max(1);
    // SAFETY: the chunks cover the slice, and the caller vouches for each one.
    unsafe {
        written(n, |out| {
            out.par_chunks_mut(task)
                .enumerate()
                .for_each(|(i, chunk)| fill(i * task, chunk))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_writes_its_own_elements() {
        // SAFETY: each chunk is written whole.
        let v = unsafe {
            par_written(10, 4, |first, chunk| {
                for (i, x) in chunk.iter_mut().enumerate() {
                    x.write((first + i) as f32);
                }
            })
        };
        assert_eq!(v, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    }
}
