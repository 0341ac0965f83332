//! Momentum (EMA) encoders: BYOL's target network, and later MoCo's key encoder and DINO's teacher.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// BYOL's schedule: tau rises from `base` to 1 along a half cosine over training.
/// `progress` is the fraction of training done, in [0, 1].
pub fn cosine_tau(base: f64, progress: f64) -> f64 {
    1.0 - (1.0 - base) * ((std::f64::consts::PI * progress.clamp(0.0, 1.0)).cos() + 1.0) / 2.0
}

/// Collects every float tensor of a module (parameters and buffers), flattened, in visit order.
struct Flatten(Vec<Tensor<1>>);

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.val().detach().reshape([-1]));
    }
}

/// Replaces each tensor `t` of the target by `tau * t + (1 - tau) * source`.
struct Ema {
    source: std::vec::IntoIter<Tensor<1>>,
    tau: f64,
}

impl ModuleMapper for Ema {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(source) = self.source.next() else {
            return param;
        };
        let tau = self.tau;
        param.map(|target| {
            let dims = target.dims();
            let mixed =
                target.detach().mul_scalar(tau) + source.reshape(dims).mul_scalar(1.0 - tau);
            mixed.set_require_grad(false)
        })
    }
}

/// One EMA step of `target` towards `source` (which must have the same structure).
pub fn ema_update<M: Module>(target: M, source: &M, tau: f64) -> M {
    let mut flat = Flatten(Vec::new());
    source.visit(&mut flat);
    target.map(&mut Ema {
        source: flat.0.into_iter(),
        tau,
    })
}

/// An independent copy of `module` whose tensors take no gradient.
///
/// Cloning a burn module shares lazily initialised parameters and batch-norm running state
/// with the original, so `clone().no_grad()` could switch off the original's gradients and mix
/// their statistics. Copying every tensor's values into a freshly built module avoids both.
pub fn detached_copy<M: Module>(source: &M, fresh: M) -> M {
    ema_update(fresh, source, 0.0).no_grad()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn tau_schedule_endpoints() {
        assert!((cosine_tau(0.99, 0.0) - 0.99).abs() < 1e-12);
        assert!((cosine_tau(0.99, 0.5) - 0.995).abs() < 1e-12);
        assert!((cosine_tau(0.99, 1.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ema_follows_its_formula() {
        let device = Device::flex();
        let a: Linear = LinearConfig::new(3, 2).init(&device);
        let b: Linear = LinearConfig::new(3, 2).init(&device);
        let wa = a.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let wb = b.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let mixed = ema_update(a, &b, 0.9);
        let wm = mixed.weight.val().into_data().try_to_vec::<f32>().unwrap();
        for ((m, x), y) in wm.iter().zip(&wa).zip(&wb) {
            assert!((m - (0.9 * x + 0.1 * y)).abs() < 1e-6);
        }
    }
}
