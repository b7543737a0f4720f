//! Gradients as one flat `f32` buffer, for all-reduce.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use crate::model::Vgg;

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
