//! The convolution on maps that fit inside the kernel's reach (VGG's 3x3 layers on 2x2 and 1x1
//! maps: the last block of a network fed 32x32 or 16x16 images): every output pixel sees every
//! input pixel, so the layer is one dense matrix `K [C_out hw, C_in hw]` with
//! `K[(o, p), (c, q)] = w[o, c, q - p + pad]` (p, q the output and input positions), and the
//! forward, input gradient and weight gradient are one GEMM each. im2col + GEMM multiplies the
//! padding's zeros too: 9 products per output and channel pair where a 2x2 map has 4 inputs
//! and a 1x1 map one, so this does 4/9 (2x2) and 1/9 (1x1) of its work, exactly (no
//! approximation: the same sums in another order).

use gemm::Parallelism;
use rayon::prelude::*;

use super::tiled::{Geometry, sgemm};

/// Whether every output pixel's window covers the whole map (`h, w <= k/2 + 1`), on a 1x1 map
/// or a batch of at least 4: `K` holds `hw^2 / k^2` times the weights' values (16/9 on a 2x2
/// map), so at batch 1 its build and matrix-vector product read more than im2col's.
pub fn applies(g: &Geometry) -> bool {
    within_reach(g) && (g.h * g.w == 1 || g.n >= 4)
}

/// The shapes [`forward`] and [`weight_grad`] take (whatever the batch).
fn within_reach(g: &Geometry) -> bool {
    let reach = g.k / 2 + 1;
    g.h <= reach && g.w <= reach && g.h * g.w > 0 && g.ci > 0 && g.co > 0
}

/// `taps[p hw + q]`: the kernel tap linking output position `p` to input position `q`.
fn taps(g: &Geometry) -> Vec<usize> {
    let (hw, pad) = (g.h * g.w, g.k / 2);
    (0..hw * hw)
        .map(|i| {
            let (p, q) = (i / hw, i % hw);
            let (py, px, qy, qx) = (p / g.w, p % g.w, q / g.w, q % g.w);
            (qy + pad - py) * g.k + (qx + pad - px)
        })
        .collect()
}

/// `K [C_out hw, C_in hw]` of `weight [C_out, C_in, k, k]` (see the module's note).
fn matrix(weight: &[f32], g: &Geometry) -> Vec<f32> {
    let (hw, kk, taps) = (g.h * g.w, g.k * g.k, taps(g));
    let mut k = vec![0f32; g.co * hw * g.ci * hw];
    k.par_chunks_mut(g.ci * hw)
        .enumerate()
        .for_each(|(row, out)| {
            let (o, p) = (row / hw, row % hw);
            let taps = &taps[p * hw..(p + 1) * hw];
            let kernels = weight[o * g.ci * kk..(o + 1) * g.ci * kk].chunks_exact(kk);
            for (line, kernel) in out.chunks_exact_mut(hw).zip(kernels) {
                for (v, &t) in line.iter_mut().zip(taps) {
                    *v = kernel[t];
                }
            }
        });
    k
}

/// `x [N, C_in, h, w]` * `weight [C_out, C_in, k, k]` (padding k/2) + `bias`, then ReLU when
/// `relu`: `Y [N, C_out hw] = X [N, C_in hw] x K^T`.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: Geometry, relu: bool) -> Vec<f32> {
    assert!(
        within_reach(&g),
        "a map within the kernel's reach, channels"
    );
    let hw = g.h * g.w;
    let (rows, cols, depth) = (g.n, g.co * hw, g.ci * hw);
    assert_eq!(x.len(), rows * depth, "input of the geometry");
    let k = matrix(weight, &g);
    let mut y = vec![0f32; rows * cols];
    if rows > 0 {
        // SAFETY: y is rows x cols, x rows x depth and K^T depth x cols (K's transpose: row
        // stride 1, column stride depth) floats.
        unsafe {
            sgemm(
                [rows, cols, depth],
                y.as_mut_ptr(),
                cols,
                false,
                (x.as_ptr(), depth, 1),
                (k.as_ptr(), 1, depth),
                Parallelism::Rayon(0),
            );
        }
    }
    // One sample per task: its C_out planes of hw values.
    y.par_chunks_mut(cols).for_each(|sample| {
        for (out, &b) in sample.chunks_exact_mut(hw).zip(bias) {
            for v in out {
                *v = if relu { super::relu(*v + b) } else { *v + b };
            }
        }
    });
    y
}

/// The weight gradient `dW [C_out, C_in, k, k]` of `x [N, C_in, h, w]` and `dy [N, C_out, h,
/// w]`: `dK [C_out hw, C_in hw] = dY^T x X`, each entry then added to the tap it came from.
pub fn weight_grad(x: &[f32], dy: &[f32], g: Geometry) -> Vec<f32> {
    assert!(
        within_reach(&g),
        "a map within the kernel's reach, channels"
    );
    let hw = g.h * g.w;
    let (rows, cols, depth) = (g.co * hw, g.ci * hw, g.n);
    assert_eq!(x.len(), depth * cols, "input of the geometry");
    assert_eq!(dy.len(), depth * rows, "output gradient of the geometry");
    let mut dk = vec![0f32; rows * cols];
    if depth > 0 {
        // SAFETY: dk is rows x cols, dY^T rows x depth (dy's transpose: row stride 1, column
        // stride rows) and x depth x cols floats.
        unsafe {
            sgemm(
                [rows, cols, depth],
                dk.as_mut_ptr(),
                cols,
                false,
                (dy.as_ptr(), 1, rows),
                (x.as_ptr(), cols, 1),
                Parallelism::Rayon(0),
            );
        }
    }
    let (kk, taps) = (g.k * g.k, taps(&g));
    let mut dw = vec![0f32; g.co * g.ci * kk];
    // One output channel per task; within it the (p, q) pairs in a fixed order.
    dw.par_chunks_mut(g.ci * kk)
        .enumerate()
        .for_each(|(o, out)| {
            for p in 0..hw {
                let row = &dk[(o * hw + p) * cols..(o * hw + p + 1) * cols];
                let taps = &taps[p * hw..(p + 1) * hw];
                for (kernel, line) in out.chunks_exact_mut(kk).zip(row.chunks_exact(hw)) {
                    for (&t, v) in taps.iter().zip(line) {
                        kernel[t] += v;
                    }
                }
            }
        });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(len: usize, f: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * f).sin()).collect()
    }

    /// `[n, C_in, C_out, h, w, k]`: 2x2 and 1x1 maps, 2x1 and 1x2, a 3x3 map under a 5x5
    /// kernel, a 1x1 kernel on a 1x1 map, one channel, batch 1.
    const SHAPES: [[usize; 6]; 7] = [
        [2, 3, 4, 2, 2, 3],
        [1, 1, 1, 2, 2, 3],
        [3, 5, 2, 1, 1, 3],
        [2, 2, 3, 2, 1, 3],
        [1, 4, 3, 1, 2, 3],
        [2, 2, 3, 3, 3, 5],
        [2, 3, 2, 1, 1, 1],
    ];

    fn geometry([n, ci, co, h, w, k]: [usize; 6]) -> Geometry {
        Geometry { n, ci, co, h, w, k }
    }

    fn close(ours: &[f32], direct: &[f32]) {
        assert_eq!(ours.len(), direct.len());
        for (a, b) in ours.iter().zip(direct) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn applies_to_maps_within_reach() {
        let at = |h, w, k| applies(&geometry([4, 1, 1, h, w, k]));
        assert!(at(2, 2, 3) && at(1, 1, 3) && at(3, 3, 5) && at(1, 1, 1));
        assert!(!at(3, 3, 3) && !at(2, 1, 1) && !at(4, 4, 5));
        // At batch 1 only on a 1x1 map.
        let one = |h, w| applies(&geometry([1, 1, 1, h, w, 3]));
        assert!(one(1, 1) && !one(2, 2));
    }

    /// Against the tile-by-tile im2col + GEMM (itself tested against flex's convolution).
    #[test]
    fn forward_matches_im2col() {
        for shape in SHAPES {
            let g = geometry(shape);
            let x = wave(g.n * g.ci * g.h * g.w, 0.37);
            let wt = wave(g.co * g.ci * g.k * g.k, 0.23);
            let b = wave(g.co, 1.1);
            for relu in [false, true] {
                let direct = super::super::tiled::forward(&x, &wt, &b, g, relu);
                close(&forward(&x, &wt, &b, g, relu), &direct);
            }
        }
    }

    #[test]
    fn weight_grad_matches_im2col() {
        for shape in SHAPES {
            let g = geometry(shape);
            let x = wave(g.n * g.ci * g.h * g.w, 0.37);
            let dy = wave(g.n * g.co * g.h * g.w, 0.29);
            let direct = super::super::tiled::weight_grad(&x, &dy, g);
            close(&weight_grad(&x, &dy, g), &direct);
        }
    }

    #[test]
    fn empty_batch() {
        let g = geometry([0, 3, 4, 2, 2, 3]);
        assert!(forward(&[], &wave(108, 0.2), &[0.0; 4], g, true).is_empty());
        assert!(weight_grad(&[], &[], g).iter().all(|&v| v == 0.0));
    }
}
