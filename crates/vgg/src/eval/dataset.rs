//! Scoring a labelled dataset by the paper's test protocols (Section 3.2, Tables 3-6): every
//! image through each method at every test scale, an ensemble's softmax averaged, top-1 and
//! top-5 counted against the output each folder maps to ([`super::classes`]). What `vgg eval`
//! prints; each image is decoded once for all the methods.

use super::classes::ClassMap;
use super::metrics::rank;
use super::{Classifier, Method, average_probs_each};
use crate::data::Dataset;
use crate::error::VggError;

/// How to score a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    pub methods: Vec<Method>,
    /// Test scales Q; several are averaged (multi-scale evaluation, Table 4).
    pub scales: Vec<usize>,
    /// Only the first images (all when `None`).
    pub limit: Option<usize>,
    /// Skip an unreadable or unusable image (and count it) instead of stopping.
    pub skip_bad: bool,
}

/// One method's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub method: Method,
    /// Images scored, and images skipped as unreadable.
    pub images: usize,
    pub skipped: usize,
    pub top1: usize,
    pub top5: usize,
}

impl Score {
    pub fn top1_err(&self) -> f64 {
        1.0 - self.top1 as f64 / self.images as f64
    }

    pub fn top5_err(&self) -> f64 {
        1.0 - self.top5 as f64 / self.images as f64
    }
}

/// What a caller sees while a dataset is scored (a progress bar's facts).
pub enum Tick<'a> {
    /// An image was scored; the first method's score so far.
    Scored(&'a Score),
    /// An image was skipped ([`Protocol::skip_bad`]), and why.
    Skipped(&'a VggError),
}

/// Scores `models` (an ensemble when several) on `data` by `protocol`, each image's label
/// mapped to an output by `map`. A hit is the label's output ranked first (top-1) or among the
/// first five (top-5), ties counted against it ([`rank`]). `Err` for an image that cannot be
/// scored (unless skipped), and when no image could be.
pub fn score(
    models: &[Classifier],
    data: &Dataset,
    map: &ClassMap,
    protocol: &Protocol,
    tick: &mut dyn FnMut(Tick<'_>),
) -> Result<Vec<Score>, VggError> {
    let n = protocol.limit.unwrap_or(data.len()).min(data.len());
    let mut scores: Vec<Score> = protocol
        .methods
        .iter()
        .map(|&method| Score {
            method,
            images: 0,
            skipped: 0,
            top1: 0,
            top5: 0,
        })
        .collect();
    if scores.is_empty() {
        return Err(VggError::bad_config(
            "evaluation",
            "needs at least one method",
        ));
    }
    for i in 0..n {
        let path = data.item_path(i);
        let probs = data.image(i).and_then(|img| {
            average_probs_each(models, &img, &path, &protocol.methods, &protocol.scales)
        });
        let probs = match probs {
            Ok(p) => p,
            Err(e @ (VggError::BadImage { .. } | VggError::Io { .. })) if protocol.skip_bad => {
                scores.iter_mut().for_each(|s| s.skipped += 1);
                tick(Tick::Skipped(&e));
                continue;
            }
            Err(e) => return Err(e),
        };
        let output = map.outputs[data.labels[i]];
        for (s, p) in scores.iter_mut().zip(&probs) {
            // average_probs_each refuses non-finite probabilities, so the rank exists.
            let r = rank(p, output).ok_or_else(|| VggError::NonFiniteOutput {
                what: path.display().to_string(),
            })?;
            s.top1 += (r == 0) as usize;
            s.top5 += (r < 5) as usize;
            s.images += 1;
        }
        tick(Tick::Scored(&scores[0]));
    }
    if scores[0].images == 0 {
        return Err(VggError::Dataset {
            path: data.name.clone().into(),
            reason: format!(
                "none of its {n} images could be evaluated ({} skipped)",
                scores[0].skipped
            ),
        });
    }
    Ok(scores)
}
