//! `pretext bench ops`: each op the training steps spend their time in, forward and forward +
//! backward, at the shapes of the small CNN (SimCLR quick start: two views of 256 images),
//! ResNet-18 with the CIFAR stem and BERT-mini, timed on the device and set against the
//! machine's peak. Convolutions are timed twice: burn's op and pretext's kernel
//! ([`crate::core::kernels`]). A benchmark, never a test: nothing here asserts a speed.

use std::time::Instant;

use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{BatchNormConfig, DropoutConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use serde::Serialize;

use crate::core::kernels::{self, BatchNormForward, DropoutForward, MaxPoolForward};

/// One measured op.
#[derive(Debug, Clone, Serialize)]
pub struct OpTiming {
    /// What the shapes belong to: `small_cnn`, `resnet18_cifar`, `bert_mini` or
    /// `videomae_decoder`.
    pub model: &'static str,
    pub op: String,
    /// `burn` (the backend's op), `pretext` (core::kernels) or `unfused` (attention as a
    /// chain of tensor ops).
    pub implementation: &'static str,
    pub shape: String,
    /// Median wall time of one call, milliseconds.
    pub forward_ms: f64,
    pub forward_backward_ms: f64,
    /// Useful floating-point operations per call (0 where an op is memory-bound and FLOPs say
    /// nothing).
    pub forward_flops: f64,
    pub forward_backward_flops: f64,
}

impl OpTiming {
    pub fn forward_gflops(&self) -> f64 {
        self.forward_flops / self.forward_ms / 1e6
    }

    pub fn forward_backward_gflops(&self) -> f64 {
        self.forward_backward_flops / self.forward_backward_ms / 1e6
    }
}

/// The machine's f32 peak, measured: every thread runs a loop of independent vector FMAs at
/// once (the widest kind the CPU has), so the figure includes the clock the cores keep under
/// load, which `/proc/cpuinfo` does not tell inside a VM; `nominal_gflops` is the datasheet
/// reckoning beside it (cores x listed clock x 2 FMA units x lanes x 2).
#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    pub cores: usize,
    pub ghz: f64,
    pub isa: &'static str,
    pub nominal_gflops: f64,
    /// Measured f32 FLOP/s, in GFLOP/s: what every percentage of `bench ops` is taken of.
    pub gflops: f64,
    pub how: String,
}

pub fn machine_peak() -> Peak {
    let cores = rayon::current_num_threads();
    let ghz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(1.0, |mhz| mhz / 1000.0);
    let (lanes, isa) = simd_lanes();
    let nominal_gflops = cores as f64 * ghz * (2 * lanes * 2) as f64;
    let (gflops, ms) = measured_fma_gflops();
    Peak {
        cores,
        ghz,
        isa,
        nominal_gflops,
        gflops,
        how: format!(
            "measured: {cores} thread{} of {isa} FMAs at once, best of 3 runs of {ms:.0} ms after a warm-up \
             (nominal {nominal_gflops:.0}: {cores} x {ghz:.2} GHz listed x 2 FMA units x {lanes} \
             lanes x 2)",
            if cores == 1 { "" } else { "s" }
        ),
    }
}

fn simd_lanes() -> (usize, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::core::kernels::simd::has_avx512() {
            return (16, "AVX-512");
        }
        if crate::core::kernels::simd::has_avx2() {
            return (8, "AVX2+FMA");
        }
    }
    (4, "128-bit SIMD")
}

/// Independent accumulators per thread: more than an FMA's latency (4-5 cycles) times the
/// FMA units (2), so the loop is bound by throughput, not by waiting on its own results.
const FMA_CHAINS: usize = 12;
/// Rounds of `FMA_CHAINS` FMAs per thread per run (about 0.1 s on a 3 GHz core).
const FMA_ROUNDS: u64 = 25_000_000;

/// Best of three runs of every rayon thread looping over vector FMAs at once, after one run
/// that lets the cores reach their clock: (GFLOP/s, milliseconds of the best run).
pub fn measured_fma_gflops() -> (f64, f64) {
    let (lanes, _) = simd_lanes();
    let threads = rayon::current_num_threads();
    let flops = (threads as u64 * FMA_ROUNDS * FMA_CHAINS as u64 * lanes as u64 * 2) as f64;
    let mut best = f64::INFINITY;
    for run in 0..4 {
        let start = Instant::now();
        let sums = rayon::broadcast(|_| fma_loop(FMA_ROUNDS));
        let secs = start.elapsed().as_secs_f64();
        // The sums keep the loops from being optimised away.
        assert!(sums.iter().all(|s| s.is_finite()));
        if run > 0 {
            best = best.min(secs);
        }
    }
    (flops / best / 1e9, best * 1e3)
}

fn fma_loop(rounds: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::core::kernels::simd::has_avx512() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { fma_avx512(rounds) };
        }
        if crate::core::kernels::simd::has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { fma_avx2(rounds) };
        }
    }
    let mut acc = [[1f32; 4]; FMA_CHAINS];
    for _ in 0..rounds {
        for chain in &mut acc {
            for x in chain.iter_mut() {
                *x = x.mul_add(0.999_999, 1e-7);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); FMA_CHAINS];
    for _ in 0..rounds {
        for x in &mut acc {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
    let mut out = [0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); FMA_CHAINS];
    for _ in 0..rounds {
        for x in &mut acc {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, &x| _mm512_add_ps(s, x));
    _mm512_reduce_add_ps(sum)
}

/// Median milliseconds of `repeats` calls after one warm-up call.
fn time_ms(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// A convolution case: `[batch, c_in, side, side]`, `c_out` filters of `k x k`, stride 1 and
/// "same" padding (the small CNN's and ResNet's 3x3 layers).
struct ConvCase {
    model: &'static str,
    batch: usize,
    c_in: usize,
    c_out: usize,
    side: usize,
    k: usize,
}

const CONV_CASES: &[ConvCase] = &[
    ConvCase {
        model: "small_cnn",
        batch: 512,
        c_in: 1,
        c_out: 32,
        side: 28,
        k: 3,
    },
    ConvCase {
        model: "small_cnn",
        batch: 512,
        c_in: 32,
        c_out: 64,
        side: 14,
        k: 3,
    },
    ConvCase {
        model: "small_cnn",
        batch: 512,
        c_in: 64,
        c_out: 128,
        side: 7,
        k: 3,
    },
    ConvCase {
        model: "resnet18_cifar",
        batch: 64,
        c_in: 64,
        c_out: 64,
        side: 32,
        k: 3,
    },
    ConvCase {
        model: "resnet18_cifar",
        batch: 64,
        c_in: 128,
        c_out: 128,
        side: 16,
        k: 3,
    },
    ConvCase {
        model: "resnet18_cifar",
        batch: 64,
        c_in: 256,
        c_out: 256,
        side: 8,
        k: 3,
    },
    ConvCase {
        model: "resnet18_cifar",
        batch: 64,
        c_in: 512,
        c_out: 512,
        side: 4,
        k: 3,
    },
];

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Times `op` alone (no autodiff) and with its backward pass (inputs tracked, the gradient of
/// `sum(op(x))` taken).
fn measure<const D: usize, const E: usize>(
    repeats: usize,
    device: &Device,
    inputs: Vec<Tensor<D>>,
    op: impl Fn(Vec<Tensor<D>>) -> Tensor<E>,
) -> (f64, f64) {
    let plain: Vec<Tensor<D>> = inputs.iter().map(|t| t.clone().to_device(device)).collect();
    let forward = time_ms(repeats, || {
        let _ = op(plain.clone());
    });
    let tracked: Vec<Tensor<D>> = inputs
        .iter()
        .map(|t| t.clone().autodiff().require_grad())
        .collect();
    let both = time_ms(repeats, || {
        let _ = op(tracked.clone()).sum().backward();
    });
    (forward, both)
}

/// Every case, in order. `repeats` calls per timing (the median is kept).
pub fn run_ops(
    device: &Device,
    repeats: usize,
    mut progress: impl FnMut(&OpTiming),
) -> Vec<OpTiming> {
    device.seed(0);
    let mut out = Vec::new();
    let mut push = |t: OpTiming| {
        progress(&t);
        out.push(t);
    };
    for case in CONV_CASES {
        let ConvCase {
            model,
            batch,
            c_in,
            c_out,
            side,
            k,
        } = *case;
        let pad = k / 2;
        let options = ConvOptions::new([1, 1], [pad, pad], [1, 1], 1);
        let x = random([batch, c_in, side, side], device);
        let w = random([c_out, c_in, k, k], device);
        let flops = 2.0 * (batch * c_out * side * side * c_in * k * k) as f64;
        for implementation in ["burn", "pretext"] {
            let options = options.clone();
            let (forward_ms, forward_backward_ms) =
                measure(repeats, device, vec![x.clone(), w.clone()], move |t| {
                    let (x, w) = (t[0].clone(), t[1].clone());
                    if implementation == "burn" {
                        burn_conv2d(x, w, None, options.clone())
                    } else {
                        kernels::conv2d(x, w, None, options.clone())
                    }
                });
            push(OpTiming {
                model,
                op: format!("conv2d {k}x{k}"),
                implementation,
                shape: format!("{batch}x{c_in}x{side}x{side} -> {c_out}"),
                forward_ms,
                forward_backward_ms,
                forward_flops: flops,
                // Forward, input gradient and weight gradient: three products of one size.
                forward_backward_flops: 3.0 * flops,
            });
        }
    }
    // The small CNN's other ops on its first stage's output.
    let (n, c, side) = (512, 32, 28);
    let x = random([n, c, side, side], device);
    let shape = format!("{n}x{c}x{side}x{side}");
    let memory_bound =
        |model: &'static str, op: &str, implementation, shape: &str, (fwd, both)| OpTiming {
            model,
            op: op.into(),
            implementation,
            shape: shape.into(),
            forward_ms: fwd,
            forward_backward_ms: both,
            forward_flops: 0.0,
            forward_backward_flops: 0.0,
        };
    for implementation in ["burn", "pretext"] {
        // Training mode needs the autodiff device, so "forward" here records the tape too.
        let norm = BatchNormConfig::new(c).init(&device.clone().autodiff());
        let tracked = x.clone().autodiff().require_grad();
        let apply = |x: Tensor<4>| {
            if implementation == "burn" {
                norm.forward(x)
            } else {
                norm.forward_fast(x)
            }
        };
        let forward = time_ms(repeats, || {
            let _ = apply(tracked.clone());
        });
        let both = time_ms(repeats, || {
            let _ = apply(tracked.clone()).sum().backward();
        });
        push(memory_bound(
            "small_cnn",
            "batch_norm (train)",
            implementation,
            &shape,
            (forward, both),
        ));
    }
    for implementation in ["burn", "pretext"] {
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let timing = measure(repeats, device, vec![x.clone()], |t| {
            if implementation == "burn" {
                pool.forward(t[0].clone())
            } else {
                pool.forward_fast(t[0].clone())
            }
        });
        push(memory_bound(
            "small_cnn",
            "max_pool2d 2x2",
            implementation,
            &shape,
            timing,
        ));
    }
    let relu_timing = measure(repeats, device, vec![x.clone()], |t| relu(t[0].clone()));
    push(memory_bound(
        "small_cnn",
        "relu",
        "burn",
        &shape,
        relu_timing,
    ));
    // Projection head: 512 x 128 -> 256.
    let (rows, inner, cols) = (512, 128, 256);
    let matmul = |model: &'static str, rows: usize, inner: usize, cols: usize| {
        let a = random([rows, inner], device);
        let b = random([inner, cols], device);
        let (forward_ms, forward_backward_ms) = measure(repeats, device, vec![a, b], |t| {
            t[0].clone().matmul(t[1].clone())
        });
        let flops = 2.0 * (rows * inner * cols) as f64;
        OpTiming {
            model,
            op: "matmul".into(),
            implementation: "burn",
            shape: format!("{rows}x{inner} . {inner}x{cols}"),
            forward_ms,
            forward_backward_ms,
            forward_flops: flops,
            forward_backward_flops: 3.0 * flops,
        }
    };
    push(matmul("small_cnn", rows, inner, cols));
    // BERT-mini (4 layers, 256 wide, 4 heads, FFN 1024) on 16 sequences of 128 tokens.
    let tokens = 16 * 128;
    push(matmul("bert_mini", tokens, 256, 256));
    push(matmul("bert_mini", tokens, 256, 1024));
    push(matmul("bert_mini", tokens, 1024, 256));
    let scores = random([16, 4, 128, 128], device);
    for implementation in ["burn", "pretext"] {
        let timing = measure(repeats, device, vec![scores.clone()], |t| {
            if implementation == "burn" {
                softmax(t[0].clone(), 3)
            } else {
                kernels::softmax(t[0].clone(), 3)
            }
        });
        push(memory_bound(
            "bert_mini",
            "softmax (attention)",
            implementation,
            "16x4x128x128",
            timing,
        ));
    }
    let hidden = random([16, 128, 256], device);
    for implementation in ["burn", "pretext"] {
        let timing = measure(repeats, device, vec![hidden.clone()], |t| {
            let device = t[0].device();
            let (gamma, beta) = (Tensor::ones([256], &device), Tensor::zeros([256], &device));
            if implementation == "burn" {
                burn::tensor::module::layer_norm(t[0].clone(), gamma, Some(beta), 1e-12)
            } else {
                kernels::layer_norm(t[0].clone(), gamma, beta, 1e-12)
            }
        });
        push(memory_bound(
            "bert_mini",
            "layer_norm",
            implementation,
            "16x128x256",
            timing,
        ));
    }
    // Dropout only acts on an autodiff device, so both timings run there: the forward alone,
    // then forward + backward (attention probabilities, p = 0.1).
    let dropout = DropoutConfig::new(0.1).init();
    let probs = scores.clone().autodiff().require_grad();
    for implementation in ["burn", "pretext"] {
        let apply = |x: Tensor<4>| {
            if implementation == "burn" {
                dropout.forward(x)
            } else {
                dropout.forward_fast(x)
            }
        };
        let forward = time_ms(repeats, || {
            let _ = apply(probs.clone());
        });
        let both = time_ms(repeats, || {
            let _ = apply(probs.clone()).sum().backward();
        });
        push(memory_bound(
            "bert_mini",
            "dropout (attention)",
            implementation,
            "16x4x128x128",
            (forward, both),
        ));
    }
    let ffn = random([16, 128, 1024], device);
    for implementation in ["burn", "pretext"] {
        let timing = measure(repeats, device, vec![ffn.clone()], |t| {
            if implementation == "burn" {
                gelu(t[0].clone())
            } else {
                kernels::gelu(t[0].clone())
            }
        });
        push(memory_bound(
            "bert_mini",
            "gelu",
            implementation,
            "16x128x1024",
            timing,
        ));
    }
    // Attention, heads split and joined included: BERT-mini's (16 x 128 tokens, 4 heads of 64)
    // and VideoMAE's decoder (32 clips x 321 tokens, 4 heads of 16).
    let no_dropout = DropoutConfig::new(0.0).init();
    for (model, [batch, len, dim, heads]) in [
        ("bert_mini", [16, 128, 256, 4]),
        ("videomae_decoder", [32, 321, 64, 4]),
    ] {
        let qkv = vec![
            random([batch, len, dim], device),
            random([batch, len, dim], device),
            random([batch, len, dim], device),
        ];
        for implementation in ["unfused", "pretext"] {
            let (forward_ms, forward_backward_ms) = measure(repeats, device, qkv.clone(), |t| {
                let [q, k, v] = [0, 1, 2].map(|i| t[i].clone());
                if implementation == "unfused" {
                    kernels::attention_unfused(q, k, v, heads, None, &no_dropout)
                } else {
                    kernels::attention(q, k, v, heads, None, &no_dropout)
                }
            });
            // q kᵀ and the value product, 2 flops per multiply-add each.
            let flops = 4.0 * (batch * len * len * dim) as f64;
            push(OpTiming {
                model,
                op: "attention".into(),
                implementation,
                shape: format!("{batch}x{len}x{dim}, {heads} heads"),
                forward_ms,
                forward_backward_ms,
                forward_flops: flops,
                // The backward's four products (the fused kernel recomputes the scores on top).
                forward_backward_flops: 3.0 * flops,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peak loop must do the arithmetic it is credited with: every lane of every chain
    /// follows `x ← 0.999999·x + 1e-7` from 1, whatever instruction set runs it (a loop the
    /// compiler had shortened or dropped would end elsewhere).
    #[test]
    fn the_peak_loop_runs_every_fma_it_counts() {
        let rounds = 20_000;
        // A fused multiply-add rounds once, so every instruction set computes these bits.
        let mut x = 1f32;
        for _ in 0..rounds {
            x = x.mul_add(0.999_999, 1e-7);
        }
        let (lanes, _) = simd_lanes();
        let expected = f64::from(x) * (FMA_CHAINS * lanes) as f64;
        let got = f64::from(fma_loop(rounds));
        assert!(
            (got - expected).abs() < 1e-5 * expected,
            "{got} against {expected}"
        );
        // Half the rounds land measurably elsewhere.
        let short = f64::from(fma_loop(rounds / 2));
        assert!((short - expected).abs() > 1e-3 * expected);
    }
}
