//! VGG's max pooling (2x2 window, stride 2, odd trailing rows and columns dropped, as
//! `nn.MaxPool2d(2, 2)`), on flex: the forward records which of the four inputs won (one byte
//! per output) when a backward will need it, so the backward is a scatter with no search (ties go to the first, row-major; a NaN
//! wins, so that it propagates as in PyTorch).

use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex, tensor::FloatTensor};
use rayon::prelude::*;

use super::isa::Isa;
use super::{tensor, values};

/// The pooled map `[N, C, H/2, W/2]` and, when `winners`, per output the winner's offset
/// `dy * 2 + dx` (inference does not keep them).
pub fn forward(x: &FlexTensor, winners: bool) -> (FlexTensor, Vec<u8>) {
    let s = x.layout().shape();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let (ho, wo) = (h / 2, w / 2);
    if n * c * ho * wo == 0 {
        return (tensor(Vec::new(), vec![n, c, ho, wo]), Vec::new());
    }
    let xv = values(x);
    let isa = Isa::detected();
    let size = n * c * ho * wo;
    // Not zeroed first: every output (and winner) is written below, a row at a time, in tasks
    // of at least 16 Ki outputs.
    let mut out = Vec::with_capacity(size);
    let mut arg = Vec::with_capacity(if winners { size } else { 0 });
    let per_task = (1usize << 14).div_ceil(wo) * wo;
    let rows = |task: usize, o: &mut [MaybeUninit<f32>], mut a: Option<&mut [MaybeUninit<u8>]>| {
        let first = task * per_task / wo;
        for (k, o) in o.chunks_exact_mut(wo).enumerate() {
            let (plane, y) = ((first + k) / ho, (first + k) % ho);
            let r0 = &xv[plane * h * w + 2 * y * w..][..2 * wo];
            let r1 = &xv[plane * h * w + (2 * y + 1) * w..][..2 * wo];
            let a = a.as_deref_mut().map(|a| &mut a[k * wo..(k + 1) * wo]);
            pool_row(isa, r0, r1, o, a);
        }
    };
    let o = out.spare_capacity_mut()[..size].par_chunks_mut(per_task);
    if winners {
        let a = arg.spare_capacity_mut()[..size].par_chunks_mut(per_task);
        o.zip(a)
            .enumerate()
            .for_each(|(task, (o, a))| rows(task, o, Some(a)));
    } else {
        o.enumerate().for_each(|(task, o)| rows(task, o, None));
    }
    // SAFETY: every row of outputs (and of winners when kept) was written.
    unsafe {
        out.set_len(size);
        arg.set_len(if winners { size } else { 0 });
    }
    (tensor(out, vec![n, c, ho, wo]), arg)
}

/// One row of outputs from the two input rows `r0`, `r1` (`2 * o.len()` values each), and the
/// winners into `a` when given: on AVX2 (and AVX-512 CPUs, which have it) eight outputs at a
/// time, the rest portably.
fn pool_row(
    isa: Isa,
    r0: &[f32],
    r1: &[f32],
    o: &mut [MaybeUninit<f32>],
    #[allow(unused_mut)] mut a: Option<&mut [MaybeUninit<u8>]>,
) {
    let done = match isa {
        Isa::Portable => 0,
        // SAFETY: Avx2 and Avx512 values are only made on CPUs with AVX2 (Isa::available).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(_) | Isa::Avx512(_) => unsafe { pool_row_avx2(r0, r1, o, a.as_deref_mut()) },
    };
    pool_row_portable(r0, r1, o, a, done);
}

/// [`pool_row`] from output `x0` on, one output at a time: each output the largest of its four
/// inputs, scanned row-major, a later one winning only when larger or NaN (PyTorch's rule, so
/// that a broken input surfaces instead of vanishing here), and its offset into `a`.
fn pool_row_portable(
    r0: &[f32],
    r1: &[f32],
    o: &mut [MaybeUninit<f32>],
    mut a: Option<&mut [MaybeUninit<u8>]>,
    x0: usize,
) {
    for xo in x0..o.len() {
        let j = 2 * xo;
        let cand = [r0[j], r0[j + 1], r1[j], r1[j + 1]];
        let mut best = 0;
        for (i, &v) in cand.iter().enumerate().skip(1) {
            if v > cand[best] || v.is_nan() {
                best = i;
            }
        }
        o[xo].write(cand[best]);
        if let Some(a) = a.as_deref_mut() {
            a[xo].write(best as u8);
        }
    }
}

/// [`pool_row_portable`]'s rule on eight outputs at a time (the even and odd columns of 16
/// inputs split apart by a shuffle); returns how many outputs it wrote (a multiple of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pool_row_avx2(
    r0: &[f32],
    r1: &[f32],
    o: &mut [MaybeUninit<f32>],
    a: Option<&mut [MaybeUninit<u8>]>,
) -> usize {
    use std::arch::x86_64::*;
    let wo = o.len();
    assert!(r0.len() >= 2 * wo && r1.len() >= 2 * wo);
    let full = wo / 8 * 8;
    // [e0 o0 e1 o1 e2 o2 e3 o3 | e4 ...] x 2 -> (even, odd) columns, each in order.
    let split = |p: *const f32| {
        // SAFETY: 16 floats from p, inside the row (checked above).
        let (lo, hi) = unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) };
        let order = |v: __m256| {
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
        };
        (
            order(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi)),
            order(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi)),
        )
    };
    let mut a = a;
    for x0 in (0..full).step_by(8) {
        let (c0, c1) = split(r0[2 * x0..].as_ptr());
        let (c2, c3) = split(r1[2 * x0..].as_ptr());
        let mut best = c0;
        let mut at = _mm256_setzero_si256();
        for (i, c) in [(1, c1), (2, c2), (3, c3)] {
            let take = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(c, best),
                _mm256_cmp_ps::<_CMP_UNORD_Q>(c, c),
            );
            best = _mm256_blendv_ps(best, c, take);
            at = _mm256_blendv_epi8(at, _mm256_set1_epi32(i), _mm256_castps_si256(take));
        }
        // SAFETY: outputs x0..x0 + 8 <= wo, inside `o`.
        unsafe { _mm256_storeu_ps(o[x0..x0 + 8].as_mut_ptr().cast::<f32>(), best) };
        if let Some(a) = a.as_deref_mut() {
            // Eight 32-bit offsets (0..3) narrowed to bytes: each 128-bit lane packs its four.
            let words = _mm256_packs_epi32(at, at);
            let bytes = _mm256_packus_epi16(words, words);
            let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes)) as u32;
            let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(bytes)) as u32;
            let bytes = (lo as u64 | (hi as u64) << 32).to_le_bytes();
            for (a, b) in a[x0..x0 + 8].iter_mut().zip(bytes) {
                a.write(b);
            }
        }
    }
    full
}

/// The input gradient `[N, C, H, W]`: each output's gradient goes to its winner, the other
/// three inputs (and a dropped odd last row or column) get 0.
pub fn backward(dy: &FlexTensor, arg: &[u8], [n, c, h, w]: [usize; 4]) -> FlexTensor {
    let (ho, wo) = (h / 2, w / 2);
    if n * c * ho * wo == 0 {
        return tensor(vec![0f32; n * c * h * w], vec![n, c, h, w]);
    }
    let dv = values(dy);
    let mut dx = vec![0f32; n * c * h * w];
    dx.par_chunks_mut(h * w).enumerate().for_each(|(plane, d)| {
        let (g, a) = (
            &dv[plane * ho * wo..(plane + 1) * ho * wo],
            &arg[plane * ho * wo..(plane + 1) * ho * wo],
        );
        for y in 0..ho {
            let (g, a) = (&g[y * wo..][..wo], &a[y * wo..][..wo]);
            let (d0, d1) = d[2 * y * w..(2 * y + 2) * w].split_at_mut(w);
            for xo in 0..wo {
                let (g, a) = (g[xo], a[xo]);
                let pick = |i: u8| if a == i { g } else { 0.0 };
                d0[2 * xo] = pick(0);
                d0[2 * xo + 1] = pick(1);
                d1[2 * xo] = pick(2);
                d1[2 * xo + 1] = pick(3);
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
    match MaxPoolBackward
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, arg) = forward(x.primitive(), true);
            prep.finish((Arc::new(arg), shape), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive(), false).0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every set this CPU runs (AVX2, AVX-512) and the portable path pick the same values and
    /// winners, ties and NaNs included, on rows of 1 to 19 outputs.
    #[test]
    fn isa_paths_agree() {
        // Few distinct values: many ties among the four inputs; a NaN every 7th.
        let value = |i: usize| match i % 7 {
            3 => f32::NAN,
            _ => ((i * 5) % 4) as f32 - 1.0,
        };
        for wo in 1..20 {
            let r0: Vec<f32> = (0..2 * wo).map(value).collect();
            let r1: Vec<f32> = (0..2 * wo).map(|i| value(i + 11)).collect();
            let run = |isa| {
                let (mut o, mut a) = (Vec::<f32>::with_capacity(wo), Vec::with_capacity(wo));
                let (os, at) = (
                    &mut o.spare_capacity_mut()[..wo],
                    &mut a.spare_capacity_mut()[..wo],
                );
                pool_row(isa, &r0, &r1, os, Some(at));
                // SAFETY: pool_row writes every output and winner of the row.
                unsafe { (o.set_len(wo), a.set_len(wo)) };
                (o.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), a)
            };
            let portable = run(Isa::Portable);
            for isa in Isa::available() {
                assert_eq!(portable, run(isa), "{isa:?}, {wo} outputs");
            }
            // And the portable rule itself: a tie goes to the first, a NaN wins.
            let (o, a) = portable;
            for x in 0..wo {
                let cand = [r0[2 * x], r0[2 * x + 1], r1[2 * x], r1[2 * x + 1]];
                let want = match cand.iter().rposition(|v| v.is_nan()) {
                    Some(i) => i,
                    None => {
                        let max = cand.iter().copied().fold(f32::MIN, f32::max);
                        cand.iter().position(|&v| v == max).unwrap_or(0)
                    }
                };
                assert_eq!(a[x] as usize, want, "output {x} of {wo}: {cand:?}");
                assert_eq!(o[x], cand[want].to_bits(), "output {x} of {wo}");
            }
        }
    }
}
