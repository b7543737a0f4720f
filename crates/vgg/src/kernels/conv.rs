//! Convolutions of VGG's shape (odd square kernel, stride 1, "same" zero padding, one group)
//! on flex, forward and backward, all ours: maps inside the kernel's reach (2x2, 1x1) as one
//! dense matrix ([`super::whole`]); 3x3 layers by Winograd where it applies
//! ([`super::winograd`]); otherwise on maps of at most 16 pixels one im2col + GEMM over many
//! samples at once, on larger maps tile by tile ([`super::tiled`]). The input gradient is the
//! forward convolution of the output gradient with the rotated, transposed kernel. burn's
//! generic weight gradient runs a convolution of the input by the output gradient, a GEMM whose
//! output is only `k x k` wide per channel pair (10-40 GFLOP/s here); ours is one GEMM `dW [C_out, C_in k k] += dY [C_out, M] x cols^T [M, C_in k k]`
//! per chunk of samples (M = samples x H x W) or per tile, summed in a fixed order.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::{Autodiff, Flex, tensor::FloatTensor};
use rayon::prelude::*;

use super::tiled::{self, Geometry, sgemm};
use super::{relu_backward, tensor, values, whole, winograd};

/// Floats of im2col matrix built at once (64 MiB).
const COLS_FLOATS: usize = 1 << 24;

/// Stride 1, padding k/2 on every side.
pub fn options(kernel: usize) -> ConvOptions<2> {
    let p = kernel / 2;
    ConvOptions::new([1, 1], [p, p], [1, 1], 1)
}

fn kernel_size(weight: &FlexTensor) -> usize {
    let s = weight.layout().shape();
    assert!(s[2] == s[3] && s[2] % 2 == 1, "an odd square kernel");
    s[2]
}

/// Maps of at most this many pixels that neither [`whole`] nor [`winograd`] takes go through
/// one GEMM over many samples ([`forward_gemm`], [`weight_grad`]); larger ones tile by tile
/// ([`super::tiled`]).
pub const SMALL_MAP: usize = 16;

fn geometry(x: &FlexTensor, weight: &FlexTensor) -> Geometry {
    let (xs, ws) = (x.layout().shape(), weight.layout().shape());
    Geometry {
        n: xs[0],
        ci: xs[1],
        co: ws[0],
        h: xs[2],
        w: xs[3],
        k: kernel_size(weight),
    }
}

/// `x [N, C_in, H, W]` * `weight [C_out, C_in, k, k]` + `bias [C_out]`, then ReLU when `relu`.
/// `cache`: the weights are those of inference, which will be seen again (see
/// [`winograd::forward`]).
pub fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    relu: bool,
    cache: bool,
) -> FlexTensor {
    let g = geometry(&x, &weight);
    if whole::applies(&g) {
        let y = whole::forward(&values(&x), &values(&weight), &values(&bias), g, relu);
        tensor(y, vec![g.n, g.co, g.h, g.w])
    } else if winograd::applies(&g) {
        let (xv, wv, bv) = (values(&x), values(&weight), values(&bias));
        let y = winograd::forward(&xv, &wv, &bv, g, relu, cache);
        tensor(y, vec![g.n, g.co, g.h, g.w])
    } else if g.h * g.w <= SMALL_MAP {
        forward_gemm(&x, &weight, &bias, relu)
    } else {
        let y = tiled::forward(&values(&x), &values(&weight), &values(&bias), g, relu);
        tensor(y, vec![g.n, g.co, g.h, g.w])
    }
}

/// flex's own convolution, for comparison.
pub fn forward_flex(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
    let k = kernel_size(&weight);
    Flex::conv2d(x, weight, Some(bias), options(k))
}

/// The bias gradient: `dy` summed over samples and positions, per channel.
pub fn bias_grad(dy: &FlexTensor) -> FlexTensor {
    let s = dy.layout().shape();
    let (n, c, hw) = (s[0], s[1], s[2] * s[3]);
    let d = values(dy);
    let sums: Vec<f32> = (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n)
                .map(|i| {
                    d[(i * c + ch) * hw..(i * c + ch + 1) * hw]
                        .iter()
                        .sum::<f32>()
                })
                .sum()
        })
        .collect();
    tensor(sums, vec![c])
}

/// The weight gradient `dW [C_out, C_in, k, k]` of `x [N, C_in, H, W]` and `dy [N, C_out, H, W]`.
pub fn weight_grad(x: &FlexTensor, dy: &FlexTensor, weight: &FlexTensor) -> FlexTensor {
    let g = geometry(x, weight);
    if g.n == 0 {
        return tensor(
            vec![0.0; g.co * g.ci * g.k * g.k],
            vec![g.co, g.ci, g.k, g.k],
        );
    }
    if whole::applies(&g) {
        let dw = whole::weight_grad(&values(x), &values(dy), g);
        tensor(dw, vec![g.co, g.ci, g.k, g.k])
    } else if winograd::applies_to_weight_grad(&g) {
        let dw = winograd::weight_grad(&values(x), &values(dy), g);
        tensor(dw, vec![g.co, g.ci, g.k, g.k])
    } else if g.h * g.w <= SMALL_MAP {
        weight_grad_chunked(x, dy, g.k, COLS_FLOATS)
    } else {
        let dw = tiled::weight_grad(&values(x), &values(dy), g);
        tensor(dw, vec![g.co, g.ci, g.k, g.k])
    }
}

/// [`weight_grad`] with im2col chunks of at most `budget` floats (at least one sample).
fn weight_grad_chunked(x: &FlexTensor, dy: &FlexTensor, k: usize, budget: usize) -> FlexTensor {
    let xs = x.layout().shape();
    let (n, ci, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let co = dy.layout().shape()[1];
    let (hw, ckk) = (h * w, ci * k * k);
    let (xv, dv) = (values(x), values(dy));
    // Samples per chunk so that the chunk's im2col matrix stays under COLS_FLOATS.
    let chunk = (budget / (ckk * hw)).clamp(1, n);
    let mut dw = vec![0f32; co * ckk];
    let mut cols = vec![0f32; ckk * chunk * hw];
    let mut dyt = vec![0f32; co * chunk * hw];
    for start in (0..n).step_by(chunk) {
        let s = chunk.min(n - start);
        let m = s * hw;
        im2col(&xv, [start, s, ci, h, w], k, &mut cols[..ckk * m]);
        transpose_samples(&dv, [start, s, co, hw], &mut dyt[..co * m]);
        // dw [co, ckk] += dyt [co, m] x cols^T [m, ckk]
        // SAFETY: the pointers cover co*ckk, co*m and ckk*m floats with the strides given.
        unsafe {
            sgemm(
                [co, ckk, m],
                dw.as_mut_ptr(),
                ckk,
                start > 0,
                (dyt.as_ptr(), m, 1),
                (cols.as_ptr(), 1, m),
                gemm::Parallelism::Rayon(0),
            );
        }
    }
    tensor(dw, vec![co, ci, k, k])
}

/// `cols[(c, ky, kx), (i, y, x)] = x[start + i, c, y + ky - p, x + kx - p]` (0 outside), for
/// the `s` samples from `start`; `x` is `[N, C, H, W]` row-major.
fn im2col(xv: &[f32], [start, s, ci, h, w]: [usize; 5], k: usize, cols: &mut [f32]) {
    let (hw, p) = (h * w, k / 2);
    cols.par_chunks_mut(s * hw)
        .enumerate()
        .for_each(|(row, out)| {
            let (c, ky, kx) = (row / (k * k), row / k % k, row % k);
            for i in 0..s {
                let plane = &xv[((start + i) * ci + c) * hw..((start + i) * ci + c + 1) * hw];
                let dst = &mut out[i * hw..(i + 1) * hw];
                for y in 0..h {
                    let sy = y as isize + ky as isize - p as isize;
                    let line = &mut dst[y * w..(y + 1) * w];
                    if sy < 0 || sy >= h as isize {
                        line.fill(0.0);
                        continue;
                    }
                    let src = &plane[sy as usize * w..(sy as usize + 1) * w];
                    // Columns whose source is inside the row: x + kx - p in [0, w).
                    let lo = p.saturating_sub(kx).min(w);
                    let hi = (w + p).saturating_sub(kx).min(w).max(lo);
                    line[..lo].fill(0.0);
                    line[hi..].fill(0.0);
                    let off = kx as isize - p as isize;
                    line[lo..hi].copy_from_slice(
                        &src[(lo as isize + off) as usize..(hi as isize + off) as usize],
                    );
                }
            }
        });
}

/// Our forward: per chunk of samples, im2col then one GEMM `Y [C_out, M] = W [C_out, C_in k k]
/// x cols [C_in k k, M]`, written back as `[N, C_out, H, W]` with the bias added.
pub fn forward_gemm(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    relu: bool,
) -> FlexTensor {
    let k = kernel_size(weight);
    let xs = x.layout().shape();
    let (n, ci, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let co = weight.layout().shape()[0];
    let (hw, ckk) = (h * w, ci * k * k);
    let (xv, wv, bv) = (values(x), values(weight), values(bias));
    let chunk = (COLS_FLOATS / (ckk * hw)).clamp(1, n);
    let mut out = vec![0f32; n * co * hw];
    let mut cols = vec![0f32; ckk * chunk * hw];
    let mut yt = vec![0f32; co * chunk * hw];
    for start in (0..n).step_by(chunk) {
        let s = chunk.min(n - start);
        let m = s * hw;
        im2col(&xv, [start, s, ci, h, w], k, &mut cols[..ckk * m]);
        // SAFETY: the pointers cover co*m, co*ckk and ckk*m floats with the strides given.
        unsafe {
            sgemm(
                [co, m, ckk],
                yt.as_mut_ptr(),
                m,
                false,
                (wv.as_ptr(), ckk, 1),
                (cols.as_ptr(), m, 1),
                gemm::Parallelism::Rayon(0),
            );
        }
        let dst = &mut out[start * co * hw..(start + s) * co * hw];
        dst.par_chunks_mut(hw).enumerate().for_each(|(plane, o)| {
            let (i, c) = (plane / co, plane % co);
            let src = &yt[c * m + i * hw..c * m + (i + 1) * hw];
            for (o, &v) in o.iter_mut().zip(src) {
                *o = if relu {
                    super::relu(v + bv[c])
                } else {
                    v + bv[c]
                };
            }
        });
    }
    tensor(out, vec![n, co, h, w])
}

/// `out[o, (i, pixel)] = v[start + i, o, pixel]` for the `s` samples from `start` of a
/// `[N, C, HW]` tensor: channels first, so that one GEMM spans the samples.
fn transpose_samples(v: &[f32], [start, s, c, hw]: [usize; 4], out: &mut [f32]) {
    out.par_chunks_mut(s * hw).enumerate().for_each(|(o, out)| {
        for i in 0..s {
            let src = &v[((start + i) * c + o) * hw..((start + i) * c + o + 1) * hw];
            out[i * hw..(i + 1) * hw].copy_from_slice(src);
        }
    });
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    /// x and weight as checkpointed nodes, and the output when a ReLU was fused.
    type State = (NodeId, NodeId, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let mut dy = grads.consume::<Flex>(&ops.node);
        if let Some(out) = &ops.state.2 {
            dy = tensor(relu_backward(&dy, out), out.layout().shape().to_vec());
        }
        let x: FlexTensor = ckpt.retrieve_node_output(ops.state.0);
        let weight: FlexTensor = ckpt.retrieve_node_output(ops.state.1);
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, bias_grad(&dy));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, weight_grad(&x, &dy, &weight));
        }
        if let Some(node) = node_x {
            // The forward convolution of dy with the rotated, transposed kernel.
            let g = geometry(&x, &weight);
            let kernel = tensor(
                tiled::rotated(&values(&weight), g),
                vec![g.ci, g.co, g.k, g.k],
            );
            let dx = forward(
                dy,
                kernel,
                tensor(vec![0.0; g.ci], vec![g.ci]),
                false,
                false,
            );
            grads.register::<Flex>(node.id, dx);
        }
    }
}

/// [`forward`] with its backward recorded for autodiff.
pub fn forward_autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    bias: FloatTensor<Autodiff<Flex, C>>,
    relu: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    let out = forward(
        x.primitive().clone(),
        weight.primitive().clone(),
        bias.primitive().clone(),
        relu,
        false,
    );
    let nodes = [x.node(), weight.node(), bias.node()];
    match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let kept = relu.then(|| out.clone());
            let state = (prep.checkpoint(&x), prep.checkpoint(&weight), kept);
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(len: usize, f: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * f).sin()).collect()
    }

    /// An empty batch has a zero weight gradient (two paths used to panic on one; `weight_grad`
    /// now answers before routing, and each path answers too: `whole` and `winograd`'s own
    /// tests).
    #[test]
    fn empty_batch_has_a_zero_weight_gradient() {
        for [ci, co, side] in [[3, 4, 2], [16, 16, 8], [3, 4, 9]] {
            let x = tensor(Vec::new(), vec![0, ci, side, side]);
            let dy = tensor(Vec::new(), vec![0, co, side, side]);
            let weight = tensor(wave(co * ci * 9, 0.3), vec![co, ci, 3, 3]);
            let dw = weight_grad(&x, &dy, &weight);
            let dw = values(&dw);
            assert!(dw.len() == co * ci * 9 && dw.iter().all(|&v| v == 0.0));
        }
    }

    /// Our im2col + GEMM forward against flex's convolution: odd sizes, 1x1 and 5x5 kernels,
    /// one channel, a 1x1 map.
    #[test]
    fn gemm_forward_matches_flex() {
        for [n, ci, co, h, w, k] in [
            [2, 3, 4, 5, 7, 3],
            [1, 1, 2, 1, 1, 3],
            [3, 4, 2, 6, 3, 1],
            [1, 2, 3, 9, 4, 5],
        ] {
            let x = tensor(wave(n * ci * h * w, 0.37), vec![n, ci, h, w]);
            let wt = tensor(wave(co * ci * k * k, 0.23), vec![co, ci, k, k]);
            let b = tensor(wave(co, 1.1), vec![co]);
            let ours = values(&forward_gemm(&x, &wt, &b, false)).to_vec();
            let flex = values(&forward_flex(x, wt, b)).to_vec();
            assert_eq!(ours.len(), flex.len());
            for (a, b) in ours.iter().zip(&flex) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    /// Our input gradient (the rotated-kernel convolution, both paths) against flex's (a
    /// transposed convolution).
    #[test]
    fn gemm_input_gradient_matches_flex() {
        for [n, ci, co, h, w, k] in [
            [2, 3, 4, 5, 7, 3],
            [1, 1, 2, 1, 1, 3],
            [3, 4, 2, 2, 2, 3],
            [1, 2, 3, 4, 3, 5],
            [2, 3, 2, 3, 3, 1],
        ] {
            let dy = tensor(wave(n * co * h * w, 0.29), vec![n, co, h, w]);
            let wt = tensor(wave(co * ci * k * k, 0.23), vec![co, ci, k, k]);
            let x = tensor(vec![0.0; n * ci * h * w], vec![n, ci, h, w]);
            let g = Geometry { n, ci, co, h, w, k };
            let kernel = tensor(tiled::rotated(&values(&wt), g), vec![ci, co, k, k]);
            let zero = tensor(vec![0.0; ci], vec![ci]);
            let ours = values(&forward(dy.clone(), kernel, zero, false, false)).to_vec();
            let flex = values(&Flex::conv2d_x_backward(x, wt, dy, options(k))).to_vec();
            assert_eq!(ours.len(), flex.len());
            for (a, b) in ours.iter().zip(&flex) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    /// One GEMM over all samples, or one per sample accumulated: the same gradient.
    #[test]
    fn chunked_weight_gradient_accumulates() {
        let (n, ci, co, h, w) = (3, 2, 4, 5, 6);
        let x = tensor(wave(n * ci * h * w, 0.37), vec![n, ci, h, w]);
        let dy = tensor(wave(n * co * h * w, 0.11), vec![n, co, h, w]);
        let whole = values(&weight_grad_chunked(&x, &dy, 3, usize::MAX)).to_vec();
        let chunked = values(&weight_grad_chunked(&x, &dy, 3, 1)).to_vec();
        assert_eq!(whole.len(), co * ci * 9);
        for (a, b) in whole.iter().zip(&chunked) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}
