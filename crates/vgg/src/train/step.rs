//! One SGD step with PyTorch/Caffe semantics.
//!
//! `v = momentum * v + (g + weight_decay * w); w -= lr * v` (dampening 0, no Nesterov), which
//! is burn's SGD with `dampening: 0` (burn's default dampening is not 0). Gradients of several
//! micro-batches are summed with each loss scaled by its share of the batch, so the step equals
//! one on the whole batch (as the paper's multi-GPU training, Section 3.3).

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::{BatchStats, Vgg};

/// The optimiser's hyper-parameters; the defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdSettings {
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Default for SgdSettings {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
}

/// Mean softmax cross-entropy ("multinomial logistic regression") of `logits` `[N, K]`
/// against class indices `[N]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let log_probs = log_softmax(logits, 1); // [N, K]
    let picked = log_probs.gather(1, targets.reshape([n, 1])); // [N, 1]
    picked.mean().neg()
}

/// burn's SGD set up as PyTorch's, with gradient accumulation over micro-batches.
pub struct Sgd {
    pub optim: ModuleOptimizer,
    accumulator: GradientsAccumulator<Vgg>,
}

impl Sgd {
    pub fn new(settings: SgdSettings) -> Self {
        let mut config = SgdConfig::new();
        if settings.momentum > 0.0 {
            config = config.with_momentum(Some(MomentumConfig {
                momentum: settings.momentum,
                dampening: 0.0,
                nesterov: false,
            }));
        }
        if settings.weight_decay > 0.0 {
            config = config.with_weight_decay(Some(WeightDecayConfig {
                penalty: settings.weight_decay as f32,
            }));
        }
        Self {
            optim: config.init(),
            accumulator: GradientsAccumulator::new(),
        }
    }

    /// Restores the momentum buffers saved by [`Sgd::state_bytes`].
    pub fn with_state(mut self, bytes: Vec<u8>) -> Result<Self, String> {
        self.optim = self
            .optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| format!("{e:?}"))?;
        Ok(self)
    }

    /// The momentum buffers, keyed by parameter id, as bytes.
    pub fn state_bytes(&self) -> Result<Vec<u8>, String> {
        self.optim
            .into_bytes()
            .map(|b| b.to_vec())
            .map_err(|e| format!("{e:?}"))
    }

    /// Forward and backward of one micro-batch whose loss weighs `share` of the batch's
    /// (micro / batch). Returns the micro-batch's mean loss and its logits (detached). In
    /// training, BatchNorm folds the batch's statistics into its running ones at once.
    pub fn accumulate(
        &mut self,
        model: &Vgg,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        share: f64,
    ) -> (f32, Tensor<2>) {
        let logits = model.forward(images); // [n, K]
        self.backward(model, logits, labels, share)
    }

    /// [`Sgd::accumulate`], returning each BatchNorm layer's batch statistics instead of
    /// folding them (see [`Vgg::forward_train`]).
    pub fn accumulate_train(
        &mut self,
        model: &Vgg,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        share: f64,
    ) -> (f32, Tensor<2>, Vec<BatchStats>) {
        let (logits, stats) = model.forward_train(images); // [n, K]
        let (loss, logits) = self.backward(model, logits, labels, share);
        (loss, logits, stats)
    }

    fn backward(
        &mut self,
        model: &Vgg,
        logits: Tensor<2>,
        labels: Tensor<1, Int>,
        share: f64,
    ) -> (f32, Tensor<2>) {
        let loss = cross_entropy(logits.clone(), labels);
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.mul_scalar(share).backward();
        self.accumulator
            .accumulate(model, GradientsParams::from_grads(grads, model));
        (value, logits.detach())
    }

    /// Applies the accumulated gradient with learning rate `lr`.
    pub fn step(&mut self, model: Vgg, lr: f64) -> Vgg {
        let grads = self.take_grads();
        self.apply(model, lr, grads)
    }

    /// The gradient accumulated since the last step (empty if no micro-batch ran), for
    /// all-reducing before [`Sgd::apply`].
    pub fn take_grads(&mut self) -> GradientsParams {
        self.accumulator.grads()
    }

    /// One SGD update of `model` with `grads`.
    pub fn apply(&mut self, model: Vgg, lr: f64, grads: GradientsParams) -> Vgg {
        self.optim.step(lr, model, grads)
    }
}
