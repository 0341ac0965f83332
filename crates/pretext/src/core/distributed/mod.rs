//! Data-parallel training over MPI. Every rank (one process, one device) holds a replica of the
//! model, trains on its own share of each global batch and averages its gradients with the
//! other ranks' before each optimizer step, so every replica takes the same step. This file is
//! the one place that knows of ranks: the loader takes the rank's share of each batch
//! ([`World::share`]), the training loop weighs losses and averages gradients
//! ([`World::weigh`], [`average_gradients`]), checks that the replicas agree
//! ([`World::check_replicas`]) and lets rank 0 alone write ([`World::is_root`]). Without the
//! `mpi` feature, or outside `mpirun`, the world is one process and all of this is the identity.
//! Data parallelism inside one process, over threads, is [`Replicas`] (`replicas.rs`).
//!
//! The collectives are MPI's (Open MPI or MPICH through the `mpi` crate): burn 0.22 has no
//! cross-process collective for its CPU and wgpu backends, and pretext writes none of its own.
//! Gradients travel as host `f32` buffers, one all-reduce per bucket.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;

mod batch_norm;
mod gather;
mod replicas;
pub use batch_norm::batch_norm_over_ranks;
pub use gather::{gather_rows, sum_rows_over_ranks};
pub use replicas::Replicas;

/// This process's place in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
}

static WORLD: OnceLock<World> = OnceLock::new();
static SYNC_BATCHNORM: AtomicBool = AtomicBool::new(false);

/// `train.sync_batchnorm`: batch norm layers in training take the statistics of the global
/// batch ([`batch_norm_over_ranks`]). Set by the training loop.
pub fn set_sync_batchnorm(on: bool) {
    SYNC_BATCHNORM.store(on, Ordering::SeqCst);
}

/// `values` summed over the ranks in place (a [`crate::core::kernels::batch_norm::Reduce`] for
/// the batch-norm kernel's per-channel sums).
pub fn sum_over_ranks(values: &mut [f64]) {
    world().sum(values);
}

/// Whether batch norm layers synchronise their statistics over the ranks now.
pub fn sync_batchnorm() -> bool {
    world().is_distributed() && SYNC_BATCHNORM.load(Ordering::SeqCst)
}

/// The world this process trains in: one process unless [`init`] joined an MPI job.
pub fn world() -> World {
    *WORLD.get_or_init(|| World { rank: 0, size: 1 })
}

/// The number of processes the launcher started, from the environment Open MPI's `mpirun` or
/// an MPICH/PMI launcher gives each of them.
fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// This rank's number among the ranks on its machine (from the launcher's environment: Open
/// MPI's or MPICH's); 0 outside a launcher.
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse().ok())
    .unwrap_or(0)
}

/// Holds MPI up while alive; dropping it finalises MPI.
pub struct MpiSession {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// Join the MPI job this process was launched in (by `mpirun`), if any. Call it once, from
/// `main`, before anything else, and hold what it returns until the process ends.
pub fn init() -> Result<MpiSession> {
    let launched = launched_size();
    #[cfg(feature = "mpi")]
    {
        if launched.is_none() {
            return Ok(MpiSession { _universe: None });
        }
        use mpi::traits::Communicator;
        // Funneled: only the training thread calls MPI; loader threads never do.
        let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
            bail!("MPI was already initialised in this process");
        };
        let comm = universe.world();
        let this = World {
            rank: comm.rank() as usize,
            size: comm.size() as usize,
        };
        if WORLD.set(this).is_err() && world() != this {
            bail!("the MPI world was read before MPI was initialised");
        }
        Ok(MpiSession {
            _universe: Some(universe),
        })
    }
    #[cfg(not(feature = "mpi"))]
    {
        if let Some(n) = launched.filter(|&n| n > 1) {
            bail!(
                "started by mpirun as one of {n} processes, but this pretext was built without \
                 MPI; build it with `cargo build --release -p pretext-cli --features mpi` (it \
                 needs Open MPI: apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
            );
        }
        Ok(MpiSession {})
    }
}

/// End the whole job at once with `code` after an error on this rank: the other ranks may be
/// waiting in a collective that this one will never join, and a clean exit would leave them
/// there. Returns only when there is no job to end.
pub fn abort_job(code: i32) {
    #[cfg(feature = "mpi")]
    if world().size > 1 {
        use mpi::traits::Communicator;
        mpi::topology::SimpleCommunicator::world().abort(code);
    }
    let _ = code;
}

impl World {
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    pub fn is_distributed(&self) -> bool {
        self.size > 1
    }

    /// Refuse a global batch that does not split evenly over the ranks.
    pub fn check_batch(&self, batch_size: usize) -> Result<()> {
        if !batch_size.is_multiple_of(self.size) {
            bail!(
                "batch_size = {batch_size} is the global batch and must split evenly over the \
                 {} ranks (mpirun -np {}); choose a multiple of {}",
                self.size,
                self.size,
                self.size
            );
        }
        Ok(())
    }

    /// This rank's contiguous share of a global batch (what the loader hands it).
    pub fn share<'a, T>(&self, batch: &'a [T]) -> &'a [T] {
        let n = batch.len() / self.size;
        &batch[self.rank * n..(self.rank + 1) * n]
    }

    /// Random values for this rank's rows of a global batch: the device's stream, seeded alike
    /// on every rank, draws `shape` for the whole global batch (the first dimension times the
    /// ranks), and this rank keeps its own contiguous rows, as [`Self::share`] hands it its
    /// examples. So each example draws what it draws in one process on the whole batch (a
    /// mask, a permutation, noise), and no two ranks draw alike.
    pub fn random_rows<const D: usize>(
        &self,
        shape: [usize; D],
        distribution: Distribution,
        device: &Device,
    ) -> Tensor<D> {
        // In-process replicas (`train.replicas`) each draw from a stream of their own.
        if let Some(rows) = replicas::replica_rows(shape, distribution, device) {
            return rows;
        }
        if self.size == 1 {
            return Tensor::random(shape, distribution, device);
        }
        let mut global = shape;
        global[0] *= self.size;
        Tensor::random(global, distribution, device).narrow(0, self.rank * shape[0], shape[0])
    }

    /// Sum `values` over the ranks, in place.
    pub fn sum<T: Summable>(&self, values: &mut [T]) {
        if self.size > 1 {
            let _waiting = Waiting::enter();
            T::all_reduce_sum(values);
        }
    }

    /// Every rank's `value`, in rank order.
    pub fn gather(&self, value: f64) -> Vec<f64> {
        all_gather_values(&[value], self.size)
    }

    /// Wait until every rank is here.
    pub fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if self.size > 1 {
            use mpi::traits::CommunicatorCollectives;
            mpi::topology::SimpleCommunicator::world().barrier();
        }
    }

    /// The factor this rank's loss is scaled by, and the loss of the global batch. A loss that
    /// is a mean over `weight` terms (masked tokens) counts in proportion to them, so that the
    /// averaged gradient is that of the mean over the whole batch: each rank scales its loss by
    /// `size * weight / total weight`. One all-reduce of two numbers.
    pub fn weigh(&self, loss: f64, weight: f64) -> (f64, f64) {
        if self.size == 1 {
            return (1.0, loss);
        }
        let mut sums = [weight, weight * loss];
        self.sum(&mut sums);
        if sums[0] <= 0.0 {
            return (1.0, loss);
        }
        (self.size as f64 * weight / sums[0], sums[1] / sums[0])
    }

    /// Stop with an error naming the ranks whose parameters differ from rank 0's: replicas
    /// that took the same steps from the same start hold the same bits, so any difference is a
    /// bug or a rank whose data or device went astray.
    pub fn check_replicas<M: Module>(&self, model: &M, step: usize) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let mut checksum = Checksum::default();
        model.visit(&mut checksum);
        let all = self.gather(checksum.value);
        let astray: Vec<usize> = (1..all.len())
            .filter(|&r| all[r].to_bits() != all[0].to_bits())
            .collect();
        if !astray.is_empty() {
            bail!(
                "after step {step} the model on rank(s) {astray:?} differs from rank 0's \
                 (parameter checksums {all:?}): the replicas diverged"
            );
        }
        Ok(())
    }
}

/// Milliseconds since the epoch at which this rank entered the collective it is in (0: none).
static WAITING_SINCE: AtomicU64 = AtomicU64::new(0);
/// The watchdog's limit in milliseconds (0: none).
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Marks the time spent in one collective for the watchdog.
struct Waiting;

impl Waiting {
    fn enter() -> Self {
        WAITING_SINCE.store(now_ms().max(1), Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING_SINCE.store(0, Ordering::SeqCst);
    }
}

/// Watch the training loop's collectives: one that lasts longer than `timeout` means another
/// rank stopped answering without dying (stuck, stopped, or cut off), which `mpirun` cannot see.
/// The job cannot go on, so this rank says so and exits, and `mpirun` ends the others; the
/// last checkpoint stays as it was. (The barriers while rank 0 builds the token cache are not
/// watched: building takes as long as the corpus is big.) Zero turns the watch off.
pub fn watch_collectives(timeout: Duration) {
    TIMEOUT_MS.store(timeout.as_millis() as u64, Ordering::SeqCst);
    static WATCHING: OnceLock<()> = OnceLock::new();
    let world = world();
    if world.size == 1 || WATCHING.set(()).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("pretext-collective-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let (since, limit) = (
                    WAITING_SINCE.load(Ordering::SeqCst),
                    TIMEOUT_MS.load(Ordering::SeqCst),
                );
                if since > 0 && limit > 0 && now_ms().saturating_sub(since) > limit {
                    eprintln!(
                        "error on rank {} of {}: waited {:.0} s for the other ranks in an \
                         all-reduce (train.collective_timeout = {} s): a rank stopped \
                         answering; ending the job (the last checkpoint is kept)",
                        world.rank,
                        world.size,
                        (now_ms() - since) as f64 / 1000.0,
                        limit as f64 / 1000.0
                    );
                    // Not MPI_Abort: only the training thread may call MPI. mpirun ends the
                    // other ranks when this one exits with an error.
                    std::process::exit(1);
                }
            }
        });
    if spawned.is_err() {
        eprintln!("warning: cannot start the collective watchdog; a stuck rank would hang the job");
    }
}

/// A number type MPI sums and gathers.
pub trait Summable: Copy + Default {
    fn all_reduce_sum(values: &mut [Self]);
    /// Every rank's `local` (the same length on each), in rank order, into `all`.
    fn all_gather(local: &[Self], all: &mut [Self]);
}

macro_rules! summable {
    ($($t:ty),*) => {$(
        impl Summable for $t {
            fn all_reduce_sum(values: &mut [Self]) {
                #[cfg(feature = "mpi")]
                {
                    use mpi::traits::CommunicatorCollectives;
                    let send = values.to_vec();
                    mpi::topology::SimpleCommunicator::world().all_reduce_into(
                        &send[..],
                        values,
                        mpi::collective::SystemOperation::sum(),
                    );
                }
                let _ = values;
            }

            fn all_gather(local: &[Self], all: &mut [Self]) {
                #[cfg(feature = "mpi")]
                {
                    use mpi::traits::CommunicatorCollectives;
                    mpi::topology::SimpleCommunicator::world().all_gather_into(local, all);
                }
                #[cfg(not(feature = "mpi"))]
                for chunk in all.chunks_mut(local.len().max(1)) {
                    chunk.copy_from_slice(&local[..chunk.len()]);
                }
            }
        }
    )*};
}
summable!(f32, f64);

/// Every rank's `local` values (the same count on each), in rank order.
fn all_gather_values<T: Summable>(local: &[T], size: usize) -> Vec<T> {
    let mut all = vec![T::default(); local.len() * size];
    if size == 1 {
        all.copy_from_slice(local);
        return all;
    }
    let _waiting = Waiting::enter();
    T::all_gather(local, &mut all);
    all
}

/// A sum over every parameter value, position-weighted so that swapped values count.
#[derive(Default)]
struct Checksum {
    value: f64,
    position: u64,
}

impl ModuleVisitor for Checksum {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // The trained parameters only. Batch-norm running statistics differ between ranks
        // unless `train.sync_batchnorm` (each rank normalises its own share, as under PyTorch
        // DDP; rank 0's are saved), and momentum encoders follow the trained parameters.
        let value = param.val();
        if !value.is_require_grad() {
            return;
        }
        let data = value.into_data().convert::<f32>();
        for v in data.iter::<f32>() {
            self.position += 1;
            self.value += f64::from(v) * (1.0 + (self.position % 97) as f64 / 97.0);
        }
    }
}

/// Gradients taken out of a [`GradientsParams`] into one host buffer, in visiting order.
struct Flatten<'a> {
    grads: &'a mut GradientsParams,
    values: Vec<f32>,
    parts: Vec<(ParamId, Vec<usize>, Device)>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            let device = grad.device();
            let dims = grad.dims().to_vec();
            let data = grad.into_data().convert::<f32>();
            self.values.extend(data.iter::<f32>());
            self.parts.push((param.id, dims, device));
        }
    }
}

/// The buffer's values put back as the gradients of the same parameters.
struct Restore<'a> {
    grads: &'a mut GradientsParams,
    values: &'a [f32],
    parts: std::slice::Iter<'a, (ParamId, Vec<usize>, Device)>,
    offset: usize,
}

impl ModuleVisitor for Restore<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some((id, dims, device)) = self.parts.as_slice().first() else {
            return;
        };
        if *id != param.id {
            return;
        }
        self.parts.next();
        let n: usize = dims.iter().product();
        let values = self.values[self.offset..self.offset + n].to_vec();
        self.offset += n;
        let grad = Tensor::<D>::from_data(TensorData::new(values, dims.clone()), device);
        self.grads.register(*id, grad);
    }
}

/// `grads` averaged over the ranks: copied into one host buffer, summed by one all-reduce per
/// bucket of `bucket_values` (`train.allreduce_bucket_mb`), divided by the rank count, and put
/// back. Every rank holds the
/// same model, so every rank visits the same parameters in the same order.
pub fn average_gradients<M: Module>(
    model: &M,
    mut grads: GradientsParams,
    bucket_values: usize,
) -> GradientsParams {
    let world = world();
    if world.size == 1 {
        return grads;
    }
    let mut flatten = Flatten {
        grads: &mut grads,
        values: Vec::new(),
        parts: Vec::new(),
    };
    model.visit(&mut flatten);
    let (mut values, parts) = (flatten.values, flatten.parts);
    for bucket in values.chunks_mut(bucket_values.max(1)) {
        world.sum(bucket);
    }
    let inverse = 1.0 / world.size as f32;
    values.iter_mut().for_each(|v| *v *= inverse);
    model.visit(&mut Restore {
        grads: &mut grads,
        values: &values,
        parts: parts.iter(),
        offset: 0,
    });
    grads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_is_the_identity() {
        let solo = World { rank: 0, size: 1 };
        assert_eq!(solo.share(&[1, 2, 3]), [1, 2, 3]);
        assert_eq!(solo.weigh(2.5, 7.0), (1.0, 2.5));
        assert_eq!(solo.gather(4.0), [4.0]);
        assert!(solo.check_batch(7).is_ok());
        let second = World { rank: 1, size: 2 };
        assert_eq!(second.share(&[1, 2, 3, 4]), [3, 4]);
        let err = second.check_batch(7).unwrap_err().to_string();
        assert!(
            err.contains("batch_size = 7") && err.contains("2 ranks"),
            "{err}"
        );
    }
}
