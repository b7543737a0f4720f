//! Weights in torchvision's layout: reading `.pth` and `.safetensors` state dicts, writing
//! `.safetensors`, and moving them in and out of a [`Vgg`].
//!
//! Loading is strict, as `load_state_dict(strict=True)`: every key that
//! [`VggConfig::state_keys`] derives from the layer table must be present with its exact shape,
//! and no other key may be; otherwise [`VggError::WeightMismatch`] lists every difference.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Param, RunningState};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::arch::{StageKind, VggConfig};
use crate::error::VggError;
use crate::model::{InitScheme, Vgg};

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

/// Supported weight file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PyTorch's `torch.save` (zip or legacy), `.pth` / `.pt`.
    Pytorch,
    /// `.safetensors`.
    Safetensors,
    /// burn's own record format (burnpack), `.bpk`.
    Burn,
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
            _ => Err(VggError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

fn corrupt(path: &Path, format: &'static str, reason: impl ToString) -> VggError {
    VggError::CorruptWeights {
        path: path.to_path_buf(),
        format,
        reason: reason.to_string(),
    }
}

/// Reads a state dict from `.safetensors` or `.pth`. Float16/bfloat16/float64 tensors are
/// converted to float32. A `.pth` checkpoint that wraps its state dict under `state_dict` or
/// `model` is unwrapped, and DataParallel's `module.` prefix is removed.
pub fn read_state_dict(path: &Path) -> Result<StateDict, VggError> {
    if !path.exists() {
        return Err(VggError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let dict = match Format::of(path)? {
        Format::Safetensors => read_safetensors(path)?,
        Format::Pytorch => read_pytorch(path)?,
        Format::Burn => {
            return Err(corrupt(
                path,
                "burn",
                "a burn record holds a whole model, not a state dict; load it with Vgg::load",
            ));
        }
    };
    Ok(strip_prefix(dict, "module."))
}

fn strip_prefix(dict: StateDict, prefix: &str) -> StateDict {
    if !dict.keys().all(|k| k.starts_with(prefix)) {
        return dict;
    }
    dict.into_iter()
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect()
}

/// The whole file, if it is no larger than weights can be: [`Limits::max_params`] values of 8
/// bytes (float64) and 64 MiB of headers. `config` (when known) bounds it more tightly.
///
/// [`Limits::max_params`]: crate::limits::Limits::max_params
pub fn read_bounded(path: &Path, config: Option<&VggConfig>) -> Result<Vec<u8>, VggError> {
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
    std::fs::read(path).map_err(|e| VggError::io(path, e))
}

fn read_safetensors(path: &Path) -> Result<StateDict, VggError> {
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

fn decode(dtype: safetensors::Dtype, bytes: &[u8]) -> Result<Values, String> {
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

fn read_pytorch(path: &Path) -> Result<StateDict, VggError> {
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

/// Writes a state dict as `.safetensors`, atomically: a temporary file beside `path`, then a
/// rename, so an existing file is never left half-written.
pub fn write_safetensors(dict: &StateDict, path: &Path) -> Result<(), VggError> {
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
        }
    }
    Ok(())
}

/// Compares a state dict with the keys and shapes `config` expects; `Err` lists every
/// missing, unexpected and mis-shaped key.
pub fn check_state_dict(config: &VggConfig, dict: &StateDict, path: &Path) -> Result<(), VggError> {
    let expected = config.state_keys();
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (key, shape) in &expected {
        match dict.get(key) {
            None => missing.push(key.clone()),
            // A scalar saved as [1] is the same scalar.
            Some(t) if t.shape != *shape && !(shape.is_empty() && t.shape == [1]) => {
                misshaped.push((key.clone(), shape.clone(), t.shape.clone()))
            }
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> = dict
        .keys()
        .filter(|k| !expected.iter().any(|(e, _)| e == *k))
        .cloned()
        .collect();
    if missing.is_empty() && unexpected.is_empty() && misshaped.is_empty() {
        return Ok(());
    }
    Err(VggError::WeightMismatch {
        path: path.to_path_buf(),
        arch: config.name.clone(),
        missing,
        unexpected,
        misshaped,
    })
}

fn tensor<const D: usize>(t: &StateTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.to_f32(), t.shape.clone()), device)
}

fn replace<const D: usize>(param: Param<Tensor<D>>, value: Tensor<D>) -> Param<Tensor<D>> {
    // Keep the parameter's id, so optimiser state keyed by it stays attached.
    Param::initialized(param.id, value).set_require_grad(true)
}

fn values<const D: usize>(t: Tensor<D>) -> StateTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor");
    StateTensor::f32(shape, data)
}

impl Vgg {
    /// Builds a network from a torchvision-layout state dict, strictly (see the module doc).
    pub fn from_state_dict(
        config: &VggConfig,
        dict: &StateDict,
        source: &Path,
        device: &Device,
    ) -> Result<Self, VggError> {
        check_state_dict(config, dict, source)?;
        check_finite(dict, source)?;
        let model = Vgg::new(config, InitScheme::Kaiming, device)?;
        Ok(model.load_state_dict_unchecked(dict, device))
    }

    /// Reads a weight file (`.pth`, `.safetensors`, or burn's `.bpk`) into a network of
    /// `config`, strictly.
    pub fn load(config: &VggConfig, path: &Path, device: &Device) -> Result<Self, VggError> {
        if Format::of(path)? == Format::Burn {
            return crate::record::load_burn(config, path, device);
        }
        // Caffe- or Keras-named files are renamed into torchvision's layout first.
        let dict = crate::layouts::to_torchvision(read_state_dict(path)?, config);
        Self::from_state_dict(config, &dict, path, device)
    }

    /// Copies every key of `dict` that this network has into it; keys it lacks are ignored.
    /// Used by strict loading after [`check_state_dict`], and by partial initialisation.
    pub fn load_state_dict_unchecked(mut self, dict: &StateDict, device: &Device) -> Self {
        let plan = self.config().plan();
        let mut tracked = None;
        let mut blocks = self.convs.iter_mut();
        let mut block = None;
        for stage in plan {
            let p = format!("features.{}", stage.index);
            let get = |name: &str| dict.get(&format!("{p}.{name}"));
            match stage.kind {
                StageKind::Conv { .. } => {
                    let b = blocks.next().expect("one block per conv");
                    if let Some(w) = get("weight") {
                        b.conv.weight = replace(b.conv.weight.clone(), tensor(w, device));
                    }
                    if let (Some(bias), Some(param)) = (get("bias"), b.conv.bias.take()) {
                        b.conv.bias = Some(replace(param, tensor(bias, device)));
                    }
                    block = Some(b);
                }
                StageKind::BatchNorm { .. } => {
                    let bn = block
                        .as_mut()
                        .and_then(|b| b.bn.as_mut())
                        .expect("BN follows a conv");
                    if let Some(w) = get("weight") {
                        bn.gamma = replace(bn.gamma.clone(), tensor(w, device));
                    }
                    if let Some(b) = get("bias") {
                        bn.beta = replace(bn.beta.clone(), tensor(b, device));
                    }
                    if let Some(m) = get("running_mean") {
                        bn.running_mean = RunningState::new(tensor(m, device));
                    }
                    if let Some(v) = get("running_var") {
                        bn.running_var = RunningState::new(tensor(v, device));
                    }
                    if let Some(n) = get("num_batches_tracked") {
                        let count = match &n.values {
                            Values::I64(v) => v.first().copied(),
                            Values::F32(v) => v.first().map(|&x| x as i64),
                        };
                        tracked = count;
                    }
                }
                _ => {}
            }
        }
        if let Some(n) = tracked {
            self.set_batches_tracked(n);
        }
        let fcs = self.config().fc_layers();
        for ((i, _, _), fc) in fcs
            .iter()
            .zip([&mut self.fc1, &mut self.fc2, &mut self.fc3])
        {
            load_linear(fc, dict, &format!("classifier.{i}"), device);
        }
        self
    }

    /// The network's weights as a torchvision state dict (Linear weights as `[out, in]`).
    pub fn state_dict(&self) -> StateDict {
        let mut dict = StateDict::new();
        let mut blocks = self.convs.iter();
        let mut block = None;
        for stage in self.config().plan() {
            let p = format!("features.{}", stage.index);
            match stage.kind {
                StageKind::Conv { .. } => {
                    let b = blocks.next().expect("one block per conv");
                    dict.insert(format!("{p}.weight"), values(b.conv.weight.val()));
                    if let Some(bias) = &b.conv.bias {
                        dict.insert(format!("{p}.bias"), values(bias.val()));
                    }
                    block = Some(b);
                }
                StageKind::BatchNorm { .. } => {
                    let bn = block
                        .and_then(|b| b.bn.as_ref())
                        .expect("BN follows a conv");
                    dict.insert(format!("{p}.weight"), values(bn.gamma.val()));
                    dict.insert(format!("{p}.bias"), values(bn.beta.val()));
                    dict.insert(
                        format!("{p}.running_mean"),
                        values(bn.running_mean.value_sync()),
                    );
                    dict.insert(
                        format!("{p}.running_var"),
                        values(bn.running_var.value_sync()),
                    );
                    dict.insert(
                        format!("{p}.num_batches_tracked"),
                        StateTensor {
                            shape: vec![],
                            values: Values::I64(vec![self.batches_tracked()]),
                        },
                    );
                }
                _ => {}
            }
        }
        for ((i, _, _), fc) in self
            .config()
            .fc_layers()
            .iter()
            .zip([&self.fc1, &self.fc2, &self.fc3])
        {
            // burn stores Linear weights as [in, out]; PyTorch as [out, in].
            dict.insert(
                format!("classifier.{i}.weight"),
                values(fc.weight.val().transpose()),
            );
            if let Some(b) = &fc.bias {
                dict.insert(format!("classifier.{i}.bias"), values(b.val()));
            }
        }
        dict
    }

    /// Writes the weights in torchvision's layout as `.safetensors` (atomically).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), VggError> {
        write_safetensors(&self.state_dict(), path)
    }

    /// Writes the weights in the format `path`'s extension names: `.safetensors` (torchvision
    /// layout) or `.bpk` (burn's record). PyTorch pickles are read, not written.
    pub fn save(&self, path: &Path) -> Result<(), VggError> {
        match Format::of(path)? {
            Format::Safetensors => self.save_safetensors(path),
            Format::Burn => crate::record::save_burn(self, path),
            Format::Pytorch => Err(VggError::BadConfig {
                what: "output format".into(),
                reason: format!(
                    "{}: writing PyTorch pickles is not supported; write .safetensors (torch loads it with safetensors.torch.load_file)",
                    path.display()
                ),
            }),
        }
    }
}

fn load_linear(fc: &mut Linear, dict: &StateDict, prefix: &str, device: &Device) {
    if let Some(w) = dict.get(&format!("{prefix}.weight")) {
        // PyTorch [out, in] -> burn [in, out].
        let value: Tensor<2> = tensor::<2>(w, device).transpose();
        fc.weight = replace(fc.weight.clone(), value);
    }
    if let (Some(b), Some(param)) = (dict.get(&format!("{prefix}.bias")), fc.bias.take()) {
        fc.bias = Some(replace(param, tensor(b, device)));
    }
}
