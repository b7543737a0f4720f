//! Activations at named layers, for frozen feature extraction (perceptual and style losses,
//! LPIPS, detection backbones).
//!
//! Names follow the authors' Caffe release: `conv1_1` (the convolution's output, before
//! BatchNorm and ReLU), `bn1_1`, `relu1_1`, `norm1`, `pool1` ... `pool5`, then `avgpool`,
//! `fc6`, `relu6`, `fc7`, `relu7`, `fc8`. torchvision's module paths are accepted too:
//! `features.N` is the output of that entry of the `features` Sequential and `classifier.N` of
//! the classifier's (0, 1, 3, 4, 6).

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::arch::{Layer, StageKind};
use crate::error::VggError;
use crate::model::Vgg;

/// An activation of any rank, as `[N, ...]` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn grab<const D: usize>(t: &Tensor<D>) -> Activation {
    Activation {
        shape: t.dims().to_vec(),
        values: t
            .to_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32"),
    }
}

impl Vgg {
    /// Every name [`Vgg::activations`] accepts for this network, in forward order, each with
    /// its torchvision alias (empty where there is none).
    pub fn layer_names(&self) -> Vec<(String, String)> {
        let config = self.config();
        let plan = config.plan();
        let mut names = Vec::new();
        let mut stages = plan.iter();
        let (mut block, mut conv) = (1, 0);
        for layer in &config.layers {
            match layer {
                Layer::Conv3(_) | Layer::Conv1(_) => {
                    conv += 1;
                    for stage in stages.by_ref() {
                        let alias = format!("features.{}", stage.index);
                        match stage.kind {
                            StageKind::Conv { .. } => {
                                names.push((format!("conv{block}_{conv}"), alias))
                            }
                            StageKind::BatchNorm { .. } => {
                                names.push((format!("bn{block}_{conv}"), alias))
                            }
                            StageKind::Relu => {
                                names.push((format!("relu{block}_{conv}"), alias));
                                break;
                            }
                            _ => unreachable!("a conv stage ends with its ReLU"),
                        }
                    }
                }
                Layer::Lrn => names.push((
                    format!("norm{block}"),
                    format!("features.{}", stages.next().expect("stage").index),
                )),
                Layer::Pool => {
                    names.push((
                        format!("pool{block}"),
                        format!("features.{}", stages.next().expect("stage").index),
                    ));
                    block += 1;
                    conv = 0;
                }
            }
        }
        for (name, alias) in [
            ("avgpool", ""),
            ("fc6", "classifier.0"),
            ("relu6", "classifier.1"),
            ("fc7", "classifier.3"),
            ("relu7", "classifier.4"),
            ("fc8", "classifier.6"),
        ] {
            names.push((name.to_string(), alias.to_string()));
        }
        names
    }

    /// The activations at `names` for a batch, in inference mode and without an autodiff
    /// graph (the model is switched to [`Module::valid`] and the input detached). Unknown names
    /// are an error that lists the valid ones. The forward stops after the last layer asked for.
    pub fn activations(
        &self,
        x: Tensor<4>,
        names: &[String],
    ) -> Result<BTreeMap<String, Activation>, VggError> {
        self.check_input(&x.dims())?;
        let table = self.layer_names();
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new(); // canonical -> as asked
        for n in names {
            let found = table
                .iter()
                .find(|(name, alias)| name == n || (!alias.is_empty() && alias == n));
            match found {
                Some((name, _)) => {
                    wanted.entry(name.clone()).or_default().push(n.clone());
                }
                None => {
                    return Err(VggError::BadConfig {
                        what: format!("layer `{n}`"),
                        reason: format!(
                            "is not a layer of this network; known: {}",
                            table
                                .iter()
                                .map(|(a, b)| if b.is_empty() {
                                    a.clone()
                                } else {
                                    format!("{a} ({b})")
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
        let model = self.valid();
        let x = x.detach();
        let mut out = BTreeMap::new();
        let wanted_count: usize = wanted.values().map(Vec::len).sum();
        let take4 = |name: &str, t: &Tensor<4>, out: &mut BTreeMap<String, Activation>| {
            for asked in wanted.get(name).into_iter().flatten() {
                out.insert(asked.clone(), grab(t));
            }
        };
        let mut order = table.iter().map(|(n, _)| n.clone());
        let mut convs = model.convs.iter();
        let mut x = x;
        for layer in &model.config().layers {
            if out.len() == wanted_count {
                return Ok(out);
            }
            match layer {
                Layer::Conv3(_) | Layer::Conv1(_) => {
                    let block = convs.next().expect("one block per conv");
                    x = block.conv.forward(x);
                    take4(&order.next().expect("name"), &x, &mut out);
                    if let Some(bn) = &block.bn {
                        x = bn.forward(x);
                        take4(&order.next().expect("name"), &x, &mut out);
                    }
                    x = relu(x);
                }
                Layer::Lrn | Layer::Pool => x = model.weightless(layer, x),
            }
            take4(&order.next().expect("name"), &x, &mut out);
        }
        let x = model.avgpool(x);
        take4("avgpool", &x, &mut out);
        let mut take2 = |name: &str, t: &Tensor<2>| {
            for asked in wanted.get(name).into_iter().flatten() {
                out.insert(asked.clone(), grab(t));
            }
        };
        let h: Tensor<2> = x.flatten(1, 3);
        let h = model.fc1.forward(h);
        take2("fc6", &h);
        let h = relu(h);
        take2("relu6", &h);
        let h = model.fc2.forward(h);
        take2("fc7", &h);
        let h = relu(h);
        take2("relu7", &h);
        take2("fc8", &model.fc3.forward(h));
        Ok(out)
    }
}
