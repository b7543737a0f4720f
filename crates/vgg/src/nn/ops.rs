//! The operations a VGG is made of, each on our flex kernels ([`crate::kernels`]) where the
//! device is flex and on burn's own operations elsewhere: the one place that chooses.

use burn::nn::BatchNorm;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::module::{
    batch_norm_train as generic_batch_norm_train, conv2d, linear as generic_linear,
};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor};

use super::precision::like;
use crate::kernels;

/// Whether `device` runs our kernels (flex, with or without autodiff, unless the kernel policy
/// says burn's: [`kernels::Policy::ours`]).
pub fn ours(device: &Device) -> bool {
    kernels::supported(device)
}

/// One parameter's SGD update with PyTorch's semantics, `v = m * v_old + (g + decay * w)`,
/// `w - lr * v`, returning `(w, v)`: our two-pass kernels where they run (float32 on flex), burn's
/// operations elsewhere (the same arithmetic). `old` is the velocity with its momentum `m`.
pub fn sgd_update<const D: usize>(
    w: Tensor<D>,
    g: Tensor<D>,
    old: Option<(Tensor<D>, f32)>,
    decay: Option<f32>,
    lr: f64,
) -> (Tensor<D>, Tensor<D>) {
    let f32s = [Some(&w), Some(&g), old.as_ref().map(|(v, _)| v)]
        .into_iter()
        .flatten()
        .all(|t| t.dtype() == DType::F32);
    if f32s && ours(&w.device()) {
        let v = kernels::sgd_velocity(w.clone(), g, old, decay);
        return (kernels::sgd_descend(w, v.clone(), lr as f32), v);
    }
    let g = match decay {
        Some(p) => w.clone().mul_scalar(p).add(g),
        None => g,
    };
    let v = match old {
        Some((v, m)) => g.add(v.mul_scalar(m)),
        None => g,
    };
    (w - v.clone().mul_scalar(lr), v)
}

/// Drops what our kernels keep for weights that will not be seen again (the Winograd
/// transforms of a network's convolution weights).
pub fn release_caches() {
    kernels::winograd::clear_cache();
}

/// Whether `x` goes through our kernels: on their device, in float32 (a mixed-precision
/// forward's float16 and bfloat16 run burn's operations).
fn ours_for<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && ours(&x.device())
}

/// Which algorithm [`conv`] runs for a batch of `n` `[C_in, C_out, H, W]` maps and a `k x k`
/// kernel on `device` (for profiles): the whole map as one matrix (maps inside the kernel's
/// reach), Winograd's F(4x4, 3x3), im2col + GEMM (one GEMM over all samples on maps of at most
/// 4x4, tile by tile otherwise), or burn's generic convolution.
pub fn conv_algorithm(device: &Device, [n, ci, co, h, w, k]: [usize; 6]) -> &'static str {
    let g = kernels::tiled::Geometry { n, ci, co, h, w, k };
    if !ours(device) {
        "burn generic"
    } else if kernels::whole::applies(&g) {
        "whole map, one GEMM"
    } else if kernels::winograd::applies_to_weight_grad(&g) {
        "Winograd F(4x4,3x3)"
    } else if kernels::winograd::applies(&g) {
        "Winograd, dW direct"
    } else if h * w <= kernels::conv::SMALL_MAP {
        "GEMM, all samples"
    } else {
        "im2col+GEMM tiles"
    }
}

/// Which algorithm [`linear`] runs for `n` rows on `device` (for profiles): the weights
/// streamed once ([`kernels::few_rows`]: inference on a few rows) or burn's matmul.
pub fn linear_algorithm(device: &Device, n: usize) -> &'static str {
    if streams_weights(device, n) {
        "weights streamed"
    } else {
        "burn matmul"
    }
}

/// Whether [`linear`] on `n` rows takes [`kernels::few_rows`]: our kernels' device, no
/// autodiff (it has no backward), at most [`kernels::few_rows::MOST_ROWS`] rows.
fn streams_weights(device: &Device, n: usize) -> bool {
    ours(device) && !device.is_autodiff() && n <= kernels::few_rows::MOST_ROWS
}

/// VGG's convolution (stride 1, same padding), then ReLU when `relu`: fused into one pass on
/// flex. In a mixed-precision forward the float32 weights are cast to `x`'s dtype
/// ([`super::precision`]). `[N, C_in, H, W] -> [N, C_out, H, W]`.
pub fn conv(x: Tensor<4>, conv: &Conv2d, relu_after: bool) -> Tensor<4> {
    if x.dtype() != conv.weight.val().dtype() {
        let w = like(conv.weight.val(), &x); // [C_out, C_in, k, k]
        let k = w.dims()[2];
        let b = conv.bias.as_ref().map(|b| like(b.val(), &x));
        let y = conv2d(x, w, b, ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], 1));
        return if relu_after { relu(y) } else { y };
    }
    match &conv.bias {
        Some(bias) if ours_for(&x) => {
            let (w, b) = (conv.weight.val(), bias.val());
            if relu_after {
                kernels::conv_same_relu(x, w, b)
            } else {
                kernels::conv_same(x, w, b)
            }
        }
        _ => {
            let y = conv.forward(x);
            if relu_after { relu(y) } else { y }
        }
    }
}

/// An FC layer, `x W^T + b`, its float32 weights cast to `x`'s dtype in a mixed-precision
/// forward. `[N, in] -> [N, out]`.
pub fn linear(x: Tensor<2>, layer: &Linear) -> Tensor<2> {
    let w = like(layer.weight.val(), &x); // [in, out]
    let b = layer.bias.as_ref().map(|b| like(b.val(), &x));
    match b {
        // Inference on a few rows: the weights streamed once ([`kernels::few_rows`]).
        // (Every input off autodiff: burn routes an operation with one autodiff input to the
        // autodiff path, where this kernel would drop the parameters' gradients.)
        Some(b)
            if x.dtype() == DType::F32
                && [x.device(), w.device(), b.device()]
                    .iter()
                    .all(|d| streams_weights(d, x.dims()[0])) =>
        {
            kernels::linear_few_rows(x, w, b)
        }
        b => generic_linear(x, w, b),
    }
}

/// A convolution without padding (`weight [C_out, C_in, k, k]`), for the FC layers of the
/// dense head viewed as convolutions (Section 3.2). `[N, C_in, H, W] -> [N, C_out, H-k+1, W-k+1]`.
pub fn conv_valid(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    conv2d(x, weight, bias, ConvOptions::new([1, 1], [0, 0], [1, 1], 1))
}

/// One BatchNorm layer's statistics over a training batch: the per-channel mean and the
/// unbiased variance (`var * n / (n - 1)`, n = N*H*W), which PyTorch folds into the running
/// statistics. `[C]` each, detached.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Tensor<1>,
    pub var: Tensor<1>,
}

/// BatchNorm in training, as PyTorch's: normalise with the batch's biased variance, and return
/// the statistics with the unbiased one, for the running statistics. burn's own layer uses the
/// biased variance for both, which drifts from torchvision's running statistics. Then ReLU
/// when `relu_after`: fused into the normalising pass on flex.
pub fn batch_norm_train(bn: &BatchNorm, x: Tensor<4>, relu_after: bool) -> (Tensor<4>, BatchStats) {
    let [n, _, h, w] = x.dims();
    let count = (n * h * w) as f64;
    let unbiased = if count > 1.0 {
        count / (count - 1.0)
    } else {
        1.0
    };
    if ours_for(&x) {
        // Our fused kernel: [2, C] statistics, then the normalisation with its own backward.
        let stats = kernels::batch_norm_stats(x.clone()); // [2, C]
        let [_, c] = stats.dims();
        let mean = stats.clone().slice([0..1, 0..c]).reshape([c]);
        let var = stats.clone().slice([1..2, 0..c]).reshape([c]);
        let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
        let out = kernels::batch_norm_train(x, stats, gamma, beta, bn.epsilon, relu_after);
        let var = var.mul_scalar(unbiased);
        return (out, BatchStats { mean, var });
    }
    let result = generic_batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    let stats = BatchStats {
        mean: result.mean.detach(),
        var: result.variance.detach().mul_scalar(unbiased),
    };
    let out = result.output;
    (if relu_after { relu(out) } else { out }, stats)
}

/// BatchNorm with its running statistics (inference, and frozen layers in training): no batch
/// statistics, nothing folded.
pub fn batch_norm_inference(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let c = bn.gamma.val().dims()[0];
    let column = |t: Tensor<1>| t.reshape([1, c, 1, 1]);
    let mean = column(bn.running_mean.value());
    let inv_std = column(bn.running_var.value().add_scalar(bn.epsilon).sqrt().recip());
    (x - mean) * inv_std * column(bn.gamma.val()) + column(bn.beta.val())
}

/// 2x2 max pooling, stride 2 (odd trailing rows and columns dropped, as `nn.MaxPool2d(2, 2)`).
/// `[N, C, H, W] -> [N, C, H/2, W/2]`.
pub fn max_pool(x: Tensor<4>, generic: &burn::nn::pool::MaxPool2d) -> Tensor<4> {
    if ours_for(&x) {
        kernels::max_pool2x2(x)
    } else {
        generic.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use burn::module::RunningState;
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;

    use super::*;

    /// A frozen layer's BatchNorm is burn's (and PyTorch's) inference BatchNorm.
    #[test]
    fn batch_norm_with_running_statistics_is_the_inference_one() {
        let device = Device::flex();
        let mut bn = BatchNormConfig::new(3).init(&device);
        bn.running_mean = RunningState::new(Tensor::from_floats([0.5, -1.0, 2.0], &device));
        bn.running_var = RunningState::new(Tensor::from_floats([0.25, 4.0, 1.5], &device));
        bn.gamma = bn
            .gamma
            .map(|_| Tensor::from_floats([1.5, 0.5, -1.0], &device));
        bn.beta = bn
            .beta
            .map(|_| Tensor::from_floats([0.1, 0.2, 0.3], &device));
        let x = Tensor::<4>::random([2, 3, 4, 5], Distribution::Default, &device);
        let want = bn
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let got = batch_norm_inference(&bn, x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
