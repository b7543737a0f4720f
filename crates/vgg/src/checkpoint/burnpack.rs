//! burn's own record format (burnpack, `.bpk`): the whole module with its parameter ids, which
//! is what optimiser state is keyed by, so training checkpoints use it.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;

use super::state_dict::check_finite;
use crate::arch::VggConfig;
use crate::error::VggError;
use crate::fsio::write_atomic;
use crate::nn::{InitScheme, Vgg};

/// Writes `model` as a burnpack record, atomically.
pub fn save(model: &Vgg, path: &Path) -> Result<(), VggError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| VggError::CorruptWeights {
            path: path.to_path_buf(),
            format: "burn",
            reason: format!("{e:?}"),
        })?;
    write_atomic(path, &bytes)
}

/// Reads a burnpack record into a network of `config`.
pub fn load(config: &VggConfig, path: &Path, device: &Device) -> Result<Vgg, VggError> {
    let corrupt = |reason: String| VggError::CorruptWeights {
        path: path.to_path_buf(),
        format: "burn",
        reason,
    };
    let bytes = super::read_bounded(path, Some(config))?;
    let record = ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(|e| corrupt(format!("{e:?}")))?;
    let model = Vgg::new(config, InitScheme::Kaiming, device)?;
    let model = model
        .try_load_record(record)
        .map_err(|e| corrupt(format!("{e:?} (is this the right architecture?)")))?;
    check_finite(&model.state_dict(), path)?;
    Ok(model)
}
