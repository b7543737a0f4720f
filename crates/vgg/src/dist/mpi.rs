//! The [`Collective`] on MPI (Open MPI, MPICH, ...), through the `mpi` crate.
//!
//! Gradients are summed in buckets of [`BUCKET_FLOATS`] with non-blocking all-reduces, all in
//! flight at once, so the library pipelines them (as PyTorch's DDP buckets, 25 MB by default).

use std::cell::Cell;
use std::time::Instant;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::train::Collective;

/// Floats per all-reduce bucket (16 MiB).
pub const BUCKET_FLOATS: usize = 1 << 22;

/// `MPI_COMM_WORLD`; MPI is finalised when this is dropped.
pub struct MpiCollective {
    world: SimpleCommunicator,
    local_size: usize,
    local_rank: usize,
    seconds: Cell<f64>,
    // Last: dropped (MPI_Finalize) after the communicator.
    _universe: Universe,
}

impl MpiCollective {
    /// Initialises MPI (funnelled threading: only the main thread calls MPI). `None` when MPI
    /// was already initialised or cannot start.
    pub fn init() -> Option<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
        let world = universe.world();
        let host = world.split_shared(0);
        let (local_size, local_rank) = (host.size() as usize, host.rank() as usize);
        Some(Self {
            world,
            local_size,
            local_rank,
            seconds: Cell::new(0.0),
            _universe: universe,
        })
    }

    /// Ranks on this host (to share its cores between them).
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// This rank's index among the ranks on its host (the GPU it takes).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Ends every rank of the job with `code` (MPI_Abort): one rank's error must not leave the
    /// others waiting in a collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.seconds
            .set(self.seconds.get() + start.elapsed().as_secs_f64());
        out
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) {
        self.timed(|| {
            let send = buf.to_vec();
            mpi::request::scope(|scope| {
                let requests: Vec<_> = send
                    .chunks(BUCKET_FLOATS)
                    .zip(buf.chunks_mut(BUCKET_FLOATS))
                    .map(|(s, r)| {
                        self.world
                            .immediate_all_reduce_into(scope, s, r, SystemOperation::sum())
                    })
                    .collect();
                for request in requests {
                    request.wait();
                }
            });
        })
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        self.timed(|| {
            let send = buf.to_vec();
            self.world
                .all_reduce_into(&send[..], buf, SystemOperation::sum());
        })
    }

    fn broadcast(&self, buf: &mut [f32]) {
        self.timed(|| self.world.process_at_rank(0).broadcast_into(buf))
    }

    fn seconds(&self) -> f64 {
        self.seconds.get()
    }
}
