//! A state dict as PyTorch has it (key -> tensor, row-major), whatever file it came from:
//! the common currency of every weight format, and the checks every loaded dict passes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::VggError;

/// The values of one tensor of a state dict.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    /// Integer buffers (BatchNorm's `num_batches_tracked`).
    I64(Vec<i64>),
}

/// One tensor of a state dict, row-major, in PyTorch's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    pub shape: Vec<usize>,
    pub values: Values,
}

impl StateTensor {
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        Self {
            shape,
            values: Values::F32(values),
        }
    }

    /// The values as `f32` (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.values {
            Values::F32(v) => v.clone(),
            Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

/// A PyTorch-style state dict: key -> tensor, sorted by key.
pub type StateDict = BTreeMap<String, StateTensor>;

/// `Err` naming the first tensor that holds a NaN or an infinity: weights that cannot give a
/// true score are refused at load time, not discovered as NaN accuracies later.
pub fn check_finite(dict: &StateDict, path: &Path) -> Result<(), VggError> {
    for (key, t) in dict {
        if let Values::F32(v) = &t.values {
            let count = v.iter().filter(|x| !x.is_finite()).count();
            if count > 0 {
                return Err(VggError::NonFiniteWeights {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    count,
                });
            }
            // A BatchNorm divides by sqrt(running_var + 1e-5): below -1e-5, a NaN everywhere.
            let negative = v.iter().filter(|x| **x < -1e-5).count();
            if key.ends_with("running_var") && negative > 0 {
                return Err(VggError::CorruptWeights {
                    path: path.to_path_buf(),
                    format: "weights",
                    reason: format!(
                        "`{key}` holds {negative} negative variance(s): a BatchNorm cannot divide by their square roots"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Removes a prefix every key carries (DataParallel's `module.`).
pub(crate) fn strip_prefix(dict: StateDict, prefix: &str) -> StateDict {
    if !dict.keys().all(|k| k.starts_with(prefix)) {
        return dict;
    }
    dict.into_iter()
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect()
}

/// The values of a tensor of `dtype` from its little-endian bytes (float16, bfloat16 and
/// float64 become float32; int32 becomes int64).
pub(crate) fn decode(dtype: safetensors::Dtype, bytes: &[u8]) -> Result<Values, String> {
    use safetensors::Dtype;
    let chunks = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        Dtype::F32 => Values::F32(
            chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        Dtype::F64 => Values::F32(
            chunks(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
        ),
        Dtype::F16 => Values::F32(
            chunks(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Values::F32(
            chunks(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        Dtype::I64 => Values::I64(
            chunks(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        Dtype::I32 => Values::I64(
            chunks(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
        ),
        other => {
            return Err(format!(
                "unsupported dtype {other:?}; save the weights as float32"
            ));
        }
    })
}
