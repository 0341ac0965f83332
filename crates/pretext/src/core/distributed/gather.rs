//! The one differentiable collective: every rank's rows of a tensor, in rank order
//! ([`gather_rows`]). Losses that need the whole global batch (SimCLR's negatives, Barlow
//! Twins' and VICReg's batch statistics) gather what they need and compute on all of it; so
//! does synchronised batch norm on devices without pretext's kernel ([`super::batch_norm`]).
//!
//! The backward is what lightly#1528 got wrong. Rank r's loss L_r may depend on every rank's
//! rows, so the gradient that belongs to rank r's rows is the sum over all ranks q of
//! dL_q/d(rows of r). The backward therefore sums the gathered rows' gradients over the ranks
//! (one all-reduce) and hands each rank its own rows. With the loop's averaging of parameter
//! gradients this is the gradient of the mean of the ranks' losses: when every rank computes
//! the same global loss on gathered rows, that is the loss one process computes on the whole
//! batch.
//!
//! A burn backend extension with its own backward, for flex, LibTorch (`--features tch`) and
//! wgpu (`--features wgpu`): the tensor travels through host memory (MPI cannot be handed
//! device memory by these backends).

use burn::prelude::*;

use super::world;

/// Every rank's `x` (`[rows, dim]`, the same shape on each), stacked in rank order, with the
/// backward described in the module docs. One process: `x` itself.
pub fn gather_rows(x: Tensor<2>) -> Tensor<2> {
    if !world().is_distributed() {
        return x;
    }
    use burn::backend::Dispatch;
    use extension::CollectiveOps;
    Tensor::from_dispatch(<Dispatch as CollectiveOps>::pretext_gather_rows(
        x.into_dispatch(),
    ))
}

/// The sum over the ranks of `x` (`[1, dim]`), differentiable: the row of every rank, summed.
pub fn sum_rows_over_ranks(x: Tensor<2>) -> Tensor<2> {
    if !world().is_distributed() {
        return x;
    }
    gather_rows(x).sum_dim(0)
}

// burn marks its LibTorch backend deprecated; it is still the CUDA path without LLVM here.
#[allow(deprecated)]
mod extension {
    use burn::backend::autodiff::Autodiff;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, TensorMetadata, backend_extension, read_sync};
    use burn::tensor::TensorData;

    use super::super::{all_gather_values, world};

    #[backend_extension(
        Flex: cfg(feature = "flex"),
        LibTorch: cfg(feature = "tch"),
        Cube: cfg(feature = "wgpu"),
        Autodiff
    )]
    pub trait CollectiveOps: Backend {
        /// Every rank's rows, in rank order.
        fn pretext_gather_rows(x: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    /// A tensor's values on the host, as `f32`.
    fn host_values<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
        match read_sync(B::float_into_data(t)) {
            Ok(data) => data
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default(),
            // The device failed: nothing sensible can be sent; the job's error handling sees
            // the failure on this rank's next device call.
            Err(e) => panic!("reading a tensor for a collective failed: {e:?}"),
        }
    }

    /// `values` as a tensor of `shape` on `device`.
    fn on_device<B: Backend>(
        values: Vec<f32>,
        shape: Vec<usize>,
        device: &B::Device,
    ) -> FloatTensor<B> {
        B::float_from_data(TensorData::new(values, shape), device)
    }

    /// The forward on any backend: to the host, all-gathered, back to the device.
    fn gather<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
        let world = world();
        let device = x.device();
        let mut shape = x.shape().to_vec();
        let all = all_gather_values(&host_values::<B>(x), world.size);
        shape[0] *= world.size;
        on_device::<B>(all, shape, &device)
    }

    #[cfg(feature = "flex")]
    impl CollectiveOps for burn::backend::Flex {
        fn pretext_gather_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
            gather::<Self>(x)
        }
    }

    #[cfg(feature = "tch")]
    impl CollectiveOps for burn::backend::LibTorch {
        fn pretext_gather_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
            gather::<Self>(x)
        }
    }

    #[cfg(feature = "wgpu")]
    impl CollectiveOps for burn::backend::Cube {
        fn pretext_gather_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
            gather::<Self>(x)
        }
    }

    /// The gathered rows' gradient summed over the ranks, this rank's rows of it.
    #[derive(Debug)]
    struct GatherBackward;

    impl<B: Backend> Backward<B, 1> for GatherBackward {
        /// This rank's number of rows.
        type State = usize;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x] = ops.parents;
            let dy = grads.consume::<B>(&ops.node);
            let device = dy.device();
            let mut shape = dy.shape().to_vec();
            let mut values = host_values::<B>(dy);
            let world = world();
            world.sum(&mut values);
            let rows = ops.state;
            let width = values.len() / shape[0].max(1);
            let own = values[world.rank * rows * width..(world.rank + 1) * rows * width].to_vec();
            shape[0] = rows;
            if let Some(node) = node_x {
                grads.register::<B>(node.id, on_device::<B>(own, shape, &device));
            }
        }
    }

    impl<B: Backend + CollectiveOps, C: CheckpointStrategy> CollectiveOps for Autodiff<B, C> {
        fn pretext_gather_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let prep = GatherBackward
                .prepare::<C>([x.node()])
                // Never recomputed under checkpointing: a collective must run once, in order.
                .compute_bound()
                .stateful();
            let rows = x.primitive().shape().dims::<2>()[0];
            let y = B::pretext_gather_rows(x.into_primitive());
            match prep {
                OpsKind::Tracked(prep) => prep.finish(rows, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
    }
}
