//! Data parallelism inside one process (`train.replicas = R`): each batch is cut into R
//! contiguous shares that train at once, each on its own copy of the model in its own thread
//! pool, and their gradients are summed in replica order before the one optimizer step.
//!
//! Why: on a few CPU cores the small products of a small model split poorly over threads
//! inside every op (VideoMAE's 16-wide attention heads over 320 tokens: two threads run it
//! 1.6x faster than one). R replicas of one thread each keep every op on one core and wait
//! for each other once a step, as R MPI ranks do (docs/distributed.md), without the processes
//! or the copies of the data.
//!
//! - Each replica's copy holds the parameters' values under fresh autodiff leaves
//!   ([`Releaf`]): copies sharing leaves would share one autodiff graph, whose backward holds a
//!   lock for its whole length, and the replicas would take turns.
//! - Random draws: the device's generator is one stream that threads would race for. A
//!   replica's [`World::random_rows`](super::World::random_rows) draws from its own copy of the
//!   flex device's generator, seeded as the loop seeds the device for that batch, draws the
//!   whole batch's values and keeps its rows: every example draws what it draws with one
//!   replica, so R replicas train what one does on the same batches, up to the order in which
//!   floats are summed (tested in `core::train`).
//! - burn initialises a parameter when it is first read, from the device's generator at that
//!   moment: with one replica, during the first forward, after that batch's draws. So while
//!   the model has parameters not yet initialised (a fresh run's first step), the shares run
//!   one after another in the caller's thread on the model itself, each drawing from the
//!   device seeded for the batch, and the parameters are initialised as one replica
//!   initialises them; the rest (parameters no forward reads) are initialised after.

use std::cell::RefCell;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use burn_std::rand::{SeedableRng, StdRng};

/// One thread pool per replica; the global pool (`--threads`) keeps the loader's work.
pub struct Replicas {
    pools: Vec<rayon::ThreadPool>,
}

impl Replicas {
    /// `count` replicas sharing the process's threads (`--threads`, all cores by default):
    /// each gets `threads / count` of them, at least one.
    pub fn new(count: usize) -> Result<Replicas> {
        if count == 0 {
            bail!("train.replicas must be at least 1");
        }
        let threads = rayon::current_num_threads();
        if count > threads {
            eprintln!(
                "warning: train.replicas = {count} runs {count} threads at once, more than the \
                 {threads} this run was given (--threads)"
            );
        }
        let each = (threads / count).max(1);
        let pools = (0..count)
            .map(|r| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(each)
                    .thread_name(move |i| format!("pretext-replica-{r}.{i}"))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Replicas { pools })
    }

    pub fn count(&self) -> usize {
        self.pools.len()
    }

    /// `work(copy, share)` for every share at once, replica `r` in pool `r` on its own copy
    /// of `model`, drawing from its stream of the draws seeded `seed`; the results in replica
    /// order. While `model` has parameters not yet initialised, the shares run one after
    /// another on `model` itself, drawing from `device` (see the module's notes).
    pub fn run<M, B, T>(
        &self,
        model: &M,
        shares: Vec<B>,
        (seed, device): (u64, &Device),
        work: impl Fn(&M, B) -> T + Sync,
    ) -> Vec<T>
    where
        M: Module,
        B: Send,
        T: Send,
    {
        let count = shares.len();
        assert!(count <= self.count(), "more shares than replicas");
        if !initialised(model) {
            let results = shares
                .into_iter()
                .enumerate()
                .map(|(replica, share)| {
                    device.seed(seed);
                    let _stream = StreamGuard::enter(Source::Device, replica, count);
                    work(model, share)
                })
                .collect();
            model.visit(&mut Initialise);
            return results;
        }
        std::thread::scope(|scope| {
            let running: Vec<_> = shares
                .into_iter()
                .zip(&self.pools)
                .enumerate()
                .map(|(replica, (share, pool))| {
                    let copy = model.clone().map(&mut Releaf);
                    let work = &work;
                    scope.spawn(move || {
                        pool.install(move || {
                            // What the flex device's `seed` builds (burn-flex `FlexRng`).
                            let rng = StdRng::seed_from_u64(seed);
                            let _stream =
                                StreamGuard::enter(Source::Own(Box::new(rng)), replica, count);
                            work(&copy, share)
                        })
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }
}

/// Whether every parameter of `model` holds its value (none waits for its first read).
fn initialised<M: Module>(model: &M) -> bool {
    struct Lazy(bool);
    impl ModuleVisitor for Lazy {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 |= !param.is_initialized();
        }
    }
    let mut lazy = Lazy(false);
    model.visit(&mut lazy);
    !lazy.0
}

/// Initialises every parameter not yet read.
struct Initialise;

impl ModuleVisitor for Initialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// The model's trainable parameters under new autodiff leaves, same ids and values.
struct Releaf;

impl ModuleMapper for Releaf {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            if t.is_require_grad() {
                t.detach().require_grad()
            } else {
                t
            }
        })
    }
}

/// Where a replica's draws come from.
enum Source {
    /// Its own copy of the device's generator.
    Own(Box<StdRng>),
    /// The device's generator (the shares run one after another).
    Device,
}

/// A replica's random draws: their source, and the replica's place among `count`.
struct Stream {
    source: Source,
    replica: usize,
    count: usize,
}

thread_local! {
    static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
}

/// Sets this thread's stream for one replica's work, and clears it after.
struct StreamGuard;

impl StreamGuard {
    fn enter(source: Source, replica: usize, count: usize) -> StreamGuard {
        STREAM.with(|s| {
            *s.borrow_mut() = Some(Stream {
                source,
                replica,
                count,
            })
        });
        StreamGuard
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        STREAM.with(|s| *s.borrow_mut() = None);
    }
}

/// Inside a replica: its rows of a draw of `shape` (its share's rows first) for the whole batch
/// of all replicas, from the replica's stream. Outside one: `None`.
pub(super) fn replica_rows<const D: usize>(
    shape: [usize; D],
    distribution: Distribution,
    device: &Device,
) -> Option<Tensor<D>> {
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        let stream = s.as_mut()?;
        let mut whole = shape;
        whole[0] *= stream.count;
        let drawn = match &mut stream.source {
            Source::Own(rng) => Tensor::<D>::from_data(
                TensorData::random::<f32, _, _>(whole, distribution, rng.as_mut()),
                device,
            ),
            Source::Device => Tensor::<D>::random(whole, distribution, device),
        };
        let rows = shape[0];
        Some(drawn.narrow(0, stream.replica * rows, rows))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_draws_its_rows_of_what_the_device_draws_for_the_whole_batch() {
        let device = Device::flex();
        device.seed(7);
        let whole: Vec<f32> = Tensor::<2>::random([6, 3], Distribution::Uniform(0.0, 1.0), &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let second: Vec<f32> = Tensor::<2>::random([6, 3], Distribution::Normal(0.0, 1.0), &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for replica in 0..3 {
            let _stream =
                StreamGuard::enter(Source::Own(Box::new(StdRng::seed_from_u64(7))), replica, 3);
            let rows = |d| {
                replica_rows([2, 3], d, &device)
                    .unwrap()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap()
            };
            // Two draws in a row: the stream goes on as the device's does.
            assert_eq!(
                rows(Distribution::Uniform(0.0, 1.0)),
                whole[replica * 6..(replica + 1) * 6]
            );
            assert_eq!(
                rows(Distribution::Normal(0.0, 1.0)),
                second[replica * 6..(replica + 1) * 6]
            );
        }
        assert!(replica_rows([2, 3], Distribution::Default, &device).is_none());
    }
}
