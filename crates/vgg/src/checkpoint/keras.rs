//! Keras' weight files: the legacy HDF5 layout of `model.save("x.h5")` and `save_weights("x.h5")`
//! (layers in the `layer_names` attribute, each with its `weight_names`, under a
//! `model_weights` group or at the root; Keras 2's `block1_conv1/kernel:0` and Keras 1's
//! `block1_conv1_W_1:0` names), Keras 3's `.weights.h5` (`layers/conv2d_3/vars/0`), and `.keras`
//! files (a zip holding `model.weights.h5`). Layers are taken in the file's order whatever their
//! names, as `keras.conv.003.kernel`, `keras.bn.000.gamma`, `keras.dense.001.bias`; the layout
//! ([`super::layouts`]) places them in the network and transposes them.

use std::io::Read;
use std::path::Path;

use hdf5_reader::group::Group;
use hdf5_reader::{Dataset, Hdf5File};

use super::contain::contained;
use super::corrupt;
use super::read_bounded_size;
use super::state_dict::{StateDict, StateTensor};
use crate::error::VggError;

/// What a Keras layer with weights is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conv,
    Dense,
    BatchNorm,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Conv => "conv",
            Kind::Dense => "dense",
            Kind::BatchNorm => "bn",
        }
    }
}

/// Keras' `BatchNormalization` divides by `sqrt(var + epsilon)`; the network divides by
/// `sqrt(var + 1e-5)`, as PyTorch. Adding the difference to the variance makes the two the
/// same, exactly.
fn with_epsilon(var: StateTensor, epsilon: f32) -> StateTensor {
    let shifted = var.to_f32().iter().map(|v| v + (epsilon - 1e-5)).collect();
    StateTensor::f32(var.shape, shifted)
}

/// Keras' default `BatchNormalization` epsilon, for files that store no model config
/// (`.weights.h5`, `save_weights`).
const KERAS_EPSILON: f32 = 1e-3;

/// The epsilon of every `BatchNormalization` layer a model config (Keras' JSON: a `.keras`
/// file's `config.json`, a legacy `.h5`'s `model_config`) holds, in the order of its layers,
/// nested models included.
fn bn_epsilons(config: &str) -> Result<Vec<f32>, String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f32>) -> Result<(), String> {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("class_name").and_then(|c| c.as_str()) == Some("BatchNormalization") {
                    let eps = m
                        .get("config")
                        .and_then(|c| c.get("epsilon"))
                        .map_or(Some(KERAS_EPSILON as f64), |e| e.as_f64())
                        .ok_or("a BatchNormalization epsilon that is not a number")?;
                    if !(eps.is_finite() && eps >= 0.0) {
                        return Err(format!("a BatchNormalization epsilon of {eps}"));
                    }
                    out.push(eps as f32);
                }
                // Layers sit in `config.layers` lists, whose order is kept; the other keys of
                // one object hold no layers.
                m.values().try_for_each(|x| walk(x, out))
            }
            serde_json::Value::Array(a) => a.iter().try_for_each(|x| walk(x, out)),
            _ => Ok(()),
        }
    }
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("its model config is not JSON: {e}"))?;
    let mut out = Vec::new();
    walk(&value, &mut out)?;
    Ok(out)
}

/// Reads a Keras weight file (`.h5`, `.weights.h5`, `.keras`).
pub fn read(path: &Path) -> Result<StateDict, VggError> {
    let size = read_bounded_size(path, None)?;
    let file = std::fs::File::open(path).map_err(|e| VggError::io(path, e))?;
    let (layers, config) =
        contained(|| layers_of(path, file, size)).map_err(|e| corrupt(path, "Keras", e))?;
    // Each BatchNorm's epsilon as the model config says (`.keras`, legacy `.h5`); Keras'
    // default where the file stores none.
    let bn_count = layers.iter().filter(|(k, _)| *k == Kind::BatchNorm).count();
    let epsilons = match config {
        Some(json) => {
            let eps = bn_epsilons(&json).map_err(|e| corrupt(path, "Keras", e))?;
            if eps.len() != bn_count {
                return Err(corrupt(
                    path,
                    "Keras",
                    format!(
                        "its model config has {} BatchNormalization layers, its weights {bn_count}",
                        eps.len()
                    ),
                ));
            }
            eps
        }
        None => vec![KERAS_EPSILON; bn_count],
    };
    let mut dict = StateDict::new();
    let mut counts = [0usize; 3];
    let mut floats = 0u64;
    for (kind, weights) in layers {
        let k = &mut counts[kind as usize];
        for (param, mut t) in weights {
            floats += t.shape.iter().product::<usize>() as u64;
            if kind == Kind::BatchNorm && param == "moving_variance" {
                t = with_epsilon(t, epsilons[*k]);
            }
            dict.insert(format!("keras.{}.{:03}.{param}", kind.key(), *k), t);
        }
        *k += 1;
    }
    crate::limits::check(
        || format!("{}: values", path.display()),
        floats,
        crate::limits::get().max_params.saturating_mul(2),
        "max_params",
    )?;
    if dict.is_empty() {
        return Err(corrupt(path, "Keras", "no layer with weights"));
    }
    Ok(dict)
}

/// The layers with weights, in the file's order, and the model config the file holds (if
/// any). HDF5 parsing runs contained: a panic in the reader is an error about the file.
fn layers_of(
    path: &Path,
    archive: std::fs::File,
    size: u64,
) -> Result<(Vec<Layer>, Option<String>), String> {
    let mut config = None;
    let file = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("keras"))
    {
        let mut zip =
            zip::ZipArchive::new(archive).map_err(|e| format!("not a .keras zip: {e}"))?;
        if let Ok(entry) = zip.by_name("config.json") {
            // A model config is kilobytes; 64 MiB is far beyond any.
            let mut text = String::new();
            entry
                .take(64 << 20)
                .read_to_string(&mut text)
                .map_err(|e| format!("config.json: {e}"))?;
            config = Some(text);
        }
        let mut entry = zip
            .by_name("model.weights.h5")
            .map_err(|_| "the .keras zip holds no model.weights.h5".to_string())?;
        if entry.size() > size.saturating_mul(64) {
            return Err("model.weights.h5 is larger than its zip can hold".into());
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("model.weights.h5: {e}"))?;
        let len = bytes.len() as u64;
        (Hdf5File::from_vec(bytes).map_err(|e| e.to_string())?, len)
    } else {
        (
            Hdf5File::open(path).map_err(|e| format!("not an HDF5 file: {e}"))?,
            size,
        )
    };
    let (file, bytes) = file;
    let mut budget = Budget {
        left: (crate::limits::get().max_params.saturating_mul(2))
            .min(bytes.saturating_mul(1100) / 4),
        bytes,
    };
    let root = file.root_group().map_err(|e| e.to_string())?;
    if config.is_none()
        && let Ok(a) = root.attribute("model_config")
        && a.num_elements().is_ok_and(|n| n == 1)
    {
        config = a.read_strings().ok().and_then(|mut v| v.pop());
    }
    let layers = if has_group(&root, "layers") && !has_attribute(&root, "layer_names") {
        keras3(&root, &mut budget)?
    } else {
        legacy(&root, &mut budget)?
    };
    Ok((layers, config))
}

/// The values the datasets still to read may declare: what the limits allow, and no more than
/// the file's bytes hold even compressed (deflate stops near 1:1032). HDF5 gives a dataset
/// that was never written its fill value, so a tiny file can declare gigabytes.
struct Budget {
    left: u64,
    bytes: u64,
}

fn has_group(g: &Group, name: &str) -> bool {
    g.groups()
        .is_ok_and(|gs| gs.iter().any(|c| c.name() == name))
}

fn has_attribute(g: &Group, name: &str) -> bool {
    g.attribute(name).is_ok()
}

type Layer = (Kind, Vec<(&'static str, StateTensor)>);

/// Legacy HDF5: the layers of `layer_names`, in that order, each with its `weight_names`.
fn legacy(root: &Group, budget: &mut Budget) -> Result<Vec<Layer>, String> {
    let top = if has_group(root, "model_weights") {
        root.group("model_weights").map_err(|e| e.to_string())?
    } else {
        root.clone()
    };
    let names = top
        .attribute("layer_names")
        .and_then(|a| a.read_strings())
        .map_err(|_| "no `layer_names`: not a Keras weight file".to_string())?;
    let mut layers = Vec::new();
    for name in names {
        let group = top.group(&name).map_err(|e| format!("layer {name}: {e}"))?;
        let weight_names = match group.attribute("weight_names") {
            // A layer without weights: h5py writes the empty list as an empty float array.
            Ok(a) if a.num_elements().is_ok_and(|n| n == 0) => continue,
            Ok(a) => a.read_strings().map_err(|e| format!("layer {name}: {e}"))?,
            Err(_) => continue,
        };
        // A model nested in the model (`Sequential([VGG16(include_top=False), ...])`) keeps all
        // its layers' weights in one group: `block1_conv1/kernel:0`, `block1_conv2/kernel:0`...;
        // each run of one parent path is one layer.
        let mut runs: Vec<(String, Vec<(String, StateTensor)>)> = Vec::new();
        for w in &weight_names {
            let dataset = dataset_at(&group, w).map_err(|e| format!("{name}/{w}: {e}"))?;
            let t = read_dataset(&dataset, budget).map_err(|e| format!("{name}/{w}: {e}"))?;
            let parent = w.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            match runs.last_mut() {
                Some((p, ws)) if *p == parent => ws.push((w.clone(), t)),
                _ => runs.push((parent, vec![(w.clone(), t)])),
            }
        }
        for (parent, weights) in runs {
            let label = if parent.is_empty() {
                name.clone()
            } else {
                parent
            };
            if let Some(layer) = classify(&label, weights)? {
                layers.push(layer);
            }
        }
    }
    Ok(layers)
}

/// A dataset by its path inside a layer's group (`block1_conv1/kernel:0`).
fn dataset_at(group: &Group, path: &str) -> Result<Dataset, String> {
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let last = parts.pop().ok_or("an empty weight name")?;
    let mut g = group.clone();
    for p in parts {
        g = g.group(p).map_err(|e| e.to_string())?;
    }
    g.dataset(last).map_err(|e| e.to_string())
}

/// Keras 3: `layers/NAME/vars/0, 1, ...`, layers named by class (`conv2d`, `conv2d_1`, `dense`,
/// `batch_normalization_2`) and ordered by their number within the class.
fn keras3(root: &Group, budget: &mut Budget) -> Result<Vec<Layer>, String> {
    let layers = root.group("layers").map_err(|e| e.to_string())?;
    let mut found: Vec<(Kind, usize, Group)> = Vec::new();
    for g in layers.groups().map_err(|e| e.to_string())? {
        let name = g.name().to_string();
        let (class, number) = match name.rsplit_once('_') {
            Some((c, n)) if n.parse::<usize>().is_ok() => (c.to_string(), n.parse().unwrap_or(0)),
            _ => (name.clone(), 0),
        };
        let kind = match class.as_str() {
            "conv2d" => Kind::Conv,
            "dense" => Kind::Dense,
            "batch_normalization" => Kind::BatchNorm,
            _ if has_group(&g, "layers") => {
                return Err(format!(
                    "layers/{name} is a model inside the model, which is not read; save the \
                     inner model on its own (inner.save_weights(\"x.weights.h5\"))"
                ));
            }
            _ => continue,
        };
        found.push((kind, number, g));
    }
    found.sort_by_key(|(kind, number, _)| (*kind as usize, *number));
    let mut out = Vec::new();
    for (kind, _, g) in found {
        let vars = g.group("vars").map_err(|e| format!("{}: {e}", g.name()))?;
        let mut weights = Vec::new();
        for i in 0.. {
            let Ok(d) = vars.dataset(&i.to_string()) else {
                break;
            };
            weights.push((
                i.to_string(),
                read_dataset(&d, budget).map_err(|e| format!("{}/{i}: {e}", g.name()))?,
            ));
        }
        let names: &[&str] = match kind {
            Kind::BatchNorm => &["gamma", "beta", "moving_mean", "moving_variance"],
            _ => &["kernel", "bias"],
        };
        let named: Vec<(String, StateTensor)> = weights
            .into_iter()
            .zip(names)
            .map(|((_, t), n)| (n.to_string(), t))
            .collect();
        if let Some(layer) = classify(g.name(), named)? {
            out.push(layer);
        }
    }
    Ok(out)
}

/// A layer's kind and its weights by role, from their ranks and names (`kernel`, `_W`, `bias`,
/// `_b`, `gamma`, `moving_mean` ...).
fn classify(name: &str, weights: Vec<(String, StateTensor)>) -> Result<Option<Layer>, String> {
    let role = |w: &str| {
        let w = w.rsplit('/').next().unwrap_or(w).trim_end_matches(":0");
        for (needle, role) in [
            ("moving_mean", "moving_mean"),
            ("moving_variance", "moving_variance"),
            ("running_mean", "moving_mean"),
            ("gamma", "gamma"),
            ("beta", "beta"),
            ("kernel", "kernel"),
            ("bias", "bias"),
        ] {
            if w.contains(needle) {
                return Some(role);
            }
        }
        // Keras 1: `block1_conv1_W_1`, `block1_conv1_b_1`.
        let stem = w
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches('_');
        match stem.rsplit('_').next() {
            Some("W") => Some("kernel"),
            Some("b") => Some("bias"),
            _ => None,
        }
    };
    let mut out: Vec<(&'static str, StateTensor)> = Vec::new();
    for (w, t) in weights {
        let role = role(&w).ok_or_else(|| format!("layer {name}: weight `{w}` of unknown role"))?;
        if out.iter().any(|(r, _)| *r == role) {
            return Err(format!("layer {name}: two `{role}` weights"));
        }
        out.push((role, t));
    }
    let kind = match out
        .iter()
        .find(|(r, _)| *r == "kernel")
        .map(|(_, t)| t.shape.len())
    {
        Some(4) => Kind::Conv,
        Some(2) => Kind::Dense,
        Some(n) => return Err(format!("layer {name}: a kernel of {n} dimensions")),
        None if out.iter().any(|(r, _)| *r == "gamma") => Kind::BatchNorm,
        None => return Ok(None),
    };
    Ok(Some((kind, out)))
}

/// A dataset's values as float32, its size checked first.
fn read_dataset(d: &Dataset, budget: &mut Budget) -> Result<StateTensor, String> {
    let shape: Vec<usize> = d.shape().iter().map(|&s| s as usize).collect();
    let n = d.num_elements().map_err(|e| e.to_string())?;
    crate::limits::check(
        || d.name().to_string(),
        n,
        crate::limits::get().max_params,
        "max_params",
    )
    .map_err(|e| e.to_string())?;
    if n > budget.left {
        return Err(format!(
            "{n} values declared, more than a {}-byte file holds with the others",
            budget.bytes
        ));
    }
    budget.left -= n;
    let mut values = vec![0f32; n as usize];
    d.read_into(&mut values).map_err(|e| e.to_string())?;
    Ok(StateTensor::f32(shape, values))
}
