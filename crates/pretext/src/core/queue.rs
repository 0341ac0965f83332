//! A queue of past embeddings (a memory bank): MoCo's negatives, NNCLR's support set. It is a
//! module, so checkpoints carry it and `--resume` restores it, but its one tensor takes no
//! gradient: it changes only in `push`, after an optimizer step.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::core::losses::l2_normalize;

#[derive(Module, Debug)]
pub struct EmbeddingQueue {
    /// `[size, dim]` unit rows, newest first.
    rows: Param<Tensor<2>>,
}

impl EmbeddingQueue {
    /// `size` random unit rows of `dim` (MoCo and lightly start from noise too), drawn from the
    /// device's random stream.
    pub fn new(size: usize, dim: usize, device: &Device) -> Self {
        let noise = Tensor::<2>::random([size, dim], Distribution::Normal(0.0, 1.0), device);
        EmbeddingQueue {
            rows: Param::from_tensor(l2_normalize(noise)),
        }
        .no_grad()
    }

    /// The rows, detached.
    pub fn rows(&self) -> Tensor<2> {
        self.rows.val().detach()
    }

    pub fn len(&self) -> usize {
        self.rows.val().dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For each row of `z`, the queue's row of highest cosine similarity (NNCLR's nearest
    /// neighbour), detached.
    pub fn nearest(&self, z: Tensor<2>) -> Tensor<2> {
        let bank = self.rows();
        let similarity = l2_normalize(z.detach()).matmul(bank.clone().transpose());
        let [rows, _] = similarity.dims();
        bank.select(0, similarity.argmax(1).reshape([rows]))
    }

    /// `batches` (each `[n, dim]`, oldest first) enter normalised at the front; as many of the
    /// oldest rows drop out, so the size stays.
    pub fn push(self, batches: Vec<Tensor<2>>) -> Self {
        if batches.is_empty() {
            return self;
        }
        let size = self.len();
        let mut parts: Vec<Tensor<2>> = batches
            .into_iter()
            .rev()
            .map(|b| l2_normalize(b.detach()))
            .collect();
        let rows = self.rows.map(|old| {
            parts.push(old);
            Tensor::cat(parts, 0)
                .narrow(0, 0, size)
                .set_require_grad(false)
        });
        EmbeddingQueue { rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
        let [_, d] = t.dims();
        t.into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .chunks(d)
            .map(|r| r.to_vec())
            .collect()
    }

    fn matrix(v: &[[f32; 2]], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = v.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [v.len(), 2]), device)
    }

    #[test]
    fn pushes_newest_first_keeps_its_size_and_finds_nearest_rows() {
        let device = Device::flex();
        let queue = EmbeddingQueue::new(3, 2, &device);
        for r in rows(queue.rows()) {
            assert!((r[0] * r[0] + r[1] * r[1] - 1.0).abs() < 1e-5, "unit rows");
        }
        let first = matrix(&[[2.0, 0.0]], &device);
        let second = matrix(&[[0.0, 3.0], [0.0, -1.0]], &device);
        let queue = queue.push(vec![first, second]);
        assert_eq!(queue.len(), 3);
        // The later batch first, each row normalised; the random rows are gone.
        assert_eq!(
            rows(queue.rows()),
            vec![vec![0.0, 1.0], vec![0.0, -1.0], vec![1.0, 0.0]]
        );
        let near = queue.nearest(matrix(&[[5.0, 0.2], [0.1, -7.0]], &device));
        assert_eq!(rows(near), vec![vec![1.0, 0.0], vec![0.0, -1.0]]);
    }

    #[test]
    fn takes_no_gradient_on_the_autodiff_device() {
        let device = Device::flex().autodiff();
        let queue = EmbeddingQueue::new(4, 2, &device);
        assert!(!queue.rows().is_require_grad());
        let pushed = queue.push(vec![matrix(&[[1.0, 1.0]], &device).require_grad()]);
        assert!(!pushed.rows.val().is_require_grad());
    }
}
