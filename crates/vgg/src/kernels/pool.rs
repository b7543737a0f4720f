//! VGG's max pooling (2x2 window, stride 2, odd trailing rows and columns dropped, as
//! `nn.MaxPool2d(2, 2)`), on flex: the forward records which of the four inputs won (one byte
//! per output), so the backward is a scatter with no search (ties go to the first, row-major; a NaN
//! wins, so that it propagates as in PyTorch).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex, tensor::FloatTensor};
use rayon::prelude::*;

use super::{tensor, values};

/// The pooled map `[N, C, H/2, W/2]` and, per output, the winner's offset `dy * 2 + dx`.
pub fn forward(x: &FlexTensor) -> (FlexTensor, Vec<u8>) {
    let s = x.layout().shape();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let (ho, wo) = (h / 2, w / 2);
    if n * c * ho * wo == 0 {
        return (tensor(Vec::new(), vec![n, c, ho, wo]), Vec::new());
    }
    let xv = values(x);
    let mut out = vec![0f32; n * c * ho * wo];
    let mut arg = vec![0u8; n * c * ho * wo];
    out.par_chunks_mut(ho * wo.max(1))
        .zip(arg.par_chunks_mut(ho * wo.max(1)))
        .enumerate()
        .for_each(|(plane, (o, a))| {
            let src = &xv[plane * h * w..(plane + 1) * h * w];
            for y in 0..ho {
                let (r0, r1) = (&src[2 * y * w..], &src[(2 * y + 1) * w..]);
                for xo in 0..wo {
                    let cand = [r0[2 * xo], r0[2 * xo + 1], r1[2 * xo], r1[2 * xo + 1]];
                    let mut best = 0;
                    for (i, &v) in cand.iter().enumerate().skip(1) {
                        // NaN wins, as in PyTorch: a broken input must not vanish here.
                        if v > cand[best] || v.is_nan() {
                            best = i;
                        }
                    }
                    o[y * wo + xo] = cand[best];
                    a[y * wo + xo] = best as u8;
                }
            }
        });
    (tensor(out, vec![n, c, ho, wo]), arg)
}

/// The input gradient `[N, C, H, W]`: each output's gradient goes to its winner.
pub fn backward(dy: &FlexTensor, arg: &[u8], [n, c, h, w]: [usize; 4]) -> FlexTensor {
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![0f32; n * c * h * w];
    if n * c * ho * wo == 0 {
        return tensor(dx, vec![n, c, h, w]);
    }
    let dv = values(dy);
    dx.par_chunks_mut(h * w).enumerate().for_each(|(plane, d)| {
        let (g, a) = (
            &dv[plane * ho * wo..(plane + 1) * ho * wo],
            &arg[plane * ho * wo..(plane + 1) * ho * wo],
        );
        for y in 0..ho {
            for xo in 0..wo {
                let i = y * wo + xo;
                let (dy_, dx_) = ((a[i] / 2) as usize, (a[i] % 2) as usize);
                d[(2 * y + dy_) * w + 2 * xo + dx_] = g[i];
            }
        }
    });
    tensor(dx, vec![n, c, h, w])
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// The winners and the input's shape.
    type State = (Arc<Vec<u8>>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            let (arg, shape) = ops.state;
            grads.register::<Flex>(node.id, backward(&dy, &arg, shape));
        }
    }
}

/// [`forward`] with its backward recorded for autodiff.
pub fn forward_autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    let s = x.primitive().layout().shape();
    let shape = [s[0], s[1], s[2], s[3]];
    let (out, arg) = forward(x.primitive());
    match MaxPoolBackward
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((Arc::new(arg), shape), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
