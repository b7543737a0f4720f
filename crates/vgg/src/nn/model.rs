//! The VGG network (paper Section 2.1; torchvision's `VGG` module) and its one forward pass.
//!
//! The module holds only what has weights: one [`ConvBlock`] per convolution and the three FC
//! layers. The order of convolutions, LRNs and pools comes from [`VggConfig::layers`], the same
//! table that names the checkpoint keys, so the forward pass and the keys cannot drift apart.
//! Every use of the network (inference, training, dense evaluation, feature taps, the summary,
//! the benchmark's per-layer timing) goes through [`Vgg::layer`] and [`Vgg::head`], and every
//! operation through [`super::ops`].

use std::collections::BTreeSet;

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Initializer, Linear, LinearConfig,
    LocalResponseNorm, LocalResponseNormConfig, PaddingConfig2d,
};
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ops::{self, BatchStats};
use super::precision::{in_f32, like, to_f32};
use crate::arch::names::Point;
use crate::arch::{Layer, VggConfig};
use crate::error::VggError;
use crate::rng::Rng;

/// How fresh weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum InitScheme {
    /// The paper (Section 3.1): every weight from N(0, 0.01^2), biases 0.
    Paper,
    /// Glorot & Bengio (2010), which the authors note works without pre-training: uniform
    /// with variance 2 / (fan_in + fan_out), biases 0.
    Glorot,
    /// torchvision's `VGG._initialize_weights`: Kaiming-normal convs (fan_out, ReLU gain),
    /// N(0, 0.01^2) linears, zero biases, BatchNorm weight 1 and bias 0.
    #[default]
    Kaiming,
}

impl InitScheme {
    fn conv(self) -> Initializer {
        match self {
            Self::Paper => Initializer::Normal {
                mean: 0.0,
                std: 0.01,
            },
            Self::Glorot => Initializer::XavierUniform { gain: 1.0 },
            // std = sqrt(2) / sqrt(fan_out), as torch's kaiming_normal_(mode="fan_out", nonlinearity="relu").
            Self::Kaiming => Initializer::KaimingNormal {
                gain: 2f64.sqrt(),
                fan_out_only: true,
            },
        }
    }

    fn linear(self) -> Initializer {
        match self {
            Self::Glorot => Initializer::XavierUniform { gain: 1.0 },
            Self::Paper | Self::Kaiming => Initializer::Normal {
                mean: 0.0,
                std: 0.01,
            },
        }
    }
}

/// BatchNorm's momentum in its running statistics (PyTorch's default; eps is 1e-5).
pub const BN_MOMENTUM: f64 = 0.1;

/// A convolution and its optional BatchNorm; the ReLU that follows has no weights.
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub conv: Conv2d,
    pub bn: Option<BatchNorm>,
}

impl ConvBlock {
    fn new(
        kernel: usize,
        inputs: usize,
        outputs: usize,
        batch_norm: bool,
        init: InitScheme,
        device: &Device,
    ) -> Self {
        let padding = kernel / 2;
        let conv = Conv2dConfig::new([inputs, outputs], [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(
                padding, padding, padding, padding,
            ))
            .with_initializer(init.conv())
            .init(device);
        let conv = zero_bias_conv(conv);
        let bn = batch_norm.then(|| {
            BatchNormConfig::new(outputs)
                .with_epsilon(1e-5)
                .with_momentum(BN_MOMENTUM)
                .init(device)
        });
        Self { conv, bn }
    }
}

/// `running = keep * running + weight * batch`: PyTorch's update is `keep = 1 - momentum`,
/// `weight = momentum`.
fn fold_running(bn: &BatchNorm, batch: &BatchStats, weight: f64, keep: f64) {
    let mean = bn
        .running_mean
        .value_sync()
        .mul_scalar(keep)
        .add(batch.mean.clone().mul_scalar(weight));
    let var = bn
        .running_var
        .value_sync()
        .mul_scalar(keep)
        .add(batch.var.clone().mul_scalar(weight));
    bn.running_mean.update(mean.detach());
    bn.running_var.update(var.detach());
}

fn zero_bias_conv(mut conv: Conv2d) -> Conv2d {
    conv.bias = conv
        .bias
        .map(|b| b.map(|t| t.zeros_like()).set_require_grad(true));
    conv
}

fn zero_bias_linear(mut linear: Linear) -> Linear {
    linear.bias = linear
        .bias
        .map(|b| b.map(|t| t.zeros_like()).set_require_grad(true));
    linear
}

/// A tensor seen at a point of the forward pass: a map of `features` or a vector of the head.
pub enum Seen<'a> {
    Map(&'a Tensor<4>),
    Vector(&'a Tensor<2>),
}

/// Where a tapped forward pass hands what it sees.
type Sink<'a> = &'a mut dyn FnMut(Point, Seen<'_>);

/// What a forward pass does besides computing: record the points asked for, and in training
/// hand each BatchNorm layer's statistics to the caller instead of folding them.
#[derive(Default)]
struct Pass<'a> {
    wanted: Option<&'a BTreeSet<Point>>,
    sink: Option<Sink<'a>>,
    seen: usize,
    stats: Option<&'a mut Vec<BatchStats>>,
    /// Where dropout draws its masks in training: `Some(seed)`, a generator of this pass's own
    /// ([`Vgg::forward_train`]); `None`, the device's.
    dropout_seed: Option<u64>,
}

impl Pass<'_> {
    fn wants(&self, point: Point) -> bool {
        self.wanted.is_some_and(|w| w.contains(&point))
    }

    fn tap(&mut self, point: Point, value: Seen<'_>) {
        if self.wants(point) {
            if let Some(sink) = self.sink.as_mut() {
                sink(point, value);
            }
            self.seen += 1;
        }
    }

    /// Every point asked for has been seen: the rest of the pass is not needed.
    fn done(&self) -> bool {
        self.wanted.is_some_and(|w| self.seen >= w.len())
    }
}

/// A VGG network: `features` (the conv stack) then torchvision's head (adaptive average pool,
/// FC-ReLU-Dropout x2, FC). Dropout and BatchNorm behave as in training only on an autodiff
/// device and after [`Module::train`]; [`Module::valid`] gives the inference behaviour.
#[derive(Module, Debug)]
pub struct Vgg {
    /// One block per convolution, in the order of `config.layers`.
    pub convs: Vec<ConvBlock>,
    /// FC1 (`classifier.0`); a `pool x pool` convolution in dense evaluation.
    pub fc1: Linear,
    /// FC2 (`classifier.3`).
    pub fc2: Linear,
    /// FC3 (`classifier.6`), the class scores.
    pub fc3: Linear,
    dropout: Dropout,
    pool: MaxPool2d,
    /// Krizhevsky's LRN (A-LRN): `torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)`,
    /// i.e. the paper's `a / (2 + 1e-4 * sum a^2)^0.75` (PyTorch and burn divide alpha by 5).
    lrn: LocalResponseNorm,
    #[module(skip)]
    config: VggConfig,
    /// The first point that trains, when the layers before it are frozen (fine-tuning): see
    /// [`Vgg::freeze_before`].
    #[module(skip)]
    frozen_before: Option<Point>,
    /// BatchNorm's `num_batches_tracked` (one count for every BN layer, as in any run that
    /// trains them together), kept so torchvision checkpoints round-trip exactly.
    batches_tracked: Param<Tensor<1, Int>>,
}

impl Vgg {
    /// Builds a network with fresh weights drawn by `init`.
    pub fn new(config: &VggConfig, init: InitScheme, device: &Device) -> Result<Self, VggError> {
        config.validate()?;
        let mut convs = Vec::new();
        let mut channels = config.in_channels;
        for layer in &config.layers {
            let (kernel, outputs) = match *layer {
                Layer::Conv3(n) => (3, n),
                Layer::Conv1(n) => (1, n),
                Layer::Lrn | Layer::Pool => continue,
            };
            convs.push(ConvBlock::new(
                kernel,
                channels,
                outputs,
                config.batch_norm,
                init,
                device,
            ));
            channels = outputs;
        }
        let linear = |inputs: usize, outputs: usize| {
            zero_bias_linear(
                LinearConfig::new(inputs, outputs)
                    .with_initializer(init.linear())
                    .init(device),
            )
        };
        Ok(Self {
            convs,
            fc1: linear(config.fc1_inputs(), config.hidden),
            fc2: linear(config.hidden, config.hidden),
            fc3: linear(config.hidden, config.num_classes),
            dropout: DropoutConfig::new(config.dropout).init(),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            lrn: LocalResponseNormConfig::new(5)
                .with_alpha(5e-4)
                .with_beta(0.75)
                .with_k(2.0)
                .init(),
            config: config.clone(),
            frozen_before: None,
            batches_tracked: Param::initialized(ParamId::new(), Tensor::zeros([1], device)),
        })
    }

    /// BatchNorm's `num_batches_tracked`.
    pub fn batches_tracked(&self) -> i64 {
        let data = self.batches_tracked.val().into_data().convert::<i64>();
        data.try_into_vec::<i64>()
            .ok()
            .and_then(|v| v.first().copied())
            .unwrap_or(0)
    }

    /// Sets BatchNorm's `num_batches_tracked`.
    pub fn set_batches_tracked(&mut self, n: i64) {
        let device = self.fc3.weight.val().device();
        let value = Tensor::from_data(TensorData::new(vec![n], [1]), &device);
        self.batches_tracked = Param::initialized(self.batches_tracked.id, value);
    }

    /// Counts `n` more training batches in `num_batches_tracked` (BN networks only).
    pub fn add_batches_tracked(&mut self, n: i64) {
        if self.config.batch_norm {
            // On the device: no read back to the host.
            let value = self.batches_tracked.val().add_scalar(n);
            self.batches_tracked = Param::initialized(self.batches_tracked.id, value);
        }
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &VggConfig {
        &self.config
    }

    /// Freezes every layer before `point` (a convolution or an FC layer: the first one that
    /// trains), as PyTorch's `requires_grad_(False)` with the frozen part in `eval()`: their
    /// parameters compute no gradient, so the backward pass stops at `point`, and their
    /// BatchNorm layers normalise with their running statistics and leave them as they are.
    pub fn freeze_before(mut self, point: Point) -> Self {
        let before = |p: Point| p < point;
        let mut stage = 0;
        let mut blocks = self.convs.iter_mut();
        for layer in &self.config.layers {
            if let Layer::Conv3(_) | Layer::Conv1(_) = layer {
                let block = blocks.next().expect("one block per conv");
                let frozen = before(Point::Features(stage));
                block.conv.weight = block.conv.weight.clone().set_require_grad(!frozen);
                block.conv.bias = block.conv.bias.take().map(|b| b.set_require_grad(!frozen));
                if let Some(bn) = block.bn.as_mut() {
                    bn.gamma = bn.gamma.clone().set_require_grad(!frozen);
                    bn.beta = bn.beta.clone().set_require_grad(!frozen);
                }
            }
            stage += self.config.stages_of(layer);
        }
        for (fc, at) in [(&mut self.fc1, 0), (&mut self.fc2, 3), (&mut self.fc3, 6)] {
            let frozen = before(Point::Classifier(at));
            fc.weight = fc.weight.clone().set_require_grad(!frozen);
            fc.bias = fc.bias.take().map(|b| b.set_require_grad(!frozen));
        }
        self.frozen_before = Some(point);
        self
    }

    /// The first point that trains, when the network is frozen before it.
    pub fn frozen_before(&self) -> Option<Point> {
        self.frozen_before
    }

    /// Whether the layer whose first stage is `features.stage` is frozen.
    fn frozen(&self, stage: usize) -> bool {
        self.frozen_before
            .is_some_and(|p| Point::Features(stage) < p)
    }

    /// Checks that a batch can pass through the network ([`VggConfig::check_input`]).
    pub fn check_input(&self, dims: &[usize]) -> Result<(), VggError> {
        self.config.check_input(dims)
    }

    /// Class scores (logits), after checking the input. `[N, C, H, W] -> [N, classes]`.
    pub fn try_forward(&self, x: Tensor<4>) -> Result<Tensor<2>, VggError> {
        self.check_input(&x.dims())?;
        Ok(self.forward(x))
    }

    /// Class scores (logits). `[N, C, H, W] -> [N, classes]`; panics on an input that cannot
    /// pass the pools: use [`Vgg::try_forward`] on untrusted input.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut pass = Pass::default();
        let x = self.features_pass(x, &mut pass); // [N, C, H/2^p, W/2^p]
        self.head_pass(x, &mut pass) // [N, classes]
    }

    /// Class scores of a training batch, and each BatchNorm layer's statistics on it (in layer
    /// order), which are not folded into the running statistics: the caller folds them with
    /// [`Vgg::fold_running_stats`] (how data-parallel training keeps them equal to one
    /// process's). `[N, C, H, W] -> [N, classes]`.
    ///
    /// Dropout's masks are drawn from `dropout_seed` alone (a generator of this pass's, not the
    /// device's shared one), so a micro-batch draws the same masks whichever thread or rank
    /// computes it, and in whatever order.
    pub fn forward_train(&self, x: Tensor<4>, dropout_seed: u64) -> (Tensor<2>, Vec<BatchStats>) {
        let mut stats = Vec::new();
        let mut pass = Pass {
            stats: Some(&mut stats),
            dropout_seed: Some(dropout_seed),
            ..Pass::default()
        };
        let x = self.features_pass(x, &mut pass); // [N, C, H/2^p, W/2^p]
        let logits = self.head_pass(x, &mut pass); // [N, classes]
        (logits, stats)
    }

    /// The forward pass, calling `sink` with the tensor at each point in `wanted` (in forward
    /// order) and stopping once all have been seen. A convolution's output before its ReLU is
    /// computed apart only when it is asked for.
    pub fn forward_tapped(
        &self,
        x: Tensor<4>,
        wanted: &BTreeSet<Point>,
        sink: &mut dyn FnMut(Point, Seen<'_>),
    ) {
        let mut pass = Pass {
            wanted: Some(wanted),
            sink: Some(sink),
            ..Pass::default()
        };
        let x = self.features_pass(x, &mut pass);
        if !pass.done() {
            self.head_pass(x, &mut pass);
        }
    }

    /// The convolutional part (torchvision's `features`): `[N, C, H, W] -> [N, C', H/2^p, W/2^p]`
    /// for a network of `p` pools whose last convolution has `C'` channels.
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        self.features_pass(x, &mut Pass::default())
    }

    /// Entry `i` of `config.layers` alone, as the forward pass runs it (for per-layer timing):
    /// a convolution with its BatchNorm and ReLU, an LRN or a pool.
    pub fn layer(&self, i: usize, x: Tensor<4>) -> Tensor<4> {
        let conv = self.config.layers[..i]
            .iter()
            .filter(|l| matches!(l, Layer::Conv3(_) | Layer::Conv1(_)))
            .count();
        let stage = self.stage_of(i);
        self.block(&self.config.layers[i], conv, stage, x, &mut Pass::default())
    }

    /// The plan index of layer `i`'s first stage.
    fn stage_of(&self, i: usize) -> usize {
        self.config.layers[..i]
            .iter()
            .map(|l| self.config.stages_of(l))
            .sum()
    }

    fn features_pass(&self, x: Tensor<4>, pass: &mut Pass) -> Tensor<4> {
        let (mut x, mut conv, mut stage) = (x, 0, 0);
        for layer in &self.config.layers {
            x = self.block(layer, conv, stage, x, pass);
            conv += matches!(layer, Layer::Conv3(_) | Layer::Conv1(_)) as usize;
            stage += self.config.stages_of(layer);
            if pass.done() {
                break;
            }
        }
        x
    }

    /// One entry of `features`: `conv` is the index of the next [`ConvBlock`], `stage` the
    /// torchvision index (`features.N`) of the entry's first module.
    fn block(
        &self,
        layer: &Layer,
        conv: usize,
        stage: usize,
        x: Tensor<4>,
        pass: &mut Pass,
    ) -> Tensor<4> {
        match layer {
            Layer::Conv3(_) | Layer::Conv1(_) => {
                let block = &self.convs[conv];
                let relu_point = Point::Features(stage + 1 + block.bn.is_some() as usize);
                if block.bn.is_none() && !pass.wants(Point::Features(stage)) {
                    // [N, C_in, H, W] -> [N, C_out, H, W], ReLU fused
                    let y = ops::conv(x, &block.conv, true);
                    pass.tap(relu_point, Seen::Map(&y));
                    return y;
                }
                let y = ops::conv(x, &block.conv, false); // [N, C_out, H, W]
                pass.tap(Point::Features(stage), Seen::Map(&y));
                let y = match &block.bn {
                    // BatchNorm and ReLU fused, unless the BatchNorm's output is asked for
                    Some(bn) if !pass.wants(Point::Features(stage + 1)) => {
                        self.batch_norm(bn, y, self.frozen(stage), pass, true)
                    }
                    Some(bn) => {
                        let y = self.batch_norm(bn, y, self.frozen(stage), pass, false);
                        pass.tap(Point::Features(stage + 1), Seen::Map(&y));
                        relu(y)
                    }
                    None => relu(y),
                };
                pass.tap(relu_point, Seen::Map(&y));
                y
            }
            Layer::Lrn => {
                let y = in_f32(x, |x| self.lrn.forward(x)); // [N, C, H, W]
                pass.tap(Point::Features(stage), Seen::Map(&y));
                y
            }
            Layer::Pool => {
                let y = ops::max_pool(x, &self.pool); // [N, C, H/2, W/2]
                pass.tap(Point::Features(stage), Seen::Map(&y));
                y
            }
        }
    }

    /// BatchNorm: batch statistics in training (handed to the pass, or folded now), running
    /// statistics otherwise and in a frozen layer; in float32 under mixed precision. Then ReLU
    /// when `relu_after` (fused in training on flex).
    fn batch_norm(
        &self,
        bn: &BatchNorm,
        x: Tensor<4>,
        frozen: bool,
        pass: &mut Pass,
        relu_after: bool,
    ) -> Tensor<4> {
        in_f32(x, |x| self.batch_norm_f32(bn, x, frozen, pass, relu_after))
    }

    fn batch_norm_f32(
        &self,
        bn: &BatchNorm,
        x: Tensor<4>,
        frozen: bool,
        pass: &mut Pass,
        relu_after: bool,
    ) -> Tensor<4> {
        let then_relu = |y: Tensor<4>| if relu_after { relu(y) } else { y };
        if frozen {
            return then_relu(ops::batch_norm_inference(bn, x));
        }
        if !(x.device().is_autodiff() && bn.training.is_enabled()) {
            return then_relu(bn.forward(x));
        }
        let (out, batch) = ops::batch_norm_train(bn, x, relu_after);
        match pass.stats.as_mut() {
            Some(sink) => sink.push(batch),
            None => fold_running(bn, &batch, bn.momentum, 1.0 - bn.momentum),
        }
        out
    }

    /// torchvision's head: adaptive average pool to `pool x pool`, flatten, FC-ReLU-Dropout x2,
    /// FC; the class scores in float32 under mixed precision. `[N, C, h, w] -> [N, classes]`.
    pub fn head(&self, x: Tensor<4>) -> Tensor<2> {
        self.head_pass(x, &mut Pass::default())
    }

    fn head_pass(&self, x: Tensor<4>, pass: &mut Pass) -> Tensor<2> {
        let x = self.avgpool(x); // [N, C, pool, pool]
        pass.tap(Point::AvgPool, Seen::Map(&x));
        let mut h: Tensor<2> = x.flatten(1, 3); // [N, C*pool*pool]
        let seed = pass.dropout_seed;
        let steps: [(usize, &dyn Fn(Tensor<2>) -> Tensor<2>); 7] = [
            (0, &|h| ops::linear(h, &self.fc1)), // [N, hidden]
            (1, &relu),
            (2, &|h| self.dropped(h, seed, 0)),
            (3, &|h| ops::linear(h, &self.fc2)), // [N, hidden]
            (4, &relu),
            (5, &|h| self.dropped(h, seed, 1)),
            (6, &|h| to_f32(ops::linear(h, &self.fc3))), // [N, classes]
        ];
        for (i, step) in steps {
            if pass.done() {
                break;
            }
            h = step(h);
            pass.tap(Point::Classifier(i), Seen::Vector(&h));
        }
        h
    }

    /// Dropout as PyTorch's `nn.Dropout` (and burn's): in training, each value kept with
    /// probability `1 - p` and scaled by `1 / (1 - p)`, the others zeroed; the identity in
    /// inference, off autodiff, or with `p = 0`. With `seed`, the mask of dropout layer `which`
    /// is drawn on the host from (seed, which) and uploaded; without, from the device's
    /// generator (burn's `Dropout`). `[N, D] -> [N, D]`.
    fn dropped(&self, h: Tensor<2>, seed: Option<u64>, which: u64) -> Tensor<2> {
        let Some(seed) = seed else {
            return self.dropout.forward(h);
        };
        let p = self.dropout.prob;
        if !self.dropout.training.is_enabled() || !h.device().is_autodiff() || p == 0.0 {
            return h;
        }
        let keep = 1.0 - p;
        let dims = h.dims();
        let mut rng = Rng::new(seed ^ (which + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mask: Vec<f32> = (0..dims[0] * dims[1])
            .map(|_| if rng.uniform() < keep { 1.0 } else { 0.0 })
            .collect();
        let mask = like(
            Tensor::<2>::from_data(TensorData::new(mask, dims), &h.device()),
            &h,
        );
        (h * mask).mul_scalar(1.0 / keep)
    }

    /// torchvision's `AdaptiveAvgPool2d((7, 7))` (or the configured size). A map already of
    /// that size passes unchanged.
    pub fn avgpool(&self, x: Tensor<4>) -> Tensor<4> {
        let p = self.config.pool_size;
        let [_, _, h, w] = x.dims();
        if h == p && w == p {
            x
        } else {
            adaptive_avg_pool2d(x, [p, p])
        }
    }

    /// The BatchNorm layers that train (not frozen), in order.
    fn training_bns(&self) -> impl Iterator<Item = &BatchNorm> {
        let mut stage = 0;
        let mut starts = Vec::new();
        for layer in &self.config.layers {
            if let Layer::Conv3(_) | Layer::Conv1(_) = layer {
                starts.push(stage);
            }
            stage += self.config.stages_of(layer);
        }
        self.convs
            .iter()
            .zip(starts)
            .filter(|(_, stage)| !self.frozen(*stage))
            .filter_map(|(b, _)| b.bn.as_ref())
    }

    /// The running statistics of the BatchNorm layers that train, flattened: each layer's mean
    /// then its variance.
    pub fn running_stats(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for bn in self.training_bns() {
            for t in [bn.running_mean.value_sync(), bn.running_var.value_sync()] {
                out.extend(t.into_data().convert::<f32>().iter::<f32>());
            }
        }
        out
    }

    /// How many values [`Vgg::running_stats`] has (from the layers' sizes, reading nothing).
    pub fn running_stats_len(&self) -> usize {
        self.training_bns()
            .map(|bn| 2 * bn.gamma.val().dims()[0])
            .sum()
    }

    /// `running = keep * running + delta`, for `delta` laid out as [`Vgg::running_stats`].
    pub fn fold_running_stats(&self, delta: &[f32], keep: f64) {
        let mut offset = 0;
        for bn in self.training_bns() {
            let c = bn.gamma.val().dims()[0];
            let device = bn.gamma.val().device();
            let part = |o: usize| {
                Tensor::<1>::from_data(TensorData::new(delta[o..o + c].to_vec(), [c]), &device)
            };
            let batch = BatchStats {
                mean: part(offset),
                var: part(offset + c),
            };
            fold_running(bn, &batch, 1.0, keep);
            offset += 2 * c;
        }
    }
}
