//! The authors' weight layouts, renamed into torchvision's before the strict check.
//!
//! - Caffe (the authors' release, and converters from it): `conv1_1` ... `conv5_3`, `fc6`,
//!   `fc7`, `fc8`, each with `.weight`/`.bias` (or blob indices `.0`/`.1`), kernels
//!   `[out, in, kh, kw]` and FC weights `[out, in]` as PyTorch.
//! - Keras (`keras.applications.VGG16/19`): `block1_conv1` ... `block5_conv3`, `fc1`, `fc2`,
//!   `predictions`, each with `kernel`/`bias` (separated by `/` or `.`, with or without `:0`);
//!   conv kernels `[kh, kw, in, out]`, dense kernels `[in, out]`, and `fc1` reads the last
//!   feature map flattened channels-last (`[h, w, c]`), which is re-ordered to torchvision's
//!   `[c, h, w]`.
//!
//! Both expect BGR input in 0-255 minus the mean pixel (`Normalize::caffe`).

use super::state_dict::{StateDict, StateTensor, Values};
use crate::arch::VggConfig;
use crate::arch::names::{Kind, Point, names};

/// Which layout a state dict is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Torchvision,
    Caffe,
    Keras,
    /// timm's VGG (`vgg16.tv_in1k` ...): torchvision's `features`, then its head as
    /// convolutions, `pre_logits.fc1` (a `pool x pool` kernel), `pre_logits.fc2` (1x1) and
    /// `head.fc`; torchvision's preprocessing.
    Timm,
}

/// `(caffe name, keras name, torchvision features index)` of every conv, in order
/// ([`crate::arch::names`]).
fn conv_names(config: &VggConfig) -> Vec<(String, String, usize)> {
    names(config)
        .into_iter()
        .filter_map(|n| match (n.kind, n.point, n.keras) {
            (Kind::Conv, Point::Features(i), Some(keras)) => Some((n.caffe, keras, i)),
            _ => None,
        })
        .collect()
}

/// `(layer, param)` of a key: `block1_conv1/kernel:0` -> (`block1_conv1`, `kernel`).
fn split(key: &str) -> (String, String) {
    let key = key.strip_suffix(":0").unwrap_or(key);
    let parts: Vec<&str> = key.split(['/', '.']).filter(|p| !p.is_empty()).collect();
    (
        parts.first().copied().unwrap_or("").to_string(),
        parts.last().copied().unwrap_or("").to_string(),
    )
}

/// The layout a layer name belongs to, where it is one only Keras' or the authors' use.
fn foreign(layer: &str) -> Option<Layout> {
    match layer {
        "block1_conv1" | "predictions" => Some(Layout::Keras),
        "conv1_1" | "fc8" => Some(Layout::Caffe),
        _ => None,
    }
}

/// The layout of a dict by its names: Keras' if any layer is named as keras.applications names
/// them, the authors' if any is named as in their Caffe release, timm's if its head is there,
/// torchvision's otherwise.
pub fn detect(dict: &StateDict) -> Layout {
    let found: Vec<Layout> = dict.keys().filter_map(|k| foreign(&split(k).0)).collect();
    if found.contains(&Layout::Keras) {
        Layout::Keras
    } else if found.contains(&Layout::Caffe) {
        Layout::Caffe
    } else if dict
        .keys()
        .any(|k| k.starts_with("pre_logits.fc") || k.starts_with("head.fc."))
    {
        Layout::Timm
    } else {
        Layout::Torchvision
    }
}

/// [`detect`], refusing a dict that names layers in two layouts (a Caffe `fc8.weight` beside
/// torchvision's `features.0.weight`): one stray name must neither switch the preprocessing
/// nor fill a tensor twice. The error names a key of each.
pub fn detect_strict(dict: &StateDict) -> Result<Layout, String> {
    let layout = detect(dict);
    if matches!(layout, Layout::Torchvision | Layout::Timm) {
        return Ok(layout);
    }
    let foreign = dict.keys().find(|k| foreign(&split(k).0).is_some());
    let torch = dict
        .keys()
        .find(|k| k.starts_with("features.") || k.starts_with("classifier."));
    match (foreign, torch) {
        (Some(f), Some(t)) => Err(format!(
            "names layers two ways: `{t}` (torchvision's) and `{f}` ({}); a file holds one \
             network under one naming",
            if layout == Layout::Keras {
                "Keras'"
            } else {
                "the authors' Caffe release's"
            }
        )),
        _ => Ok(layout),
    }
}

fn permute(t: &StateTensor, shape: Vec<usize>, index: impl Fn(&[usize]) -> usize) -> StateTensor {
    let src = t.to_f32();
    let total: usize = shape.iter().product();
    let mut out = vec![0f32; total];
    let mut idx = vec![0usize; shape.len()];
    for value in out.iter_mut() {
        *value = src[index(&idx)];
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    StateTensor {
        shape,
        values: Values::F32(out),
    }
}

/// Keras layers taken in file order (`keras.conv.003.kernel`, [`super::keras`]) named as
/// keras.applications names them in `config`'s network (`block3_conv2/kernel`, `fc1/bias`);
/// BatchNorm layers, which keras.applications' VGGs lack, go straight to torchvision's keys.
fn name_keras_layers(dict: StateDict, config: &VggConfig) -> StateDict {
    let convs = conv_names(config);
    let fcs = ["fc1", "fc2", "predictions"];
    let mut out = StateDict::new();
    for (key, t) in dict {
        let parts: Vec<&str> = key.splitn(4, '.').collect();
        let [_, kind, k, param] = parts[..] else {
            out.insert(key, t);
            continue;
        };
        let k: usize = k.parse().unwrap_or(usize::MAX);
        let name = match kind {
            "conv" => convs.get(k).map(|(_, keras, _)| format!("{keras}/{param}")),
            "dense" => fcs.get(k).map(|fc| format!("{fc}/{param}")),
            "bn" => convs.get(k).map(|(_, _, i)| {
                let torch = match param {
                    "gamma" => "weight",
                    "beta" => "bias",
                    "moving_mean" => "running_mean",
                    _ => "running_var",
                };
                format!("features.{}.{torch}", i + 1)
            }),
            _ => None,
        };
        out.insert(name.unwrap_or(key), t);
    }
    out
}

/// Renames (and for Keras, transposes) a state dict in `layout` (as read:
/// [`super::WeightFile::layout`]) into torchvision's layout for `config`. Keys it does not know
/// are kept as they are, so the strict check reports them; two keys that would fill one tensor
/// (`conv1_1.weight` and `conv1_1.0`, a layer twice) are an error naming both.
pub fn to_torchvision(
    dict: StateDict,
    layout: Layout,
    config: &VggConfig,
) -> Result<StateDict, String> {
    let dict = if dict.keys().any(|k| k.starts_with("keras.")) {
        name_keras_layers(dict, config)
    } else {
        dict
    };
    if layout == Layout::Torchvision {
        return Ok(dict);
    }
    if layout == Layout::Timm {
        return Ok(from_timm(dict, config));
    }
    let mut from: std::collections::HashMap<String, String> = Default::default();
    let convs = conv_names(config);
    let fc_names: [(&str, &str, usize); 3] = [
        ("fc6", "fc1", 0),
        ("fc7", "fc2", 3),
        ("fc8", "predictions", 6),
    ];
    let (c, p) = (config.feature_channels(), config.pool_size);
    let mut out = StateDict::new();
    for (key, t) in dict {
        let (layer, param) = split(&key);
        let suffix = match param.as_str() {
            "weight" | "kernel" | "0" | "weights" => "weight",
            "bias" | "1" | "biases" => "bias",
            _ => {
                claim(&mut from, &key, &key)?;
                out.insert(key, t);
                continue;
            }
        };
        let conv = convs
            .iter()
            .find(|(caffe, keras, _)| *caffe == layer || *keras == layer);
        let fc = fc_names
            .iter()
            .find(|(caffe, keras, _)| *caffe == layer || *keras == layer);
        let keras = layout == Layout::Keras;
        let (name, value) = match (conv, fc) {
            (Some((_, _, i)), _) => {
                let value = if keras && suffix == "weight" && t.shape.len() == 4 {
                    // [kh, kw, in, out] -> [out, in, kh, kw]
                    let [kh, kw, cin, cout] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
                    permute(&t, vec![cout, cin, kh, kw], |i| {
                        ((i[2] * kw + i[3]) * cin + i[1]) * cout + i[0]
                    })
                } else {
                    t
                };
                (format!("features.{i}.{suffix}"), value)
            }
            (None, Some((_, _, i))) => {
                let value = if keras && suffix == "weight" && t.shape.len() == 2 {
                    let [inputs, outputs] = [t.shape[0], t.shape[1]];
                    if *i == 0 && inputs == c * p * p {
                        // FC1: Keras row (y*p + x)*c + ch  ->  torchvision column ch*p*p + y*p + x.
                        permute(&t, vec![outputs, inputs], |k| {
                            let (ch, yx) = (k[1] / (p * p), k[1] % (p * p));
                            (yx * c + ch) * outputs + k[0]
                        })
                    } else {
                        permute(&t, vec![outputs, inputs], |k| k[1] * outputs + k[0])
                    }
                } else {
                    t
                };
                (format!("classifier.{i}.{suffix}"), value)
            }
            _ => (key.clone(), t),
        };
        claim(&mut from, &name, &key)?;
        out.insert(name, value);
    }
    Ok(out)
}

/// timm's head as torchvision's: `pre_logits.fc1` (`[out, c, p, p]`, the pool's `p`) is FC1 over
/// the map flattened as torchvision flattens it (`c, h, w`), so a reshape; `pre_logits.fc2`
/// (`[out, in, 1, 1]`) is FC2, `head.fc` FC3. A kernel of another size is left as it is, for
/// the strict check to report.
fn from_timm(dict: StateDict, config: &VggConfig) -> StateDict {
    let p = config.pool_size;
    dict.into_iter()
        .map(|(key, t)| {
            let renamed = match key.as_str() {
                "pre_logits.fc1.weight" if t.shape.len() == 4 && t.shape[2..] == [p, p] => {
                    let shape = vec![t.shape[0], t.shape[1] * p * p];
                    return (
                        "classifier.0.weight".to_string(),
                        StateTensor { shape, ..t },
                    );
                }
                "pre_logits.fc2.weight" if t.shape.len() == 4 && t.shape[2..] == [1, 1] => {
                    let shape = vec![t.shape[0], t.shape[1]];
                    return (
                        "classifier.3.weight".to_string(),
                        StateTensor { shape, ..t },
                    );
                }
                "pre_logits.fc1.bias" => "classifier.0.bias",
                "pre_logits.fc2.bias" => "classifier.3.bias",
                "head.fc.weight" => "classifier.6.weight",
                "head.fc.bias" => "classifier.6.bias",
                _ => return (key, t),
            };
            (renamed.to_string(), t)
        })
        .collect()
}

/// Records that `source` fills `name`; an error if another key already does.
fn claim(
    from: &mut std::collections::HashMap<String, String>,
    name: &str,
    source: &str,
) -> Result<(), String> {
    match from.insert(name.to_string(), source.to_string()) {
        Some(other) if other != source => Err(format!(
            "`{other}` and `{source}` both name the tensor `{name}`; keep one"
        )),
        _ => Ok(()),
    }
}
