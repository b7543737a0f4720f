//! Convolution by im2col + GEMM one tile at a time, for maps larger than a few pixels: a tile is
//! a band of output rows of one sample, whose im2col matrix (`C_in k k` x `rows W`, at most
//! 1 MiB) stays in cache while its GEMM reads it. Tiles run in parallel (one
//! single-threaded GEMM each) when there are enough of them; otherwise one by one with a
//! parallel GEMM. The weight gradient sums per-thread accumulators; the input gradient is a
//! forward convolution with the rotated, transposed kernel.

use gemm::Parallelism;
use rayon::prelude::*;

/// Floats of one tile's im2col matrix (1 MiB).
const TILE_FLOATS: usize = 1 << 18;

/// `[N, C, H, W]` and the kernel side.
#[derive(Clone, Copy)]
pub struct Geometry {
    pub n: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl Geometry {
    /// The geometry of the input gradient's convolution: channels in and out swapped.
    pub fn transposed(self) -> Self {
        Self {
            ci: self.co,
            co: self.ci,
            ..self
        }
    }

    fn ckk(&self) -> usize {
        self.ci * self.k * self.k
    }

    /// (sample, first row, rows) of every tile.
    fn tiles(&self) -> Vec<(usize, usize, usize)> {
        let rows = (TILE_FLOATS / (self.ckk() * self.w)).clamp(1, self.h);
        (0..self.n)
            .flat_map(|i| {
                (0..self.h)
                    .step_by(rows)
                    .map(move |y| (i, y, rows.min(self.h - y)))
            })
            .collect()
    }

    /// Tiles in parallel (single-threaded GEMMs) when there are enough for every thread.
    fn parallel_tiles(&self, tiles: usize) -> bool {
        tiles >= 2 * rayon::current_num_threads()
    }
}

/// A pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes a region no other task touches (see the callers).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// `dst[m x n] (+)= lhs[m x k] x rhs[k x n]`, row stride `dst_rs`, column stride 1.
///
/// # Safety
/// The pointers must cover the matrices their strides describe.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn sgemm(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    par: Parallelism,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `cols[(c, ky, kx), (y - y0, x)] = x[c, y + ky - p, x + kx - p]` (0 outside) for the output
/// rows `y0 .. y0 + rows` of one sample `x` `[C, H, W]`.
fn im2col(x: &[f32], g: &Geometry, y0: usize, rows: usize, cols: &mut [f32]) {
    let (h, w, k, p) = (g.h, g.w, g.k, g.k / 2);
    for (r, out) in cols.chunks_mut(rows * w).enumerate().take(g.ckk()) {
        let (c, ky, kx) = (r / (k * k), r / k % k, r % k);
        let plane = &x[c * h * w..(c + 1) * h * w];
        let lo = p.saturating_sub(kx).min(w);
        let hi = (w + p).saturating_sub(kx).min(w).max(lo);
        for (t, line) in out.chunks_mut(w).enumerate() {
            let sy = (y0 + t) as isize + ky as isize - p as isize;
            if sy < 0 || sy >= h as isize {
                line.fill(0.0);
                continue;
            }
            let src = &plane[sy as usize * w..(sy as usize + 1) * w];
            line[..lo].fill(0.0);
            line[hi..].fill(0.0);
            let off = kx as isize - p as isize;
            line[lo..hi]
                .copy_from_slice(&src[(lo as isize + off) as usize..(hi as isize + off) as usize]);
        }
    }
}

/// `y [N, C_out, H, W] = W x cols + bias`, then `max(y, 0)` when `relu`.
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: Geometry, relu: bool) -> Vec<f32> {
    let (hw, ckk, co) = (g.h * g.w, g.ckk(), g.co);
    let mut out = vec![0f32; g.n * co * hw];
    let dst = Shared(out.as_mut_ptr());
    let tiles = g.tiles();
    let one = |cols: &mut Vec<f32>, &(i, y0, rows): &(usize, usize, usize), par| {
        let len = rows * g.w;
        im2col(&x[i * g.ci * hw..(i + 1) * g.ci * hw], &g, y0, rows, cols);
        let tile = dst;
        // SAFETY: this tile's columns y0*w .. y0*w + len of sample i's [C_out, HW] block are
        // written by this task alone; cols holds ckk x len floats, weight co x ckk.
        unsafe {
            let base = tile.0.add(i * co * hw + y0 * g.w);
            sgemm(
                [co, len, ckk],
                base,
                hw,
                false,
                (weight.as_ptr(), ckk, 1),
                (cols.as_ptr(), len, 1),
                par,
            );
            for (c, &b) in bias.iter().enumerate() {
                let row = std::slice::from_raw_parts_mut(base.add(c * hw), len);
                if relu {
                    row.iter_mut().for_each(|v| *v = super::relu(*v + b));
                } else {
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
        }
    };
    let buffer = || vec![0f32; TILE_FLOATS.max(ckk * g.w)];
    if g.parallel_tiles(tiles.len()) {
        tiles
            .par_iter()
            .for_each_init(buffer, |cols, t| one(cols, t, Parallelism::None));
    } else {
        let mut cols = buffer();
        tiles
            .iter()
            .for_each(|t| one(&mut cols, t, Parallelism::Rayon(0)));
    }
    out
}

/// Floats the weight gradient's partial sums may take in all (64 MiB).
const PARTIAL_FLOATS: usize = 1 << 24;

/// `dW [C_out, C_in k k] = sum over tiles of dY_tile x cols_tile^T`, summed in an order fixed by
/// the problem alone, never by the threads: the tiles are cut into groups of consecutive tiles
/// (their number set by the sizes, at most 64 MiB of partial sums), each group is
/// summed tile by tile into its own partial sum by one thread, and the partial sums are added in
/// group order. So training gives the same bits on 1 thread or 16.
pub fn weight_grad(x: &[f32], dy: &[f32], g: Geometry) -> Vec<f32> {
    let (hw, ckk, co) = (g.h * g.w, g.ckk(), g.co);
    let tiles = g.tiles();
    let one = |cols: &mut Vec<f32>, dw: &mut [f32], &(i, y0, rows): &(usize, usize, usize)| {
        let len = rows * g.w;
        im2col(&x[i * g.ci * hw..(i + 1) * g.ci * hw], &g, y0, rows, cols);
        // SAFETY: dy's tile is co rows of len floats at stride hw; cols^T is len x ckk read
        // with row stride 1 and column stride len; dw is co x ckk.
        unsafe {
            sgemm(
                [co, ckk, len],
                dw.as_mut_ptr(),
                ckk,
                true,
                (dy.as_ptr().add(i * co * hw + y0 * g.w), hw, 1),
                (cols.as_ptr(), 1, len),
                Parallelism::None,
            );
        }
    };
    let size = co * ckk;
    let groups = (tiles.len() / 4).clamp(1, (PARTIAL_FLOATS / size).max(1));
    let per_group = tiles.len().div_ceil(groups);
    let buffer = || vec![0f32; TILE_FLOATS.max(ckk * g.w)];
    let mut partials: Vec<Vec<f32>> = tiles
        .par_chunks(per_group)
        .map_init(buffer, |cols, group| {
            let mut dw = vec![0f32; size];
            group.iter().for_each(|t| one(cols, &mut dw, t));
            dw
        })
        .collect();
    let mut dw = partials.remove(0);
    const SLICE: usize = 1 << 14;
    dw.par_chunks_mut(SLICE).enumerate().for_each(|(j, d)| {
        for p in &partials {
            d.iter_mut().zip(&p[j * SLICE..]).for_each(|(a, b)| *a += b);
        }
    });
    dw
}

/// The kernel `[C_out, C_in, k, k]` as `[C_in, C_out, k, k]`, each k x k window turned 180
/// degrees: the kernel whose convolution of `dy` is the input gradient. For stride 1 and same
/// padding, `dx[c, y, x] = sum_o,ky,kx dy[o, y - ky + p, x - kx + p] W[o, c, ky, kx]`.
pub fn rotated(weight: &[f32], g: Geometry) -> Vec<f32> {
    let kk = g.k * g.k;
    let mut out = vec![0f32; weight.len()];
    for o in 0..g.co {
        for c in 0..g.ci {
            for t in 0..kk {
                out[(c * g.co + o) * kk + (kk - 1 - t)] = weight[(o * g.ci + c) * kk + t];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The weight gradient's bits are the same on 1, 2, 3 or 4 threads (24 tiles in 6 groups).
    #[test]
    fn weight_gradient_bits_do_not_depend_on_the_threads() {
        let g = Geometry {
            n: 6,
            ci: 64,
            co: 8,
            h: 40,
            w: 40,
            k: 3,
        };
        assert_eq!(g.tiles().len(), 24);
        let x = noise(g.n * g.ci * g.h * g.w, 1);
        let dy = noise(g.n * g.co * g.h * g.w, 2);
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| weight_grad(&x, &dy, g))
        };
        let one = on(1);
        for threads in [2, 3, 4] {
            assert!(on(threads) == one, "{threads} threads differ from 1");
        }
        // And it is the gradient: dW[0, 0, 1, 1] = sum over samples and pixels of dy * x.
        let direct: f64 = (0..g.n)
            .flat_map(|i| (0..g.h * g.w).map(move |p| (i, p)))
            .map(|(i, p)| dy[i * g.co * g.h * g.w + p] as f64 * x[i * g.ci * g.h * g.w + p] as f64)
            .sum();
        assert!(
            (one[4] as f64 - direct).abs() < 1e-3,
            "{} vs {direct}",
            one[4]
        );
    }
}
