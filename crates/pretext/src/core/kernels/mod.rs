//! Hand-written CPU kernels for the ops where the flex backend's own fall short, each with its
//! own backward pass, reached through burn's backend extensions (`#[backend_extension]`).
//!
//! | kernel | file | used by |
//! |---|---|---|
//! | conv2d (forward, input and weight gradients) | `conv2d.rs` | CNN, ResNet, decoder |
//! | batch norm, training mode | `batch_norm.rs` | CNN, ResNet, projection heads |
//! | max pool 2-D | `max_pool.rs` | CNN, ResNet's ImageNet stem |
//! | GELU, softmax (last dimension) | `activation.rs` | transformers (text, ViT, MAE) |
//! | mean cross-entropy against target classes | `cross_entropy.rs` | the MLM and ELECTRA losses |
//! | one AdamW update (parameter and both moments in one pass) | `adamw.rs` | `core::optim` |
//! | multi-head attention (scores, mask, softmax, dropout, values) | `attention.rs` | every transformer |
//! | the attention's per-head products, small dense layers (AVX-512) | `head_products.rs` | `attention.rs`, `linear.rs` |
//! | layer norm (forward and the three gradients) | `layer_norm.rs` | transformers (text, ViT, MAE) |
//! | dropout from a counter-based generator | `dropout.rs` | the text encoder |
//! | fully connected layer (forward and the three gradients) | `linear.rs` | transformers (text, ViT, MAE) |
//! | rows picked by index per sequence, and their gradients added back | `gather.rs` | masked models (MAE, VideoMAE) |
//!
//! Callers use the functions and `forward_fast` traits here instead of burn's; on a flex
//! device with `f32` tensors they run the kernels, elsewhere (wgpu, libtorch, other dtypes,
//! grouped convolutions, dilated pools) they fall back to burn's op, so every backend still
//! works, and module parameters and checkpoints are burn's own. `PRETEXT_KERNELS=off` turns
//! them off. Numerics are tested against burn's reference ops and finite differences (each
//! file, and this one). Measured in `docs/speed.md` (`pretext bench ops`). The element-wise
//! loops run on AVX2 where the CPU has it (`simd.rs`).

pub mod activation;
pub mod adamw;
pub mod attention;
pub mod batch_norm;
pub mod conv2d;
pub mod cross_entropy;
pub mod dropout;
pub mod gather;
pub mod head_products;
pub mod layer_norm;
pub mod linear;
pub mod matmul;
pub mod max_pool;
pub mod simd;
pub mod uninit;

#[cfg(feature = "flex")]
use burn::backend::Dispatch;
use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Dropout, Linear};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Distribution};

/// `conv2d(x, weight) + bias`, NCHW: burn's `module::conv2d` with the same arguments and result.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if flex::handles(&x, &weight, &options) {
        let out = flex::conv2d(x, weight, options);
        return match bias {
            Some(bias) => {
                let channels = bias.dims()[0];
                out + bias.reshape([1, channels, 1, 1])
            }
            None => out,
        };
    }
    burn::tensor::module::conv2d(x, weight, bias, options)
}

/// [`Conv2d::forward`] through [`conv2d`]: the module keeps its parameters, names and
/// checkpoint layout; only the op underneath changes.
pub trait Conv2dForward {
    fn forward_fast(&self, x: Tensor<4>) -> Tensor<4>;
}

impl Conv2dForward for Conv2d {
    fn forward_fast(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, height, width] = x.dims();
        let padding = padding_pairs(
            &self.padding,
            [height, width],
            self.kernel_size,
            self.stride,
        );
        let options =
            ConvOptions::new_with_padding(self.stride, padding, self.dilation, self.groups);
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|bias| bias.val()),
            options,
        )
    }
}

/// [`BatchNorm::forward`] with the kernel in training mode (batch statistics, running
/// statistics updated exactly as burn does); inference and other devices go through burn.
pub trait BatchNormForward {
    fn forward_fast<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl BatchNormForward for BatchNorm {
    fn forward_fast<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let training = x.device().is_autodiff() && self.training.is_enabled() && D >= 2;
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        let synced = training && crate::core::distributed::sync_batchnorm();
        #[cfg(feature = "flex")]
        if training && is_f32(&x) && is_flex(&x.device()) {
            // Synchronised: the kernel's per-channel sums summed over the ranks.
            let reduce = if synced {
                crate::core::distributed::sum_over_ranks
            } else {
                batch_norm::local
            };
            let (out, mean, variance) =
                flex::batch_norm_train(x, gamma, beta, self.epsilon, reduce);
            self.update_running(&out.device(), mean, variance);
            return out;
        }
        let (out, mean, variance) = if synced {
            crate::core::distributed::batch_norm_over_ranks(x, gamma, beta, self.epsilon)
        } else {
            return self.forward(x);
        };
        self.update_running(&out.device(), mean, variance);
        out
    }
}

trait RunningStats {
    fn update_running(&self, device: &Device, mean: Tensor<1>, variance: Tensor<1>);
}

impl RunningStats for BatchNorm {
    /// The running statistics updated exactly as burn's own training forward does.
    fn update_running(&self, device: &Device, mean: Tensor<1>, variance: Tensor<1>) {
        let momentum = self.momentum;
        let running_mean = self.running_mean.value_sync().to_device(device);
        let running_var = self.running_var.value_sync().to_device(device);
        self.running_mean.update(
            (running_mean.mul_scalar(1.0 - momentum) + mean.detach().mul_scalar(momentum)).detach(),
        );
        self.running_var.update(
            (running_var.mul_scalar(1.0 - momentum) + variance.detach().mul_scalar(momentum))
                .detach(),
        );
    }
}

/// [`MaxPool2d::forward`] through the kernel (no dilation, floor rounding; otherwise burn's).
pub trait MaxPoolForward {
    fn forward_fast(&self, x: Tensor<4>) -> Tensor<4>;
}

impl MaxPoolForward for MaxPool2d {
    fn forward_fast(&self, x: Tensor<4>) -> Tensor<4> {
        #[cfg(feature = "flex")]
        if self.dilation == [1, 1] && !self.ceil_mode && is_f32(&x) && is_flex(&x.device()) {
            let [_, _, height, width] = x.dims();
            let padding = padding_pairs(
                &self.padding,
                [height, width],
                self.kernel_size,
                self.stride,
            );
            return flex::max_pool2d(x, self.kernel_size, self.stride, padding);
        }
        self.forward(x)
    }
}

/// `gelu(x) = x·Φ(x)` (the exact erf form, as burn's `activation::gelu`).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if is_f32(&x) && is_flex(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as flex::KernelOps>::pretext_gelu(
            x.into_dispatch(),
        ));
    }
    burn::tensor::activation::gelu(x)
}

/// Softmax along `dim`; the kernel serves the last dimension (attention scores).
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if dim + 1 == D && is_f32(&x) && is_flex(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as flex::KernelOps>::pretext_softmax(
            x.into_dispatch(),
        ));
    }
    burn::tensor::activation::softmax(x, dim)
}

/// `out[b, j, :] = x[b, index[b, j], :]` for `x` `[batch, rows, width]` and `index`
/// `[batch, picked]`: burn's `gather` along dimension 1 with the index expanded over the
/// width, as one copy per row (`gather.rs`). An index past `rows` panics, as burn's does.
pub fn gather_rows(x: Tensor<3>, index: Tensor<2, Int>) -> Tensor<3> {
    let [_, _, width] = x.dims();
    let [batch, picked] = index.dims();
    #[cfg(feature = "flex")]
    if is_f32(&x) && is_flex(&x.device()) {
        // A negative index becomes u32::MAX, which the kernel refuses as out of range.
        let index: Vec<u32> = index
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("an integer index")
            .into_iter()
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        return Tensor::from_dispatch(<Dispatch as flex::KernelOps>::pretext_gather_rows(
            x.into_dispatch(),
            index,
            picked,
        ));
    }
    x.gather(
        1,
        index.unsqueeze_dim::<3>(2).expand([batch, picked, width]),
    )
}

/// Multi-head attention of projected queries, keys and values `[batch, len, dim]` split into
/// `heads`: `softmax(q kᵀ / √d) v`, heads joined back to `[batch, len, dim]`. `key_pad` is true
/// at padded positions, which no query may attend to (`None`: no padding); `dropout` acts on
/// the attention probabilities. On flex with `f32` the fused kernel of `attention.rs` runs it,
/// elsewhere the chain of tensor ops of [`attention_unfused`].
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    key_pad: Option<Tensor<2, Bool>>,
    dropout: &Dropout,
) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if is_f32(&q) && is_flex(&q.device()) {
        let device = q.device();
        let dropout = (dropout.training.is_enabled() && device.is_autodiff() && dropout.prob > 0.0)
            .then(|| {
                let [batch, len, _] = q.dims();
                attention::ProbDropout {
                    key: dropout_key(&device),
                    prob: dropout.prob,
                    first: dropout_first_index(batch * heads * len * len),
                }
            });
        let key_pad = key_pad.map(|pad| pad.into_data().iter::<bool>().collect());
        return Tensor::from_dispatch(<Dispatch as flex::KernelOps>::pretext_attention(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            heads,
            key_pad,
            dropout,
        ));
    }
    attention_unfused(q, k, v, heads, key_pad, dropout)
}

/// [`attention`] as a chain of burn's tensor ops (and the softmax and dropout kernels): what
/// other backends run, and the reference the fused kernel is tested against.
pub fn attention_unfused(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    key_pad: Option<Tensor<2, Bool>>,
    dropout: &Dropout,
) -> Tensor<3> {
    let [batch, len, dim] = q.dims();
    let head_dim = dim / heads;
    let split = |t: Tensor<3>| t.reshape([batch, len, heads, head_dim]).swap_dims(1, 2);
    let scores = split(q)
        .matmul(split(k).swap_dims(2, 3))
        .div_scalar((head_dim as f64).sqrt());
    let scores = match key_pad {
        Some(pad) => {
            let mask = pad
                .reshape([batch, 1, 1, len])
                .expand([batch, heads, len, len]);
            scores.mask_fill(mask, attention::MASKED_SCORE)
        }
        None => scores,
    };
    let probs = dropout.forward_fast(softmax(scores, 3));
    probs
        .matmul(split(v))
        .swap_dims(1, 2)
        .reshape([batch, len, dim])
}

/// Mean cross-entropy of `logits [n, classes]` against `targets [n, 1]`,
/// `−mean_r log softmax(logits_r)[target_r]`, shape `[1]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if is_f32(&logits) && is_flex(&logits.device()) {
        let targets = targets
            .into_data()
            .iter::<i64>()
            .map(|t| t as usize)
            .collect();
        return Tensor::from_dispatch(<Dispatch as flex::KernelOps>::pretext_cross_entropy(
            logits.into_dispatch(),
            targets,
        ));
    }
    burn::tensor::activation::log_softmax(logits, 1)
        .gather(1, targets)
        .mean()
        .neg()
}

/// One AdamW update of a flattened parameter `p` with gradient `g` and moments `m`, `v`
/// through `adamw.rs`: the new `(p, m, v)`, or `None` where the kernel does not serve these
/// tensors (the caller then runs its tensor ops).
pub fn adamw_step(
    p: &Tensor<1>,
    g: &Tensor<1>,
    m: &Tensor<1>,
    v: &Tensor<1>,
    scalars: adamw::AdamwScalars,
) -> Option<(Tensor<1>, Tensor<1>, Tensor<1>)> {
    #[cfg(feature = "flex")]
    if [p, g, m, v].iter().all(|t| is_f32(t)) && is_flex(&p.device()) {
        let (p, m, v) = <Dispatch as flex::KernelOps>::pretext_adamw(
            p.clone().into_dispatch(),
            g.clone().into_dispatch(),
            m.clone().into_dispatch(),
            v.clone().into_dispatch(),
            scalars,
        );
        return Some((
            Tensor::from_dispatch(p),
            Tensor::from_dispatch(m),
            Tensor::from_dispatch(v),
        ));
    }
    let _ = (p, g, m, v, scalars);
    None
}

/// Layer normalisation over the last dimension, with burn's `LayerNorm` parameters (`gamma`,
/// `beta`: the same names, so checkpoints and exports read it as one) and an epsilon the kernel
/// can read (burn keeps its own private).
#[derive(Module, Debug)]
pub struct FastLayerNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    #[module(skip)]
    pub epsilon: f64,
}

impl FastLayerNorm {
    /// γ = 1, β = 0, as burn's `LayerNormConfig::init`.
    pub fn new(width: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([width], device)),
            beta: Param::from_tensor(Tensor::zeros([width], device)),
            epsilon,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.gamma.val(), self.beta.val(), self.epsilon)
    }
}

/// `γ (x − μ) / sqrt(σ² + ε) + β` over the last dimension, as burn's `module::layer_norm`; the
/// kernel runs on autodiff devices, burn's op elsewhere.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<D> {
    // Only where a backward may follow: without autodiff, burn-flex's own fused forward is
    // faster than the kernel's (which also keeps the rows' statistics).
    #[cfg(feature = "flex")]
    if x.device().is_autodiff() && is_f32(&x) && is_f32(&gamma) && is_flex(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as flex::KernelOps>::pretext_layer_norm(
            x.into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
            epsilon,
        ));
    }
    burn::tensor::module::layer_norm(x, gamma, Some(beta), epsilon)
}

/// [`Linear::forward`] through the kernel of `linear.rs` (for layers with a bias, on flex,
/// `f32`); the module keeps its parameters, names and checkpoint layout.
pub trait LinearForward {
    fn forward_fast<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl LinearForward for Linear {
    fn forward_fast<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        #[cfg(feature = "flex")]
        if let Some(bias) = &self.bias
            && is_f32(&x)
            && is_flex(&x.device())
        {
            return Tensor::from_dispatch(<Dispatch as flex::KernelOps>::pretext_linear(
                x.into_dispatch(),
                self.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
            ));
        }
        self.forward(x)
    }
}

/// [`Dropout::forward`] with the counter-based mask of `dropout.rs`: active under the same
/// conditions as burn's (training flag on, an autodiff device, a probability above 0), with
/// masks drawn from other random numbers.
pub trait DropoutForward {
    fn forward_fast<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl DropoutForward for Dropout {
    fn forward_fast<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        #[cfg(feature = "flex")]
        if self.training.is_enabled()
            && x.device().is_autodiff()
            && self.prob > 0.0
            && is_f32(&x)
            && is_flex(&x.device())
        {
            let key = dropout_key(&x.device());
            let first = dropout_first_index(x.shape().num_elements());
            return Tensor::from_dispatch(<Dispatch as flex::KernelOps>::pretext_dropout(
                x.into_dispatch(),
                key,
                first,
                self.prob,
            ));
        }
        self.forward(x)
    }
}

/// The index in the global batch's tensor of this rank's first element, for a rank's share of
/// `elements` (1 outside MPI: 0). Tensors are batch-major and each rank holds its contiguous
/// rows, so with the key drawn alike on every rank, each element is dropped as it is in one
/// process on the whole batch, and no two ranks drop alike. Indices wrap at 2^32 as the
/// kernel's counter does.
fn dropout_first_index(elements: usize) -> u32 {
    (crate::core::distributed::world().rank * elements) as u32
}

/// 64 random bits from the device's stream (which the training loop seeds per micro-batch):
/// three uniform draws of 24 bits each, folded together.
fn dropout_key(device: &Device) -> u64 {
    let draws = Tensor::<1>::random([3], Distribution::Default, device)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    draws.iter().fold(0u64, |key, &u| {
        key.rotate_left(24) ^ (u as f64 * (1u64 << 24) as f64) as u64
    })
}

/// `(begin, end)` padding per spatial dimension, by burn's rule for [`Conv2d`] and
/// [`MaxPool2d`] (its own helper is private): `Same` pads so the output has `ceil(len /
/// stride)` positions, the odd pixel at the end.
fn padding_pairs(
    padding: &PaddingConfig2d,
    size: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
) -> [(usize, usize); 2] {
    let same = |d: usize| {
        let out = size[d].div_ceil(stride[d]);
        let needed = if out > 0 {
            (out - 1) * stride[d] + kernel[d]
        } else {
            0
        };
        let total = needed.saturating_sub(size[d]);
        (total / 2, total - total / 2)
    };
    match *padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Same => [same(0), same(1)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
    }
}

/// Whether the kernels serve this device: flex, with or without autodiff, unless the
/// environment says `PRETEXT_KERNELS=off` (burn's own ops then run everywhere: to compare the
/// two, or to rule the kernels out when hunting a numerical difference).
fn is_flex(device: &Device) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("PRETEXT_KERNELS").as_deref() != Ok("off"));
    enabled && crate::core::device::is_flex(device)
}

fn is_f32<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == DType::F32
}

#[cfg(feature = "flex")]
mod flex {
    //! The extension trait, its flex implementation and its autodiff implementation.

    use super::activation;
    use super::adamw::{self, AdamwScalars};
    use super::attention::{self, AttentionSetup, AttentionShape, ProbDropout, SoftmaxStats};
    use super::batch_norm::{self, BatchStats, NormShape, Reduce};
    use super::conv2d::{self as kernel, ConvGeometry};
    use super::cross_entropy;
    use super::dropout;
    use super::gather::{self, PickShape};
    use super::layer_norm::{self, RowStats};
    use super::linear::{self, LinearShape};
    use super::max_pool::{self, PoolGeometry};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::{Autodiff, NodeId};
    use burn::backend::flex::{Flex, FlexTensor};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension};
    use burn::prelude::*;
    use burn::tensor::TensorData;
    use burn::tensor::ops::ConvOptions;

    pub(super) fn handles(x: &Tensor<4>, weight: &Tensor<4>, options: &ConvOptions<2>) -> bool {
        options.groups == 1
            && super::is_f32(x)
            && super::is_f32(weight)
            && super::is_flex(&x.device())
    }

    pub(super) fn conv2d(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
        let out = <Dispatch as KernelOps>::pretext_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            options,
        );
        Tensor::from_dispatch(out)
    }

    pub(super) fn batch_norm_train<const D: usize>(
        x: Tensor<D>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        epsilon: f64,
        reduce: Reduce,
    ) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
        let (out, mean, variance) = <Dispatch as KernelOps>::pretext_batch_norm_train(
            x.into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
            epsilon,
            reduce,
        );
        (
            Tensor::from_dispatch(out),
            Tensor::from_dispatch(mean),
            Tensor::from_dispatch(variance),
        )
    }

    pub(super) fn max_pool2d(
        x: Tensor<4>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
    ) -> Tensor<4> {
        let out =
            <Dispatch as KernelOps>::pretext_max_pool2d(x.into_dispatch(), kernel, stride, padding);
        Tensor::from_dispatch(out)
    }

    /// The kernels as backend operations. Flex runs them; autodiff records them with their
    /// backward pass.
    #[backend_extension(Flex, Autodiff)]
    pub trait KernelOps: Backend {
        /// Convolution without bias or groups, `f32`, NCHW.
        fn pretext_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self>;

        /// Batch normalisation with batch statistics: output, per-channel mean and biased
        /// variance (the last two carry no gradient). `reduce` sums the per-channel sums over
        /// the processes that share the batch (`batch_norm::local`: this one alone).
        fn pretext_batch_norm_train(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
            reduce: Reduce,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

        /// GELU, exact (erf) form.
        fn pretext_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

        /// Softmax over the last dimension.
        fn pretext_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;

        /// One AdamW update: the new parameter, first and second moment (no gradient).
        fn pretext_adamw(
            p: FloatTensor<Self>,
            g: FloatTensor<Self>,
            m: FloatTensor<Self>,
            v: FloatTensor<Self>,
            scalars: AdamwScalars,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

        /// Mean cross-entropy of `[n, classes]` logits against `n` target classes, `[1]`.
        fn pretext_cross_entropy(
            logits: FloatTensor<Self>,
            targets: Vec<usize>,
        ) -> FloatTensor<Self>;

        /// Multi-head attention of `[batch, len, dim]` queries, keys and values.
        fn pretext_attention(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            heads: usize,
            key_pad: Option<Vec<bool>>,
            dropout: Option<ProbDropout>,
        ) -> FloatTensor<Self>;

        /// Layer normalisation over the last dimension.
        fn pretext_layer_norm(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
        ) -> FloatTensor<Self>;

        /// A fully connected layer on the last dimension, `x · weight + bias`.
        fn pretext_linear(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
        ) -> FloatTensor<Self>;

        /// Dropout with the mask that `key` draws (`dropout.rs`), `x`'s first element having
        /// index `first` in the draw.
        fn pretext_dropout(
            x: FloatTensor<Self>,
            key: u64,
            first: u32,
            prob: f64,
        ) -> FloatTensor<Self>;

        /// Max pooling, `f32`, NCHW, no dilation, floor rounding.
        fn pretext_max_pool2d(
            x: FloatTensor<Self>,
            kernel: [usize; 2],
            stride: [usize; 2],
            padding: [(usize, usize); 2],
        ) -> FloatTensor<Self>;

        /// `[batch, picked, width]` rows of a `[batch, rows, width]` tensor, `picked` indices
        /// per sequence (`index` holds `batch · picked`).
        fn pretext_gather_rows(
            x: FloatTensor<Self>,
            index: Vec<u32>,
            picked: usize,
        ) -> FloatTensor<Self>;
    }

    /// The shape of picking `picked` rows per sequence of `x`.
    fn pick_shape(x: &FlexTensor, picked: usize) -> PickShape {
        let [batch, rows, width] = x.shape().dims();
        PickShape {
            batch,
            rows,
            picked,
            width,
        }
    }

    /// The batch-norm kernel's forward on flex tensors: the output and the statistics.
    fn batch_norm_forward(
        x: &FlexTensor,
        gamma: &FlexTensor,
        beta: &FlexTensor,
        epsilon: f64,
        reduce: Reduce,
    ) -> (FlexTensor, BatchStats) {
        let s = norm_shape(x);
        let shape = x.shape().to_vec();
        let (x, gamma, beta) = (values(x), values(gamma), values(beta));
        let (y, stats) =
            batch_norm::forward(slice(&x), slice(&gamma), slice(&beta), epsilon, &s, reduce);
        (flat(y, shape), stats)
    }

    fn norm_shape(x: &FlexTensor) -> NormShape {
        let dims = x.shape().to_vec();
        NormShape {
            batch: dims[0],
            channels: dims[1],
            positions: dims[2..].iter().product(),
        }
    }

    fn pool_geometry(
        x: &FlexTensor,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
    ) -> PoolGeometry {
        let [n, c, height, width] = x.shape().dims();
        PoolGeometry {
            planes: n * c,
            height,
            width,
            kernel,
            stride,
            padding,
        }
    }

    fn pool_forward(x: &FlexTensor, g: &PoolGeometry, shape: [usize; 2]) -> (FlexTensor, Vec<u32>) {
        let x = values(x);
        let (y, arg) = max_pool::forward(slice(&x), g);
        let [oh, ow] = g.out_size();
        (tensor(y, [shape[0], shape[1], oh, ow]), arg)
    }

    fn flat(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(data, shape))
    }

    fn geometry(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> ConvGeometry {
        let [batch, in_channels, height, width] = x.shape().dims();
        let [out_channels, weight_in, kh, kw] = weight.shape().dims();
        assert_eq!(
            in_channels, weight_in,
            "conv2d: input channels and weight disagree"
        );
        ConvGeometry {
            batch,
            in_channels,
            height,
            width,
            out_channels,
            kernel: [kh, kw],
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
        }
    }

    fn values(t: &FlexTensor) -> FlexTensor {
        t.to_contiguous()
    }

    fn slice(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("a contiguous f32 tensor")
    }

    fn tensor(data: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(data, shape))
    }

    fn linear_shape(x: &FlexTensor, weight: &FlexTensor) -> LinearShape {
        let dims = x.shape().to_vec();
        let [input, output] = weight.shape().dims();
        assert_eq!(
            dims.last(),
            Some(&input),
            "linear: input features and weight disagree"
        );
        LinearShape {
            rows: dims[..dims.len() - 1].iter().product(),
            input,
            output,
        }
    }

    impl KernelOps for Flex {
        fn pretext_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
            let s = linear_shape(&x, &weight);
            let mut shape = x.shape().to_vec();
            let (x, weight, bias) = (values(&x), values(&weight), values(&bias));
            let y = linear::forward(slice(&x), slice(&weight), slice(&bias), s);
            if let Some(last) = shape.last_mut() {
                *last = s.output;
            }
            flat(y, shape)
        }

        fn pretext_conv2d(
            x: FlexTensor,
            weight: FlexTensor,
            options: ConvOptions<2>,
        ) -> FlexTensor {
            let g = geometry(&x, &weight, &options);
            let (x, weight) = (values(&x), values(&weight));
            let y = kernel::forward(slice(&x), slice(&weight), &g);
            let [oh, ow] = g.out_size();
            tensor(y, [g.batch, g.out_channels, oh, ow])
        }

        fn pretext_batch_norm_train(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            epsilon: f64,
            reduce: Reduce,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (y, stats) = batch_norm_forward(&x, &gamma, &beta, epsilon, reduce);
            let channels = stats.mean.len();
            (
                y,
                flat(stats.mean, vec![channels]),
                flat(stats.variance, vec![channels]),
            )
        }

        fn pretext_gelu(x: FlexTensor) -> FlexTensor {
            let shape = x.shape().to_vec();
            flat(activation::gelu_forward(slice(&values(&x))), shape)
        }

        fn pretext_softmax(x: FlexTensor) -> FlexTensor {
            let shape = x.shape().to_vec();
            let row = shape.last().copied().unwrap_or(1);
            flat(activation::softmax_forward(slice(&values(&x)), row), shape)
        }

        fn pretext_adamw(
            p: FlexTensor,
            g: FlexTensor,
            m: FlexTensor,
            v: FlexTensor,
            scalars: AdamwScalars,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let shape = p.shape().to_vec();
            let [p, g, m, v] = [p, g, m, v].map(|t| values(&t));
            let (p, m, v) = adamw::step(slice(&p), slice(&g), slice(&m), slice(&v), &scalars);
            (
                flat(p, shape.clone()),
                flat(m, shape.clone()),
                flat(v, shape),
            )
        }

        fn pretext_cross_entropy(logits: FlexTensor, targets: Vec<usize>) -> FlexTensor {
            cross_entropy_forward(&logits, &targets).0
        }

        fn pretext_attention(
            q: FlexTensor,
            k: FlexTensor,
            v: FlexTensor,
            heads: usize,
            key_pad: Option<Vec<bool>>,
            dropout: Option<ProbDropout>,
        ) -> FlexTensor {
            attention_forward(&q, &k, &v, heads, key_pad.as_deref(), dropout).0
        }

        fn pretext_max_pool2d(
            x: FlexTensor,
            kernel: [usize; 2],
            stride: [usize; 2],
            padding: [(usize, usize); 2],
        ) -> FlexTensor {
            let g = pool_geometry(&x, kernel, stride, padding);
            let [n, c, _, _] = x.shape().dims();
            pool_forward(&x, &g, [n, c]).0
        }

        fn pretext_gather_rows(x: FlexTensor, index: Vec<u32>, picked: usize) -> FlexTensor {
            let s = pick_shape(&x, picked);
            let out = gather::forward(slice(&values(&x)), &index, s);
            flat(out, vec![s.batch, picked, s.width])
        }

        fn pretext_layer_norm(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            epsilon: f64,
        ) -> FlexTensor {
            layer_norm_forward(&x, &gamma, &beta, epsilon).0
        }

        fn pretext_dropout(x: FlexTensor, key: u64, first: u32, prob: f64) -> FlexTensor {
            let shape = x.shape().to_vec();
            flat(dropout::apply(slice(&values(&x)), key, first, prob), shape)
        }
    }

    /// The mean cross-entropy (`[1]`) and each row's log-sum-exp.
    fn cross_entropy_forward(logits: &FlexTensor, targets: &[usize]) -> (FlexTensor, Vec<f32>) {
        let classes = logits.shape().to_vec().last().copied().unwrap_or(1);
        let (loss, lse) = cross_entropy::forward(slice(&values(logits)), classes, targets);
        (flat(vec![loss], vec![1]), lse)
    }

    #[derive(Debug)]
    struct CrossEntropyBackward;

    impl Backward<Flex, 1> for CrossEntropyBackward {
        /// The logits' checkpoint, the targets and the rows' log-sum-exp.
        type State = (NodeId, Vec<usize>, Vec<f32>);

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_logits] = ops.parents;
            let grad = values(&grads.consume::<Flex>(&ops.node));
            let (logits_state, targets, lse) = ops.state;
            if let Some(node) = node_logits {
                let logits = values(&checkpointer.retrieve_node_output::<FlexTensor>(logits_state));
                let shape = logits.shape().to_vec();
                let classes = shape.last().copied().unwrap_or(1);
                let dx = cross_entropy::backward(
                    slice(&logits),
                    classes,
                    &targets,
                    &lse,
                    slice(&grad)[0],
                );
                grads.register::<Flex>(node.id, flat(dx, shape));
            }
        }
    }

    fn attention_shape(q: &FlexTensor, heads: usize) -> AttentionShape {
        let [batch, len, dim] = q.shape().dims();
        assert!(
            heads > 0 && dim.is_multiple_of(heads),
            "attention: {dim} features do not split into {heads} heads"
        );
        AttentionShape {
            batch,
            len,
            heads,
            head_dim: dim / heads,
        }
    }

    /// The fused attention's output (`[batch, len, dim]`) and softmax statistics.
    fn attention_forward(
        q: &FlexTensor,
        k: &FlexTensor,
        v: &FlexTensor,
        heads: usize,
        key_pad: Option<&[bool]>,
        dropout: Option<ProbDropout>,
    ) -> (FlexTensor, SoftmaxStats) {
        let shape = q.shape().to_vec();
        let setup = AttentionSetup {
            shape: attention_shape(q, heads),
            key_pad,
            dropout,
        };
        let (q, k, v) = (values(q), values(k), values(v));
        let (out, stats) = attention::forward(slice(&q), slice(&k), slice(&v), setup);
        (flat(out, shape), stats)
    }

    #[derive(Debug)]
    struct AttentionBackward;

    /// The checkpoints of `q`, `k` and `v`, the softmax statistics, the heads, the padding and
    /// the dropout.
    type AttentionState = (
        [NodeId; 3],
        SoftmaxStats,
        usize,
        Option<Vec<bool>>,
        Option<ProbDropout>,
    );

    impl Backward<Flex, 3> for AttentionBackward {
        type State = AttentionState;

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let d_out = values(&grads.consume::<Flex>(&ops.node));
            let (ids, stats, heads, key_pad, dropout) = ops.state;
            let [q, k, v] =
                ids.map(|id| values(&checkpointer.retrieve_node_output::<FlexTensor>(id)));
            let shape = q.shape().to_vec();
            let setup = AttentionSetup {
                shape: attention_shape(&q, heads),
                key_pad: key_pad.as_deref(),
                dropout,
            };
            let (dq, dk, dv) = attention::backward(
                slice(&q),
                slice(&k),
                slice(&v),
                &stats,
                slice(&d_out),
                setup,
            );
            for (node, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                if let Some(node) = node {
                    grads.register::<Flex>(node.id, flat(grad, shape.clone()));
                }
            }
        }
    }

    fn layer_norm_forward(
        x: &FlexTensor,
        gamma: &FlexTensor,
        beta: &FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, RowStats) {
        let shape = x.shape().to_vec();
        let width = shape.last().copied().unwrap_or(1);
        let (x, gamma, beta) = (values(x), values(gamma), values(beta));
        let (y, stats) =
            layer_norm::forward(slice(&x), slice(&gamma), Some(slice(&beta)), epsilon, width);
        (flat(y, shape), stats)
    }

    #[derive(Debug)]
    struct LayerNormBackward;

    impl Backward<Flex, 3> for LayerNormBackward {
        /// The input's checkpoint, γ's values and the rows' statistics.
        type State = (NodeId, Vec<f32>, RowStats);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let dy = values(&grads.consume::<Flex>(&ops.node));
            let (x_state, gamma, stats) = ops.state;
            let x = values(&checkpointer.retrieve_node_output::<FlexTensor>(x_state));
            let shape = x.shape().to_vec();
            let width = gamma.len();
            let (dx, dgamma, dbeta) =
                layer_norm::backward(slice(&x), &gamma, &stats, slice(&dy), width);
            let parents = ops.parents.map(|node| node.map(|node| node.id));
            register_norm_gradients(grads, parents, (dx, shape), dgamma, dbeta);
        }
    }

    /// Registers a normalisation's gradients with the parents that take one: the input's
    /// (in its shape) and the per-feature γ's and β's.
    fn register_norm_gradients(
        grads: &mut Gradients,
        [x_id, gamma_id, beta_id]: [Option<NodeId>; 3],
        (dx, shape): (Vec<f32>, Vec<usize>),
        dgamma: Vec<f32>,
        dbeta: Vec<f32>,
    ) {
        let width = dgamma.len();
        if let Some(id) = x_id {
            grads.register::<Flex>(id, flat(dx, shape));
        }
        if let Some(id) = gamma_id {
            grads.register::<Flex>(id, flat(dgamma, vec![width]));
        }
        if let Some(id) = beta_id {
            grads.register::<Flex>(id, flat(dbeta, vec![width]));
        }
    }

    /// Dropout's backward: the same mask, recomputed from the key, on the gradient.
    #[derive(Debug)]
    struct DropoutBackward;

    impl Backward<Flex, 1> for DropoutBackward {
        type State = (u64, u32, f64);

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x] = ops.parents;
            let dy = values(&grads.consume::<Flex>(&ops.node));
            let (key, first, prob) = ops.state;
            if let Some(node) = node_x {
                let shape = dy.shape().to_vec();
                let dx = dropout::apply(slice(&dy), key, first, prob);
                grads.register::<Flex>(node.id, flat(dx, shape));
            }
        }
    }

    #[derive(Debug)]
    struct BatchNormBackward;

    impl Backward<Flex, 3> for BatchNormBackward {
        /// The input's checkpoint, γ's values, the batch statistics, ε, the shape and the
        /// reduction of the sums over processes.
        type State = (NodeId, Vec<f32>, BatchStats, f64, NormShape, Reduce);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let dy = values(&grads.consume::<Flex>(&ops.node));
            let (x_state, gamma, stats, epsilon, s, reduce) = ops.state;
            let x = values(&checkpointer.retrieve_node_output::<FlexTensor>(x_state));
            let shape = x.shape().to_vec();
            let (dx, dgamma, dbeta) =
                batch_norm::backward(slice(&x), &gamma, &stats, epsilon, slice(&dy), &s, reduce);
            let parents = ops.parents.map(|node| node.map(|node| node.id));
            register_norm_gradients(grads, parents, (dx, shape), dgamma, dbeta);
        }
    }

    /// The backward of a one-input op whose gradient needs one saved tensor (GELU keeps its
    /// input, softmax its output): `grad(saved, dy) -> dx`.
    #[derive(Debug)]
    struct SavedTensorBackward {
        grad: fn(&FlexTensor, &FlexTensor) -> Vec<f32>,
    }

    impl Backward<Flex, 1> for SavedTensorBackward {
        type State = FlexTensor;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x] = ops.parents;
            let dy = values(&grads.consume::<Flex>(&ops.node));
            if let Some(node) = node_x {
                let shape = ops.state.shape().to_vec();
                grads.register::<Flex>(node.id, flat((self.grad)(&ops.state, &dy), shape));
            }
        }
    }

    /// `op(x)` on the autodiff device, saving `x` (or, with `save_output`, the result) for
    /// `grad`.
    fn saved_tensor_op<C: CheckpointStrategy>(
        x: FloatTensor<Autodiff<Flex, C>>,
        op: fn(FlexTensor) -> FlexTensor,
        save_output: bool,
        grad: fn(&FlexTensor, &FlexTensor) -> Vec<f32>,
    ) -> FloatTensor<Autodiff<Flex, C>> {
        let prep = SavedTensorBackward { grad }
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let input = values(&x.into_primitive());
        let y = op(input.clone());
        match prep {
            OpsKind::Tracked(prep) => {
                let saved = if save_output { y.clone() } else { input };
                prep.finish(saved, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn gelu_grad(x: &FlexTensor, dy: &FlexTensor) -> Vec<f32> {
        activation::gelu_backward(slice(x), slice(dy))
    }

    fn softmax_grad(y: &FlexTensor, dy: &FlexTensor) -> Vec<f32> {
        let row = y.shape().to_vec().last().copied().unwrap_or(1);
        activation::softmax_backward(slice(y), slice(dy), row)
    }

    #[derive(Debug)]
    struct MaxPoolBackward;

    impl Backward<Flex, 1> for MaxPoolBackward {
        /// Where each maximum came from, the geometry and the input's shape.
        type State = (Vec<u32>, PoolGeometry, [usize; 4]);

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x] = ops.parents;
            let dy = values(&grads.consume::<Flex>(&ops.node));
            let (arg, g, shape) = ops.state;
            if let Some(node) = node_x {
                let dx = max_pool::backward(slice(&dy), &arg, &g);
                grads.register::<Flex>(node.id, tensor(dx, shape));
            }
        }
    }

    #[derive(Debug)]
    struct GatherRowsBackward;

    impl Backward<Flex, 1> for GatherRowsBackward {
        /// The indices and the shape.
        type State = (Vec<u32>, PickShape);

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x] = ops.parents;
            let dy = values(&grads.consume::<Flex>(&ops.node));
            let (index, s) = ops.state;
            if let Some(node) = node_x {
                let dx = gather::backward(slice(&dy), &index, s);
                grads.register::<Flex>(node.id, flat(dx, vec![s.batch, s.rows, s.width]));
            }
        }
    }

    #[derive(Debug)]
    struct LinearBackward;

    impl Backward<Flex, 3> for LinearBackward {
        /// The checkpoints of the input and the weight.
        type State = (NodeId, NodeId);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_weight, node_bias] = ops.parents;
            let dy = values(&grads.consume::<Flex>(&ops.node));
            let (x_state, weight_state) = ops.state;
            let x = values(&checkpointer.retrieve_node_output::<FlexTensor>(x_state));
            let weight = values(&checkpointer.retrieve_node_output::<FlexTensor>(weight_state));
            let s = linear_shape(&x, &weight);
            let want = [node_x.is_some(), node_weight.is_some(), node_bias.is_some()];
            let (dx, dw, db) = linear::backward(slice(&x), slice(&weight), slice(&dy), s, want);
            if let (Some(node), Some(dx)) = (node_x, dx) {
                grads.register::<Flex>(node.id, flat(dx, x.shape().to_vec()));
            }
            if let (Some(node), Some(dw)) = (node_weight, dw) {
                grads.register::<Flex>(node.id, flat(dw, vec![s.input, s.output]));
            }
            if let (Some(node), Some(db)) = (node_bias, db) {
                grads.register::<Flex>(node.id, flat(db, vec![s.output]));
            }
        }
    }

    #[derive(Debug)]
    struct Conv2dBackward;

    impl Backward<Flex, 2> for Conv2dBackward {
        type State = (NodeId, NodeId, ConvOptions<2>);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_weight] = ops.parents;
            let dy = grads.consume::<Flex>(&ops.node);
            let (x_state, weight_state, options) = ops.state;
            let x = checkpointer.retrieve_node_output::<FlexTensor>(x_state);
            let weight = checkpointer.retrieve_node_output::<FlexTensor>(weight_state);
            let g = geometry(&x, &weight, &options);
            let (x_values, weight_values, dy) = (values(&x), values(&weight), values(&dy));
            let (dx, dw) = kernel::backward(
                slice(&x_values),
                slice(&weight_values),
                slice(&dy),
                &g,
                node_x.is_some(),
                node_weight.is_some(),
            );
            if let (Some(node), Some(dx)) = (node_x, dx) {
                let shape = [g.batch, g.in_channels, g.height, g.width];
                grads.register::<Flex>(node.id, tensor(dx, shape));
            }
            if let (Some(node), Some(dw)) = (node_weight, dw) {
                let shape = [g.out_channels, g.in_channels, g.kernel[0], g.kernel[1]];
                grads.register::<Flex>(node.id, tensor(dw, shape));
            }
        }
    }

    impl<C: CheckpointStrategy> KernelOps for Autodiff<Flex, C> {
        fn pretext_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self> {
            match Conv2dBackward
                .prepare::<C>([x.node(), weight.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let weight_state = prep.checkpoint(&weight);
                    let out = Flex::pretext_conv2d(
                        x.into_primitive(),
                        weight.into_primitive(),
                        options.clone(),
                    );
                    prep.finish((x_state, weight_state, options), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::pretext_conv2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    options,
                )),
            }
        }

        fn pretext_batch_norm_train(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
            reduce: Reduce,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            let prep = BatchNormBackward
                .prepare::<C>([x.node(), gamma.node(), beta.node()])
                .compute_bound()
                .stateful();
            let gamma_values = values(gamma.primitive());
            let (out, stats) = batch_norm_forward(
                x.primitive(),
                gamma.primitive(),
                beta.primitive(),
                epsilon,
                reduce,
            );
            let channels = stats.mean.len();
            let (mean, variance) = (
                flat(stats.mean.clone(), vec![channels]),
                flat(stats.variance.clone(), vec![channels]),
            );
            let out = match prep {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let s = norm_shape(x.primitive());
                    let gamma = slice(&gamma_values).to_vec();
                    prep.finish((x_state, gamma, stats, epsilon, s, reduce), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            };
            (
                out,
                FloatTensor::<Self>::new(mean),
                FloatTensor::<Self>::new(variance),
            )
        }

        fn pretext_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
            saved_tensor_op::<C>(x, Flex::pretext_gelu, false, gelu_grad)
        }

        fn pretext_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
            saved_tensor_op::<C>(x, Flex::pretext_softmax, true, softmax_grad)
        }

        /// Optimizer state takes no gradient: the update runs on the inner tensors untracked.
        fn pretext_adamw(
            p: FloatTensor<Self>,
            g: FloatTensor<Self>,
            m: FloatTensor<Self>,
            v: FloatTensor<Self>,
            scalars: AdamwScalars,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            let (p, m, v) = Flex::pretext_adamw(
                p.into_primitive(),
                g.into_primitive(),
                m.into_primitive(),
                v.into_primitive(),
                scalars,
            );
            (
                FloatTensor::<Self>::new(p),
                FloatTensor::<Self>::new(m),
                FloatTensor::<Self>::new(v),
            )
        }

        fn pretext_cross_entropy(
            logits: FloatTensor<Self>,
            targets: Vec<usize>,
        ) -> FloatTensor<Self> {
            let prep = CrossEntropyBackward
                .prepare::<C>([logits.node()])
                .compute_bound()
                .stateful();
            let (loss, lse) = cross_entropy_forward(logits.primitive(), &targets);
            match prep {
                OpsKind::Tracked(mut prep) => {
                    let state = prep.checkpoint(&logits);
                    prep.finish((state, targets, lse), loss)
                }
                OpsKind::UnTracked(prep) => prep.finish(loss),
            }
        }

        fn pretext_attention(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            heads: usize,
            key_pad: Option<Vec<bool>>,
            dropout: Option<ProbDropout>,
        ) -> FloatTensor<Self> {
            let prep = AttentionBackward
                .prepare::<C>([q.node(), k.node(), v.node()])
                .compute_bound()
                .stateful();
            let (out, stats) = attention_forward(
                q.primitive(),
                k.primitive(),
                v.primitive(),
                heads,
                key_pad.as_deref(),
                dropout,
            );
            match prep {
                OpsKind::Tracked(mut prep) => {
                    let ids = [
                        prep.checkpoint(&q),
                        prep.checkpoint(&k),
                        prep.checkpoint(&v),
                    ];
                    prep.finish((ids, stats, heads, key_pad, dropout), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }

        fn pretext_layer_norm(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
        ) -> FloatTensor<Self> {
            let prep = LayerNormBackward
                .prepare::<C>([x.node(), gamma.node(), beta.node()])
                .compute_bound()
                .stateful();
            let (out, stats) =
                layer_norm_forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon);
            match prep {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let gamma = slice(&values(gamma.primitive())).to_vec();
                    prep.finish((x_state, gamma, stats), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }

        fn pretext_linear(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            match LinearBackward
                .prepare::<C>([x.node(), weight.node(), bias.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let weight_state = prep.checkpoint(&weight);
                    let out = Flex::pretext_linear(
                        x.into_primitive(),
                        weight.into_primitive(),
                        bias.into_primitive(),
                    );
                    prep.finish((x_state, weight_state), out)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::pretext_linear(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                )),
            }
        }

        fn pretext_dropout(
            x: FloatTensor<Self>,
            key: u64,
            first: u32,
            prob: f64,
        ) -> FloatTensor<Self> {
            let prep = DropoutBackward
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful();
            let y = Flex::pretext_dropout(x.into_primitive(), key, first, prob);
            match prep {
                OpsKind::Tracked(prep) => prep.finish((key, first, prob), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }

        fn pretext_max_pool2d(
            x: FloatTensor<Self>,
            kernel: [usize; 2],
            stride: [usize; 2],
            padding: [(usize, usize); 2],
        ) -> FloatTensor<Self> {
            let prep = MaxPoolBackward
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful();
            let x = x.into_primitive();
            let g = pool_geometry(&x, kernel, stride, padding);
            let shape: [usize; 4] = x.shape().dims();
            let (y, arg) = pool_forward(&x, &g, [shape[0], shape[1]]);
            match prep {
                OpsKind::Tracked(prep) => prep.finish((arg, g, shape), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }

        fn pretext_gather_rows(
            x: FloatTensor<Self>,
            index: Vec<u32>,
            picked: usize,
        ) -> FloatTensor<Self> {
            let prep = GatherRowsBackward
                .prepare::<C>([x.node()])
                .compute_bound()
                .stateful();
            let x = x.into_primitive();
            let s = pick_shape(&x, picked);
            let y = Flex::pretext_gather_rows(x, index.clone(), picked);
            match prep {
                OpsKind::Tracked(prep) => prep.finish((index, s), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn options(g: &conv2d::ConvGeometry) -> ConvOptions<2> {
        ConvOptions::new_with_padding(g.stride, g.padding, g.dilation, 1)
    }

    fn close(a: Tensor<4>, b: Tensor<4>, what: &str) {
        let (a, b) = (
            a.into_data().try_to_vec::<f32>().unwrap(),
            b.into_data().try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what}: {x} vs {y}"
            );
        }
    }

    /// A normalisation's output and its input, γ and β gradients against the reference's.
    fn close_norm(what: &str, fast: [Tensor<4>; 4], reference: [Tensor<4>; 4]) {
        let names = [
            "output",
            "input gradient",
            "gamma gradient",
            "beta gradient",
        ];
        for ((a, b), name) in fast.into_iter().zip(reference).zip(names) {
            close(a, b, &format!("{what} {name}"));
        }
    }

    /// Output, input gradient and weight gradient equal those of burn's own conv2d (through its
    /// autodiff), with bias, on shapes with odd sizes, strides, padding, dilation and batch 1.
    #[test]
    fn matches_burns_conv2d_forward_and_backward() {
        let device = Device::flex().autodiff();
        device.seed(7);
        for g in conv2d::tests::geometries() {
            let x = Tensor::<4>::random(
                [g.batch, g.in_channels, g.height, g.width],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let w = Tensor::<4>::random(
                [g.out_channels, g.in_channels, g.kernel[0], g.kernel[1]],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let b = Tensor::<1>::random([g.out_channels], Distribution::Normal(0.0, 1.0), &device);
            let [oh, ow] = g.out_size();
            let r = Tensor::<4>::random(
                [g.batch, g.out_channels, oh, ow],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let run = |fast: bool| {
                let (x, w, b) = (
                    x.clone().detach().require_grad(),
                    w.clone().detach().require_grad(),
                    b.clone().detach().require_grad(),
                );
                let y = if fast {
                    super::conv2d(x.clone(), w.clone(), Some(b.clone()), options(&g))
                } else {
                    burn::tensor::module::conv2d(x.clone(), w.clone(), Some(b.clone()), options(&g))
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let dx = x.grad(&grads).unwrap();
                let dw = w.grad(&grads).unwrap();
                let db = b.grad(&grads).unwrap();
                (y.inner(), dx, dw, db)
            };
            let (y, dx, dw, db) = run(true);
            let (y_ref, dx_ref, dw_ref, db_ref) = run(false);
            close(y, y_ref, &format!("{g:?} output"));
            close(dx, dx_ref, &format!("{g:?} input gradient"));
            close(dw, dw_ref, &format!("{g:?} weight gradient"));
            close(
                db.unsqueeze(),
                db_ref.unsqueeze(),
                &format!("{g:?} bias gradient"),
            );
        }
    }

    /// A frozen weight gets no gradient and an input that is not tracked gets none either.
    #[test]
    fn gradients_reach_only_tracked_inputs() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::ones([2, 3, 5, 5], &device);
        let w = Tensor::<4>::ones([4, 3, 3, 3], &device).require_grad();
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let grads = super::conv2d(x.clone(), w.clone(), None, options)
            .sum()
            .backward();
        assert!(x.grad(&grads).is_none());
        let dw = w
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // Each weight sees every input pixel its tap reaches: 2 images x (4 or 5)² positions.
        assert_eq!(
            dw[4],
            2.0 * 25.0,
            "the centre tap sees all 25 positions of both images"
        );
        assert_eq!(dw[0], 2.0 * 16.0, "a corner tap sees 4x4 positions");
    }

    /// The module wrapper pads as burn's `Conv2d::forward` does, also for `Same` padding that
    /// comes out asymmetric (even kernel, stride 2, odd size).
    #[test]
    fn module_forward_equals_burns() {
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex();
        device.seed(3);
        for (kernel, stride, padding) in [
            (3, 1, PaddingConfig2d::Same),
            (4, 2, PaddingConfig2d::Same),
            (3, 2, PaddingConfig2d::Valid),
            (3, 1, PaddingConfig2d::Explicit(0, 1, 2, 1)),
        ] {
            let conv = Conv2dConfig::new([3, 5], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(padding.clone())
                .init(&device);
            let x = Tensor::<4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &device);
            close(
                conv.forward_fast(x.clone()),
                conv.forward(x),
                &format!("kernel {kernel} stride {stride} {padding:?}"),
            );
        }
    }

    /// Training-mode batch norm: output, the three gradients and the updated running
    /// statistics equal burn's, on 4-D and 2-D inputs.
    #[test]
    fn batch_norm_matches_burns() {
        use burn::nn::BatchNormConfig;
        let device = Device::flex().autodiff();
        device.seed(5);
        for shape in [vec![3, 4, 5, 7], vec![1, 2, 3, 3], vec![6, 5]] {
            let norm = BatchNormConfig::new(shape[1]).init(&device);
            let reference = norm.clone();
            let x = Tensor::<4>::random(
                [
                    shape[0],
                    shape[1],
                    *shape.get(2).unwrap_or(&1),
                    *shape.get(3).unwrap_or(&1),
                ],
                Distribution::Normal(0.5, 2.0),
                &device,
            );
            let r = Tensor::<4>::random(x.dims(), Distribution::Normal(0.0, 1.0), &device);
            let run = |norm: &BatchNorm, fast: bool| {
                let x = x.clone().detach().require_grad();
                let y = if shape.len() == 2 {
                    let x2: Tensor<2> = x.clone().reshape([shape[0], shape[1]]);
                    let y2 = if fast {
                        norm.forward_fast(x2)
                    } else {
                        norm.forward(x2)
                    };
                    y2.reshape(x.dims())
                } else if fast {
                    norm.forward_fast(x.clone())
                } else {
                    norm.forward(x.clone())
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let dx = x.grad(&grads).unwrap();
                let dg = norm.gamma.val().grad(&grads).unwrap();
                let db = norm.beta.val().grad(&grads).unwrap();
                (y.inner(), dx, dg, db)
            };
            let (y, dx, dg, db) = run(&norm, true);
            let (y_ref, dx_ref, dg_ref, db_ref) = run(&reference, false);
            let what = format!("{shape:?}");
            close_norm(
                &what,
                [y, dx, dg.unsqueeze(), db.unsqueeze()],
                [y_ref, dx_ref, dg_ref.unsqueeze(), db_ref.unsqueeze()],
            );
            let stat = |t: Tensor<1>| t.unsqueeze::<4>();
            close(
                stat(norm.running_mean.value()),
                stat(reference.running_mean.value()),
                &format!("{what} running mean"),
            );
            close(
                stat(norm.running_var.value()),
                stat(reference.running_var.value()),
                &format!("{what} running variance"),
            );
        }
    }

    /// Max pooling: output and input gradient equal burn's, with odd sizes, overlapping windows,
    /// padding and batch 1.
    #[test]
    fn max_pool_matches_burns() {
        use burn::nn::pool::MaxPool2dConfig;
        let device = Device::flex().autodiff();
        device.seed(11);
        for (shape, kernel, stride, padding) in [
            ([2, 3, 8, 8], 2, 2, PaddingConfig2d::Valid),
            ([1, 2, 7, 9], 2, 2, PaddingConfig2d::Valid),
            ([2, 2, 9, 8], 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1)),
            ([1, 1, 5, 6], 3, 1, PaddingConfig2d::Same),
        ] {
            let pool = MaxPool2dConfig::new([kernel, kernel])
                .with_strides([stride, stride])
                .with_padding(padding.clone())
                .init();
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |fast: bool| {
                let x = x.clone().detach().require_grad();
                let y = if fast {
                    pool.forward_fast(x.clone())
                } else {
                    pool.forward(x.clone())
                };
                let r = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &device);
                let r = Tensor::<4>::from_data(r.into_data(), &device);
                (y, x, r)
            };
            let (y, x_fast, r) = run(true);
            let (y_ref, x_ref, _) = run(false);
            let dx = x_fast
                .grad(&(y.clone() * r.clone()).sum().backward())
                .unwrap();
            let dx_ref = x_ref.grad(&(y_ref.clone() * r).sum().backward()).unwrap();
            let what = format!("{shape:?} kernel {kernel} stride {stride} {padding:?}");
            close(y.inner(), y_ref.inner(), &format!("{what} output"));
            close(dx, dx_ref, &format!("{what} input gradient"));
        }
    }

    /// Picked rows and their gradients equal burn's `gather` along the rows, a row picked
    /// twice included (its two gradients add up).
    #[test]
    fn gather_rows_matches_burns() {
        let device = Device::flex().autodiff();
        device.seed(12);
        let x = Tensor::<3>::random([2, 5, 3], Distribution::Normal(0.0, 1.0), &device);
        let index = Tensor::<2, Int>::from_data(
            TensorData::new(vec![4i64, 0, 4, 1, 2, 3], [2, 3]),
            &device,
        );
        let r = Tensor::<3>::random([2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let run = |fast: bool| {
            let x = x.clone().detach().require_grad();
            let y = if fast {
                gather_rows(x.clone(), index.clone())
            } else {
                x.clone()
                    .gather(1, index.clone().unsqueeze_dim::<3>(2).expand([2, 3, 3]))
            };
            let dx = x.grad(&(y.clone() * r.clone()).sum().backward()).unwrap();
            (y, dx)
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        assert_eq!(y.clone().into_data(), y_ref.into_data(), "picked rows");
        close(dx.clone().unsqueeze(), dx_ref.unsqueeze(), "gradient");
        let dx: Vec<f32> = dx.into_data().try_to_vec().unwrap();
        assert!(
            dx[3..6].iter().all(|&g| g == 0.0),
            "row 1 of sequence 0 was not picked"
        );
    }

    /// GELU and softmax: outputs and input gradients equal burn's ops (softmax also with rows
    /// of masked, very negative scores).
    #[test]
    fn gelu_and_softmax_match_burns() {
        let device = Device::flex().autodiff();
        device.seed(13);
        let x = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 3.0), &device);
        let masked = x.clone().slice_fill([0..2, 0..3, 0..5, 5..7], -1e4);
        for (name, input) in [("random", x), ("masked", masked)] {
            let r = Tensor::<4>::random(input.dims(), Distribution::Normal(0.0, 1.0), &device);
            for op in ["gelu", "softmax"] {
                let run = |fast: bool| {
                    let x = input.clone().detach().require_grad();
                    let y = match (op, fast) {
                        ("gelu", true) => super::gelu(x.clone()),
                        ("gelu", false) => burn::tensor::activation::gelu(x.clone()),
                        (_, true) => super::softmax(x.clone(), 3),
                        (_, false) => burn::tensor::activation::softmax(x.clone(), 3),
                    };
                    let dx = x.grad(&(y.clone() * r.clone()).sum().backward()).unwrap();
                    (y.inner(), dx)
                };
                let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
                close(y, y_ref, &format!("{op} {name} output"));
                close(dx, dx_ref, &format!("{op} {name} gradient"));
            }
        }
    }

    /// Layer norm: output and the gradients of the input, γ and β equal those of burn's
    /// `LayerNorm` (through its autodiff), with non-trivial γ and β, on rows of odd width.
    /// The fused attention computes what the chain of tensor ops computes, with padded keys
    /// and dropout on the probabilities (the same key, so the same mask): outputs and the
    /// gradients of q, k and v.
    #[test]
    fn fused_attention_matches_the_chain_of_ops() {
        let device = Device::flex().autodiff();
        let (batch, len, heads, head_dim) = (3, 6, 2, 4);
        let dim = heads * head_dim;
        device.seed(21);
        let qkv: Vec<Tensor<3>> = (0..3)
            .map(|_| Tensor::random([batch, len, dim], Distribution::Normal(0.0, 1.5), &device))
            .collect();
        let r = Tensor::<3>::random([batch, len, dim], Distribution::Normal(0.0, 1.0), &device);
        // Sequence 1 ends in two padded tokens, sequence 2 in one.
        let pad = Tensor::<2, Bool>::from_data(
            TensorData::new(
                (0..batch * len)
                    .map(|i| (i / len == 1 && i % len >= 4) || (i / len == 2 && i % len == 5))
                    .collect::<Vec<bool>>(),
                [batch, len],
            ),
            &device,
        );
        let mut outputs = Vec::new();
        for prob in [0.0, 0.25] {
            let dropout = burn::nn::DropoutConfig::new(prob).init();
            let run = |fused: bool| {
                device.seed(5);
                let [q, k, v] = [0, 1, 2].map(|i| qkv[i].clone().detach().require_grad());
                let (q2, k2, v2, pad) = (q.clone(), k.clone(), v.clone(), Some(pad.clone()));
                let out = if fused {
                    attention(q2, k2, v2, heads, pad, &dropout)
                } else {
                    attention_unfused(q2, k2, v2, heads, pad, &dropout)
                };
                let grads = (out.clone() * r.clone()).sum().backward();
                let g = |t: &Tensor<3>| {
                    t.grad(&grads)
                        .unwrap()
                        .reshape([batch, len, heads, head_dim])
                };
                (
                    out.inner().reshape([batch, len, heads, head_dim]),
                    [g(&q), g(&k), g(&v)],
                )
            };
            let ((out, grads), (out_ref, grads_ref)) = (run(true), run(false));
            outputs.push(out.clone().into_data().try_to_vec::<f32>().unwrap());
            close(out, out_ref, &format!("dropout {prob}: output"));
            for (name, (a, b)) in ["q", "k", "v"].iter().zip(grads.into_iter().zip(grads_ref)) {
                close(a, b, &format!("dropout {prob}: gradient of {name}"));
            }
        }
        // The dropout really dropped (the comparison above is not between two no-ops).
        assert_ne!(outputs[0], outputs[1]);
    }

    /// The cross-entropy kernel's loss and logits gradient equal burn's
    /// `log_softmax(x).gather(t).mean().neg()`.
    #[test]
    fn cross_entropy_matches_burns() {
        let device = Device::flex().autodiff();
        device.seed(8);
        let logits = Tensor::<2>::random([9, 23], Distribution::Normal(0.0, 4.0), &device);
        let targets = Tensor::<2, Int>::from_data(
            TensorData::new(vec![0i64, 22, 5, 5, 1, 13, 7, 22, 3], [9, 1]),
            &device,
        );
        let run = |fast: bool| {
            let x = logits.clone().detach().require_grad();
            let loss = if fast {
                cross_entropy(x.clone(), targets.clone())
            } else {
                burn::tensor::activation::log_softmax(x.clone(), 1)
                    .gather(1, targets.clone())
                    .mean()
                    .neg()
            };
            // A factor other than 1 checks that the upstream gradient is applied.
            let dx = x
                .grad(&loss.clone().mul_scalar(3.0).sum().backward())
                .unwrap();
            (loss.into_scalar::<f32>(), dx.reshape([1, 1, 9, 23]))
        };
        let ((loss, dx), (loss_ref, dx_ref)) = (run(true), run(false));
        assert!((loss - loss_ref).abs() < 1e-5, "{loss} vs {loss_ref}");
        close(dx, dx_ref, "cross-entropy gradient");
    }

    #[test]
    fn layer_norm_matches_burns() {
        use burn::nn::LayerNormConfig;
        let device = Device::flex().autodiff();
        device.seed(17);
        for (shape, epsilon) in [([2, 5, 37], 1e-12), ([1, 3, 8], 1e-5), ([4, 1, 256], 1e-6)] {
            let width = shape[2];
            let gamma = Tensor::<1>::random([width], Distribution::Normal(1.0, 0.5), &device);
            let beta = Tensor::<1>::random([width], Distribution::Normal(0.0, 0.5), &device);
            let fast = FastLayerNorm {
                gamma: Param::from_tensor(gamma.clone()),
                beta: Param::from_tensor(beta.clone()),
                epsilon,
            };
            let mut reference = LayerNormConfig::new(width)
                .with_epsilon(epsilon)
                .init(&device);
            reference.gamma = Param::from_tensor(gamma);
            reference.beta = Some(Param::from_tensor(beta));
            let x = Tensor::<3>::random(shape, Distribution::Normal(0.5, 2.0), &device);
            let r = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let run = |is_fast: bool| {
                let x = x.clone().detach().require_grad();
                let y = if is_fast {
                    fast.forward(x.clone())
                } else {
                    reference.forward(x.clone())
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let dx = x.grad(&grads).unwrap();
                let (dg, db) = if is_fast {
                    (fast.gamma.val().grad(&grads), fast.beta.val().grad(&grads))
                } else {
                    (
                        reference.gamma.val().grad(&grads),
                        reference.beta.as_ref().unwrap().val().grad(&grads),
                    )
                };
                (y.inner(), dx, dg.unwrap(), db.unwrap())
            };
            let (y, dx, dg, db) = run(true);
            let (y_ref, dx_ref, dg_ref, db_ref) = run(false);
            close_norm(
                &format!("{shape:?} eps {epsilon}"),
                [
                    y.unsqueeze(),
                    dx.unsqueeze(),
                    dg.unsqueeze(),
                    db.unsqueeze(),
                ],
                [
                    y_ref.unsqueeze(),
                    dx_ref.unsqueeze(),
                    dg_ref.unsqueeze(),
                    db_ref.unsqueeze(),
                ],
            );
        }
    }

    /// Linear: output and the gradients of the input, weight and bias equal those of burn's
    /// `Linear` (through its autodiff) on 3-D inputs; a transposed (non-contiguous) input and
    /// a layer off the autodiff device give burn's output too.
    #[test]
    fn linear_matches_burns() {
        use burn::nn::LinearConfig;
        let device = Device::flex().autodiff();
        device.seed(23);
        let layer = LinearConfig::new(37, 11).init(&device);
        for shape in [[1, 5, 37], [3, 7, 37], [1, 1, 37]] {
            let x = Tensor::<3>::random(shape, Distribution::Normal(0.5, 2.0), &device);
            let r = Tensor::<3>::random(
                [shape[0], shape[1], 11],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let run = |is_fast: bool| {
                let x = x.clone().detach().require_grad();
                let y = if is_fast {
                    layer.forward_fast(x.clone())
                } else {
                    layer.forward(x.clone())
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let dx = x.grad(&grads).unwrap();
                let dw = layer.weight.val().grad(&grads).unwrap();
                let db = layer.bias.as_ref().unwrap().val().grad(&grads).unwrap();
                (y.inner(), dx, dw, db)
            };
            let (y, dx, dw, db) = run(true);
            let (y_ref, dx_ref, dw_ref, db_ref) = run(false);
            let what = format!("{shape:?}");
            close(y.unsqueeze(), y_ref.unsqueeze(), &format!("{what} output"));
            close(
                dx.unsqueeze(),
                dx_ref.unsqueeze(),
                &format!("{what} input gradient"),
            );
            close(
                dw.unsqueeze(),
                dw_ref.unsqueeze(),
                &format!("{what} weight gradient"),
            );
            close(
                db.unsqueeze(),
                db_ref.unsqueeze(),
                &format!("{what} bias gradient"),
            );
        }
        let x = Tensor::<2>::random([37, 6], Distribution::Normal(0.0, 1.0), &device).transpose();
        close(
            layer.forward_fast(x.clone()).inner().unsqueeze(),
            layer.forward(x.clone()).inner().unsqueeze(),
            "transposed input",
        );
        let plain = layer.valid();
        close(
            plain.forward_fast(x.clone().inner()).unsqueeze(),
            plain.forward(x.inner()).unsqueeze(),
            "no autodiff",
        );
    }

    /// Dropout: the input gradient is the mask times 1/(1 − p) that the output shows, the same
    /// device seed draws the same mask and another seed another, and without autodiff or with
    /// the training flag off the input passes through as with burn's.
    #[test]
    fn dropout_gradient_is_its_mask_and_the_device_seed_repeats_it() {
        use burn::nn::DropoutConfig;
        let device = Device::flex().autodiff();
        let dropout = DropoutConfig::new(0.3).init();
        let x = Tensor::<2>::random([64, 50], Distribution::Uniform(1.0, 2.0), &device);
        let masked = |seed: u64| {
            device.seed(seed);
            let x = x.clone().detach().require_grad();
            let y = dropout.forward_fast(x.clone());
            let dx = x.grad(&y.clone().sum().backward()).unwrap();
            (
                y.inner().into_data().try_to_vec::<f32>().unwrap(),
                dx.into_data().try_to_vec::<f32>().unwrap(),
            )
        };
        let (y, dx) = masked(3);
        let xs = x.clone().inner().into_data().try_to_vec::<f32>().unwrap();
        let scale = 1.0 / 0.7;
        let mut dropped = 0;
        for ((&y, &d), &x) in y.iter().zip(&dx).zip(&xs) {
            if y == 0.0 {
                dropped += 1;
                assert_eq!(d, 0.0, "a dropped element passes no gradient");
            } else {
                assert!((d - scale).abs() < 1e-5 && (y - x * scale).abs() < 1e-5);
            }
        }
        let share = dropped as f64 / y.len() as f64;
        assert!((share - 0.3).abs() < 0.05, "dropped {share}");
        assert_eq!(masked(3).0, y, "same seed, same mask");
        assert_ne!(masked(4).0, y, "another seed, another mask");
        let plain = Tensor::<2>::ones([4, 4], &Device::flex());
        assert_eq!(
            dropout.forward_fast(plain.clone()).into_data(),
            plain.into_data()
        );
        let mut frozen = dropout.clone();
        frozen.training = Param::from_bool(false);
        let tracked = Tensor::<2>::ones([4, 4], &device);
        assert_eq!(
            frozen.forward_fast(tracked.clone()).into_data(),
            tracked.into_data()
        );
    }

    #[test]
    fn flex_devices_are_recognised() {
        assert!(crate::core::device::is_flex(&Device::flex()));
        assert!(crate::core::device::is_flex(&Device::flex().autodiff()));
    }
}
