//! The VGG network (paper Section 2.1; torchvision's `VGG` module).
//!
//! The module holds only what has weights: one [`ConvBlock`] per convolution and the three FC
//! layers. The order of convolutions, LRNs and pools comes from [`VggConfig::layers`], the same
//! table that names the checkpoint keys, so the forward pass and the keys cannot drift apart.

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

use crate::arch::{Layer, VggConfig};
use crate::error::VggError;

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

/// A convolution, its optional BatchNorm, and the ReLU that follows (applied in `forward`).
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

    /// conv -> [BN] -> ReLU. `[N, C_in, H, W] -> [N, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, None)
    }

    /// [`ConvBlock::forward`]; in training, a BatchNorm's batch statistics go to `stats` when
    /// given (for the caller to fold into the running statistics) instead of being folded now.
    fn forward_with(&self, x: Tensor<4>, stats: Option<&mut Vec<BatchStats>>) -> Tensor<4> {
        let x = match (&self.conv.bias, &self.bn) {
            // Our kernels (flex); without BatchNorm the ReLU is fused into the convolution.
            (Some(bias), None) if crate::kernels::supported(&x.device()) => {
                return crate::kernels::conv_same_relu(x, self.conv.weight.val(), bias.val());
            }
            (Some(bias), _) if crate::kernels::supported(&x.device()) => {
                crate::kernels::conv_same(x, self.conv.weight.val(), bias.val())
            }
            _ => self.conv.forward(x),
        };
        let x = match &self.bn {
            Some(bn) if x.device().is_autodiff() && bn.training.is_enabled() => {
                let (out, batch) = batch_norm_train(bn, x);
                match stats {
                    Some(sink) => sink.push(batch),
                    None => fold_running(bn, &batch, bn.momentum, 1.0 - bn.momentum),
                }
                out
            }
            Some(bn) => bn.forward(x),
            None => x,
        };
        relu(x)
    }
}

/// One BatchNorm layer's statistics over a training batch: the per-channel mean and the
/// unbiased variance (`var * n / (n - 1)`, n = N*H*W), which PyTorch folds into the running
/// statistics. `[C]` each, detached.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Tensor<1>,
    pub var: Tensor<1>,
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

/// BatchNorm in training, as PyTorch's: normalise with the batch's biased variance, but fold
/// the unbiased one into `running_var`. burn's own layer uses the biased variance for both,
/// which drifts from torchvision's running statistics.
fn batch_norm_train(bn: &BatchNorm, x: Tensor<4>) -> (Tensor<4>, BatchStats) {
    let [n, _, h, w] = x.dims();
    let count = (n * h * w) as f64;
    let unbiased = if count > 1.0 {
        count / (count - 1.0)
    } else {
        1.0
    };
    if crate::kernels::supported(&x.device()) {
        // Our fused kernel: [2, C] statistics, then the normalisation with its own backward.
        let stats = crate::kernels::batch_norm_stats(x.clone()); // [2, C]
        let [_, c] = stats.dims();
        let mean = stats.clone().slice([0..1, 0..c]).reshape([c]);
        let var = stats.clone().slice([1..2, 0..c]).reshape([c]);
        let out =
            crate::kernels::batch_norm_train(x, stats, bn.gamma.val(), bn.beta.val(), bn.epsilon);
        return (
            out,
            BatchStats {
                mean,
                var: var.mul_scalar(unbiased),
            },
        );
    }
    let result =
        burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    let stats = BatchStats {
        mean: result.mean.detach(),
        var: result.variance.detach().mul_scalar(unbiased),
    };
    (result.output, stats)
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

/// A VGG network: `features` (the conv stack) then torchvision's head (adaptive average pool,
/// FC-ReLU-Dropout x2, FC). Dropout and BatchNorm behave as in training only on an autodiff
/// device and after [`Module::train`]; [`Module::valid`] gives the inference behaviour.
#[derive(Module, Debug)]
pub struct Vgg {
    /// One block per convolution, in the order of `config.layers`.
    pub convs: Vec<ConvBlock>,
    /// FC1 (`classifier.0`); a 7x7 convolution in dense evaluation.
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
        let value = Tensor::from_data(burn::tensor::TensorData::new(vec![n], [1]), &device);
        self.batches_tracked = Param::initialized(self.batches_tracked.id, value);
    }

    /// Counts `n` more training batches in `num_batches_tracked` (BN networks only).
    pub fn add_batches_tracked(&mut self, n: i64) {
        if self.config.batch_norm {
            self.set_batches_tracked(self.batches_tracked() + n);
        }
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &VggConfig {
        &self.config
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
        let x = self.features(x); // [N, 512, H/32, W/32]
        self.head(x)
    }

    /// The convolutional part (torchvision's `features`): `[N, C, H, W] -> [N, 512, H/32, W/32]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        self.features_traced(x, |_, _| {})
    }

    /// [`Vgg::features`], calling `tap(layer_index, &output)` after each entry of
    /// `config.layers` (the ReLU of a conv included), for summaries and feature extraction.
    pub fn features_traced(&self, x: Tensor<4>, tap: impl FnMut(usize, &Tensor<4>)) -> Tensor<4> {
        self.features_with(x, tap, None)
    }

    /// Class scores of a training batch, and each BatchNorm layer's statistics on it (in layer
    /// order), which are not folded into the running statistics: the caller folds them with
    /// [`Vgg::fold_running_stats`] (how data-parallel training keeps them equal to one
    /// process's). `[N, C, H, W] -> [N, classes]`.
    pub fn forward_train(&self, x: Tensor<4>) -> (Tensor<2>, Vec<BatchStats>) {
        let mut stats = Vec::new();
        let x = self.features_with(x, |_, _| {}, Some(&mut stats)); // [N, 512, H/32, W/32]
        (self.head(x), stats)
    }

    /// The BatchNorm running statistics, flattened: each layer's mean then its variance.
    pub fn running_stats(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for bn in self.convs.iter().filter_map(|b| b.bn.as_ref()) {
            for t in [bn.running_mean.value_sync(), bn.running_var.value_sync()] {
                out.extend(t.into_data().convert::<f32>().iter::<f32>());
            }
        }
        out
    }

    /// `running = keep * running + delta`, for `delta` laid out as [`Vgg::running_stats`].
    pub fn fold_running_stats(&self, delta: &[f32], keep: f64) {
        let mut offset = 0;
        for bn in self.convs.iter().filter_map(|b| b.bn.as_ref()) {
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

    fn features_with(
        &self,
        x: Tensor<4>,
        mut tap: impl FnMut(usize, &Tensor<4>),
        mut stats: Option<&mut Vec<BatchStats>>,
    ) -> Tensor<4> {
        let mut convs = self.convs.iter();
        let mut x = x;
        for (i, layer) in self.config.layers.iter().enumerate() {
            x = match layer {
                // [N, C_in, H, W] -> [N, C_out, H, W]
                Layer::Conv3(_) | Layer::Conv1(_) => convs
                    .next()
                    .expect("one block per conv")
                    .forward_with(x, stats.as_deref_mut()),
                Layer::Lrn | Layer::Pool => self.weightless(layer, x),
            };
            tap(i, &x);
        }
        x
    }

    /// One weightless layer of `features`.
    pub fn weightless(&self, layer: &Layer, x: Tensor<4>) -> Tensor<4> {
        match layer {
            // [N, C, H, W] -> [N, C, H, W]
            Layer::Lrn => self.lrn.forward(x),
            // [N, C, H, W] -> [N, C, H/2, W/2]
            Layer::Pool if crate::kernels::supported(&x.device()) => crate::kernels::max_pool2x2(x),
            Layer::Pool => self.pool.forward(x),
            Layer::Conv3(_) | Layer::Conv1(_) => unreachable!("convolutions have weights"),
        }
    }

    /// torchvision's head: adaptive average pool to `pool x pool`, flatten, FC-ReLU-Dropout x2,
    /// FC. `[N, 512, h, w] -> [N, classes]`.
    pub fn head(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.avgpool(x); // [N, 512, 7, 7]
        let x: Tensor<2> = x.flatten(1, 3); // [N, 512*7*7]
        let x = self.dropout.forward(relu(self.fc1.forward(x))); // [N, 4096]
        let x = self.dropout.forward(relu(self.fc2.forward(x))); // [N, 4096]
        self.fc3.forward(x) // [N, classes]
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
}
