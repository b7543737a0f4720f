//! A per-layer table like Keras' `model.summary()`: name, output shape, parameters and
//! multiply-adds, with the totals.
//!
//! Layer names follow the authors' Caffe release (`conv1_1` ... `conv5_3`, `pool1`, `fc6`,
//! `fc7`, `fc8`): block `b` is the part between pool `b-1` and pool `b`. Output shapes are
//! those of a real forward pass ([`summarize`]); parameters and MACs follow from them.

use burn::tensor::{Device, Tensor};
use serde::Serialize;

use crate::arch::{Layer, StageKind, VggConfig};
use crate::error::VggError;
use crate::model::Vgg;

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

/// The rows of the conv stack and head, from the shapes after each entry of `config.layers`
/// (`shapes[i]` is `[1, C, H, W]` after layer `i`).
fn rows(config: &VggConfig, shapes: &[Vec<usize>]) -> Vec<LayerRow> {
    let plan = config.plan();
    let mut stages = plan.iter().filter(|s| s.kind != StageKind::Relu);
    let mut out = Vec::new();
    let (mut block, mut conv_in_block) = (1, 0);
    for (layer, shape) in config.layers.iter().zip(shapes) {
        let stage = stages.next().expect("a stage per layer");
        let key = format!("features.{}", stage.index);
        let pixels = (shape[2] * shape[3]) as u64;
        match (*layer, stage.kind) {
            (
                Layer::Conv3(_) | Layer::Conv1(_),
                StageKind::Conv {
                    kernel,
                    in_channels,
                    out_channels,
                },
            ) => {
                conv_in_block += 1;
                let params = out_channels * in_channels * kernel * kernel + out_channels;
                let macs = pixels * (out_channels * in_channels * kernel * kernel) as u64;
                let kind = format!("Conv{kernel}x{kernel}+ReLU");
                out.push(LayerRow {
                    name: format!("conv{block}_{conv_in_block}"),
                    key,
                    kind,
                    output_shape: shape.clone(),
                    params,
                    macs,
                });
                if config.batch_norm {
                    let bn = stages.next().expect("BN stage");
                    out.push(LayerRow {
                        name: format!("bn{block}_{conv_in_block}"),
                        key: format!("features.{}", bn.index),
                        kind: "BatchNorm".into(),
                        output_shape: shape.clone(),
                        params: 2 * out_channels,
                        macs: 0,
                    });
                }
            }
            (Layer::Lrn, _) => out.push(row0(format!("norm{block}"), key, "LRN", shape)),
            (Layer::Pool, _) => {
                out.push(row0(format!("pool{block}"), key, "MaxPool2x2", shape));
                block += 1;
                conv_in_block = 0;
            }
            _ => unreachable!("plan and layers agree"),
        }
    }
    let p = config.pool_size;
    out.push(row0(
        "avgpool".into(),
        String::new(),
        "AdaptiveAvgPool",
        &[1, config.feature_channels(), p, p],
    ));
    for ((i, inputs, outputs), name) in config.fc_layers().into_iter().zip(["fc6", "fc7", "fc8"]) {
        let kind = if i == 6 {
            "Linear"
        } else {
            "Linear+ReLU+Dropout"
        };
        out.push(LayerRow {
            name: name.into(),
            key: format!("classifier.{i}"),
            kind: kind.into(),
            output_shape: vec![1, outputs],
            params: inputs * outputs + outputs,
            macs: (inputs * outputs) as u64,
        });
    }
    out
}

fn row0(name: String, key: String, kind: &str, shape: &[usize]) -> LayerRow {
    LayerRow {
        name,
        key,
        kind: kind.into(),
        output_shape: shape.to_vec(),
        params: 0,
        macs: 0,
    }
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
    let [c, mut h, mut w] = input;
    let mut channels = c;
    let mut shapes = Vec::new();
    for layer in &config.layers {
        match layer {
            Layer::Conv3(n) | Layer::Conv1(n) => channels = *n,
            Layer::Pool => (h, w) = (h / 2, w / 2),
            Layer::Lrn => {}
        }
        shapes.push(vec![1, channels, h, w]);
    }
    let layers = rows(config, &shapes);
    Ok(totals(config, input, layers, vec![1, config.num_classes]))
}

/// The summary of a real network: runs one `[1, C, H, W]` image of zeros through `model` and
/// records the shape after every layer; the output shape is that of the logits.
pub fn summarize(model: &Vgg, input: [usize; 3], device: &Device) -> Result<Summary, VggError> {
    let config = model.config();
    model.check_input(&[1, input[0], input[1], input[2]])?;
    let x = Tensor::<4>::zeros([1, input[0], input[1], input[2]], device);
    let mut shapes = Vec::new();
    let features = model.features_traced(x, |_, t| shapes.push(t.dims().to_vec()));
    let logits = model.head(features);
    let layers = rows(config, &shapes);
    Ok(totals(config, input, layers, logits.dims().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VGG.md: multiply-adds per 224x224 image, A 7.61 G ... E 19.63 G.
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
