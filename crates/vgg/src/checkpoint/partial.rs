//! Partial loading: the paper's initialisation of a deeper net from a trained shallower one, and
//! fine-tuning's transfer of every tensor that fits.

use std::path::Path;

use burn::tensor::Device;

use super::state_dict::{StateDict, check_finite};
use crate::error::VggError;
use crate::nn::Vgg;

/// The paper's initialisation of deeper nets (Section 3.1): the first four conv layers and
/// the three FC layers from a trained net's tensors `src` (torchvision's layout, read from
/// `source`); each conv goes to the next layer of the same shape (A's conv1_1, conv2_1,
/// conv3_1, conv3_2 to the deeper net's layers of those names); the rest stays random.
pub fn init_from(
    model: Vgg,
    src: &StateDict,
    source: &Path,
    device: &Device,
) -> Result<Vgg, VggError> {
    let conv_keys = |keys: Vec<String>| -> Vec<String> {
        let mut convs: Vec<(usize, String)> = keys
            .into_iter()
            .filter_map(|k| {
                let idx = k
                    .strip_prefix("features.")?
                    .strip_suffix(".weight")?
                    .parse::<usize>()
                    .ok()?;
                Some((idx, format!("features.{idx}")))
            })
            .collect();
        convs.sort();
        convs.into_iter().map(|(_, k)| k).collect()
    };
    let src_convs: Vec<String> = conv_keys(
        src.iter()
            .filter(|(_, t)| t.shape.len() == 4)
            .map(|(k, _)| k.clone())
            .collect(),
    );
    let expected = model.config().state_keys();
    let dst_convs = conv_keys(
        expected
            .iter()
            .filter(|(_, s)| s.len() == 4)
            .map(|(k, _)| k.clone())
            .collect(),
    );
    let mut picked = StateDict::new();
    let shape_of = |key: &str| {
        expected
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.clone())
    };
    let mut copy = |from: &str, to: &str| {
        for suffix in ["weight", "bias"] {
            if let Some(t) = src.get(&format!("{from}.{suffix}"))
                && shape_of(&format!("{to}.{suffix}")).as_ref() == Some(&t.shape)
            {
                picked.insert(format!("{to}.{suffix}"), t.clone());
            }
        }
    };
    // Each of the source's first four convs goes to the next conv of the deeper net with the
    // same shape: A's conv1_1, conv2_1, conv3_1, conv3_2 land on D's layers of those names.
    let mut next = 0;
    for from in src_convs.iter().take(4) {
        let shape = src.get(&format!("{from}.weight")).map(|t| t.shape.clone());
        if let Some(offset) = dst_convs[next..]
            .iter()
            .position(|to| shape_of(&format!("{to}.weight")) == shape)
        {
            copy(from, &dst_convs[next + offset]);
            next += offset + 1;
        }
    }
    for i in [0, 3, 6] {
        copy(&format!("classifier.{i}"), &format!("classifier.{i}"));
    }
    check_finite(&picked, source)?;
    if picked.is_empty() {
        return Err(VggError::WeightMismatch {
            path: source.to_path_buf(),
            arch: model.config().name.clone(),
            missing: vec![
                "no conv or FC layer of the source has the shape of this network's".into(),
            ],
            unexpected: vec![],
            misshaped: vec![],
        });
    }
    Ok(model.load_state_dict_unchecked(&picked, device))
}

/// What a fine-tuned network took from its pretrained weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// torchvision keys taken from the source.
    pub loaded: Vec<String>,
    /// Keys drawn fresh: the last FC layer always (it is sized by the new task's classes), and
    /// whatever the source lacks or holds in another shape (FC6 and FC7 of another head).
    pub fresh: Vec<String>,
}

/// Fine-tuning's start: every tensor of `model` whose key and shape are in `source` (a
/// torchvision-layout state dict) is taken from it, but for the last FC layer, which is new;
/// `num_batches_tracked` follows the source's when it is taken.
pub fn transfer(model: Vgg, source: &StateDict, device: &Device) -> (Vgg, Transfer) {
    let mut picked = StateDict::new();
    let (mut loaded, mut fresh) = (Vec::new(), Vec::new());
    for (key, shape) in model.config().state_keys() {
        let fits = source
            .get(&key)
            .filter(|t| t.shape == shape || (shape.is_empty() && t.shape == [1]));
        match fits {
            Some(t) if !crate::arch::names::is_last_layer(&key) => {
                picked.insert(key.clone(), t.clone());
                if !key.ends_with("num_batches_tracked") {
                    loaded.push(key);
                }
            }
            _ if key.ends_with("num_batches_tracked") => {}
            _ => fresh.push(key),
        }
    }
    let model = model.load_state_dict_unchecked(&picked, device);
    (model, Transfer { loaded, fresh })
}
