//! The processes of a run: this one alone, or the ranks of an MPI job (`mpirun -np N vgg
//! train ...`, with the `mpi` feature). Rank 0 alone prints and writes.

use std::rc::Rc;

use vgg::train::{Collective, Single};

/// This process's place in the job.
pub struct Ranks {
    comm: Rc<dyn Collective>,
    /// Ranks sharing this host's cores.
    local: usize,
    /// This rank's index on its host.
    local_rank: usize,
    #[cfg(feature = "mpi")]
    mpi: Option<Rc<vgg::dist::mpi::MpiCollective>>,
}

impl Ranks {
    /// Joins the MPI job when started by `mpirun`; one process otherwise.
    pub fn start() -> anyhow::Result<Self> {
        #[cfg(feature = "mpi")]
        if vgg::dist::launched() {
            let mpi = vgg::dist::mpi::MpiCollective::init()
                .ok_or_else(|| anyhow::anyhow!("MPI could not be initialised"))?;
            let mpi = Rc::new(mpi);
            return Ok(Self {
                comm: mpi.clone(),
                local: mpi.local_size(),
                local_rank: mpi.local_rank(),
                mpi: Some(mpi),
            });
        }
        if vgg::dist::launched_size().is_some_and(|n| n > 1) {
            anyhow::bail!(
                "started by mpirun, but this vgg was built without MPI: every rank would train \
                 alone into the same folder. Rebuild with `cargo build --release --features mpi` \
                 (needs libopenmpi-dev)"
            );
        }
        Ok(Self {
            comm: Rc::new(Single),
            local: 1,
            local_rank: 0,
            #[cfg(feature = "mpi")]
            mpi: None,
        })
    }

    pub fn comm(&self) -> Rc<dyn Collective> {
        self.comm.clone()
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// Whether this process prints and writes (rank 0).
    pub fn leader(&self) -> bool {
        self.rank() == 0
    }

    /// This rank's device: with several ranks on this host, `wgpu` and `cuda` without an index
    /// take the GPU of the rank's index on the host, one GPU per rank.
    pub fn device(&self, spec: vgg::device::DeviceSpec) -> anyhow::Result<burn::tensor::Device> {
        if self.local <= 1 {
            return Ok(spec.open()?);
        }
        // Several ranks on this host: one GPU each.
        let spec = spec.for_local_rank(self.local_rank);
        spec.open().map_err(|e| {
            anyhow::anyhow!(
                "{e} (under mpirun, each of this host's {} ranks takes the GPU of its local index: rank {} takes {spec}; name one device for all, e.g. --device wgpu-cpu)",
                self.local,
                self.local_rank
            )
        })
    }

    /// Compute threads for this rank: `requested`, or this host's cores shared by its ranks.
    pub fn threads(&self, requested: Option<usize>) -> usize {
        requested.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / self.local.max(1)).max(1)
        })
    }

    /// Ends the job on an error: one rank alone, or every rank (MPI_Abort), so that no rank is
    /// left waiting for a collective the failed one will never join.
    pub fn fail(&self, err: anyhow::Error) -> anyhow::Error {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi
            && mpi.size() > 1
        {
            note!(
                "error (rank {} of {}): {}",
                mpi.rank(),
                mpi.size(),
                super::hints::message(&err, "train")
            );
            note!(
                "ending every rank of the job; `vgg train --resume DIR` continues from the last checkpoint"
            );
            mpi.abort(2);
        }
        err
    }
}
