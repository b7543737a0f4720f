//! BatchNorm in training (Ioffe & Szegedy 2015; PyTorch's `batch_norm` with `training=True`)
//! on flex tensors: the statistics over N, H, W per channel, the normalisation, and the
//! backward `dx = gamma * inv_std / M * (M dy - sum dy - x_hat * sum(dy x_hat))`, M = N*H*W.
//! The ReLU that follows it in VGG can be fused: applied in the normalising pass, its backward
//! (the gradient passes where the output is positive) in the backward's passes, saving a pass
//! over the activations each way and the tensors between.
//! Channels (statistics) and (sample, channel) planes (element-wise passes) run in parallel.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex, tensor::FloatTensor};
use rayon::prelude::*;

use super::{par_filled, relu_backward, tensor, values};

fn dims(x: &FlexTensor) -> [usize; 4] {
    let s = x.layout().shape();
    assert_eq!(s.num_dims(), 4, "BatchNorm2d takes [N, C, H, W]");
    [s[0], s[1], s[2], s[3]]
}

/// `sum over i of f(a[i], b[i])` in float64, `a` and `b` as float64, with 8 running sums (lane
/// `i % 8`) added pairwise at the end: the compiler keeps them in vector registers, where one
/// running sum waited on each addition (BatchNorm's sums had taken 13% of the demo's training).
#[inline(always)]
fn sum8(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
    let b = &b[..a.len()];
    let mut acc = [0f64; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (a, b) in a8.zip(b8) {
        for l in 0..8 {
            acc[l] += f(a[l] as f64, b[l] as f64);
        }
    }
    for (l, (&a, &b)) in ra.iter().zip(rb).enumerate() {
        acc[l] += f(a as f64, b as f64);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Per-channel mean and biased variance, `[2, C]` (two passes, f64 sums).
pub fn stats(x: &FlexTensor) -> FlexTensor {
    let [n, c, h, w] = dims(x);
    let (hw, xs) = (h * w, values(x));
    let m = (n * hw) as f64;
    let per_channel: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(|i| &xs[(i * c + ch) * hw..(i * c + ch + 1) * hw]);
            let mean = planes().map(|p| sum8(p, p, |v, _| v)).sum::<f64>() / m;
            let var = planes()
                .map(|p| sum8(p, p, |v, _| (v - mean).powi(2)))
                .sum::<f64>()
                / m;
            (mean as f32, var as f32)
        })
        .collect();
    let (means, vars): (Vec<f32>, Vec<f32>) = per_channel.into_iter().unzip();
    tensor([means, vars].concat(), vec![2, c])
}

/// `gamma * (x - mean) * inv_std + beta`, then `max(0, .)` when `relu`.
pub fn forward(
    x: &FlexTensor,
    stats: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f32,
    relu: bool,
) -> FlexTensor {
    let [n, c, h, w] = dims(x);
    let hw = h * w;
    let (xs, st, g, b) = (values(x), values(stats), values(gamma), values(beta));
    // SAFETY: every element of each plane is written.
    let out = unsafe {
        par_filled(n * c * hw, hw, |plane, o| {
            let ch = plane % c;
            let inv = 1.0 / (st[c + ch] + eps).sqrt();
            let (scale, shift) = (g[ch] * inv, b[ch] - g[ch] * inv * st[ch]);
            for (o, &v) in o.iter_mut().zip(&xs[plane * hw..(plane + 1) * hw]) {
                let y = v * scale + shift;
                o.write(if relu { super::relu(y) } else { y });
            }
        })
    };
    tensor(out, vec![n, c, h, w])
}

/// Gradients of `x`, `gamma` and `beta` from the output's gradient `dy`; with `relu_out` (the
/// output of a fused ReLU) `dy` first goes through the ReLU's backward: zero where the output is
/// not positive.
pub fn backward(
    x: &FlexTensor,
    stats: &FlexTensor,
    gamma: &FlexTensor,
    dy: &FlexTensor,
    eps: f32,
    relu_out: Option<&FlexTensor>,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let [n, c, h, w] = dims(x);
    let hw = h * w;
    let (xs, st, g) = (values(x), values(stats), values(gamma));
    let dys = match relu_out {
        Some(out) => std::borrow::Cow::Owned(relu_backward(dy, out)),
        None => values(dy),
    };
    let inv: Vec<f32> = (0..c).map(|ch| 1.0 / (st[c + ch] + eps).sqrt()).collect();
    // Per channel: sum dy (beta's gradient) and sum dy * x_hat (gamma's).
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sdy, mut sdyx) = (0f64, 0f64);
            for i in 0..n {
                let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                let (d, x) = (&dys[r.clone()], &xs[r]);
                sdy += sum8(d, d, |d, _| d);
                sdyx += sum8(d, x, |d, v| d * ((v as f32 - st[ch]) * inv[ch]) as f64);
            }
            (sdy as f32, sdyx as f32)
        })
        .collect();
    let m = (n * hw) as f32;
    // SAFETY: every element of each plane is written.
    let dx = unsafe {
        par_filled(n * c * hw, hw, |plane, o| {
            let ch = plane % c;
            let (sdy, sdyx) = sums[ch];
            let k = g[ch] * inv[ch] / m;
            let r = plane * hw..(plane + 1) * hw;
            for ((o, &d), &v) in o.iter_mut().zip(&dys[r.clone()]).zip(&xs[r]) {
                let x_hat = (v - st[ch]) * inv[ch];
                o.write(k * (m * d - sdy - x_hat * sdyx));
            }
        })
    };
    let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    (
        tensor(dx, vec![n, c, h, w]),
        tensor(dgamma, vec![c]),
        tensor(dbeta, vec![c]),
    )
}

/// [`stats`] on an autodiff tensor: a constant of the graph.
pub fn stats_autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    <Autodiff<Flex, C> as AutodiffBackend>::from_inner(stats(x.primitive()))
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 4> for BatchNormBackward {
    /// x, stats and gamma as checkpointed nodes, eps, and the output when a ReLU was fused.
    type State = (NodeId, NodeId, NodeId, f32, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, _stats, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, stats, gamma, eps, out) = ops.state;
        let x: FlexTensor = ckpt.retrieve_node_output(x);
        let stats: FlexTensor = ckpt.retrieve_node_output(stats);
        let gamma: FlexTensor = ckpt.retrieve_node_output(gamma);
        let (dx, dgamma, dbeta) = backward(&x, &stats, &gamma, &dy, eps, out.as_ref());
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// [`forward`] with [`backward`] recorded for autodiff.
pub fn train_autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    stats: FloatTensor<Autodiff<Flex, C>>,
    gamma: FloatTensor<Autodiff<Flex, C>>,
    beta: FloatTensor<Autodiff<Flex, C>>,
    eps: f32,
    relu: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    let out = forward(
        x.primitive(),
        stats.primitive(),
        gamma.primitive(),
        beta.primitive(),
        eps,
        relu,
    );
    let nodes = [x.node(), stats.node(), gamma.node(), beta.node()];
    match BatchNormBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (
                prep.checkpoint(&x),
                prep.checkpoint(&stats),
                prep.checkpoint(&gamma),
                eps,
                relu.then(|| out.clone()),
            );
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
