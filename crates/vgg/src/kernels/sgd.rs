//! SGD's update on flex in two passes over the parameters, instead of burn's seven tensor
//! operations (each a pass that reads one or two tensors and writes one): the same float32
//! operations in the same order as burn's `Sgd` with weight decay and momentum (dampening 0, no
//! Nesterov), so the results are the same bits (`fused_sgd_is_burns_sgd_bit_for_bit` in the
//! crate's integration tests). Float32 tensors on flex only: [`crate::train::FusedSgd`] checks.

use burn::backend::flex::FlexTensor;

use super::{par_filled, tensor, values};

/// Elements per task.
const CHUNK: usize = 1 << 14;

/// The step's velocity: `g' = w * decay + g` (when `decay` is given), then
/// `v = g' + v_old * momentum` (when `v_old` is given; `g'` otherwise), as burn's
/// `WeightDecay` then `Momentum` compute it.
pub fn velocity(
    w: &FlexTensor,
    g: &FlexTensor,
    v_old: Option<(&FlexTensor, f32)>,
    decay: Option<f32>,
) -> FlexTensor {
    let (wv, gv) = (values(w), values(g));
    let old = v_old.map(|(v, m)| (values(v), m));
    let shape = w.layout().shape();
    assert_eq!(g.layout().shape(), shape, "a gradient per parameter");
    if let Some((v, _)) = v_old {
        assert_eq!(v.layout().shape(), shape, "a velocity per parameter");
    }
    // SAFETY: every element of each chunk is written, by whichever loop runs.
    let out = unsafe {
        par_filled(wv.len(), CHUNK, |i, o| {
            let r = i * CHUNK..i * CHUNK + o.len();
            let (w, g) = (&wv[r.clone()], &gv[r.clone()]);
            // Four loops rather than one with branches inside, so that each vectorises.
            match (decay, &old) {
                (Some(p), Some((v, m))) => {
                    for (((o, &w), &g), &v) in o.iter_mut().zip(w).zip(g).zip(&v[r]) {
                        o.write((w * p + g) + v * m);
                    }
                }
                (Some(p), None) => {
                    for ((o, &w), &g) in o.iter_mut().zip(w).zip(g) {
                        o.write(w * p + g);
                    }
                }
                (None, Some((v, m))) => {
                    for ((o, &g), &v) in o.iter_mut().zip(g).zip(&v[r]) {
                        o.write(g + v * m);
                    }
                }
                (None, None) => {
                    for (o, &g) in o.iter_mut().zip(g) {
                        o.write(g);
                    }
                }
            }
        })
    };
    tensor(out, w.layout().shape().to_vec())
}

/// The descent `w - v * lr`, as burn's `Sgd` computes it.
pub fn descend(w: &FlexTensor, v: &FlexTensor, lr: f32) -> FlexTensor {
    assert_eq!(
        v.layout().shape(),
        w.layout().shape(),
        "a velocity per parameter"
    );
    let (wv, vv) = (values(w), values(v));
    // SAFETY: every element of each chunk is written.
    let out = unsafe {
        par_filled(wv.len(), CHUNK, |i, o| {
            let r = i * CHUNK..i * CHUNK + o.len();
            for ((o, &w), &v) in o.iter_mut().zip(&wv[r.clone()]).zip(&vv[r]) {
                o.write(w - v * lr);
            }
        })
    };
    tensor(out, w.layout().shape().to_vec())
}
