//! Activations at named layers, for frozen feature extraction (perceptual and style losses,
//! LPIPS, detection backbones), through the network's one forward pass.
//!
//! Names follow the authors' Caffe release: `conv1_1` (the convolution's output, before
//! BatchNorm and ReLU), `bn1_1`, `relu1_1`, `norm1`, `pool1` ... `pool5`, then `avgpool`,
//! `fc6`, `relu6`, `fc7`, `relu7`, `fc8`. torchvision's module paths are accepted too
//! (`features.N` is the output of that entry of the `features` Sequential, `classifier.N` of the
//! classifier's 0, 1, 3, 4, 6), and Keras' layer names (`block3_conv2`, `block5_pool`, `fc1`),
//! which mean what those layers output in Keras: after the ReLU ([`crate::arch::names::tap`]).
//! Every activation returned is finite: NaN or infinite values (broken weights) are an error,
//! as they are for a prediction.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::Module;
use burn::tensor::Tensor;

use super::model::{Seen, Vgg};
use crate::arch::names::{Kind, Named, Point, names, tap};
use crate::error::VggError;

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
    /// its torchvision alias (empty for the average pool). Dropout, the identity at inference,
    /// is left out.
    pub fn layer_names(&self) -> Vec<(String, String)> {
        names(self.config())
            .into_iter()
            .filter(|n| n.kind != Kind::Dropout)
            .map(|n| (n.caffe, n.torchvision))
            .collect()
    }

    /// The activations at `names` for a batch, in inference mode and without an autodiff
    /// graph (the model is switched to [`Module::valid`] and the input detached), keyed by the
    /// names as asked. Unknown names are an error that lists the valid ones. The forward stops
    /// after the last layer asked for.
    pub fn activations(
        &self,
        x: Tensor<4>,
        asked: &[String],
    ) -> Result<BTreeMap<String, Activation>, VggError> {
        self.check_input(&x.dims())?;
        let config = self.config();
        let mut wanted: BTreeMap<Point, Vec<String>> = BTreeMap::new();
        for name in asked {
            match tap(config, name).filter(|n| n.kind != Kind::Dropout) {
                Some(Named { point, .. }) => wanted.entry(point).or_default().push(name.clone()),
                None if name == "predictions" => {
                    return Err(VggError::BadConfig {
                        what: "layer `predictions`".into(),
                        reason: "is Keras' softmax of fc8, which is not an activation here: ask for fc8 (the scores before it), or use `vgg predict`".into(),
                    });
                }
                None => return Err(unknown(self, name)),
            }
        }
        let points: BTreeSet<Point> = wanted.keys().copied().collect();
        let mut out = BTreeMap::new();
        self.valid()
            .forward_tapped(x.detach(), &points, &mut |point, seen| {
                let value = match seen {
                    Seen::Map(t) => grab(t),
                    Seen::Vector(t) => grab(t),
                };
                for name in &wanted[&point] {
                    out.insert(name.clone(), value.clone());
                }
            });
        for (name, a) in &out {
            let bad = a.values.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(VggError::NonFiniteOutput {
                    what: format!("{bad} NaN or infinite value(s) at {name}"),
                });
            }
        }
        Ok(out)
    }
}

fn unknown(model: &Vgg, name: &str) -> VggError {
    let known = model
        .layer_names()
        .into_iter()
        .map(|(a, b)| {
            if b.is_empty() {
                a
            } else {
                format!("{a} ({b})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    VggError::BadConfig {
        what: format!("layer `{name}`"),
        reason: format!("is not a layer of this network; known: {known}"),
    }
}
