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
//! Runs on the flex CPU backend (what MPI jobs use here); `pretrain` under `mpirun` refuses
//! other devices.

use burn::prelude::*;

use super::world;

/// Every rank's `x` (`[rows, dim]`, the same shape on each), stacked in rank order, with the
/// backward described in the module docs. One process: `x` itself.
pub fn gather_rows(x: Tensor<2>) -> Tensor<2> {
    if !world().is_distributed() {
        return x;
    }
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;
        use flex::CollectiveOps;
        Tensor::from_dispatch(<Dispatch as CollectiveOps>::pretext_gather_rows(
            x.into_dispatch(),
        ))
    }
    #[cfg(not(feature = "flex"))]
    panic!("gathering rows across ranks needs the flex backend")
}

/// The sum over the ranks of `x` (`[1, dim]`), differentiable: the row of every rank, summed.
pub fn sum_rows_over_ranks(x: Tensor<2>) -> Tensor<2> {
    if !world().is_distributed() {
        return x;
    }
    gather_rows(x).sum_dim(0)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::Autodiff;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::{Flex, FlexTensor};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, TensorMetadata, backend_extension};
    use burn::tensor::TensorData;

    use super::super::{all_gather_values, world};

    #[backend_extension(Flex, Autodiff)]
    pub trait CollectiveOps: Backend {
        /// Every rank's rows, in rank order.
        fn pretext_gather_rows(x: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    fn host_values(t: &FlexTensor) -> Vec<f32> {
        // `pretrain` under MPI trains in f32 (checked when it starts).
        t.to_contiguous()
            .as_slice::<f32>()
            .map(<[f32]>::to_vec)
            .unwrap_or_default()
    }

    impl CollectiveOps for Flex {
        fn pretext_gather_rows(x: FlexTensor) -> FlexTensor {
            let world = world();
            let mut shape = x.shape().to_vec();
            let all = all_gather_values(&host_values(&x), world.size);
            shape[0] *= world.size;
            FlexTensor::from_data(TensorData::new(all, shape))
        }
    }

    /// The gathered rows' gradient summed over the ranks, this rank's rows of it.
    #[derive(Debug)]
    struct GatherBackward;

    impl Backward<Flex, 1> for GatherBackward {
        /// This rank's number of rows.
        type State = usize;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x] = ops.parents;
            let dy = grads.consume::<Flex>(&ops.node);
            let mut shape = dy.shape().to_vec();
            let mut values = host_values(&dy);
            let world = world();
            world.sum(&mut values);
            let rows = ops.state;
            let width = values.len() / shape[0].max(1);
            let own = values[world.rank * rows * width..(world.rank + 1) * rows * width].to_vec();
            shape[0] = rows;
            if let Some(node) = node_x {
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(own, shape)));
            }
        }
    }

    impl<C: CheckpointStrategy> CollectiveOps for Autodiff<Flex, C> {
        fn pretext_gather_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let prep = GatherBackward
                .prepare::<C>([x.node()])
                // Never recomputed under checkpointing: a collective must run once, in order.
                .compute_bound()
                .stateful();
            let rows = x.primitive().shape().dims::<2>()[0];
            let y = Flex::pretext_gather_rows(x.into_primitive());
            match prep {
                OpsKind::Tracked(prep) => prep.finish(rows, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
    }
}
