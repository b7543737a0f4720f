//! Synchronous data-parallel SGD (paper Section 3.3), as the trainer sees it: the batch is split
//! across workers, gradients are summed, and the result equals one-worker training.
//!
//! A [`Collective`] is the communication engine ([`Single`] for one process; MPI in
//! [`crate::dist`]). The trainer hands micro-batch `j` of a batch to rank `j % size`
//! ([`owner`]), so every rank sees exactly the images, augmentations and BatchNorm batches that
//! one process would; the gradients (each micro-batch's loss already weighted by its share of
//! the global batch), flattened by [`GradLayout`], and the BatchNorm statistics are all-reduced
//! before one identical SGD step on every rank.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::Values;
use crate::nn::Vgg;

/// A group of processes that sum buffers together. Every rank must make the same calls in the
/// same order (MPI's collective semantics).
pub trait Collective {
    /// This process's index, 0-based; rank 0 writes the run's files.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn size(&self) -> usize;
    /// Element-wise sum of `buf` over all ranks, in place, the same result on every rank.
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// [`Collective::all_reduce_sum`] for counts and loss sums.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Copies rank 0's `buf` to every rank.
    fn broadcast(&self, buf: &mut [f32]);
    /// Wall-clock seconds spent in collectives so far.
    fn seconds(&self) -> f64 {
        0.0
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) {}
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) {}
    fn broadcast(&self, _buf: &mut [f32]) {}
}

/// The rank that computes micro-batch `j` of a global batch (round robin), so that a batch's
/// micro-batches spread evenly and each rank's share is known without communication.
pub fn owner(j: usize, size: usize) -> usize {
    j % size
}

/// Weight of micro-batch `k` of `count` in the running statistics after the step: PyTorch
/// folds each batch in turn, `r = (1 - m) r + m s`, so after `count` micro-batches
/// `r = (1 - m)^count r0 + sum_k m (1 - m)^(count - 1 - k) s_k`: each rank adds its own terms
/// and the sum is all-reduced.
pub fn running_weight(momentum: f64, k: usize, count: usize) -> f64 {
    momentum * (1.0 - momentum).powi((count - 1 - k) as i32)
}

/// The trainable parameters of a network in a fixed order (the module's own), with their
/// shapes: where each gradient sits in the flat buffer.
#[derive(Debug, Clone)]
pub struct GradLayout {
    params: Vec<(ParamId, Vec<usize>)>,
}

struct Collect(Vec<(ParamId, Vec<usize>)>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.val().is_require_grad() {
            self.0.push((param.id, param.val().dims().to_vec()));
        }
    }
}

impl GradLayout {
    /// The layout of `model`'s gradients (`model` on an autodiff device).
    pub fn of(model: &Vgg) -> Self {
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        Self { params: collect.0 }
    }

    /// Each parameter's id and shape, in the buffer's order.
    pub(crate) fn params(&self) -> &[(ParamId, Vec<usize>)] {
        &self.params
    }

    /// Floats in the flat buffer.
    pub fn len(&self) -> usize {
        self.params
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Copies the gradients into one buffer; a parameter without a gradient (a rank that had
    /// no micro-batch in this step) contributes zeros.
    pub fn flatten(&self, grads: &GradientsParams) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        for (id, shape) in &self.params {
            let data = match shape.len() {
                1 => grads.get::<1>(*id).map(|t| t.into_data()),
                2 => grads.get::<2>(*id).map(|t| t.into_data()),
                4 => grads.get::<4>(*id).map(|t| t.into_data()),
                d => unreachable!("VGG has no {d}-D parameter"),
            };
            match data {
                Some(d) => out.extend(d.convert::<f32>().iter::<f32>()),
                None => out.resize(out.len() + shape.iter().product::<usize>(), 0.0),
            }
        }
        out
    }

    /// The gradients of `flat` (laid out by [`GradLayout::flatten`]) on `device` (the
    /// model's device without autodiff, where burn's optimiser expects them).
    pub fn unflatten(&self, flat: &[f32], device: &Device) -> GradientsParams {
        let mut grads = GradientsParams::new();
        let mut offset = 0;
        for (id, shape) in &self.params {
            let n: usize = shape.iter().product();
            let data = TensorData::new(flat[offset..offset + n].to_vec(), shape.clone());
            match shape.len() {
                1 => grads.register(*id, Tensor::<1>::from_data(data, device)),
                2 => grads.register(*id, Tensor::<2>::from_data(data, device)),
                4 => grads.register(*id, Tensor::<4>::from_data(data, device)),
                d => unreachable!("VGG has no {d}-D parameter"),
            }
            offset += n;
        }
        grads
    }
}

/// Copies rank 0's weights (and BatchNorm statistics) to every rank.
pub fn broadcast_model(model: Vgg, comm: &dyn Collective, device: &Device) -> Vgg {
    if comm.size() == 1 {
        return model;
    }
    let mut dict = model.state_dict();
    let mut flat: Vec<f32> = dict
        .values()
        .filter_map(|t| match &t.values {
            Values::F32(v) => Some(v.as_slice()),
            Values::I64(_) => None,
        })
        .flatten()
        .copied()
        .collect();
    comm.broadcast(&mut flat);
    let mut offset = 0;
    for t in dict.values_mut() {
        if let Values::F32(v) = &mut t.values {
            let n = v.len();
            v.copy_from_slice(&flat[offset..offset + n]);
            offset += n;
        }
    }
    model.load_state_dict_unchecked(&dict, device)
}
