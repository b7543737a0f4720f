//! Loss and top-1 / top-5 accuracy of a network on a dataset, with each image's central crop
//! at the training transform's scale, batched: the validation after every epoch and the test
//! score at the end of a run.

use std::sync::Arc;

use burn::tensor::{Int, Tensor, TensorData};

use super::metrics::topk_hits;
use crate::data::Dataset;
use crate::data::loader::{Loader, Prepare};
use crate::data::transform::Transform;
use crate::error::VggError;
use crate::nn::{Vgg, cross_entropy};

/// Loss and top-1 / top-5 accuracy on a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
}

/// Evaluates `model` (call `.valid()` first) on `data` with the transform's central crop.
pub fn evaluate(
    model: &Vgg,
    data: &Arc<Dataset>,
    transform: &Transform,
    batch: usize,
    workers: usize,
    skip_bad: bool,
) -> Result<Evaluation, VggError> {
    evaluate_shard(model, data, transform, batch, workers, skip_bad, (0, 1))
}

/// [`evaluate`] on the images `i` with `i % size == rank` (`shard = (rank, size)`), one
/// rank's share of a data-parallel evaluation.
pub fn evaluate_shard(
    model: &Vgg,
    data: &Arc<Dataset>,
    transform: &Transform,
    batch: usize,
    workers: usize,
    skip_bad: bool,
    (rank, size): (usize, usize),
) -> Result<Evaluation, VggError> {
    let device = model.fc3.weight.val().device();
    let t = Arc::new(transform.clone());
    let prepare: Prepare = Arc::new(move |img, _| t.eval(img));
    let shape = [transform.channels, transform.crop, transform.crop];
    let loader = Loader::new(
        data.clone(),
        (rank..data.len()).step_by(size).collect(),
        batch,
        shape,
        prepare,
        workers,
        skip_bad,
    );
    let (mut n, mut loss, mut top1, mut top5) = (0usize, 0f64, 0usize, 0usize);
    for b in loader {
        let b = b?;
        if b.labels.is_empty() {
            // Every image of this batch was unreadable and skipped (`skip_bad`).
            continue;
        }
        let x = Tensor::<4>::from_data(TensorData::new(b.images, b.shape), &device);
        let labels: Vec<i64> = b.labels.iter().map(|&l| l as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [b.labels.len()]), &device);
        let logits = model.forward(x);
        loss +=
            cross_entropy(logits.clone(), y).into_scalar::<f32>() as f64 * b.labels.len() as f64;
        let scores = logits
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let (t1, t5) = topk_hits(&scores, &b.labels, "validation")?;
        top1 += t1;
        top5 += t5;
        n += b.labels.len();
    }
    let d = n.max(1) as f64;
    Ok(Evaluation {
        loss: loss / d,
        top1: top1 as f64 / d,
        top5: top5 as f64 / d,
        images: n,
    })
}
