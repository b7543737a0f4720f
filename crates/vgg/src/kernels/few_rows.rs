//! A fully connected layer on a few rows (batch 1 to 8 in inference: `predict` on one image,
//! VGG-16 at batch 1 or 8): `y = x W + b` with `W [in, out]`. Reading the weights is the whole
//! cost (FC6's 411 MB against 0.2 GFLOP at batch 1), and a GEMM's packing of `W` read it and
//! wrote a copy; here `W` streams by once, in blocks of consecutive rows (one contiguous run of
//! memory each, which the prefetcher follows), one block per task, each block's products summed
//! into its own partial outputs, the partials then added up in block order (the result does not
//! depend on the thread count). Weights loaded from PyTorch's layout are a transposed view: there
//! the rows of `W^T` stream by, a dot product per output.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::isa::{Isa, on_isa};
use super::{tensor, values};

/// Most rows of `x` this kernel takes (beyond, a GEMM reads `W` as rarely and computes faster).
pub const MOST_ROWS: usize = 8;

/// Rows of `W` per task: FC6 of VGG-16 (25,088 x 4,096) in 49 blocks of 8 MiB.
const BLOCK: usize = 512;

/// Outputs per task when `W` is held transposed: 16 rows of `W^T` (1.6 MB for FC6).
const OUTPUTS: usize = 16;

/// `x [n, in] W [in, out] + b [out]`, for `n` up to [`MOST_ROWS`]. `W` row-major, or the
/// transposed view of a row-major `[out, in]` (PyTorch's layout, as pretrained weights load):
/// then each output is a dot product of `x`'s row with a row of `W^T`, streamed the same way,
/// without the copy a contiguous `W` would take.
pub fn forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let (xs, ws) = (x.layout().shape(), w.layout().shape());
    let (n, k, out) = (xs[0], xs[1], ws[1]);
    assert!(n <= MOST_ROWS, "at most {MOST_ROWS} rows");
    assert_eq!(ws[0], k, "W's rows are x's columns");
    let xv = values(x);
    let bv = b.map(values);
    if let Some(b) = &bv {
        assert_eq!(b.len(), out, "a bias per output");
    }
    let mut y = match &bv {
        Some(b) => b.repeat(n),
        None => vec![0f32; n * out],
    };
    if n * out == 0 || k == 0 {
        return tensor(y, vec![n, out]);
    }
    let isa = Isa::detected();
    if let Some(wt) = transposed(w) {
        // y [n, out], OUTPUTS columns per task: rows of W^T in turn, each dotted with x's rows.
        let mut yt = vec![0f32; out * n]; // [out][n]
        yt.par_chunks_mut(OUTPUTS * n)
            .enumerate()
            .for_each(|(t, o)| dots(isa, &xv, wt, [n, k], t * OUTPUTS, o));
        for (j, o) in yt.chunks_exact(n).enumerate() {
            for (r, v) in o.iter().enumerate() {
                y[r * out + j] += v;
            }
        }
        return tensor(y, vec![n, out]);
    }
    let wv = values(w);
    let blocks = k.div_ceil(BLOCK);
    let mut partial = vec![0f32; blocks * n * out];
    partial
        .par_chunks_mut(n * out)
        .enumerate()
        .for_each(|(t, p)| {
            rows(
                isa,
                &xv,
                &wv,
                [n, k, out],
                t * BLOCK..k.min((t + 1) * BLOCK),
                p,
            )
        });
    for p in partial.chunks_exact(n * out) {
        y.iter_mut().zip(p).for_each(|(y, p)| *y += p);
    }
    tensor(y, vec![n, out])
}

/// `W^T [out, in]` row-major, when `w [in, out]` is the transposed view of a contiguous float32
/// `[out, in]`.
fn transposed(w: &FlexTensor) -> Option<&[f32]> {
    let (s, l) = (w.layout().shape(), w.layout());
    let (k, out) = (s[0], s[1]);
    let view = k > 1 && out > 1 && l.strides() == [1, k as isize];
    if !view || w.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    w.storage::<f32>()
        .get(l.start_offset()..l.start_offset() + out * k)
}

on_isa!(
    /// [`dots_body`] on an instruction set.
    fn dots => dots_body(
        x: &[f32], wt: &[f32], dims: [usize; 2], j0: usize, y: &mut [f32]
    )
);

/// `y [outputs][n]`: the dot products of rows `j0..` of `wt [out, in]` with the `n` rows of
/// `x [n, in]`, each over 8 running sums added pairwise at the end.
#[inline(always)]
fn dots_body(x: &[f32], wt: &[f32], [n, k]: [usize; 2], j0: usize, y: &mut [f32]) {
    for (jj, y) in y.chunks_exact_mut(n).enumerate() {
        let row = &wt[(j0 + jj) * k..(j0 + jj + 1) * k];
        for (r, y) in y.iter_mut().enumerate() {
            let xr = &x[r * k..(r + 1) * k];
            let mut acc = [0f32; 8];
            let (w8, x8) = (row.chunks_exact(8), xr.chunks_exact(8));
            let (wr, xrr) = (w8.remainder(), x8.remainder());
            for (w, x) in w8.zip(x8) {
                for l in 0..8 {
                    acc[l] += w[l] * x[l];
                }
            }
            for (l, (w, x)) in wr.iter().zip(xrr).enumerate() {
                acc[l] += w * x;
            }
            *y = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        }
    }
}

on_isa!(
    /// [`rows_body`] on an instruction set.
    fn rows => rows_body(
        x: &[f32], w: &[f32], dims: [usize; 3], block: std::ops::Range<usize>, y: &mut [f32]
    )
);

/// Adds `x[:, block] W[block, :]` to `y [n, out]`: W's rows four at a time, each output's four
/// products summed in pairs before they join its running sum.
#[inline(always)]
fn rows_body(
    x: &[f32],
    w: &[f32],
    [n, k, out]: [usize; 3],
    block: std::ops::Range<usize>,
    y: &mut [f32],
) {
    let row = |i: usize| &w[i * out..(i + 1) * out];
    let mut i = block.start;
    while i + 4 <= block.end {
        let (w0, w1, w2, w3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        for (r, y) in y.chunks_exact_mut(out).enumerate().take(n) {
            let a = &x[r * k + i..r * k + i + 4];
            for j in 0..out {
                y[j] += (a[0] * w0[j] + a[1] * w1[j]) + (a[2] * w2[j] + a[3] * w3[j]);
            }
        }
        i += 4;
    }
    for i in i..block.end {
        let wi = row(i);
        for (r, y) in y.chunks_exact_mut(out).enumerate().take(n) {
            let a = x[r * k + i];
            for j in 0..out {
                y[j] += a * wi[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * f).sin() * 2.0).collect()
    }

    /// The portable loops and those of every other set this CPU runs give the same bits, both
    /// layouts of `W`.
    #[test]
    fn isa_paths_agree() {
        let (n, k, out) = (3, 1030, 37);
        let (x, w) = (wave(n * k, 0.31), wave(k * out, 0.17));
        let run = |isa| {
            // w as W [k, out], then as W^T [out, k].
            let mut a = vec![0f32; n * out];
            rows(isa, &x, &w, [n, k, out], 0..k, &mut a);
            let mut b = vec![0f32; out * n];
            dots(isa, &x, &w, [n, k], 0, &mut b);
            a.iter().chain(&b).map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        for isa in Isa::available() {
            assert!(run(Isa::Portable) == run(isa), "{isa:?}");
        }
    }
}
