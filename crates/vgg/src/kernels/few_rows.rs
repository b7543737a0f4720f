//! A fully connected layer on a few rows (batch 1 to 8 in inference: `predict` on one image,
//! VGG-16 at batch 1 or 8): `y = x W + b` with `W [in, out]`. Reading the weights is the whole
//! cost (FC6's 411 MB against 0.2 GFLOP at batch 1), and a GEMM's packing of `W` read it and
//! wrote a copy; here `W` streams by once, in blocks of consecutive rows (one contiguous run of
//! memory each, which the prefetcher follows), one block per task, each block's products summed
//! into its own partial outputs, the partials then added up in block order (the result does not
//! depend on the thread count).

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::isa::{Isa, on_isa};
use super::{tensor, values};

/// Most rows of `x` this kernel takes (beyond, a GEMM reads `W` as rarely and computes faster).
pub const MOST_ROWS: usize = 8;

/// Rows of `W` per task: FC6 of VGG-16 (25,088 x 4,096) in 49 blocks of 8 MiB.
const BLOCK: usize = 512;

/// `x [n, in] W [in, out] + b [out]`, for `n` up to [`MOST_ROWS`].
pub fn forward(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let (xs, ws) = (x.layout().shape(), w.layout().shape());
    let (n, k, out) = (xs[0], xs[1], ws[1]);
    assert!(n <= MOST_ROWS, "at most {MOST_ROWS} rows");
    assert_eq!(ws[0], k, "W's rows are x's columns");
    let (xv, wv) = (values(x), values(w));
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

on_isa!(
    /// [`rows_body`] on an instruction set.
    fn rows, rows_avx2 => rows_body(
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
