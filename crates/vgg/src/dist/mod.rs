//! Synchronous data-parallel SGD (paper Section 3.3): "the batch is split across workers,
//! gradients are averaged, and the result equals one-worker training".
//!
//! A [`Collective`] is the communication engine (MPI in [`mpi`], behind the `mpi` feature;
//! [`Single`] for one process). The trainer splits each global batch into its micro-batches
//! and hands micro-batch `j` of a batch to rank `j % size` ([`owner`]), so every rank
//! sees exactly the images, augmentations and BatchNorm batches that one process would; the
//! summed gradients (each micro-batch's loss already weighted by its share of the global
//! batch) and the BatchNorm statistics are all-reduced before one identical SGD step on every
//! rank.

pub mod grads;
#[cfg(feature = "mpi")]
pub mod mpi;

pub use grads::GradLayout;

/// A group of processes that sum buffers together. Every rank must make the same calls in the
/// same order (MPI's collective semantics).
pub trait Collective {
    /// This process's index, 0-based; rank 0 writes the run's files.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn size(&self) -> usize;
    /// Element-wise sum of `buf` over all ranks, in place, the same result on every rank.
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// [`Collective::all_reduce_sum`] for counts and loss sums.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Copies rank 0's `buf` to every rank.
    fn broadcast(&self, buf: &mut [f32]);
    /// Wall-clock seconds spent in collectives so far.
    fn seconds(&self) -> f64 {
        0.0
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) {}
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) {}
    fn broadcast(&self, _buf: &mut [f32]) {}
}

/// The rank that computes micro-batch `j` of a global batch (round robin), so that a batch's
/// micro-batches spread evenly and each rank's share is known without communication.
pub fn owner(j: usize, size: usize) -> usize {
    j % size
}

/// Weight of micro-batch `k` of `count` in the running statistics after the step: PyTorch
/// folds each batch in turn, `r = (1 - m) r + m s`, so after `count` micro-batches
/// `r = (1 - m)^count r0 + sum_k m (1 - m)^(count - 1 - k) s_k`: each rank adds its own terms
/// and the sum is all-reduced.
pub fn running_weight(momentum: f64, k: usize, count: usize) -> f64 {
    momentum * (1.0 - momentum).powi((count - 1 - k) as i32)
}
