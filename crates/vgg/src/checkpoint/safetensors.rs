//! `.safetensors` files: read (every float type to float32) and written (atomically), in
//! torchvision's layout.

use std::path::Path;

use super::state_dict::{StateDict, StateTensor, Values, decode};
use super::{corrupt, read_bounded};
use crate::error::VggError;

pub(crate) fn read(path: &Path) -> Result<StateDict, VggError> {
    let bytes = read_bounded(path, None)?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| corrupt(path, "safetensors", e))?;
    let mut dict = StateDict::new();
    for (name, view) in file.tensors() {
        let values = decode(view.dtype(), view.data())
            .map_err(|why| corrupt(path, "safetensors", format!("{name}: {why}")))?;
        dict.insert(
            name,
            StateTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(dict)
}

/// Writes a state dict as `.safetensors`, atomically: a temporary file beside `path`, then a
/// rename, so an existing file is never left half-written.
pub fn write(dict: &StateDict, path: &Path) -> Result<(), VggError> {
    let mut views = Vec::with_capacity(dict.len());
    let buffers: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = dict
        .iter()
        .map(|(k, t)| {
            let (dtype, bytes) = match &t.values {
                Values::F32(v) => (
                    safetensors::Dtype::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                Values::I64(v) => (
                    safetensors::Dtype::I64,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            };
            (k.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    for (k, dtype, shape, bytes) in &buffers {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| corrupt(path, "safetensors", e))?;
        views.push((k.as_str(), view));
    }
    let bytes = safetensors::serialize(views, None).map_err(|e| corrupt(path, "safetensors", e))?;
    crate::fsio::write_atomic(path, &bytes)
}
