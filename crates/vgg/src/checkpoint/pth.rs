//! PyTorch's `torch.save` files (`.pth`/`.pt`, zip or legacy pickle), read through burn's
//! pickle reader, which refuses anything but tensors and plain containers (a pickle that would
//! run code on load is an error).

use std::path::Path;

use super::corrupt;
use super::state_dict::{StateDict, StateTensor, decode};
use crate::error::VggError;

pub(crate) fn read(path: &Path) -> Result<StateDict, VggError> {
    use burn::store::pytorch_reader::{DType, PytorchReader};
    let mut reader = PytorchReader::new(path).map_err(|e| corrupt(path, "PyTorch", e))?;
    for key in ["state_dict", "model"] {
        if reader
            .keys()
            .iter()
            .all(|k| k.starts_with(&format!("{key}.")))
            && !reader.is_empty()
        {
            reader = PytorchReader::with_top_level_key(path, key)
                .map_err(|e| corrupt(path, "PyTorch", e))?;
            break;
        }
    }
    let mut dict = StateDict::new();
    // The pickle declares the tensors' sizes: bounded before any is read.
    let declared = reader
        .tensors()
        .values()
        .try_fold(0u64, |acc, t| acc.checked_add(t.num_elements() as u64))
        .unwrap_or(u64::MAX);
    crate::limits::check(
        || format!("{}: values its tensors declare", path.display()),
        declared,
        crate::limits::get().max_params.saturating_mul(2),
        "max_params",
    )?;
    for (name, tensor) in reader.into_tensors() {
        let bytes = tensor.read().map_err(|e| corrupt(path, "PyTorch", e))?;
        // The reader gives native-endian bytes: the same as safetensors' little-endian here.
        let dtype = match tensor.dtype() {
            DType::F32 => safetensors::Dtype::F32,
            DType::F64 => safetensors::Dtype::F64,
            DType::F16 => safetensors::Dtype::F16,
            DType::BF16 => safetensors::Dtype::BF16,
            DType::I64 => safetensors::Dtype::I64,
            DType::I32 => safetensors::Dtype::I32,
            other => {
                return Err(corrupt(
                    path,
                    "PyTorch",
                    format!("{name}: unsupported dtype {other:?}"),
                ));
            }
        };
        let values = decode(dtype, &bytes)
            .map_err(|why| corrupt(path, "PyTorch", format!("{name}: {why}")))?;
        dict.insert(
            name,
            StateTensor {
                shape: tensor.shape().to_vec(),
                values,
            },
        );
    }
    Ok(dict)
}
