//! Dynamic loss scaling for float16 training (Micikevicius et al. 2018, Section 3.2), with
//! PyTorch's `GradScaler` defaults: the loss is multiplied by a scale before the backward so that
//! small float16 gradients do not flush to zero; the summed gradients are divided by it before
//! the step. A step whose gradients overflowed (inf or NaN) is skipped and the scale halved;
//! after 2,000 steps in a row without overflow it doubles.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::collective::GradLayout;

/// The scale and its history; part of a run's state, so a resumed run goes on with the same.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// The loss is multiplied by this before the backward.
    pub scale: f64,
    /// Steps since the last overflow or growth.
    pub good_steps: u32,
    /// Steps skipped because their gradients overflowed, over the whole run.
    pub skipped_steps: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        Self {
            scale: Self::INITIAL,
            good_steps: 0,
            skipped_steps: 0,
        }
    }
}

impl LossScale {
    /// PyTorch's `init_scale`, 2^16.
    pub const INITIAL: f64 = 65536.0;
    /// Overflow-free steps before the scale doubles (PyTorch's `growth_interval`).
    pub const GROWTH_INTERVAL: u32 = 2000;
    /// Below this, an overflow is not the scale's doing: the run has diverged.
    pub const MIN: f64 = 1.0;

    /// Records a step whose gradients were finite (`true`: it is applied) or not (skipped).
    /// `Err` when gradients overflow at the smallest scale: no scale can save the run.
    pub fn update(&mut self, finite: bool) -> Result<(), f64> {
        if finite {
            self.good_steps += 1;
            if self.good_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
            return Ok(());
        }
        if self.scale <= Self::MIN {
            return Err(self.scale);
        }
        self.scale /= 2.0;
        self.good_steps = 0;
        self.skipped_steps += 1;
        Ok(())
    }
}

/// `grads` (laid out by `layout`) times `factor`, and whether every value is finite: one sum
/// over all of them on the device, read back once.
pub fn unscale(
    layout: &GradLayout,
    grads: GradientsParams,
    factor: f64,
) -> (GradientsParams, bool) {
    let mut grads = grads;
    let mut total: Option<Tensor<1>> = None;
    for (id, shape) in layout.params() {
        let size = match shape.len() {
            1 => scale_one::<1>(&mut grads, *id, factor),
            2 => scale_one::<2>(&mut grads, *id, factor),
            4 => scale_one::<4>(&mut grads, *id, factor),
            d => unreachable!("VGG has no {d}-D parameter"),
        };
        total = match (total, size) {
            (Some(sum), Some(t)) => Some(sum + t),
            (sum, t) => sum.or(t),
        };
    }
    let finite = total.is_none_or(|t| t.into_scalar::<f32>().is_finite());
    (grads, finite)
}

/// Multiplies the gradient of `id` (if it has one) by `factor`; returns its sum of magnitudes.
fn scale_one<const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    factor: f64,
) -> Option<Tensor<1>> {
    let g = grads.remove::<D>(id)?;
    let size = g.clone().abs().sum();
    grads.register(id, g.mul_scalar(factor));
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_doubles_after_the_interval_and_gives_up_at_one() {
        let mut s = LossScale::default();
        s.update(false).unwrap();
        assert_eq!((s.scale, s.skipped_steps, s.good_steps), (32768.0, 1, 0));
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            s.update(true).unwrap();
        }
        assert_eq!(s.scale, 32768.0);
        s.update(true).unwrap();
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        let mut s = LossScale {
            scale: 1.0,
            ..LossScale::default()
        };
        assert_eq!(s.update(false), Err(1.0));
    }
}
