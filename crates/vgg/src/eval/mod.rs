//! Evaluation the paper's way (Section 3.2, Tables 3-6): rescale the shorter side to Q, then
//! classify with a central crop (torchvision's protocol), the dense fully-convolutional net, a
//! 5x5 grid of crops x 2 flips, or both; over one or several scales and one or several models,
//! averaging the softmax.

use std::path::Path;

use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub mod center;
pub mod classes;
pub mod dataset;
pub mod metrics;

use crate::data::Image;
use crate::data::transform::{Planar, crop, to_channels};
use crate::error::VggError;
use crate::limits::check_rescale;
use crate::nn::Vgg;
use crate::preset::Preset;

/// How the class probabilities of one image at one scale are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// One central crop of the network's size.
    Center,
    /// The fully-convolutional net on the whole image and its flip (Section 3.2).
    Dense,
    /// A 5x5 grid of crops and their flips: 50 crops per scale.
    Multicrop,
    /// The mean of `dense` and `multicrop` (Table 5's best).
    DenseMulticrop,
}

impl Method {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "center" | "centre" => Some(Self::Center),
            "dense" => Some(Self::Dense),
            "multicrop" | "multi-crop" => Some(Self::Multicrop),
            "dense+multicrop" | "dense-multicrop" => Some(Self::DenseMulticrop),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Center => "center",
            Self::Dense => "dense",
            Self::Multicrop => "multicrop",
            Self::DenseMulticrop => "dense+multicrop",
        }
    }
}

/// A network with the preset its weights carry (preprocessing, crop, scale, class names).
pub struct Classifier {
    pub model: Vgg,
    pub preset: Preset,
    /// Only the convolutions mean something (a trunk): its scores are not a classification.
    pub trunk: bool,
}

impl Classifier {
    fn channels(&self) -> usize {
        self.model.config().in_channels
    }

    fn finish(&self, x: Planar) -> Vec<f32> {
        self.preset.normalize.apply(x.data, x.channels)
    }

    /// The image as the network reads it: converted to its channels, rescaled so the shorter
    /// side is `side` and centre-cropped to `side` x `side` (what `vgg features` feeds).
    pub fn center(&self, img: &Image, side: usize) -> Result<Vec<f32>, String> {
        let x = to_channels(img, self.channels(), self.preset.normalize.scale);
        Ok(self.finish(self.preset.resize.center_crop(&x, side, side)?))
    }

    fn batch(&self, crops: Vec<Vec<f32>>, h: usize, w: usize) -> Tensor<4> {
        let n = crops.len();
        let device = self.model.fc3.weight.val().device();
        Tensor::from_data(
            TensorData::new(crops.concat(), [n, self.channels(), h, w]),
            &device,
        )
    }

    /// Mean softmax over a batch of crops: `[K]`.
    fn mean_probs(&self, x: Tensor<4>) -> Result<Vec<f32>, VggError> {
        let [n, _, _, _] = x.dims();
        let p = softmax(self.model.try_forward(x)?, 1)
            .sum_dim(0)
            .div_scalar(n as f64);
        Ok(p.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32"))
    }

    /// The softmax of each crop of a batch: `[n * K]`, row after row.
    fn rows_probs(&self, x: Tensor<4>) -> Result<Vec<f32>, VggError> {
        let p = softmax(self.model.try_forward(x)?, 1);
        Ok(p.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32"))
    }

    /// Class probabilities of one image at scale `q` (shorter side). An image already at the
    /// crop size is used as it is (no resize, no crop), so results compare exactly with PyTorch
    /// on the same pixels.
    /// `Err` for an image that would be enlarged past [`crate::limits::Limits::max_upscale`]
    /// (named by `path`), and for NaN or infinite scores.
    pub fn probs(
        &self,
        img: &Image,
        path: &Path,
        method: Method,
        q: usize,
    ) -> Result<Vec<f32>, VggError> {
        let c = self.preset.crop;
        let bad = |reason: String| VggError::BadImage {
            path: path.to_path_buf(),
            reason,
        };
        let x = to_channels(img, self.channels(), self.preset.normalize.scale);
        if method == Method::Center {
            let centre = if img.height == c && img.width == c {
                x
            } else {
                self.preset
                    .resize
                    .center_crop(&x, q.max(c), c)
                    .map_err(bad)?
            };
            return self.mean_probs(self.batch(vec![self.finish(centre)], c, c));
        }
        check_rescale(img.height, img.width, q.max(c)).map_err(bad)?;
        let x = self.preset.resize.rescale_shorter(&x, q.max(c));
        let (h, w) = (x.height, x.width);
        match method {
            Method::Center => unreachable!("handled above"),
            Method::Dense => {
                let p = self
                    .model
                    .dense_probs(self.batch(vec![self.finish(x)], h, w))?;
                Ok(p.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32"))
            }
            Method::Multicrop => {
                // The 5x5 grid's positions; on an image little larger than the crop several
                // coincide (all 25 on a square image at Q = crop), so each distinct crop runs
                // once, weighted by how often the grid holds it: the same mean, fewer forwards.
                let mut positions: Vec<((usize, usize), usize)> = Vec::with_capacity(25);
                for i in 0..5 {
                    for j in 0..5 {
                        let at = ((h - c) * i / 4, (w - c) * j / 4);
                        match positions.iter_mut().find(|(p, _)| *p == at) {
                            Some((_, n)) => *n += 1,
                            None => positions.push((at, 1)),
                        }
                    }
                }
                let mut crops = Vec::with_capacity(2 * positions.len());
                let mut weights = Vec::with_capacity(2 * positions.len());
                for &((top, left), n) in &positions {
                    for flip in [false, true] {
                        crops.push(self.finish(crop(&x, top, left, c, c, flip)));
                        weights.push(n as f32 / 50.0);
                    }
                }
                // In batches of 10 to bound memory at 224; at once on small crops.
                let chunk = if c <= 64 { 50 } else { 10 };
                let k = self.model.config().num_classes;
                let mut sum = vec![0f32; k];
                for (crops, weights) in crops.chunks(chunk).zip(weights.chunks(chunk)) {
                    let p = self.rows_probs(self.batch(crops.to_vec(), c, c))?;
                    for (row, w) in p.chunks(k).zip(weights) {
                        sum.iter_mut().zip(row).for_each(|(s, v)| *s += v * w);
                    }
                }
                Ok(sum)
            }
            Method::DenseMulticrop => {
                let a = self.probs(img, path, Method::Dense, q)?;
                let b = self.probs(img, path, Method::Multicrop, q)?;
                Ok(a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect())
            }
        }
    }
}

/// The softmax averaged over every scale and every classifier (multi-scale evaluation and
/// ensembles, Tables 4 and 6).
///
/// `Err` when a probability is NaN or infinite: such an image has no true answer.
pub fn average_probs(
    models: &[Classifier],
    img: &Image,
    path: &Path,
    method: Method,
    scales: &[usize],
) -> Result<Vec<f32>, VggError> {
    let mut each = average_probs_each(models, img, path, &[method], scales)?;
    Ok(each.pop().expect("one method, one result"))
}

/// [`average_probs`] for several methods of one image at once: the dense and multi-crop passes
/// that `dense+multicrop` averages are computed once and shared (Table 5 asks for all four).
pub fn average_probs_each(
    models: &[Classifier],
    img: &Image,
    path: &Path,
    methods: &[Method],
    scales: &[usize],
) -> Result<Vec<Vec<f32>>, VggError> {
    if models.iter().any(|m| m.trunk) {
        return Err(VggError::bad_config(
            "weights",
            "are a trunk (convolutions only): they classify nothing",
        ));
    }
    if models.is_empty() || scales.is_empty() {
        return Err(VggError::bad_config(
            "evaluation",
            "needs at least one model and one test scale",
        ));
    }
    // Members that score different classes would average unrelated outputs.
    classes::same_classes(
        models
            .iter()
            .enumerate()
            .map(|(i, m)| (["member 1", "another member"][(i > 0) as usize], &m.preset)),
    )?;
    let count = (models.len() * scales.len()) as f32;
    let mut sums: Vec<Vec<f32>> = vec![Vec::new(); methods.len()];
    for m in models {
        for &q in scales {
            let mut done: Vec<(Method, Vec<f32>)> = Vec::new();
            let mut probs = |method: Method| -> Result<Vec<f32>, VggError> {
                if let Some((_, p)) = done.iter().find(|(k, _)| *k == method) {
                    return Ok(p.clone());
                }
                let p = m.probs(img, path, method, q)?;
                done.push((method, p.clone()));
                Ok(p)
            };
            for (sum, &method) in sums.iter_mut().zip(methods) {
                let p = match method {
                    Method::DenseMulticrop => {
                        let a = probs(Method::Dense)?;
                        let b = probs(Method::Multicrop)?;
                        a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect()
                    }
                    other => probs(other)?,
                };
                if p.iter().any(|v| !v.is_finite()) {
                    return Err(VggError::NonFiniteOutput {
                        what: format!("{}, {} at scale {q}", path.display(), method.name()),
                    });
                }
                if sum.is_empty() {
                    *sum = vec![0.0; p.len()];
                }
                if p.len() != sum.len() {
                    return Err(VggError::BadConfig {
                        what: "ensemble".into(),
                        reason: "the models have different class counts".into(),
                    });
                }
                sum.iter_mut().zip(p).for_each(|(s, v)| *s += v / count);
            }
        }
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names() {
        assert_eq!(
            Method::parse("dense+multicrop"),
            Some(Method::DenseMulticrop)
        );
        assert_eq!(Method::parse("dense").map(Method::name), Some("dense"));
    }
}
