//! Weights on disk: state dicts ([`state_dict`]) read from `.pth` ([`pth`]), `.safetensors`
//! ([`safetensors`]), the authors' `.caffemodel` ([`caffe`]), ONNX ([`onnx`], read and
//! written, both through [`protobuf`]) and Keras' HDF5 and `.keras` files ([`keras`]), the authors' Caffe and Keras names renamed to torchvision's
//! ([`layouts`]), loaded strictly into a [`Vgg`] ([`strict`]), partly for the paper's
//! initialisation of deeper nets ([`partial`]), and burn's own record format for training
//! checkpoints ([`burnpack`]).

pub mod burnpack;
pub mod caffe;
pub(crate) mod contain;
#[cfg(feature = "keras")]
pub mod keras;
pub mod layouts;
pub mod onnx;
pub mod partial;
pub mod protobuf;
pub mod pth;
pub mod run_files;
pub mod safetensors;
pub mod state_dict;
pub mod strict;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;

pub use state_dict::{StateDict, StateTensor, Values, check_finite};
pub use strict::{check_state_dict, is_trunk};

use crate::arch::VggConfig;
use crate::error::VggError;
use crate::nn::Vgg;

/// Supported weight file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PyTorch's `torch.save` (zip or legacy), `.pth` / `.pt`.
    Pytorch,
    /// `.safetensors`.
    Safetensors,
    /// burn's own record format (burnpack), `.bpk`.
    Burn,
    /// The authors' Caffe release, `.caffemodel`.
    Caffe,
    /// ONNX, `.onnx`.
    Onnx,
    /// Keras: `.h5` (legacy), `.weights.h5` (Keras 3), `.keras`.
    Keras,
}

impl Format {
    pub fn of(path: &Path) -> Result<Self, VggError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("pth" | "pt" | "bin" | "ckpt") => Ok(Self::Pytorch),
            Some("safetensors") => Ok(Self::Safetensors),
            Some("bpk" | "burnpack") => Ok(Self::Burn),
            Some("caffemodel") => Ok(Self::Caffe),
            Some("onnx") => Ok(Self::Onnx),
            Some("h5" | "hdf5" | "keras") => Ok(Self::Keras),
            _ => Err(VggError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

pub(crate) fn corrupt(path: &Path, format: &'static str, reason: impl ToString) -> VggError {
    VggError::CorruptWeights {
        path: path.to_path_buf(),
        format,
        reason: reason.to_string(),
    }
}

/// A weight file as read: its tensors under the file's own names, the layout they are in, and
/// the text metadata the file carries (safetensors' `__metadata__`, ONNX's `metadata_props`).
#[derive(Debug, Clone)]
pub struct WeightFile {
    pub dict: StateDict,
    /// Told by the format where the format decides it (every Keras file is in Keras' layout,
    /// every `.caffemodel` in the authors'; an ONNX graph that flattens channels-last before
    /// FC1 is a Keras export), by the names otherwise ([`layouts::detect`]): always before any
    /// renaming, which makes every layout look like torchvision's.
    pub layout: layouts::Layout,
    pub metadata: BTreeMap<String, String>,
}

/// Reads a weight file of any format but burn's: see [`read_state_dict`] for what is unwrapped.
/// A dict that mixes layouts (a Caffe name beside torchvision's) is refused, naming both keys.
pub fn read_weight_file(path: &Path) -> Result<WeightFile, VggError> {
    if !path.exists() {
        return Err(VggError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let (dict, told, metadata) = match Format::of(path)? {
        Format::Safetensors => {
            let (dict, metadata) = safetensors::read_with_metadata(path)?;
            (dict, None, metadata)
        }
        Format::Pytorch => (pth::read(path)?, None, BTreeMap::new()),
        Format::Caffe => (
            caffe::read(path)?,
            Some(layouts::Layout::Caffe),
            BTreeMap::new(),
        ),
        Format::Onnx => {
            let (dict, channels_last, metadata) = onnx::read_all(path)?;
            let told = channels_last.then_some(layouts::Layout::Keras);
            (dict, told, metadata)
        }
        #[cfg(feature = "keras")]
        Format::Keras => (
            keras::read(path)?,
            Some(layouts::Layout::Keras),
            BTreeMap::new(),
        ),
        #[cfg(not(feature = "keras"))]
        Format::Keras => {
            return Err(corrupt(
                path,
                "Keras",
                "this build of vgg reads no Keras files (the library's `keras` feature is off); convert it with a build that has it",
            ));
        }
        Format::Burn => {
            return Err(corrupt(
                path,
                "burn",
                "a burn record holds a whole model, not a state dict; load it with Vgg::load",
            ));
        }
    };
    let dict = state_dict::strip_prefix(dict, "module.");
    let layout = match told {
        Some(layout) => layout,
        None => layouts::detect_strict(&dict).map_err(|reason| corrupt(path, "weights", reason))?,
    };
    Ok(WeightFile {
        dict,
        layout,
        metadata,
    })
}

/// Reads a state dict from any weight file but burn's record. Float16/bfloat16/float64 tensors
/// are converted to float32. A `.pth` checkpoint that wraps its state dict under `state_dict`
/// or `model` is unwrapped, and DataParallel's `module.` prefix is removed.
pub fn read_state_dict(path: &Path) -> Result<StateDict, VggError> {
    Ok(read_weight_file(path)?.dict)
}

/// The whole file, if it is no larger than weights can be: [`Limits::max_params`] values of 8
/// bytes (float64) and 64 MiB of headers. `config` (when known) bounds it more tightly.
///
/// [`Limits::max_params`]: crate::limits::Limits::max_params
pub fn read_bounded(path: &Path, config: Option<&VggConfig>) -> Result<Vec<u8>, VggError> {
    read_bounded_size(path, config)?;
    std::fs::read(path).map_err(|e| VggError::io(path, e))
}

/// The size check of [`read_bounded`], for the formats read as a stream.
pub(crate) fn read_bounded_size(path: &Path, config: Option<&VggConfig>) -> Result<u64, VggError> {
    let size = std::fs::metadata(path)
        .map_err(|e| VggError::io(path, e))?
        .len();
    let params = config.map_or(crate::limits::get().max_params, |c| c.num_params() as u64);
    crate::limits::check(
        || format!("{}: file size in bytes", path.display()),
        size,
        params.saturating_mul(8).saturating_add(64 << 20),
        "max_params",
    )?;
    Ok(size)
}

/// Writes a state dict as `.safetensors` (atomically).
pub fn write_safetensors(dict: &StateDict, path: &Path) -> Result<(), VggError> {
    safetensors::write(dict, path)
}

impl Vgg {
    /// Reads a weight file (`.pth`, `.safetensors`, or burn's `.bpk`) into a network of
    /// `config`, strictly.
    pub fn load(config: &VggConfig, path: &Path, device: &Device) -> Result<Self, VggError> {
        if Format::of(path)? == Format::Burn {
            return burnpack::load(config, path, device);
        }
        // Caffe- or Keras-named files are renamed into torchvision's layout first.
        let file = read_weight_file(path)?;
        let dict = layouts::to_torchvision(file.dict, file.layout, config)
            .map_err(|reason| corrupt(path, "weights", reason))?;
        Self::from_state_dict(config, &dict, path, device)
    }

    /// Writes the weights in torchvision's layout as `.safetensors` (atomically).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), VggError> {
        safetensors::write(&self.state_dict(), path)
    }

    /// Writes the weights in the format `path`'s extension names: `.safetensors` (torchvision
    /// layout), `.onnx` (a model onnxruntime runs) or `.bpk` (burn's record). PyTorch pickles
    /// and Caffe models are read, not written.
    pub fn save(&self, path: &Path) -> Result<(), VggError> {
        self.save_with(path, &BTreeMap::new())
    }

    /// [`Vgg::save`] with text metadata where the format holds it (`.safetensors`' header,
    /// ONNX's `metadata_props`; burn's record holds none): the preset the weights carry.
    pub fn save_with(
        &self,
        path: &Path,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), VggError> {
        match Format::of(path)? {
            Format::Safetensors => {
                safetensors::write_with_metadata(&self.state_dict(), path, false, metadata)
            }
            Format::Burn => burnpack::save(self, path),
            // Protocol Buffers (and so onnxruntime) read no message of 2 GiB or more.
            Format::Onnx if self.config().num_params() as u64 * 4 >= (2 << 30) - (1 << 20) => {
                Err(VggError::BadConfig {
                    what: "output format".into(),
                    reason: format!(
                        "{} has {} parameters: too many for one ONNX file (2 GiB at most); write .safetensors",
                        self.config().name,
                        self.config().num_params()
                    ),
                })
            }
            Format::Onnx => crate::fsio::write_atomic(
                path,
                &onnx::write_with_metadata(self.config(), &self.state_dict(), metadata),
            ),
            Format::Pytorch | Format::Caffe | Format::Keras => Err(VggError::BadConfig {
                what: "output format".into(),
                reason: format!(
                    "{}: PyTorch pickles, Caffe and Keras models are read, not written; write .safetensors (torch loads it with safetensors.torch.load_file), .onnx or .bpk",
                    path.display()
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    /// A library built without `keras` (a dependent crate's `default-features = false`) refuses
    /// a Keras file saying which feature reads it.
    #[cfg(not(feature = "keras"))]
    #[test]
    fn without_the_keras_feature_a_keras_file_is_refused_saying_so() {
        let path = std::env::temp_dir().join(format!("vgg-no-keras-{}.h5", std::process::id()));
        std::fs::write(&path, b"\x89HDF\r\n\x1a\n").unwrap();
        let err = super::read_weight_file(&path).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("`keras` feature is off"), "{err}");
    }

    /// Without `download`, a published file in the cache is used, and a missing one is an
    /// error saying why (no network is touched).
    #[cfg(not(feature = "download"))]
    #[test]
    fn without_the_download_feature_nothing_is_fetched() {
        let cache = std::env::temp_dir().join(format!("vgg-no-dl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::create_dir_all(&cache).unwrap();
        let err = crate::preset::download::fetch(
            "http://127.0.0.1:9/x-0123abcd.pth",
            &cache,
            "x-0123abcd.pth",
            "0123abcd",
            1 << 20,
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        let _ = std::fs::remove_dir_all(&cache);
        assert!(err.contains("`download` feature is off"), "{err}");
    }
}
