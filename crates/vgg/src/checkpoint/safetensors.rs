//! `.safetensors` files: read (every float type to float32) and written (atomically), in
//! torchvision's layout.

use std::collections::BTreeMap;
use std::path::Path;

use super::state_dict::{StateDict, StateTensor, Values, decode};
use super::{corrupt, read_bounded};
use crate::error::VggError;

/// The tensors and the text metadata (`__metadata__`) of a `.safetensors` file.
pub(crate) fn read_with_metadata(
    path: &Path,
) -> Result<(StateDict, BTreeMap<String, String>), VggError> {
    let bytes = read_bounded(path, None)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| corrupt(path, "safetensors", e))?;
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
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
    Ok((dict, metadata))
}

/// Writes a state dict as `.safetensors`, atomically: a temporary file beside `path`, then a
/// rename, so an existing file is never left half-written.
pub fn write(dict: &StateDict, path: &Path) -> Result<(), VggError> {
    write_as(dict, path, false, None)
}

/// [`write()`] (or [`write_f16`] with `f16`) with text metadata in the header (`__metadata__`):
/// the preset a file carries ([`crate::preset::PRESET_KEY`]).
pub fn write_with_metadata(
    dict: &StateDict,
    path: &Path,
    f16: bool,
    metadata: &BTreeMap<String, String>,
) -> Result<(), VggError> {
    if f16 {
        check_f16(dict, path)?;
    }
    write_as(dict, path, f16, Some(metadata))
}

/// [`write()`] with the floats stored as IEEE half precision (half the file; readers widen them
/// back to float32, as PyTorch's `.half()` weights). A value beyond f16's range (65504) is an
/// error, not an infinity.
pub fn write_f16(dict: &StateDict, path: &Path) -> Result<(), VggError> {
    check_f16(dict, path)?;
    write_as(dict, path, true, None)
}

fn check_f16(dict: &StateDict, path: &Path) -> Result<(), VggError> {
    for (k, t) in dict {
        if let Values::F32(v) = &t.values
            && let Some(x) = v.iter().find(|x| half::f16::from_f32(**x).is_infinite())
        {
            return Err(VggError::BadConfig {
                what: "half precision".into(),
                reason: format!(
                    "for {}: `{k}` holds {x}, beyond f16's range (65504); keep float32",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

fn write_as(
    dict: &StateDict,
    path: &Path,
    f16: bool,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(), VggError> {
    let mut views = Vec::with_capacity(dict.len());
    let buffers: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = dict
        .iter()
        .map(|(k, t)| {
            let (dtype, bytes) = match &t.values {
                Values::F32(v) if f16 => (
                    safetensors::Dtype::F16,
                    v.iter()
                        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                        .collect(),
                ),
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
    let metadata = metadata
        .filter(|m| !m.is_empty())
        .map(|m| m.clone().into_iter().collect());
    let bytes =
        safetensors::serialize(views, metadata).map_err(|e| corrupt(path, "safetensors", e))?;
    crate::fsio::write_atomic(path, &bytes)
}
