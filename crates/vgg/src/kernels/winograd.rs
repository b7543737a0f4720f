//! Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016) for VGG's 3x3 stride-1 convolutions: each 4x4 block of outputs is
//! computed from a 6x6 block of inputs with 36 multiplications per channel pair instead of the
//! direct method's 144. The weights become `U = G g G^T` (36 matrices `C_out x C_in`), each
//! input block `V = B^T d B` (36 matrices `C_in x blocks`); 36 GEMMs give `M = U V`, and
//! `Y = A^T M A` the outputs. The interpolation points 0, +-1, +-2 and infinity keep the FP32
//! error within a few 1e-5 of the output scale on VGG's layers, under the 1e-4 we allow
//! (`winograd_matches_direct_on_vgg_layers`).
//! The weight gradient runs the same algorithm transposed: `Y` is linear in `U = G g G^T`, so
//! `dg = G^T [sum over blocks of (A dY A^T) * (B^T d B)] G` (element-wise product), 36 GEMMs
//! `C_out x C_in` summing over the blocks instead of 9 over every position: a quarter of the
//! direct method's multiplications.
//! Blocks are processed in chunks, in parallel (one single-threaded GEMM per chunk and
//! transform point) when there are enough of them, or one chunk at a time with parallel GEMMs.
//! Every output is computed once, by one task: the results do not depend on the thread count.

use std::sync::{Arc, Mutex};

use gemm::Parallelism;
use rayon::prelude::*;

use super::isa::{Isa, on_isa};
use super::tiled::{Geometry, sgemm};

/// Output block side (m) and input block side (m + r - 1) of F(4x4, 3x3).
const M: usize = 4;
const T: usize = 6;
/// Transform points: 6 x 6.
const P: usize = T * T;

/// `G`: the kernel transform, `U = G g G^T`.
const G: [[f32; 3]; T] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Bytes of transformed weights `U` beyond which a forward chunk reads them from memory rather
/// than from the L3 cache (VGG's 512-channel layers: 19 and 38 MB; 256-channel ones: 9.4 MB):
/// there the chunks grow (see [`forward_transformed`]). Measured on a Zen 4 with 32 MiB of L3
/// (`vgg bench --profile`, alternating with the fixed chunks): VGG-16 at batch 1, conv4_2 and
/// conv4_3 12.6-13.4 -> 9.1-9.4 ms each; at batch 8 conv4_1 55 -> 36-41 ms, conv4_2 and conv4_3
/// 79-91 -> 57-67 ms; the compact VGG-16-BN step's conv4 layers 225-282 -> 242-313 GFLOP/s;
/// VGG-11 at 224 the same within noise. Growing conv3's chunks too (9.4 MB of U) made them
/// slower at batch 1 (7.9-8.7 -> 9.0-9.8 ms).
const STREAMED_U_BYTES: usize = 16 << 20;

/// Floats of one chunk's transformed inputs in the forward (512 KiB, or 16 blocks where the
/// channels make that more: 1.1 MiB at 512): a chunk's V and M stay in the L2 cache between its
/// transforms and its GEMMs on VGG's early layers, near it on the deep ones. (With 8 MiB they
/// went out to memory and back: the compact VGG-16-BN step took 11% longer, VGG-11's at 224
/// 17%, VGG-16 at batch 8 5%, in alternating runs.)
const CHUNK_FLOATS: usize = 1 << 17;

/// Floats of one chunk's transformed inputs and output gradients in the weight gradient
/// (32 MiB): each chunk's float32 sums are added into float64 ones, a pass over all of `M`.
const GRAD_CHUNK_FLOATS: usize = 1 << 23;

/// Whether F(4x4, 3x3) is used for this convolution: 3x3 kernels with enough channels for the
/// GEMMs to dominate the transforms (VGG's first layer, with 3 input channels, stays direct),
/// on maps of at least 8x8, or of 4x4 to 7x7 when the batch gives the GEMMs at least 16 blocks
/// (a 4x4 map is one block: at batch 1 its 36 GEMMs would be matrix-vector products reading
/// 4 times the weights of im2col's one). The kernel policy turns it off
/// ([`super::Policy::winograd`], the tool's `VGG_NO_WINOGRAD=1`), to compare.
pub fn applies(g: &Geometry) -> bool {
    let blocks = g.n * g.h.div_ceil(M) * g.w.div_ceil(M);
    super::policy::get().winograd
        && g.k == 3
        && g.h >= M
        && g.w >= M
        && (g.h >= 2 * M && g.w >= 2 * M || blocks >= 16)
        && g.ci >= 16
        && g.co >= 16
}

/// Whether the weight gradient is computed by [`weight_grad`]: where [`applies`] does, on maps
/// of at most 112x112, where its error stays within a few 1e-5 of the gradient's scale
/// (`winograd_weight_grad_matches_direct_on_vgg_layers`; at 224x224 it reaches 1.2e-4, so
/// VGG's first block keeps the direct method). The kernel policy turns it off
/// ([`super::Policy::winograd_weight_grad`], the tool's `VGG_NO_WINOGRAD_WGRAD=1`), to compare.
pub fn applies_to_weight_grad(g: &Geometry) -> bool {
    applies(g) && g.h <= 112 && g.w <= 112 && super::policy::get().winograd_weight_grad
}

/// Kernels per step of the kernel transforms, held as `[value][kernel]` arrays: the inner
/// loops run over kernels, which the compiler vectorises, and a step's data stays in the L1
/// cache (a loop per kernel ran at a few percent of the machine's peak: 43 ms for VGG's
/// 512 x 512 layers, as long as the GEMMs of a 4x4 map at batch 64). The arrays are a task's
/// scratch, made once per task, not per step: zeroing them per step cost more than the
/// arithmetic. Lanes past a last, partial step hold stale values that are never written out.
const KB: usize = 64;

/// `U [36, C_out, C_in]`: every 3x3 kernel of `weight [C_out, C_in, 3, 3]` transformed,
/// `U = G g G^T`.
pub fn transform_weights(weight: &[f32], co: usize, ci: usize) -> Vec<f32> {
    transform_weights_on(Isa::detected(), weight, co, ci)
}

/// A task's scratch for the kernel transform: `KB` kernels' 9 values, then `G g` (6 x 3).
type KernelScratch = ([[f32; KB]; 9], [[[f32; KB]; 3]; T]);

/// [`transform_weights`] with the arithmetic on `isa`.
pub(crate) fn transform_weights_on(isa: Isa, weight: &[f32], co: usize, ci: usize) -> Vec<f32> {
    assert!(
        ci > 0 && weight.len() == 9 * co * ci,
        "3x3 kernels of {co} x {ci} channels"
    );
    let plane = co * ci;
    // Not zeroed first: every point of every kernel is written below.
    let mut u = Vec::with_capacity(P * plane);
    let dst = Shared(u.as_mut_ptr());
    let scratch = || Box::new(([[0f32; KB]; 9], [[[0f32; KB]; 3]; T]));
    weight.par_chunks(9 * KB).enumerate().for_each_init(
        scratch,
        |s: &mut Box<KernelScratch>, (b, kernels)| {
            transform_kernels(isa, kernels, b * KB, plane, s, dst)
        },
    );
    // SAFETY: the tasks wrote the 36 points of every kernel.
    unsafe { u.set_len(P * plane) };
    u
}

on_isa!(
    /// [`transform_kernels_body`] on an instruction set.
    fn transform_kernels => transform_kernels_body(
        kernels: &[f32], first: usize, plane: usize, s: &mut KernelScratch, dst: Shared
    )
);

/// `U = G g G^T` of the (up to `KB`) kernels `kernels` (9 values each), the kernels `first..`
/// of `U`'s planes of `plane` values.
#[inline(always)]
fn transform_kernels_body(
    kernels: &[f32],
    first: usize,
    plane: usize,
    s: &mut KernelScratch,
    dst: Shared,
) {
    let (g, tmp) = s;
    let len = kernels.len() / 9;
    for (k, kernel) in kernels.chunks_exact(9).enumerate() {
        for (t, &v) in kernel.iter().enumerate() {
            g[t][k] = v;
        }
    }
    // tmp = G g (6 x 3), then U = tmp G^T (6 x 6).
    for (row, gi) in tmp.iter_mut().zip(&G) {
        for (c, out) in row.iter_mut().enumerate() {
            for k in 0..KB {
                out[k] = gi[0] * g[c][k] + gi[1] * g[3 + c][k] + gi[2] * g[6 + c][k];
            }
        }
    }
    for (i, t) in tmp.iter().enumerate() {
        for (j, gj) in G.iter().enumerate() {
            let out = dst.at((i * T + j) * plane + first);
            let v = |k: usize| t[0][k] * gj[0] + t[1][k] * gj[1] + t[2][k] * gj[2];
            // SAFETY: point (i, j) of this step's kernels, inside the 36 x plane buffer (not yet
            // initialised: written, never read), by this task alone.
            // (A full step's constant count lets the compiler store 8 lanes at a time: with
            // `len` it stored one float at a time, most of the transform's time.)
            if len == KB {
                (0..KB).for_each(|k| unsafe { out.add(k).write(v(k)) });
            } else {
                (0..len).for_each(|k| unsafe { out.add(k).write(v(k)) });
            }
        }
    }
}

/// A task's scratch for the gradient's untransform: `KB` kernels' 36 points, then `M G` (6 x 3).
type GradScratch = ([[f64; KB]; P], [[[f64; KB]; 3]; T]);

/// `dg = G^T M G` for every kernel, in float64: `m(i)` is element `i` of `M [36, C_out C_in]`;
/// returns `dW [C_out, C_in, 3, 3]`.
fn untransform_grad(isa: Isa, m: impl Fn(usize) -> f64 + Sync, plane: usize) -> Vec<f32> {
    let mut dw = vec![0f32; 9 * plane];
    let scratch = || Box::new(([[0f64; KB]; P], [[[0f64; KB]; 3]; T]));
    dw.par_chunks_mut(9 * KB).enumerate().for_each_init(
        scratch,
        |s: &mut Box<GradScratch>, (b, out)| {
            let len = out.len() / 9;
            for (p, row) in s.0.iter_mut().enumerate() {
                for (k, v) in row[..len].iter_mut().enumerate() {
                    *v = m(p * plane + b * KB + k);
                }
            }
            untransform_kernels(isa, s, out)
        },
    );
    dw
}

on_isa!(
    /// [`untransform_kernels_body`] on an instruction set.
    fn untransform_kernels => untransform_kernels_body(
        s: &mut GradScratch, out: &mut [f32]
    )
);

/// `dg = G^T M G` of the kernels whose 36 points `s.0` holds, into `out` (9 values each).
#[inline(always)]
fn untransform_kernels_body(s: &mut GradScratch, out: &mut [f32]) {
    let (mm, tmp) = s;
    // tmp = M G (6 x 3), then dg = G^T tmp (3 x 3).
    for (i, row) in tmp.iter_mut().enumerate() {
        let mi = &mm[i * T..(i + 1) * T]; // M's row i: 6 points
        for (c, out) in row.iter_mut().enumerate() {
            let gc: [f64; T] = std::array::from_fn(|j| G[j][c] as f64);
            for k in 0..KB {
                out[k] = (0..T).map(|j| mi[j][k] * gc[j]).sum();
            }
        }
    }
    // dg's 9 values per kernel, over the kernels (into M's first rows, no longer needed), then
    // written out kernel by kernel.
    for (t, row) in mm.iter_mut().take(9).enumerate() {
        let gi: [f64; T] = std::array::from_fn(|i| G[i][t / 3] as f64);
        for k in 0..KB {
            row[k] = (0..T).map(|i| gi[i] * tmp[i][t % 3][k]).sum();
        }
    }
    for (k, kernel) in out.chunks_exact_mut(9).enumerate() {
        for (t, v) in kernel.iter_mut().enumerate() {
            *v = mm[t][k] as f32;
        }
    }
}

/// `x [N, C_in, H, W]` * `weight [C_out, C_in, 3, 3]` (padding 1) + `bias`, then ReLU when `relu`.
/// With `cache`, the transformed weights are kept for the next call with the same weights
/// (`cached_transform`): inference and evaluation run the same weights many times.
pub fn forward(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    g: Geometry,
    relu: bool,
    cache: bool,
) -> Vec<f32> {
    assert_eq!(g.k, 3, "Winograd F(4x4, 3x3) takes 3x3 kernels");
    if cache {
        let u = cached_transform(weight, g.co, g.ci);
        forward_transformed(Isa::detected(), x, &u, bias, g, relu)
    } else {
        forward_transformed(
            Isa::detected(),
            x,
            &transform_weights(weight, g.co, g.ci),
            bias,
            g,
            relu,
        )
    }
}

/// Bytes of weights and their transforms kept between calls (512 MiB: VGG-16's take 293 MB,
/// VGG-19's 400 MB).
const CACHE_BYTES: usize = 1 << 29;

/// The transformed weights of `weight`, from a cache keyed by the weights' values (every value
/// is compared, bit for bit, so weights changed in place are never served stale).
/// (U depends on the flat sequence of 3x3 kernels only, not on how it splits into C_out x C_in.)
fn cached_transform(weight: &[f32], co: usize, ci: usize) -> Arc<Vec<f32>> {
    // Bit for bit (NaNs included), 64 Ki values per task: VGG-16's 59 MB of weights are read
    // at every forward, 4.5 ms at batch 1 compared float by float on one thread.
    let key = |w: &[f32]| {
        w.len() == weight.len()
            && w.par_chunks(1 << 16)
                .zip(weight.par_chunks(1 << 16))
                .all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()))
    };
    // The candidates of the same length, taken under the lock and compared after it (a rayon
    // worker waiting in the comparison may run another forward, which locks the cache).
    let candidates: Vec<Entry> = cache()
        .iter()
        .filter(|(w, _)| w.len() == weight.len())
        .cloned()
        .collect();
    if let Some((_, u)) = candidates.iter().find(|(w, _)| key(w)) {
        return u.clone();
    }
    let u = Arc::new(transform_weights(weight, co, ci));
    let size = 4 * (weight.len() + u.len());
    if size > CACHE_BYTES {
        return u;
    }
    let mut cache = cache();
    let bytes = |c: &Vec<Entry>| {
        c.iter()
            .map(|(w, u)| 4 * (w.len() + u.len()))
            .sum::<usize>()
    };
    // Oldest first out, until the new entry fits.
    while !cache.is_empty() && bytes(&cache) + size > CACHE_BYTES {
        cache.remove(0);
    }
    cache.push((Arc::new(weight.to_vec()), u.clone()));
    u
}

type Entry = (Arc<Vec<f32>>, Arc<Vec<f32>>);
static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The cache, locked. Nothing panics while it is held, and every entry is whole when pushed, so
/// a poisoned lock (a panic elsewhere on that thread) still guards valid entries.
fn cache() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forgets every cached transform (training calls it after validating weights it will change).
pub fn clear_cache() {
    cache().clear();
}

/// [`forward`] with the weights already transformed ([`transform_weights`]), the transforms
/// on `isa`.
pub(crate) fn forward_transformed(
    isa: Isa,
    x: &[f32],
    u: &[f32],
    bias: &[f32],
    g: Geometry,
    relu: bool,
) -> Vec<f32> {
    assert!(g.ci > 0 && g.co > 0, "channels");
    assert_eq!(
        u.len(),
        P * g.co * g.ci,
        "transformed weights of {} x {}",
        g.co,
        g.ci
    );
    assert_eq!(bias.len(), g.co, "one bias per output channel");
    assert_eq!(x.len(), g.n * g.ci * g.h * g.w, "input of the geometry");
    let (by, bx) = (g.h.div_ceil(M), g.w.div_ceil(M));
    let blocks = g.n * by * bx;
    // Blocks per chunk: the chunk's V (36 x C_in x len) and M (36 x C_out x len) within
    // CHUNK_FLOATS each, at least 16 blocks, a multiple of 4.
    let len = (CHUNK_FLOATS / (P * g.ci.max(g.co))).clamp(16, 1024) / 4 * 4;
    // Transformed weights too large to stay cached are read from memory once per chunk: then
    // enough blocks per chunk that U's share per block is at most the block's own V and M
    // (C_out C_in / (C_in + C_out) blocks: 256 at 512 channels).
    let len = if 4 * u.len() > STREAMED_U_BYTES {
        len.max((g.co * g.ci / (g.ci + g.co)) / 4 * 4)
    } else {
        len
    };
    let chunks: Vec<(usize, usize)> = (0..blocks)
        .step_by(len)
        .map(|b| (b, len.min(blocks - b)))
        .collect();
    // Not zeroed first: the output transforms write every value.
    let mut out = Vec::with_capacity(g.n * g.co * g.h * g.w);
    let dst = Shared(out.as_mut_ptr());
    // One chunk: its input transform, 36 GEMMs, its output transform. With few chunks (small
    // maps, small batches) each stage is split among the threads instead (by input channel,
    // transform point, output channel): a few coarse tasks, never 36 parallel GEMMs.
    let one = |buf: &mut (Vec<f32>, Vec<f32>), &(first, count): &(usize, usize), split: bool| {
        let (v, m) = (Shared(buf.0.as_mut_ptr()), Shared(buf.1.as_mut_ptr()));
        let gemm = |p: usize| {
            // M[p] (C_out x count) = U[p] (C_out x C_in) x V[p] (C_in x count)
            // SAFETY: U[p] is co x ci, V[p] ci x count and M[p] co x count floats, row-major;
            // M[p] is written by this call alone.
            unsafe {
                sgemm(
                    [g.co, count, g.ci],
                    m.at(p * g.co * count),
                    count,
                    false,
                    (u.as_ptr().add(p * g.co * g.ci), g.ci, 1),
                    (v.at(p * g.ci * count), count, 1),
                    Parallelism::None,
                );
            }
        };
        if split {
            let parts = rayon::current_num_threads();
            (0..parts)
                .into_par_iter()
                .for_each(|t| input_transform(isa, x, g, first, count, part(g.ci, parts, t), v));
            (0..P).into_par_iter().for_each(gemm);
            // SAFETY: the 36 GEMMs wrote M's 36 x C_out x count values.
            let m = unsafe { std::slice::from_raw_parts(m.0, P * g.co * count) };
            (0..parts).into_par_iter().for_each(|t| {
                output_transform(
                    isa,
                    m,
                    bias,
                    g,
                    first,
                    count,
                    part(g.co, parts, t),
                    relu,
                    dst,
                )
            });
        } else {
            input_transform(isa, x, g, first, count, 0..g.ci, v);
            (0..P).for_each(gemm);
            // SAFETY: the 36 GEMMs wrote M's 36 x C_out x count values.
            let m = unsafe { std::slice::from_raw_parts(m.0, P * g.co * count) };
            output_transform(isa, m, bias, g, first, count, 0..g.co, relu, dst);
        }
    };
    let most = len.min(blocks);
    // Scratch for V and M, not zeroed (zeroing them per task had taken 4% of the demo's
    // training): each chunk's input transform writes its V, its GEMMs its M, before either is
    // read; the vectors stay empty and are used through pointers into their capacity.
    let buffers = || {
        (
            Vec::<f32>::with_capacity(P * g.ci * most),
            Vec::<f32>::with_capacity(P * g.co * most),
        )
    };
    if chunks.len() >= 2 * rayon::current_num_threads() {
        chunks
            .par_iter()
            .for_each_init(buffers, |buf, c| one(buf, c, false));
    } else {
        let mut buf = buffers();
        chunks.iter().for_each(|c| one(&mut buf, c, true));
    }
    // SAFETY: every block's outputs, of every channel, were written by the output transforms.
    unsafe { out.set_len(g.n * g.co * g.h * g.w) };
    out
}

/// The weight gradient `dW [C_out, C_in, 3, 3]` of `x [N, C_in, H, W]` and the output gradient
/// `dy [N, C_out, H, W]` (padding 1), by F(4x4, 3x3) transposed (see the module's note).
pub fn weight_grad(x: &[f32], dy: &[f32], g: Geometry) -> Vec<f32> {
    weight_grad_on(Isa::detected(), x, dy, g)
}

/// [`weight_grad`] with the transforms on `isa`. The blocks go in chunks of a size fixed by the
/// geometry, one after another, each summed into `M` by the 36 GEMMs (one task per transform
/// point): the result does not depend on the thread count.
pub(crate) fn weight_grad_on(isa: Isa, x: &[f32], dy: &[f32], g: Geometry) -> Vec<f32> {
    assert!(g.ci > 0 && g.co > 0 && g.k == 3, "3x3 kernels, channels");
    assert_eq!(x.len(), g.n * g.ci * g.h * g.w, "input of the geometry");
    assert_eq!(
        dy.len(),
        g.n * g.co * g.h * g.w,
        "output gradient of the geometry"
    );
    let blocks = g.n * g.h.div_ceil(M) * g.w.div_ceil(M);
    if blocks == 0 {
        return vec![0.0; g.co * g.ci * 9]; // an empty batch
    }
    // Blocks per chunk: its V (36 x C_in x len) and Z (36 x C_out x len) within GRAD_CHUNK_FLOATS
    // together, 16 to 1024 blocks, a multiple of 4.
    let len = (GRAD_CHUNK_FLOATS / (P * (g.ci + g.co))).clamp(16, 1024) / 4 * 4;
    // Scratch, not zeroed: each chunk's transforms write its V and Z (every point, channel
    // and block) before its GEMMs read them; used through pointers into their capacity.
    let mut v = Vec::<f32>::with_capacity(P * g.ci * len.min(blocks));
    let mut z = Vec::<f32>::with_capacity(P * g.co * len.min(blocks));
    // Each chunk's sums (float32, by its GEMMs) are added up over the chunks in float64: the
    // transforms scale values by up to 8 before dg's combination cancels them, so a float32
    // running sum over a whole batch's blocks would lose what the direct method keeps.
    // (With one chunk its sums are used as they are.)
    let plane = g.co * g.ci;
    // Not zeroed first: each chunk's GEMMs write all of it.
    let mut part_m = Vec::with_capacity(P * plane);
    let chunks = blocks.div_ceil(len);
    let mut m = vec![0f64; if chunks > 1 { P * plane } else { 0 }];
    let (vs, zs, ms) = (
        Shared(v.as_mut_ptr()),
        Shared(z.as_mut_ptr()),
        Shared(part_m.as_mut_ptr()),
    );
    let parts = rayon::current_num_threads();
    for first in (0..blocks).step_by(len) {
        let count = len.min(blocks - first);
        (0..parts).into_par_iter().for_each(|t| {
            input_transform(isa, x, g, first, count, part(g.ci, parts, t), vs);
            grad_transform(isa, dy, g, first, count, part(g.co, parts, t), zs);
        });
        (0..P).into_par_iter().for_each(|p| {
            // M[p] (C_out x C_in) = Z[p] (C_out x count) x V[p]^T (count x C_in)
            // SAFETY: Z[p] is co x count, V[p] ci x count (read transposed) and M[p] co x ci
            // floats, row-major; M[p] is written by this task alone.
            unsafe {
                sgemm(
                    [g.co, g.ci, count],
                    ms.at(p * plane),
                    g.ci,
                    false,
                    (zs.at(p * g.co * count), count, 1),
                    (vs.at(p * g.ci * count), 1, count),
                    Parallelism::None,
                );
            }
        });
        // SAFETY: the 36 GEMMs wrote M's 36 x C_out x C_in values.
        unsafe { part_m.set_len(P * plane) };
        if chunks > 1 {
            m.par_chunks_mut(1 << 14)
                .zip(part_m.par_chunks(1 << 14))
                .for_each(|(sum, part)| {
                    sum.iter_mut().zip(part).for_each(|(s, v)| *s += *v as f64)
                });
        }
    }
    if chunks > 1 {
        untransform_grad(isa, |i| m[i], plane)
    } else {
        untransform_grad(isa, |i| part_m[i] as f64, plane)
    }
}

/// The 1-D transform `A y` of four lane vectors into six (the transpose of [`at`]).
#[inline(always)]
fn a(y: &[Lanes; M]) -> [Lanes; T] {
    let mut o = [[0f32; L]; T];
    for l in 0..L {
        let [y0, y1, y2, y3] = [y[0][l], y[1][l], y[2][l], y[3][l]];
        let (p02, p13, q02, q13) = (y0 + y2, y1 + y3, y0 + 4.0 * y2, 2.0 * y1 + 8.0 * y3);
        o[0][l] = y0;
        o[1][l] = p02 + p13;
        o[2][l] = p02 - p13;
        o[3][l] = q02 + q13;
        o[4][l] = q02 - q13;
        o[5][l] = y3;
    }
    o
}

/// A 2-D transform `F d F^T` of an `I x I` block of lane vectors into `out`, `f` being the
/// 1-D `F x`: columns first (into the scratch `t`), then rows. Loops, and arrays the caller
/// made once, rather than `array::map` / `from_fn` and local arrays, which the compiler left as
/// memcpy and memset calls on these kilobyte arrays, per block group and channel.
#[inline(always)]
fn two_d<const I: usize, const O: usize>(
    d: &[[Lanes; I]; I],
    f: impl Fn(&[Lanes; I]) -> [Lanes; O],
    t: &mut [[Lanes; I]; O],
    out: &mut [[Lanes; O]; O],
) {
    let mut col = [[0f32; L]; I];
    for s in 0..I {
        for r in 0..I {
            col[r] = d[r][s];
        }
        let c = f(&col);
        for a in 0..O {
            t[a][s] = c[a];
        }
    }
    for a in 0..O {
        out[a] = f(&t[a]);
    }
}

/// Writes a block group's 36 transformed values of channel `ch` (the first `lanes` lanes) to
/// `buf [36, C, count]` (`plane = C x count`), at blocks `j0 ..`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn store(
    points: &[[Lanes; T]; T],
    buf: Shared,
    plane: usize,
    ch: usize,
    count: usize,
    j0: usize,
    lanes: usize,
) {
    for (a, row) in points.iter().enumerate() {
        for (b, vals) in row.iter().enumerate() {
            let idx = (a * T + b) * plane + ch * count + j0;
            // SAFETY: (point, channel ch, blocks j0..j0 + lanes) is written by the task of
            // channel ch alone, inside the 36 x C x count buffer (the callers' contract). A
            // whole group is one vector store; the last, partial one is written lane by lane
            // through volatile writes, which the compiler cannot merge with the whole groups'
            // store into one memcpy call of variable length (it did: a call per 32 bytes).
            unsafe {
                if lanes == L {
                    std::ptr::write_unaligned(buf.at(idx).cast::<Lanes>(), *vals);
                } else {
                    for (l, &v) in vals[..lanes].iter().enumerate() {
                        std::ptr::write_volatile(buf.at(idx + l), v);
                    }
                }
            }
        }
    }
}

/// The `t`-th of `parts` near-equal ranges of `0..n`.
fn part(n: usize, parts: usize, t: usize) -> std::ops::Range<usize> {
    n * t / parts..n * (t + 1) / parts
}

/// Block `b` of the map: (sample, top output row, left output column).
fn block(g: &Geometry, b: usize) -> (usize, usize, usize) {
    let (by, bx) = (g.h.div_ceil(M), g.w.div_ceil(M));
    (b / (by * bx), (b / bx % by) * M, b % bx * M)
}

/// Blocks transformed side by side, one per SIMD lane (the compiler vectorises the lanes).
const L: usize = 8;
type Lanes = [f32; L];

/// The 1-D input transform `B^T d` of six lane vectors (B^T's rows written out).
#[inline(always)]
fn bt(d: &[Lanes; T]) -> [Lanes; T] {
    let mut o = [[0f32; L]; T];
    for l in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        o[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        o[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        o[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        o[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        o[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        o[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    o
}

/// The 1-D output transform `A^T m` of six lane vectors.
#[inline(always)]
fn at(m: &[Lanes; T]) -> [Lanes; M] {
    let mut o = [[0f32; L]; M];
    for l in 0..L {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (p12, n12, p34, n34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        o[0][l] = m0 + p12 + p34;
        o[1][l] = n12 + 2.0 * n34;
        o[2][l] = p12 + 4.0 * p34;
        o[3][l] = n12 + 8.0 * n34 + m5;
    }
    o
}

on_isa!(
    /// [`input_transform_body`] on an instruction set.
    fn input_transform => input_transform_body(
        x: &[f32], g: Geometry, first: usize, count: usize,
        channels: std::ops::Range<usize>, v: Shared
    )
);

on_isa!(
    /// [`output_transform_body`] on an instruction set.
    #[allow(clippy::too_many_arguments)]
    fn output_transform => output_transform_body(
        m: &[f32], bias: &[f32], g: Geometry, first: usize, count: usize,
        channels: std::ops::Range<usize>, relu: bool, dst: Shared
    )
);

on_isa!(
    /// [`grad_transform_body`] on an instruction set.
    fn grad_transform => grad_transform_body(
        dy: &[f32], g: Geometry, first: usize, count: usize,
        channels: std::ops::Range<usize>, z: Shared
    )
);

/// The blocks `first .. first + count` in groups of `L`: (offset in the chunk, blocks in the
/// group, each lane's block, the last repeated in unused lanes).
fn lane_groups(
    g: Geometry,
    first: usize,
    count: usize,
) -> impl Iterator<Item = (usize, usize, [(usize, usize, usize); L])> {
    (0..count).step_by(L).map(move |j0| {
        let lanes = L.min(count - j0);
        let pos = std::array::from_fn(|l| block(&g, first + j0 + l.min(lanes - 1)));
        (j0, lanes, pos)
    })
}

/// `v [36, C_in, count]`: `B^T d B` of the 6x6 input block (zero outside the map) of each of the
/// `count` blocks from `first`, for the input channels `channels`; `L` blocks at a time.
#[inline(always)]
fn input_transform_body(
    x: &[f32],
    g: Geometry,
    first: usize,
    count: usize,
    channels: std::ops::Range<usize>,
    v: Shared,
) {
    let hw = g.h * g.w;
    let plane = g.ci * count;
    let (mut d, mut t, mut out) = (
        [[[0f32; L]; T]; T],
        [[[0f32; L]; T]; T],
        [[[0f32; L]; T]; T],
    );
    for (j0, lanes, pos) in lane_groups(g, first, count) {
        // Blocks whose 6x6 input lies inside the map are copied without checks.
        let inside = pos
            .iter()
            .all(|&(_, y0, x0)| y0 >= 1 && x0 >= 1 && y0 + T - 1 <= g.h && x0 + T - 1 <= g.w);
        for c in channels.clone() {
            // d[r][s][lane]: rows y0-1 .. y0+5, columns x0-1 .. x0+5 of each lane's block.
            for (l, &(i, y0, x0)) in pos.iter().enumerate() {
                let src = &x[(i * g.ci + c) * hw..(i * g.ci + c + 1) * hw];
                if inside {
                    for (r, row) in d.iter_mut().enumerate() {
                        let idx = (y0 + r - 1) * g.w + x0 - 1;
                        for (s, &val) in src[idx..idx + T].iter().enumerate() {
                            row[s][l] = val;
                        }
                    }
                    continue;
                }
                // Every element written, zeros outside the map (no separate zeroing pass).
                for (r, row) in d.iter_mut().enumerate() {
                    let y = (y0 + r).wrapping_sub(1);
                    for (s, e) in row.iter_mut().enumerate() {
                        let xx = (x0 + s).wrapping_sub(1);
                        e[l] = if y < g.h && xx < g.w {
                            src[y * g.w + xx]
                        } else {
                            0.0
                        };
                    }
                }
            }
            two_d(&d, bt, &mut t, &mut out);
            store(&out, v, plane, c, count, j0, lanes); // B^T d B
        }
    }
}

/// `z [36, C_out, count]`: `A dY A^T` of the 4x4 output-gradient block (zero outside the map)
/// of each of the `count` blocks from `first`, for the output channels `channels`; `L` blocks
/// at a time.
#[inline(always)]
fn grad_transform_body(
    dy: &[f32],
    g: Geometry,
    first: usize,
    count: usize,
    channels: std::ops::Range<usize>,
    z: Shared,
) {
    let hw = g.h * g.w;
    let plane = g.co * count;
    let (mut d, mut t, mut out) = (
        [[[0f32; L]; M]; M],
        [[[0f32; L]; M]; T],
        [[[0f32; L]; T]; T],
    );
    for (j0, lanes, pos) in lane_groups(g, first, count) {
        // Blocks inside the map are copied without checks; those cut by its edge get zeros
        // outside it, written in the same pass.
        let whole = pos
            .iter()
            .all(|&(_, y0, x0)| y0 + M <= g.h && x0 + M <= g.w);
        for k in channels.clone() {
            for (l, &(i, y0, x0)) in pos.iter().enumerate() {
                let src = &dy[(i * g.co + k) * hw..(i * g.co + k + 1) * hw];
                for (r, row) in d.iter_mut().enumerate() {
                    for (s, e) in row.iter_mut().enumerate() {
                        let (y, x) = (y0 + r, x0 + s);
                        e[l] = if whole || (y < g.h && x < g.w) {
                            src[y * g.w + x]
                        } else {
                            0.0
                        };
                    }
                }
            }
            two_d(&d, a, &mut t, &mut out);
            store(&out, z, plane, k, count, j0, lanes); // A dY A^T
        }
    }
}

/// `Y = A^T M A` of each block and output channel, plus the bias (and ReLU), written to the
/// output's positions inside the map; `L` blocks at a time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_transform_body(
    m: &[f32],
    bias: &[f32],
    g: Geometry,
    first: usize,
    count: usize,
    channels: std::ops::Range<usize>,
    relu: bool,
    dst: Shared,
) {
    let hw = g.h * g.w;
    let plane = g.co * count;
    let (mut m6, mut t, mut y) = (
        [[[0f32; L]; T]; T],
        [[[0f32; L]; T]; M],
        [[[0f32; L]; M]; M],
    );
    for (j0, lanes, pos) in lane_groups(g, first, count) {
        for k in channels.clone() {
            let b = bias[k];
            for (p, e) in m6.iter_mut().flatten().enumerate() {
                let idx = p * plane + k * count + j0;
                let src = &m[idx..idx + lanes];
                match src.try_into() {
                    Ok(whole) => *e = whole,
                    // Volatile reads: see `store`.
                    Err(_) => {
                        for (e, v) in e.iter_mut().zip(src) {
                            // SAFETY: a reference to a float of `m`.
                            *e = unsafe { std::ptr::read_volatile(v) };
                        }
                    }
                }
            }
            two_d(&m6, at, &mut t, &mut y); // A^T M A
            for v in y.iter_mut().flatten().flatten() {
                *v = if relu { super::relu(*v + b) } else { *v + b };
            }
            for (l, &(i, y0, x0)) in pos.iter().enumerate().take(lanes) {
                let base = (i * g.co + k) * hw;
                for (a, row) in y.iter().enumerate() {
                    if y0 + a >= g.h {
                        break;
                    }
                    for (c, vals) in row.iter().enumerate() {
                        if x0 + c >= g.w {
                            break;
                        }
                        // SAFETY: output (i, k, y0 + a, x0 + c) belongs to block first + j0 + l,
                        // which this task alone computes; the index is inside the output.
                        unsafe { *dst.at(base + (y0 + a) * g.w + x0 + c) = vals[l] };
                    }
                }
            }
        }
    }
}

/// A pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

impl Shared {
    /// The element at `i` (a method, so that closures capture the whole `Shared`).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}
// SAFETY: every task writes its own outputs only (see `output_transform`, `transform_kernels`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(len: usize, f: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * f).sin()).collect()
    }

    /// `[n, C_in, C_out, h, w]`: odd sizes (blocks cut by the map's edge), one channel, batch
    /// 1 and 3, a map 1 high.
    const ODD: [[usize; 5]; 6] = [
        [1, 1, 1, 4, 4],
        [2, 3, 5, 7, 9],
        [1, 16, 16, 8, 8],
        [3, 4, 2, 13, 5],
        [1, 2, 3, 1, 6],
        [2, 8, 4, 33, 35],
    ];

    /// Every 3x3 layer shape of VGG-16 and VGG-19 at 224: (name, C_in, C_out, map side).
    const VGG_LAYERS: [(&str, usize, usize, usize); 8] = [
        ("conv1_2", 64, 64, 224),
        ("conv2_1", 64, 128, 112),
        ("conv2_2", 128, 128, 112),
        ("conv3_1", 128, 256, 56),
        ("conv3_2", 256, 256, 56),
        ("conv4_1", 256, 512, 28),
        ("conv4_2", 512, 512, 28),
        ("conv5_1", 512, 512, 14),
    ];

    /// VGG-16's conv4 layers fed 32x32 images: 4x4 maps, Winograd from batch 16.
    const COMPACT_4X4: (&str, usize, usize, usize) = ("conv4_2 at 32", 512, 512, 4);

    #[test]
    fn empty_batch_has_a_zero_weight_gradient() {
        let dw = weight_grad(&[], &[], geometry([0, 16, 16, 8, 8]));
        assert!(dw.len() == 16 * 16 * 9 && dw.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn small_maps_need_a_batch() {
        let [one, sixteen] = [1, 16].map(|n| applies(&geometry([n, 512, 512, 4, 4])));
        assert!(!one && sixteen);
        assert!(applies(&geometry([1, 512, 512, 8, 8])));
        assert!(!applies(&geometry([64, 512, 512, 3, 3])));
    }

    fn geometry([n, ci, co, h, w]: [usize; 5]) -> Geometry {
        Geometry {
            n,
            ci,
            co,
            h,
            w,
            k: 3,
        }
    }

    /// `B^T`: the input transform, `V = B^T d B`.
    const BT: [[f32; T]; T] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    /// `A^T`: the output transform, `Y = A^T M A`.
    const AT: [[f32; T]; M] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];
    /// The written-out transforms [`bt`] and [`at`] are the matrices of Lavin & Gray.
    #[test]
    fn written_out_transforms_are_the_matrices() {
        let d: [Lanes; T] =
            std::array::from_fn(|r| std::array::from_fn(|l| wave(64, 0.7)[r * L + l]));
        let got = bt(&d);
        for (a, row) in BT.iter().enumerate() {
            for l in 0..L {
                let want: f32 = (0..T).map(|r| row[r] * d[r][l]).sum();
                assert!((got[a][l] - want).abs() < 1e-5, "B^T row {a}");
            }
        }
        let got = at(&d);
        for (a, row) in AT.iter().enumerate() {
            for l in 0..L {
                let want: f32 = (0..T).map(|r| row[r] * d[r][l]).sum();
                assert!((got[a][l] - want).abs() < 1e-5, "A^T row {a}");
            }
        }
    }

    /// The written-out weight-gradient transform [`a`] is `A`, the transpose of `A^T`.
    #[test]
    fn written_out_gradient_transform_is_a() {
        let y: [Lanes; M] =
            std::array::from_fn(|r| std::array::from_fn(|l| wave(64, 0.7)[r * L + l]));
        let got = a(&y);
        for p in 0..T {
            for l in 0..L {
                let want: f32 = (0..M).map(|r| AT[r][p] * y[r][l]).sum();
                assert!((got[p][l] - want).abs() < 1e-5, "A row {p}");
            }
        }
    }

    /// The weight gradient by its definition, in f64: `dW[k, c, r, s] = sum over samples and
    /// positions of dy[k, y, x] x[c, y + r - 1, x + s - 1]`.
    fn direct_weight_grad(x: &[f32], dy: &[f32], g: Geometry) -> Vec<f64> {
        let mut dw = vec![0f64; g.co * g.ci * 9];
        for i in 0..g.n {
            for k in 0..g.co {
                for c in 0..g.ci {
                    for r in 0..3 {
                        for s in 0..3 {
                            let mut sum = 0f64;
                            for y in 0..g.h {
                                for xx in 0..g.w {
                                    let (yy, xs) =
                                        ((y + r).wrapping_sub(1), (xx + s).wrapping_sub(1));
                                    if yy < g.h && xs < g.w {
                                        sum += dy[((i * g.co + k) * g.h + y) * g.w + xx] as f64
                                            * x[((i * g.ci + c) * g.h + yy) * g.w + xs] as f64;
                                    }
                                }
                            }
                            dw[((k * g.ci + c) * 3 + r) * 3 + s] += sum;
                        }
                    }
                }
            }
        }
        dw
    }

    /// The weight gradient on odd sizes (blocks cut by the map's edge), one channel, batch 1
    /// and 3, one chunk and several: within 3e-5 of the gradient's scale of the exact result;
    /// the portable and detected transforms give the same bits.
    #[test]
    fn weight_grad_matches_the_definition() {
        // 4,352 blocks in the last: four full chunks of 1,024 and a partial one.
        for shape in ODD
            .into_iter()
            .chain([[4, 1, 1, 64, 64], [17, 1, 1, 64, 64]])
        {
            let [n, ci, co, h, w] = shape;
            let g = geometry(shape);
            let x = wave(n * ci * h * w, 0.37);
            let dy = wave(n * co * h * w, 0.29);
            let want = direct_weight_grad(&x, &dy, g);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let got = weight_grad(&x, &dy, g);
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |m, (a, e)| m.max((*a as f64 - e).abs()))
                / scale;
            assert!(err <= 3e-5, "{n}x{ci}x{h}x{w} -> {co}: {err:.1e}");
            for isa in Isa::available() {
                assert!(
                    weight_grad_on(isa, &x, &dy, g) == got,
                    "{n}x{ci}x{h}x{w} -> {co}: {isa:?} and the detected set differ"
                );
            }
        }
    }

    /// The weight gradient of every 3x3 layer shape of VGG-16 and VGG-19 at 224, at batch 1 and
    /// at a training batch of 4 (4 times the blocks summed), against the direct im2col + GEMM
    /// path, as the forward's: printed per layer, under 1e-4 of the gradient's scale wherever it
    /// is used (`cargo test -p vgg --lib winograd_weight -- --nocapture`); conv1_2's 224x224
    /// map keeps the direct method.
    #[test]
    fn winograd_weight_grad_matches_direct_on_vgg_layers() {
        // Batch 1 on every layer, 4 on two 112 maps, a 56 and a 28 (conv1_2 stays direct), 16
        // and 64 on the 4x4 maps of a network fed 32x32 images.
        let batches = VGG_LAYERS
            .iter()
            .map(|&l| (l, 1))
            .chain([1, 2, 3, 6].map(|i| (VGG_LAYERS[i], 4)))
            .chain([(COMPACT_4X4, 16), (COMPACT_4X4, 64)]);
        for ((name, ci, co, side), n) in batches {
            let g = geometry([n, ci, co, side, side]);
            // ReLU-like inputs (half zeros) and a small output gradient, as in training.
            let x: Vec<f32> = wave(n * ci * side * side, 0.37)
                .iter()
                .map(|v| v.max(0.0))
                .collect();
            let dy: Vec<f32> = wave(n * co * side * side, 0.29)
                .iter()
                .map(|v| v * 1e-3)
                .collect();
            let direct = super::super::tiled::weight_grad(&x, &dy, g);
            let ours = weight_grad(&x, &dy, g);
            let top = direct.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = ours
                .iter()
                .zip(&direct)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                / top;
            eprintln!(
                "{name} {ci}->{co} at {side}x{side}, batch {n}: weight gradient max |winograd - direct| / max |direct| = {err:.1e}"
            );
            // Used where within 1e-4; the 224x224 layer keeps the direct method.
            if applies_to_weight_grad(&g) {
                assert!(err < 1e-4, "{name}: {err}");
            } else {
                assert!(side > 112 && err < 1e-3, "{name}: {err}");
            }
        }
    }

    /// The weight gradient's bits do not depend on the thread count (several chunks, a partial
    /// last one): training is bit-reproducible whatever the threads.
    #[test]
    fn weight_grad_bits_do_not_depend_on_the_threads() {
        let g = Geometry {
            n: 3,
            ci: 16,
            co: 24,
            h: 70,
            w: 66,
            k: 3,
        };
        let x = wave(g.n * g.ci * g.h * g.w, 0.37);
        let dy = wave(g.n * g.co * g.h * g.w, 0.29);
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
    }

    /// The cache of transformed weights serves equal weights (bit for bit, a NaN included, from
    /// another buffer) and never weights with one value changed.
    #[test]
    fn cached_transforms_follow_the_weights() {
        // 70 x 300 kernels: more than one task of the comparison (64 Ki values).
        let (co, ci) = (70, 300);
        let mut w = wave(co * ci * 9, 0.77);
        w[5] = f32::NAN;
        let first = cached_transform(&w, co, ci);
        let again = cached_transform(&w.clone(), co, ci);
        assert!(Arc::ptr_eq(&first, &again), "equal weights recomputed");
        let last = w.len() - 1;
        w[last] += 1.0;
        let changed = cached_transform(&w, co, ci);
        assert!(
            !Arc::ptr_eq(&first, &changed),
            "changed weights served stale"
        );
        let fresh = transform_weights(&w, co, ci);
        let bits = |u: &[f32]| u.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&changed), bits(&fresh));
    }

    /// The portable transforms and those of every other set this CPU runs (AVX2, AVX-512) give
    /// the same bits.
    #[test]
    fn isa_paths_agree_exactly() {
        eprintln!("sets: {:?}", Isa::available());
        let g = Geometry {
            n: 2,
            ci: 16,
            co: 24,
            h: 19,
            w: 26,
            k: 3,
        };
        let x = wave(g.n * g.ci * g.h * g.w, 0.37);
        let u = transform_weights(&wave(g.co * g.ci * 9, 0.23), g.co, g.ci);
        // 24 x 17 kernels: 6 full steps of the kernel transform and a partial one.
        let w = wave(24 * 17 * 9, 0.41);
        let b = wave(g.co, 1.1);
        let on = |isa| {
            let forward = |relu| forward_transformed(isa, &x, &u, &b, g, relu);
            (
                transform_weights_on(isa, &w, 24, 17),
                forward(false),
                forward(true),
            )
        };
        let portable = on(Isa::Portable);
        for isa in Isa::available() {
            let (kernels, plain, relu) = on(isa);
            assert!(portable.0 == kernels, "{isa:?}: kernel transform");
            assert!(portable.1 == plain, "{isa:?}, relu false");
            assert!(portable.2 == relu, "{isa:?}, relu true");
        }
    }

    /// The direct definition, in f64.
    fn direct(x: &[f32], w: &[f32], b: &[f32], g: Geometry) -> Vec<f64> {
        let mut out = vec![0f64; g.n * g.co * g.h * g.w];
        for i in 0..g.n {
            for k in 0..g.co {
                for y in 0..g.h {
                    for xx in 0..g.w {
                        let mut s = b[k] as f64;
                        for c in 0..g.ci {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let (yy, xs) =
                                        ((y + dy).wrapping_sub(1), (xx + dx).wrapping_sub(1));
                                    if yy < g.h && xs < g.w {
                                        s += x[((i * g.ci + c) * g.h + yy) * g.w + xs] as f64
                                            * w[((k * g.ci + c) * 3 + dy) * 3 + dx] as f64;
                                    }
                                }
                            }
                        }
                        out[((i * g.co + k) * g.h + y) * g.w + xx] = s;
                    }
                }
            }
        }
        out
    }

    /// Odd sizes (blocks cut by the map's edge), one channel, batch 1 and 3, with and without
    /// ReLU, one chunk and many: within 1e-5 of the output scale of the exact result.
    #[test]
    fn matches_the_definition() {
        for shape in ODD {
            let [n, ci, co, h, w] = shape;
            let g = geometry(shape);
            let x = wave(n * ci * h * w, 0.37);
            let wt = wave(co * ci * 9, 0.23);
            let b = wave(co, 1.1);
            let want = direct(&x, &wt, &b, g);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for relu in [false, true] {
                let got = forward(&x, &wt, &b, g, relu, relu);
                for (a, e) in got.iter().zip(&want) {
                    let e = if relu { e.max(0.0) } else { *e };
                    assert!(
                        (*a as f64 - e).abs() <= 1e-5 * scale,
                        "{n}x{ci}x{h}x{w} -> {co}: {a} vs {e}"
                    );
                }
            }
        }
    }

    /// Every 3x3 layer shape of VGG-16 and VGG-19 at 224 (batch 1; the maps 224 ... 14), against
    /// the direct im2col + GEMM path: the largest difference relative to the layer's output
    /// scale, printed per layer (`cargo test -p vgg --lib winograd -- --nocapture`), under 1e-4.
    #[test]
    fn winograd_matches_direct_on_vgg_layers() {
        let batches = VGG_LAYERS
            .iter()
            .map(|&l| (l, 1))
            .chain([(COMPACT_4X4, 16)]);
        for ((name, ci, co, side), n) in batches {
            let g = geometry([n, ci, co, side, side]);
            assert!(applies(&g), "{name}");
            let x = wave(n * ci * side * side, 0.37);
            // Glorot-scaled weights, as a trained layer's.
            let scale = (6.0 / (9.0 * (ci + co) as f32)).sqrt();
            let wt: Vec<f32> = wave(co * ci * 9, 0.23).iter().map(|v| v * scale).collect();
            let b = wave(co, 1.1);
            let direct = super::super::tiled::forward(&x, &wt, &b, g, false);
            let ours = forward(&x, &wt, &b, g, false, true);
            let top = direct.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = ours
                .iter()
                .zip(&direct)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                / top;
            eprintln!(
                "{name} {ci}->{co} at {side}x{side}: max |winograd - direct| / max |direct| = {err:.1e}"
            );
            assert!(err < 1e-4, "{name}: {err}");
        }
    }
}
