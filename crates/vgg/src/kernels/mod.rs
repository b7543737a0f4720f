//! Our own CPU kernels for flex, through burn 0.22's backend extension: custom operations with a
//! hand-written backward, routed for `Flex` and `Autodiff<Flex>`. Other devices use burn's
//! generic operations ([`supported`] says which path a device takes).
//!
//! - [`batch_norm`]: BatchNorm in training, fused: one pass for the batch statistics, one to
//!   normalise, scale and shift (and apply the ReLU that follows it); the backward in two passes
//!   (PyTorch's formula, the ReLU's mask first).
//! - [`conv`]: VGG's convolutions (stride 1, same padding): forward, input and weight gradients
//!   by im2col + GEMM, over many samples at once on small maps, tile by tile ([`tiled`]) on
//!   larger ones; 3x3 layers on maps of 8x8 and more (of 4x4 to 7x7 when the batch gives at
//!   least 16 blocks of 4x4) by Winograd's F(4x4, 3x3) ([`winograd`]), forward and input
//!   gradient, and the weight gradient on maps up to 112x112; maps inside the kernel's reach
//!   (2x2 from batch 4, 1x1) as one dense matrix ([`whole`]).
//! - [`pool`]: 2x2 max pooling that keeps its winners for the backward (on AVX2 where the CPU
//!   has it, detected at run time: [`instruction_set`]).
//! - [`sgd`]: SGD's update (weight decay, momentum) in two passes over the parameters.
//! - [`few_rows`]: a fully connected layer on 1 to 8 rows in inference, streaming the weights once.

pub mod batch_norm;
pub mod conv;
pub mod few_rows;
mod isa;
pub mod policy;
pub mod pool;
pub mod sgd;
pub mod tiled;
pub mod whole;
pub mod winograd;

pub use isa::active as instruction_set;
pub use policy::Policy;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Flex, backend_extension, tensor::FloatTensor,
};
use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// The operations this crate implements itself.
#[backend_extension(Flex, Autodiff)]
pub trait VggKernels: Backend {
    /// Per-channel mean and biased variance of `x` `[N, C, H, W]`, as `[2, C]`; no gradient.
    fn bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `gamma * (x - mean) / sqrt(var + eps) + beta` with `stats` = [`VggKernels::bn_stats`]
    /// of `x`, then ReLU when `relu`; differentiable in `x`, `gamma` and `beta` (the statistics'
    /// own dependence on `x` included, as BatchNorm's backward).
    fn bn_train(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self>;
    /// `x [N, C_in, H, W]` convolved with `weight [C_out, C_in, k, k]` (k odd, stride 1,
    /// padding k/2), plus `bias [C_out]`.
    fn conv_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// [`VggKernels::conv_same`] followed by ReLU, in one pass.
    fn conv_same_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// 2x2 max pooling, stride 2: `[N, C, H, W] -> [N, C, H/2, W/2]`.
    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// SGD's velocity from the parameter `w`, its gradient `g` and the last velocity `v` (read
    /// only `with_velocity`): [`sgd::velocity`]. No gradient.
    fn sgd_velocity(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        v: FloatTensor<Self>,
        momentum: f32,
        with_velocity: bool,
        decay: f32,
        with_decay: bool,
    ) -> FloatTensor<Self>;
    /// SGD's descent `w - v * lr`: [`sgd::descend`]. No gradient.
    fn sgd_descend(w: FloatTensor<Self>, v: FloatTensor<Self>, lr: f32) -> FloatTensor<Self>;
    /// A fully connected layer on a few rows, `x [n, in] W [in, out] + b`, n at most
    /// [`few_rows::MOST_ROWS`]: [`few_rows::forward`]. No gradient (inference).
    fn linear_few_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl VggKernels for Flex {
    fn bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        batch_norm::stats(&x)
    }

    fn bn_train(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        batch_norm::forward(&x, &stats, &gamma, &beta, eps, relu)
    }

    fn conv_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv::forward(x, weight, bias, false, true)
    }

    fn conv_same_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv::forward(x, weight, bias, true, true)
    }

    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        pool::forward(&x, false).0
    }

    fn sgd_velocity(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        v: FloatTensor<Self>,
        momentum: f32,
        with_velocity: bool,
        decay: f32,
        with_decay: bool,
    ) -> FloatTensor<Self> {
        let old = with_velocity.then_some((&v, momentum));
        sgd::velocity(&w, &g, old, with_decay.then_some(decay))
    }

    fn sgd_descend(w: FloatTensor<Self>, v: FloatTensor<Self>, lr: f32) -> FloatTensor<Self> {
        sgd::descend(&w, &v, lr)
    }

    fn linear_few_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        few_rows::forward(&x, &w, Some(&b))
    }
}

impl<C: CheckpointStrategy> VggKernels for Autodiff<Flex, C> {
    fn bn_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        batch_norm::stats_autodiff::<C>(x)
    }

    fn bn_train(
        x: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        batch_norm::train_autodiff::<C>(x, stats, gamma, beta, eps, relu)
    }

    fn conv_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv::forward_autodiff::<C>(x, weight, bias, false)
    }

    fn conv_same_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        conv::forward_autodiff::<C>(x, weight, bias, true)
    }

    fn max_pool2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        pool::forward_autodiff::<C>(x)
    }

    fn sgd_velocity(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        v: FloatTensor<Self>,
        momentum: f32,
        with_velocity: bool,
        decay: f32,
        with_decay: bool,
    ) -> FloatTensor<Self> {
        let old = with_velocity.then_some((v.primitive(), momentum));
        let out = sgd::velocity(
            w.primitive(),
            g.primitive(),
            old,
            with_decay.then_some(decay),
        );
        <Autodiff<Flex, C> as AutodiffBackend>::from_inner(out)
    }

    fn sgd_descend(w: FloatTensor<Self>, v: FloatTensor<Self>, lr: f32) -> FloatTensor<Self> {
        let out = sgd::descend(w.primitive(), v.primitive(), lr);
        <Autodiff<Flex, C> as AutodiffBackend>::from_inner(out)
    }

    fn linear_few_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let out = few_rows::forward(x.primitive(), w.primitive(), Some(b.primitive()));
        <Autodiff<Flex, C> as AutodiffBackend>::from_inner(out)
    }
}

/// ReLU as PyTorch's: `max(v, 0)`, a NaN kept (so that a broken value surfaces as a NaN loss
/// instead of vanishing here).
#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 || v.is_nan() { v } else { 0.0 }
}

/// ReLU's backward for a fused ReLU: `dy` where its `output` is positive (or NaN), 0 elsewhere.
pub(crate) fn relu_backward(dy: &FlexTensor, output: &FlexTensor) -> Vec<f32> {
    let (d, o) = (values(dy), values(output));
    assert_eq!(d.len(), o.len(), "a gradient per output");
    // One pass, into memory not zeroed first, a select the compiler vectorises (a copy then
    // a conditional store had taken 5% of a training step).
    const CHUNK: usize = 1 << 14;
    // SAFETY: each part's every element is written.
    unsafe {
        par_filled(d.len(), CHUNK, |i, out| {
            let r = i * CHUNK..i * CHUNK + out.len();
            for ((out, &d), &o) in out.iter_mut().zip(&d[r.clone()]).zip(&o[r]) {
                out.write(if o <= 0.0 { 0.0 } else { d });
            }
        })
    }
}

/// `n` floats written in parallel into memory not zeroed first (a kernel's output, about to be
/// overwritten): `fill(i, part)` writes the `i`-th run of `chunk` elements (the last shorter).
///
/// # Safety
/// `fill` must write every element of each part it is given.
pub(crate) unsafe fn par_filled(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, part)| fill(i, part));
    // SAFETY: the caller's `fill` wrote every element of every part.
    unsafe { out.set_len(n) };
    out
}

/// The tensor's values, row-major.
pub(crate) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) if t.is_contiguous() => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("a contiguous f32 tensor")
                .to_vec(),
        ),
    }
}

pub(crate) fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Whether `device` runs our kernels (flex, with or without autodiff, unless the kernel policy
/// turns them off for comparisons: [`Policy::ours`], the tool's `VGG_GENERIC_KERNELS=1`).
pub fn supported(device: &Device) -> bool {
    policy::get().ours
        && matches!(
            device.clone().inner().as_dispatch(),
            DispatchDevice::Flex(_)
        )
}

/// [`VggKernels::bn_stats`] on a tensor: `[N, C, H, W] -> [2, C]` (mean; biased variance).
pub fn batch_norm_stats(x: Tensor<4>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as VggKernels>::bn_stats(
        x.detach().into_dispatch(),
    ))
}

/// [`VggKernels::bn_train`] on tensors: `[N, C, H, W] -> [N, C, H, W]`.
pub fn batch_norm_train(
    x: Tensor<4>,
    stats: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    relu: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as VggKernels>::bn_train(
        x.into_dispatch(),
        stats.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps as f32,
        relu,
    ))
}

/// [`VggKernels::conv_same`] on tensors: `[N, C_in, H, W] -> [N, C_out, H, W]`.
pub fn conv_same(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as VggKernels>::conv_same(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// [`VggKernels::max_pool2x2`] on a tensor: `[N, C, H, W] -> [N, C, H/2, W/2]`.
pub fn max_pool2x2(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as VggKernels>::max_pool2x2(x.into_dispatch()))
}

/// [`VggKernels::conv_same_relu`] on tensors: `[N, C_in, H, W] -> [N, C_out, H, W]`.
pub fn conv_same_relu(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as VggKernels>::conv_same_relu(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// [`VggKernels::sgd_velocity`] on tensors (the last velocity `v_old` with its momentum, the
/// weight decay, each when given).
pub fn sgd_velocity<const D: usize>(
    w: Tensor<D>,
    g: Tensor<D>,
    v_old: Option<(Tensor<D>, f32)>,
    decay: Option<f32>,
) -> Tensor<D> {
    let (v, momentum, with_velocity) = match v_old {
        Some((v, m)) => (v, m, true),
        None => (g.clone(), 0.0, false),
    };
    Tensor::from_dispatch(<Dispatch as VggKernels>::sgd_velocity(
        w.into_dispatch(),
        g.into_dispatch(),
        v.into_dispatch(),
        momentum,
        with_velocity,
        decay.unwrap_or(0.0),
        decay.is_some(),
    ))
}

/// [`VggKernels::sgd_descend`] on tensors: `w - v * lr`.
pub fn sgd_descend<const D: usize>(w: Tensor<D>, v: Tensor<D>, lr: f32) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as VggKernels>::sgd_descend(
        w.into_dispatch(),
        v.into_dispatch(),
        lr,
    ))
}

/// [`VggKernels::linear_few_rows`] on tensors: `[n, in] -> [n, out]`, no gradient.
pub fn linear_few_rows(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as VggKernels>::linear_few_rows(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
    ))
}
