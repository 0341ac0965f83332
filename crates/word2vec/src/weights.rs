//! The weight matrices, the lock-free view the worker threads share, and each thread's private
//! copies of the most frequent words' rows.

use std::marker::PhantomData;

use crate::simd::{self, LANE, Lane};

/// A row-major matrix of padded rows.
pub(crate) struct Matrix {
    pub(crate) data: Vec<Lane>,
    pub(crate) stride: usize,
    pub(crate) rows: usize,
}

impl Matrix {
    pub(crate) fn zeros(rows: usize, stride: usize) -> Matrix {
        Matrix {
            data: vec![Lane::default(); rows * stride],
            stride,
            rows,
        }
    }

    /// Row `i`, padding included.
    pub(crate) fn row(&self, i: usize) -> &[Lane] {
        &self.data[i * self.stride..(i + 1) * self.stride]
    }

    /// The first `dim` floats of row `i`.
    pub(crate) fn floats(&self, i: usize, dim: usize) -> &[f32] {
        &simd::as_floats(self.row(i))[..dim]
    }

    pub(crate) fn shared(&mut self) -> Hogwild<'_> {
        Hogwild {
            ptr: self.data.as_mut_ptr(),
            rows: self.rows,
            stride: self.stride,
            hot: 0,
            hot_ptr: std::ptr::null_mut(),
            _life: PhantomData,
        }
    }
}

/// Lock-free view of a [`Matrix`] shared by all worker threads (Hogwild!, Recht et al. 2011).
///
/// Every thread reads and writes rows through raw pointers with plain (non-atomic) loads and
/// stores, exactly as word2vec.c, gensim and fastText do. Two threads may touch the same row at
/// the same time; an update can then be lost or be computed from a half-updated row. SGD
/// tolerates this (the rows touched concurrently are rare and the errors are of the size of one
/// step), and it is what makes the trainer scale. In Rust's memory model such concurrent
/// plain accesses are a data race; we confine them to this type: rows are created only for the
/// duration of one kernel call, no reference outlives the `std::thread::scope` that owns the
/// matrices, within one thread no two live row slices of the same matrix ever alias, `f32` has
/// no invalid bit patterns, and nothing reads the weights for control flow that could go out of
/// bounds (indices come from the vocabulary, never from weights).
///
/// A thread's view may redirect the first `hot` rows to its own copies ([`HotRows`]); rows
/// keep their index, so a kernel never knows which copy it works on.
#[derive(Clone, Copy)]
pub(crate) struct Hogwild<'a> {
    ptr: *mut Lane,
    rows: usize,
    pub(crate) stride: usize,
    hot: u32,
    hot_ptr: *mut Lane,
    _life: PhantomData<&'a mut [Lane]>,
}

// SAFETY: see the type's documentation: concurrent unsynchronised row updates are the
// intended Hogwild semantics; the pointer is valid for the lifetime 'a of the borrowed matrix.
unsafe impl Send for Hogwild<'_> {}
// SAFETY: as above.
unsafe impl Sync for Hogwild<'_> {}

impl Hogwild<'_> {
    /// Row `i`.
    ///
    /// # Safety
    /// `i < rows`, and the caller holds no other slice of the same row in this thread.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row(&self, i: u32) -> &mut [Lane] {
        debug_assert!((i as usize) < self.rows);
        // SAFETY: in bounds per the contract (hot rows have the same offsets in their copy);
        // concurrent access is the Hogwild design above.
        unsafe { std::slice::from_raw_parts_mut(self.row_ptr(i), self.stride) }
    }

    /// The address of row `i` (for kernels that hold several rows without references).
    #[inline(always)]
    pub(crate) fn row_ptr(&self, i: u32) -> *mut Lane {
        debug_assert!((i as usize) < self.rows);
        let base = if i < self.hot { self.hot_ptr } else { self.ptr };
        base.wrapping_add(i as usize * self.stride)
    }

    /// How many of the first rows this view redirects to a thread's own copies.
    pub(crate) fn hot(&self) -> u32 {
        self.hot
    }

    /// Starts loading row `i` into the cache (`i` need not be valid: prefetches never fault).
    #[inline(always)]
    pub(crate) fn prefetch(&self, i: u32) {
        simd::prefetch(self.row_ptr(i), self.stride);
    }
}

/// One thread's private copies of a matrix's first rows: the most frequent words', since
/// vocabulary ids are sorted by count.
///
/// With several threads on one shared matrix, the rows both threads write most are the
/// frequent words' (every noise draw favours them), and each such write moves the row's cache
/// lines from the other core, which costs from tens to hundreds of nanoseconds depending on
/// where the host puts the two cores. Each thread therefore trains its own copies of those rows
/// and merges what it learned into the shared rows every few thousand words, as Ji et al.'s
/// distributed pWord2Vec synchronises its hot words across machines. The merge adds the
/// thread's change since its last merge (its copy minus the snapshot it took then) to the
/// shared rows and takes the result as its new copy and snapshot, so no thread's update is
/// lost: between merges a thread only misses the others' latest steps on those rows.
pub(crate) struct HotRows {
    /// Rows `..rows` of the matrix, as this thread trains them.
    copy: Vec<Lane>,
    /// The same rows as they were after this thread's last merge.
    snapshot: Vec<Lane>,
}

impl HotRows {
    /// Copies of the first `rows` rows of `shared` (which no thread writes yet).
    pub(crate) fn new(shared: &Hogwild<'_>, rows: usize) -> HotRows {
        let rows = rows.min(shared.rows);
        let len = rows * shared.stride;
        // SAFETY: the first `rows` rows are in bounds, and no worker runs yet.
        let start = unsafe { std::slice::from_raw_parts(shared.ptr, len) };
        HotRows {
            copy: start.to_vec(),
            snapshot: start.to_vec(),
        }
    }

    /// `shared`, with its hot rows redirected to this thread's copies. The view must not be
    /// used after `self` is dropped.
    pub(crate) fn view<'a>(&mut self, shared: Hogwild<'a>) -> Hogwild<'a> {
        Hogwild {
            hot: (self.copy.len() / shared.stride.max(1)) as u32,
            hot_ptr: self.copy.as_mut_ptr(),
            ..shared
        }
    }

    /// Adds this thread's change since its last merge to the shared rows, and starts again
    /// from the result.
    ///
    /// # Safety
    /// The caller holds the lock that serialises merges: hot rows of `shared` are written by
    /// merges only (every thread trains its own copies), so no other thread touches them now.
    /// No slice of this thread's copies is alive (the view handed out by [`HotRows::view`]
    /// only holds a pointer).
    pub(crate) unsafe fn merge(&mut self, shared: &Hogwild<'_>) {
        let len = self.copy.len() * LANE;
        // Through the pointer the view holds, so that pointer stays valid.
        let copy = self.copy.as_mut_ptr().cast::<f32>();
        let snapshot = self.snapshot.as_mut_ptr().cast::<f32>();
        let master = shared.ptr.cast::<f32>();
        for k in 0..len {
            // SAFETY: `k` is below the length of all three buffers (`HotRows::new`); see the
            // function's contract for exclusive access.
            unsafe {
                let m = *master.add(k) + (*copy.add(k) - *snapshot.add(k));
                *master.add(k) = m;
                *copy.add(k) = m;
                *snapshot.add(k) = m;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, values: &[f32]) -> Matrix {
        let mut m = Matrix::zeros(rows, 1);
        for (r, &v) in values.iter().enumerate() {
            m.data[r].0[0] = v;
        }
        m
    }

    /// Two threads train their own copies of the hot rows; after both merge, the shared rows
    /// hold the start plus both threads' changes, rows past the hot ones were trained in place,
    /// and each thread's copy carries on from what the shared rows were when it merged.
    #[test]
    fn merges_add_every_threads_change_to_the_shared_rows() {
        let mut m = matrix(3, &[1.0, 10.0, 100.0]);
        let shared = m.shared();
        let (mut a, mut b) = (HotRows::new(&shared, 2), HotRows::new(&shared, 2));
        let (va, vb) = (a.view(shared), b.view(shared));
        // SAFETY: one thread, one row slice at a time; merges run alone.
        unsafe {
            va.row(0)[0].0[0] += 0.5; // thread a, hot row 0: its copy only
            vb.row(0)[0].0[0] += 0.25; // thread b, hot row 0: its own copy
            vb.row(1)[0].0[0] -= 2.0;
            va.row(2)[0].0[0] += 7.0; // past the hot rows: the shared row itself
            assert_eq!(
                shared.row(0)[0].0[0],
                1.0,
                "hot rows are private until a merge"
            );
            assert_eq!(shared.row(2)[0].0[0], 107.0);
            a.merge(&shared);
            assert_eq!(shared.row(0)[0].0[0], 1.5);
            assert_eq!(va.row(0)[0].0[0], 1.5);
            assert_eq!(vb.row(0)[0].0[0], 1.25, "b has not merged yet");
            b.merge(&shared);
            assert_eq!(shared.row(0)[0].0[0], 1.75);
            assert_eq!(shared.row(1)[0].0[0], 8.0);
            assert_eq!(vb.row(0)[0].0[0], 1.75);
            // a's next merge adds only what it learned after its last one.
            va.row(0)[0].0[0] += 1.0;
            a.merge(&shared);
            assert_eq!(shared.row(0)[0].0[0], 2.75);
            assert_eq!(shared.row(1)[0].0[0], 8.0);
        }
    }
}
