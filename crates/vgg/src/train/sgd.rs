//! One SGD step with PyTorch/Caffe semantics.
//!
//! `v = momentum * v + (g + weight_decay * w); w -= lr * v` (dampening 0, no Nesterov), which
//! is burn's SGD with `dampening: 0` (burn's default dampening is not 0), run by [`FusedSgd`]:
//! on flex in two passes over each parameter ([`crate::nn::ops::sgd_update`]). Gradients of several
//! micro-batches are summed with each loss scaled by its share of the batch, so the step equals
//! one on the whole batch (as the paper's multi-GPU training, Section 3.3), and so are their
//! BatchNorm statistics, weighted as PyTorch's running updates one batch after another.

use burn::module::ParamGroup;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::{GradientsAccumulator, GradientsParams, LearningRate, ModuleOptimizer};
use burn::optim::{Optimizer, RecordState, StateSink, StateSource, join_path};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::collective::{GradLayout, running_weight};
use super::scaler::unscale;
use crate::nn::cross_entropy;
use crate::nn::{BN_MOMENTUM, Vgg};

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

/// What a micro-batch left on the device: its mean loss (unscaled) and its class scores.
/// Reading either waits for the device to finish the micro-batch.
pub struct MicroBatch {
    loss: Tensor<1>,
    logits: Tensor<2>,
}

impl MicroBatch {
    /// The mean loss over the micro-batch, as if unscaled.
    pub fn loss(&self) -> f32 {
        self.loss.clone().into_scalar::<f32>()
    }

    /// The class scores `[n, K]`, row-major, as float32.
    pub fn scores(&self) -> Vec<f32> {
        self.logits
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 after convert")
    }
}

/// One micro-batch's forward and backward ([`compute`]), not yet in the step's sums.
pub struct Computed {
    grads: GradientsParams,
    /// Its BatchNorm statistics, laid out as [`Vgg::running_stats`], already weighted.
    stats: Option<Tensor<1>>,
    run: MicroBatch,
}

/// Forward and backward of micro-batch `k` of the `count` that make a step, its loss multiplied
/// by `weight` (its share of the batch times the loss scale) before the backward; its
/// BatchNorm statistics weighted by [`running_weight`]; dropout's masks drawn from
/// `dropout_seed` ([`Vgg::forward_train`]). Touches nothing of the step's: micro-batches can be
/// computed on several threads at once, each on its own copy of the model with fresh autodiff
/// leaves ([`super::lanes::Lanes::run`]; on one shared model burn's graph locks could
/// deadlock), then added in order ([`Sgd::add`]). The forward computes in `images`' dtype
/// (mixed precision, [`crate::nn::precision`]).
pub fn compute(
    model: &Vgg,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    weight: f64,
    (k, count): (usize, usize),
    dropout_seed: u64,
) -> Computed {
    let (logits, stats) = model.forward_train(images, dropout_seed); // [n, K]
    let loss = cross_entropy(logits.clone(), labels);
    let grads = loss.clone().mul_scalar(weight).backward();
    let grads = GradientsParams::from_grads(grads, model);
    // [mean_1, var_1, mean_2, ...]: the layout of Vgg::running_stats.
    let stats = (!stats.is_empty()).then(|| {
        Tensor::cat(stats.into_iter().flat_map(|s| [s.mean, s.var]).collect(), 0)
            .detach()
            .mul_scalar(running_weight(BN_MOMENTUM, k, count))
    });
    Computed {
        grads,
        stats,
        run: MicroBatch {
            loss: loss.detach(),
            logits: logits.detach(),
        },
    }
}

/// SGD set up as PyTorch's ([`FusedSgd`], burn's `Sgd` in fewer passes), with gradient accumulation over the micro-batches of a step
/// and BatchNorm's running statistics folded as PyTorch folds them, batch after batch. This is
/// the step `vgg train` runs (and the PyTorch fixtures check): [`Sgd::micro_batch`] for each
/// micro-batch, then [`Sgd::take`] (all-reduced across ranks), then [`Sgd::apply`].
pub struct Sgd {
    pub optim: ModuleOptimizer,
    accumulator: GradientsAccumulator<Vgg>,
    /// The step's BatchNorm statistics so far, laid out as [`Vgg::running_stats`] and weighted
    /// by [`running_weight`], summed on the device (read once, by [`Sgd::take`]).
    running: Option<Tensor<1>>,
    /// Modules (burn's paths, e.g. `convs.3.conv`, `fc1`) whose learning rate is the step's
    /// times a factor: fine-tuning's pretrained layers.
    scaled: Option<(Vec<String>, f64)>,
    /// Each micro-batch's loss is multiplied by this before its backward (float16's loss
    /// scale, [`super::scaler`]; 1 otherwise): the caller divides the gradients by it.
    loss_scale: f64,
}

impl Sgd {
    pub fn new(settings: SgdSettings) -> Self {
        let optim = FusedSgd {
            momentum: (settings.momentum > 0.0).then_some(settings.momentum as f32),
            decay: (settings.weight_decay > 0.0).then_some(settings.weight_decay as f32),
        };
        Self {
            optim: ModuleOptimizer::from(optim),
            accumulator: GradientsAccumulator::new(),
            running: None,
            scaled: None,
            loss_scale: 1.0,
        }
    }

    /// Multiplies each following micro-batch's loss by `scale` before its backward.
    pub fn set_loss_scale(&mut self, scale: f64) {
        self.loss_scale = scale;
    }

    /// The step's gradients (from [`Sgd::take`], all-reduced) divided by the loss scale, and
    /// whether they are all finite ([`super::scaler::unscale`]); unchanged and unchecked when
    /// the loss is not scaled.
    pub fn unscale(&self, layout: &GradLayout, grads: GradientsParams) -> (GradientsParams, bool) {
        if self.loss_scale == 1.0 {
            return (grads, true);
        }
        unscale(layout, grads, 1.0 / self.loss_scale)
    }

    /// The learning rate of `modules` (burn's module paths, [`crate::checkpoint::strict::module_of`])
    /// is the step's times `factor`.
    pub fn with_scaled_lr(mut self, modules: Vec<String>, factor: f64) -> Self {
        self.scaled = (!modules.is_empty() && factor != 1.0).then_some((modules, factor));
        self
    }

    /// Restores the momentum buffers saved by [`Sgd::state_bytes`]. burn reads them onto its
    /// default device (`BURN_DEVICE`; the `vgg` tool makes it flex) and moves each to its
    /// parameter's device at the first step.
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

    /// Forward and backward of micro-batch `k` of the `count` that make this step, whose loss
    /// weighs `share` of the batch's (micro / batch), its dropout masks drawn from
    /// `dropout_seed`, then its gradient and BatchNorm statistics added to the step's
    /// ([`compute`] then [`Sgd::add`]). Nothing is read back: on
    /// a GPU the work is queued and this returns at once, so the next micro-batch can be
    /// uploaded and queued while it runs; the loss and scores are read from the returned
    /// [`MicroBatch`] when they are needed.
    pub fn micro_batch(
        &mut self,
        model: &Vgg,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        share: f64,
        position: (usize, usize),
        dropout_seed: u64,
    ) -> MicroBatch {
        let done = compute(
            model,
            images,
            labels,
            share * self.loss_scale,
            position,
            dropout_seed,
        );
        self.add(model, done)
    }

    /// Each micro-batch's loss is multiplied by this before its backward ([`compute`]'s
    /// `weight` is its share of the batch times this).
    pub fn loss_scale(&self) -> f64 {
        self.loss_scale
    }

    /// Adds a computed micro-batch's gradient and BatchNorm statistics to the step's. Micro-batches
    /// computed side by side are added in their order `k`, so the sums are those of one
    /// micro-batch after another.
    pub fn add(&mut self, model: &Vgg, done: Computed) -> MicroBatch {
        self.accumulator.accumulate(model, done.grads);
        if let Some(flat) = done.stats {
            self.running = Some(match self.running.take() {
                Some(sum) => sum + flat,
                None => flat,
            });
        }
        done.run
    }

    /// The step's gradient (empty if no micro-batch ran here) and BatchNorm statistics (zeros
    /// then), for all-reducing across ranks before [`Sgd::apply`].
    pub fn take(&mut self, model: &Vgg) -> (GradientsParams, Vec<f32>) {
        let mut running = match self.running.take() {
            Some(sum) => sum
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 after convert"),
            None => Vec::new(),
        };
        running.resize(model.running_stats_len(), 0.0);
        (self.accumulator.grads(), running)
    }

    /// Ends a step of `count` micro-batches: folds their BatchNorm statistics (`running`, from
    /// [`Sgd::take`]) into the running ones, `r = (1 - m)^count r + running`, applies the SGD
    /// update with `lr`, and counts the batches in `num_batches_tracked`.
    pub fn apply(
        &mut self,
        model: Vgg,
        lr: f64,
        grads: GradientsParams,
        running: &[f32],
        count: usize,
    ) -> Vgg {
        model.fold_running_stats(running, (1.0 - BN_MOMENTUM).powi(count as i32));
        let policy: ModuleLearningRate = match &self.scaled {
            Some((modules, factor)) => ModuleLrScheduler::new(lr)
                .with_group(
                    ParamGroup::from_any_predicates(modules.clone()),
                    lr * factor,
                )
                .step(),
            None => lr.into(),
        };
        let mut model = self.optim.step(policy, model, grads);
        model.add_batches_tracked(count as i64);
        model
    }

    /// A whole step in one process: [`Sgd::take`] then [`Sgd::apply`], without loss scaling
    /// (a scaled step's gradients are unscaled between the two: [`super::scaler::unscale`]).
    pub fn step(&mut self, model: Vgg, lr: f64, count: usize) -> Vgg {
        debug_assert_eq!(
            self.loss_scale, 1.0,
            "a scaled loss needs its gradients unscaled"
        );
        let (grads, running) = self.take(&model);
        self.apply(model, lr, grads, &running, count)
    }
}

/// burn's `Sgd` with weight decay and momentum (dampening 0, no Nesterov) as one
/// [`Optimizer`]: `g' = w * decay + g`, `v = g' + v * momentum` (`g'` at the first step),
/// `w - v * lr`, in float32 in that order. On flex with float32 parameters the update takes two
/// passes over each parameter ([`crate::nn::ops::sgd_update`])
/// where burn's seven operations took a pass each; elsewhere burn's operations. The same bits as burn's
/// `Sgd`, and the same state record (each parameter's `momentum.velocity`), so run folders saved
/// with burn's resume with this one.
#[derive(Clone, Debug)]
pub struct FusedSgd {
    pub momentum: Option<f32>,
    pub decay: Option<f32>,
}

/// A parameter's velocity (when there is momentum), recorded as burn's `SgdState` records it.
#[derive(Clone)]
pub struct Velocity<const D: usize>(Option<Tensor<D>>);

impl<const D: usize> RecordState for Velocity<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(v) = &self.0 {
            out.push_tensor(
                &join_path(prefix, "momentum"),
                "velocity",
                v.clone().into_data(),
            );
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let path = join_path(prefix, "momentum");
        if !src.has_under(&path) {
            return Some(Self(None));
        }
        let v = src.take_tensor(&path, "velocity");
        Some(Self(v.map(|data| Tensor::from_data(data, device))))
    }
}

impl Optimizer for FusedSgd {
    type State<const D: usize> = Velocity<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        w: Tensor<D>,
        g: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // Without momentum a loaded velocity is carried on untouched, as burn's Sgd does.
        let (old, kept) = match self.momentum {
            Some(m) => (state.and_then(|s| s.0).map(|v| (v, m)), None),
            None => (None, state),
        };
        let (w, v) = crate::nn::ops::sgd_update(w, g, old, self.decay, lr);
        let state = match self.momentum {
            Some(_) => Velocity(Some(v)),
            None => kept.unwrap_or(Velocity(None)),
        };
        (w, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Velocity(state.0.map(|v| v.to_device(device)))
    }
}
