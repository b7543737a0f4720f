//! Strict loading, as `load_state_dict(strict=True)`: every key that
//! [`VggConfig::state_keys`] derives from the layer table must be present with its exact shape
//! (BatchNorm's `num_batches_tracked` counter may be absent), and no other key may be; otherwise
//! [`VggError::WeightMismatch`] lists every difference. And
//! the way back: a [`Vgg`]'s weights as a torchvision state dict.

use std::path::Path;

use burn::module::{Param, RunningState};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use super::state_dict::{StateDict, StateTensor, Values, check_finite};
use crate::arch::{StageKind, VggConfig};
use crate::error::VggError;
use crate::nn::{InitScheme, Vgg};

/// Compares a state dict with the keys and shapes `config` expects; `Err` lists every
/// missing, unexpected and mis-shaped key.
pub fn check_state_dict(config: &VggConfig, dict: &StateDict, path: &Path) -> Result<(), VggError> {
    check_keys(config, &config.state_keys(), dict, path)
}

/// Whether a state dict holds a trunk: the convolutions and no classifier (Keras'
/// `include_top=False`, torchvision's `IMAGENET1K_FEATURES`).
pub fn is_trunk(dict: &StateDict) -> bool {
    !dict.keys().any(|k| crate::arch::names::is_head(k))
}

/// [`check_state_dict`] for a trunk: every key of `features`, exactly, and nothing else.
pub fn check_trunk(config: &VggConfig, dict: &StateDict, path: &Path) -> Result<(), VggError> {
    let expected: Vec<(String, Vec<usize>)> = config
        .state_keys()
        .into_iter()
        .filter(|(k, _)| k.starts_with("features."))
        .collect();
    check_keys(config, &expected, dict, path)
}

fn check_keys(
    config: &VggConfig,
    expected: &[(String, Vec<usize>)],
    dict: &StateDict,
    path: &Path,
) -> Result<(), VggError> {
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (key, shape) in expected {
        match dict.get(key) {
            // BatchNorm's batch counter is bookkeeping, not a weight: formats other than
            // PyTorch's (ONNX, Keras) do not carry it.
            None if key.ends_with("num_batches_tracked") => {}
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

    /// Builds a network from a trunk's state dict (its convolutions, strictly); the head is
    /// drawn fresh and means nothing until trained.
    pub fn from_trunk_dict(
        config: &VggConfig,
        dict: &StateDict,
        source: &Path,
        device: &Device,
    ) -> Result<Self, VggError> {
        check_trunk(config, dict, source)?;
        check_finite(dict, source)?;
        let model = Vgg::new(config, InitScheme::Kaiming, device)?;
        Ok(model.load_state_dict_unchecked(dict, device))
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
                    if let (Some(bias), Some(param)) = (get("bias"), b.conv.bias.as_ref()) {
                        b.conv.bias = Some(replace(param.clone(), tensor(bias, device)));
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
}

fn load_linear(fc: &mut Linear, dict: &StateDict, prefix: &str, device: &Device) {
    if let Some(w) = dict.get(&format!("{prefix}.weight")) {
        // PyTorch [out, in] -> burn [in, out].
        let value: Tensor<2> = tensor::<2>(w, device).transpose();
        fc.weight = replace(fc.weight.clone(), value);
    }
    if let (Some(b), Some(param)) = (dict.get(&format!("{prefix}.bias")), fc.bias.as_ref()) {
        fc.bias = Some(replace(param.clone(), tensor(b, device)));
    }
}

/// The module holding a torchvision key's tensor, as burn's optimiser names it (a path its
/// parameter groups match): `features.3.weight` -> `convs.1.conv`, a BatchNorm's `weight` ->
/// `convs.1.bn`, `classifier.0.bias` -> `fc1`.
pub fn module_of(config: &VggConfig, key: &str) -> Option<String> {
    let mut parts = key.split('.');
    let (group, index) = (parts.next()?, parts.next()?.parse::<usize>().ok()?);
    match group {
        "classifier" => Some(format!("fc{}", index / 3 + 1)),
        "features" => {
            let mut conv = None;
            for stage in config.plan() {
                if let StageKind::Conv { .. } = stage.kind {
                    conv = Some(conv.map_or(0, |c| c + 1));
                }
                if stage.index == index {
                    return match stage.kind {
                        StageKind::Conv { .. } => Some(format!("convs.{}.conv", conv?)),
                        StageKind::BatchNorm { .. } => Some(format!("convs.{}.bn", conv?)),
                        _ => None,
                    };
                }
            }
            None
        }
        _ => None,
    }
}
