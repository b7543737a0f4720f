//! A per-layer table like Keras' `model.summary()`: name, output shape, parameters and
//! multiply-adds, with the totals.
//!
//! Layer names are [`crate::arch::names`]' (the authors' Caffe release: `conv1_1` ...
//! `conv5_3`, `pool1`, `fc6`, `fc7`, `fc8`, with torchvision's module paths). Output shapes are
//! those of a real forward pass ([`summarize`], through the network's taps) or of arithmetic
//! alone ([`estimate`]); parameters and MACs follow from them.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::{Device, Tensor};
use serde::Serialize;

use super::model::{Seen, Vgg};
use crate::arch::names::{Kind, Point, names};
use crate::arch::{StageKind, VggConfig};
use crate::error::VggError;

/// One row of the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    /// Caffe-style name (`conv1_1`, `bn1_1`, `norm1`, `pool1`, `avgpool`, `fc6`).
    pub name: String,
    /// torchvision's module path (`features.0`, `classifier.6`), empty for the average pool.
    pub key: String,
    /// What the layer does (`Conv3x3+ReLU`, `BatchNorm`, `MaxPool2x2`, `Linear+ReLU`).
    pub kind: String,
    /// Output shape for a batch of one, `[1, C, H, W]` or `[1, F]`.
    pub output_shape: Vec<usize>,
    pub params: usize,
    /// Multiply-accumulates per image (convolutions and FC layers; 0 elsewhere).
    pub macs: u64,
}

/// The whole table with its totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub arch: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub params: usize,
    pub macs: u64,
    pub layers: Vec<LayerRow>,
}

/// The rows, from the shape of the output at each point of `features` (`[1, C, H, W]`).
fn rows(config: &VggConfig, shapes: &BTreeMap<Point, Vec<usize>>) -> Vec<LayerRow> {
    let plan = config.plan();
    let mut out = Vec::new();
    for named in names(config) {
        let row = |kind: &str, shape: Vec<usize>, params: usize, macs: u64| LayerRow {
            name: named.caffe.clone(),
            key: named.torchvision.clone(),
            kind: kind.into(),
            output_shape: shape,
            params,
            macs,
        };
        let shape = || shapes.get(&named.point).cloned().unwrap_or_default();
        match (named.kind, named.point) {
            (Kind::Conv, Point::Features(i)) => {
                let Some(StageKind::Conv {
                    kernel: k,
                    in_channels: ci,
                    out_channels: co,
                }) = plan.iter().find(|s| s.index == i).map(|s| s.kind)
                else {
                    unreachable!("a conv point is a conv stage")
                };
                let shape = shape();
                let pixels = (shape[2] * shape[3]) as u64;
                let kind = format!("Conv{k}x{k}+ReLU");
                out.push(row(
                    &kind,
                    shape,
                    co * ci * k * k + co,
                    pixels * (co * ci * k * k) as u64,
                ));
            }
            (Kind::BatchNorm, _) => {
                let shape = shape();
                let params = 2 * shape[1];
                out.push(row("BatchNorm", shape, params, 0));
            }
            (Kind::Lrn, _) => out.push(row("LRN", shape(), 0, 0)),
            (Kind::Pool, _) => out.push(row("MaxPool2x2", shape(), 0, 0)),
            (Kind::AvgPool, _) => {
                let p = config.pool_size;
                out.push(row(
                    "AdaptiveAvgPool",
                    vec![1, config.feature_channels(), p, p],
                    0,
                    0,
                ));
            }
            (Kind::Fc, Point::Classifier(i)) => {
                let (_, inputs, outputs) = config.fc_layers()[i / 3];
                let kind = if i == 6 {
                    "Linear"
                } else {
                    "Linear+ReLU+Dropout"
                };
                out.push(row(
                    kind,
                    vec![1, outputs],
                    inputs * outputs + outputs,
                    (inputs * outputs) as u64,
                ));
            }
            _ => {} // ReLU and dropout: part of the row before them
        }
    }
    out
}

fn totals(
    config: &VggConfig,
    input: [usize; 3],
    layers: Vec<LayerRow>,
    output_shape: Vec<usize>,
) -> Summary {
    Summary {
        arch: config.name.clone(),
        input_shape: vec![1, input[0], input[1], input[2]],
        output_shape,
        params: layers.iter().map(|r| r.params).sum(),
        macs: layers.iter().map(|r| r.macs).sum(),
        layers,
    }
}

/// The summary by arithmetic alone (no network is built): the shapes each layer produces
/// for a `[C, H, W]` input. Fast enough for tests of the full-size networks.
pub fn estimate(config: &VggConfig, input: [usize; 3]) -> Result<Summary, VggError> {
    config.validate()?;
    config.check_input(&[1, input[0], input[1], input[2]])?;
    let [c, h, w] = input;
    let mut shapes = BTreeMap::new();
    let mut shape = vec![1, c, h, w];
    for stage in config.plan() {
        match stage.kind {
            StageKind::Conv { out_channels, .. } => shape[1] = out_channels,
            StageKind::Pool => (shape[2], shape[3]) = (shape[2] / 2, shape[3] / 2),
            StageKind::BatchNorm { .. } | StageKind::Relu | StageKind::Lrn => {}
        }
        shapes.insert(Point::Features(stage.index), shape.clone());
    }
    let layers = rows(config, &shapes);
    Ok(totals(config, input, layers, vec![1, config.num_classes]))
}

/// The summary of a real network: runs one `[1, C, H, W]` image of zeros through `model` and
/// records the shape at every point of `features`; the output shape is that of the logits.
pub fn summarize(model: &Vgg, input: [usize; 3], device: &Device) -> Result<Summary, VggError> {
    let config = model.config();
    model.check_input(&[1, input[0], input[1], input[2]])?;
    let x = Tensor::<4>::zeros([1, input[0], input[1], input[2]], device);
    let mut points: BTreeSet<Point> = config
        .plan()
        .iter()
        .map(|s| Point::Features(s.index))
        .collect();
    points.insert(Point::Classifier(6));
    let mut shapes = BTreeMap::new();
    model.forward_tapped(x, &points, &mut |point, seen| {
        let dims = match seen {
            Seen::Map(t) => t.dims().to_vec(),
            Seen::Vector(t) => t.dims().to_vec(),
        };
        shapes.insert(point, dims);
    });
    let output = shapes.remove(&Point::Classifier(6)).unwrap_or_default();
    Ok(totals(config, input, rows(config, &shapes), output))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multiply-adds per 224x224 image, as torchvision's model table and fvcore count them:
    /// A 7.61 G ... E 19.63 G.
    #[test]
    fn macs_per_image_match_the_paper() {
        for (name, giga) in [
            ("A", 7.61),
            ("B", 11.31),
            ("C", 11.77),
            ("D", 15.47),
            ("E", 19.63),
        ] {
            let s = estimate(&VggConfig::named(name).unwrap(), [3, 224, 224]).unwrap();
            assert_eq!(
                format!("{:.2}", s.macs as f64 / 1e9),
                format!("{giga:.2}"),
                "{name}"
            );
            assert_eq!(s.params, VggConfig::named(name).unwrap().num_params());
        }
    }

    #[test]
    fn names_follow_caffe() {
        let s = estimate(&VggConfig::named("vgg16_bn").unwrap(), [3, 224, 224]).unwrap();
        let names: Vec<&str> = s.layers.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(&names[..4], ["conv1_1", "bn1_1", "conv1_2", "bn1_2"]);
        assert!(
            names.contains(&"conv5_3")
                && names.contains(&"pool5")
                && names.ends_with(&["fc6", "fc7", "fc8"])
        );
        let conv53 = s.layers.iter().find(|r| r.name == "conv5_3").unwrap();
        assert_eq!(
            (conv53.key.as_str(), conv53.output_shape.as_slice()),
            ("features.40", &[1, 512, 14, 14][..])
        );
    }
}
