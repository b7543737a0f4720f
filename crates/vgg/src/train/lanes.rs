//! A step's micro-batches side by side on the CPU's cores, as data-parallel ranks run them: each
//! micro-batch's forward and backward on one core with one-thread kernels ("lanes"), where
//! otherwise every operation of one micro-batch is split over the cores and they meet at its
//! end. Each core then keeps its own micro-batch's activations in its caches, and nothing waits
//! between operations: on 2 cores, two ranks of one thread trained the demo 1.10-1.17x faster
//! than one process splitting each operation over two threads; with lanes, ranks are 1.02-1.07x
//! faster (docs/mpi.md).
//!
//! Results are added in micro-batch order ([`super::sgd::Sgd::add`]) and dropout masks are
//! drawn per micro-batch ([`crate::nn::Vgg::forward_train`]), so a step is the same whichever
//! lane computes which micro-batch, and the same run again gives the same bits.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};

use crate::arch::VggConfig;
use crate::nn::Vgg;
use crate::nn::summary::estimate;

/// Where lanes are used: what one lane holds, a micro-batch's training activations (each
/// layer's output, three times over for what the backward keeps) and a gradient of every
/// parameter (twice: the backward's and the micro-batch's), takes at most this. Lanes were
/// measured on 32x32 images (docs/mpi.md), where a micro-batch stays near
/// its core; on large micro-batches each operation is big enough to split well, and every lane
/// holds its own (16 lanes of VGG-16 micro-batches of 64 at 224x224 would hold over 100 GB, of
/// micro-batches of 1 over 10 GB of gradients).
pub const MOST_BYTES_PER_LANE: usize = 256 << 20;

/// Thread pools, one per micro-batch computed at once, the threads shared out among them; none
/// on a device our kernels do not run on (a GPU queues micro-batches one after another
/// instead), with one thread or one micro-batch per step, or over [`MOST_BYTES_PER_LANE`].
pub struct Lanes {
    pools: Vec<rayon::ThreadPool>,
}

impl Lanes {
    /// Lanes for `device` and steps of `per_step` micro-batches of `micro` images of `input`
    /// through `config`: as many as the current rayon pool's threads (`vgg train --threads`)
    /// and `per_step` allow, each with an equal share of the threads (our kernels give the
    /// same bits on any number of threads). A pool that cannot be started means one lane less.
    pub fn for_device(
        device: &Device,
        config: &VggConfig,
        input: [usize; 3],
        (micro, per_step): (usize, usize),
    ) -> Self {
        let threads = rayon::current_num_threads();
        let lanes = threads.min(per_step);
        let small = lane_bytes(config, input, micro) <= MOST_BYTES_PER_LANE;
        let pools = if crate::nn::ops::ours(device) && lanes >= 2 && small {
            (0..lanes)
                .map_while(|i| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads / lanes + usize::from(i < threads % lanes))
                        .build()
                        .ok()
                })
                .collect()
        } else {
            Vec::new()
        };
        Self { pools }
    }

    /// Micro-batches run at once (1 without lanes).
    pub fn width(&self) -> usize {
        self.pools.len().max(1)
    }

    /// `jobs[i](model)` for every job, their results in the jobs' order. With lanes, jobs run
    /// [`Lanes::width`] at a time, each on its own lane with a copy of `model` whose trainable
    /// parameters are fresh autodiff leaves (same ids, same values, no copy of the data): burn
    /// merges the graphs of operations that share a leaf into one locked graph, where passes
    /// on several threads would wait for each other or deadlock (a backward holds its graph's
    /// lock and then the graph map's; a forward's registration takes them the other way). A
    /// job left alone runs on the caller's thread and pool, as every job does without lanes.
    pub fn run<T, F>(&self, model: &Vgg, jobs: Vec<F>) -> Vec<T>
    where
        T: Send,
        F: FnOnce(&Vgg) -> T + Send,
    {
        let mut results = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let wave: Vec<F> = jobs.by_ref().take(self.width()).collect();
            if wave.len() == 1 {
                results.extend(wave.into_iter().map(|job| job(model)));
                continue;
            }
            std::thread::scope(|scope| {
                let running: Vec<_> = wave
                    .into_iter()
                    .zip(&self.pools)
                    .map(|(job, pool)| {
                        let replica = model.clone().map(&mut FreshLeaves);
                        scope.spawn(move || pool.install(|| job(&replica)))
                    })
                    .collect();
                for lane in running {
                    results.push(lane.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
                }
            });
        }
        results
    }
}

/// Each trainable parameter as a new autodiff leaf of the same value and id.
struct FreshLeaves;

impl ModuleMapper for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            if t.is_require_grad() {
                t.detach().require_grad()
            } else {
                t
            }
        })
    }
}

/// Bytes one lane holds: `micro` images of `input` through `config`, every layer's output kept
/// three times (output, what its backward keeps, its gradient), and two gradients of every
/// parameter, float32. `usize::MAX` for an input the network refuses.
fn lane_bytes(config: &VggConfig, input: [usize; 3], micro: usize) -> usize {
    estimate(config, input).map_or(usize::MAX, |summary| {
        let floats: usize = summary
            .layers
            .iter()
            .map(|l| l.output_shape.iter().product::<usize>())
            .sum();
        let activations = floats.saturating_mul(3 * 4).saturating_mul(micro);
        activations.saturating_add(summary.params.saturating_mul(2 * 4))
    })
}
