//! Mixed precision (Micikevicius et al., "Mixed Precision Training", ICLR 2018; PyTorch's
//! `torch.autocast` + `GradScaler`): the weights stay float32 (the master copy the optimiser
//! updates), and a training forward computes in the dtype of its input. The convolutions and FC
//! layers cast their float32 weights to that dtype (a cast whose backward casts the gradient back
//! to float32); BatchNorm and LRN compute on a float32 copy of their input (autocast hands
//! cuDNN's BatchNorm half inputs with float32 statistics: the same statistics, one more cast),
//! and the class scores are cast to float32 for the loss. float16's narrow range needs its loss
//! scaled before the backward ([`crate::train::LossScale`]); bfloat16 has float32's range and
//! needs no scaling.

use std::fmt;
use std::str::FromStr;

use burn::tensor::module::{conv2d, linear, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{DType, Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::VggError;

/// The dtype a training forward computes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32 (the paper's, and the default).
    #[default]
    F32,
    /// Convolutions and FC layers in float16, with dynamic loss scaling.
    F16,
    /// Convolutions and FC layers in bfloat16 (float32's range: no loss scaling).
    Bf16,
}

/// The names [`Precision`] parses, for messages.
pub const PRECISION_NAMES: &str = "f32, f16 or bf16";

impl Precision {
    /// The dtype of the activations.
    pub fn dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::Bf16 => FloatDType::BF16,
        }
    }

    /// Whether gradients need a scaled loss to stay inside the dtype's range (float16).
    pub fn scales_loss(self) -> bool {
        self == Self::F16
    }

    /// Refuses a precision `device` cannot compute in (a GPU adapter without half-precision
    /// shaders), by running a small convolution, max pool and FC layer in it, and their backward
    /// on an autodiff device, against known values: one error line before a run, not a panic
    /// or wrong numbers in its first step.
    pub fn check(self, device: &Device) -> Result<(), VggError> {
        if self == Self::F32 {
            return Ok(());
        }
        let probe = || {
            let w = Tensor::<4>::ones([1, 1, 3, 3], device);
            let w = if device.is_autodiff() {
                w.require_grad()
            } else {
                w
            };
            // Ones through a padded 3x3 kernel of ones: [[4,6,6,4],[6,9,9,6],...]; pooled, 9s.
            let x = Tensor::<4>::ones([1, 1, 4, 4], device);
            let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let y = conv2d(self.apply(x), self.apply(w.clone()), None, options); // [1, 1, 4, 4]
            let y = max_pool2d(y, MaxPoolOptions::new([2, 2])); // [1, 1, 2, 2]
            let fc = self.apply(Tensor::<2>::ones([4, 1], device));
            let score = to_f32(linear(y.reshape([1, 4]), fc, None)).sum(); // 4 x 9
            let value = score.clone().into_scalar::<f32>();
            // Each pooled 9 is a full 3x3 window of ones: d/dw = 4 per weight, 36 in all.
            let grad = device
                .is_autodiff()
                .then(|| {
                    w.grad(&score.backward())
                        .map(|g| g.sum().into_scalar::<f32>())
                })
                .flatten();
            (value, grad)
        };
        match crate::device::quietly(probe) {
            Ok((36.0, None | Some(36.0))) => Ok(()),
            Ok((value, grad)) => Err(VggError::bad_config(
                "precision",
                format!(
                    "{self} computes wrongly on this device (a test network gave {value} and gradient {grad:?}, not 36 and Some(36.0)); use f32"
                ),
            )),
            Err(why) => Err(VggError::bad_config(
                "precision",
                format!("this device does not compute in {self} ({why}); use f32"),
            )),
        }
    }

    /// `x` in this precision (unchanged in float32).
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::F32 => x,
            _ => x.cast(self.dtype()),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(format!(
                "unknown precision '{s}': expected {PRECISION_NAMES}"
            )),
        }
    }
}

/// `t` in float32 (unchanged if it is).
pub fn to_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// `t` in `like`'s dtype (unchanged if it is): weights follow the activations.
pub fn like<const D: usize, const E: usize>(t: Tensor<D>, like: &Tensor<E>) -> Tensor<D> {
    if t.dtype() == like.dtype() {
        t
    } else {
        t.cast(like.dtype())
    }
}

/// `f` computed in float32 on `x`, its result back in `x`'s dtype: BatchNorm and LRN under
/// mixed precision, as autocast runs them.
pub fn in_f32<const D: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return f(x);
    }
    f(x.cast(FloatDType::F32)).cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
        }
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!(
            "f8".parse::<Precision>()
                .unwrap_err()
                .contains("f32, f16 or bf16")
        );
        assert!(Precision::F16.scales_loss() && !Precision::Bf16.scales_loss());
    }

    /// flex computes in both half precisions (on burn's operations).
    #[test]
    fn flex_passes_the_probe() {
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            p.check(&Device::flex()).unwrap();
            p.check(&Device::flex().autodiff()).unwrap();
        }
    }
}
