//! Data-parallel training across processes and hosts: the [`crate::train::Collective`] on MPI
//! (`mpi`, behind the `mpi` feature), and how a process knows an MPI launcher started it.

#[cfg(feature = "mpi")]
pub mod mpi;

/// The launchers' variables that give the job's size: Open MPI's, then MPICH's and Slurm's PMI.
const SIZE_VARIABLES: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// The launchers' variables any of which says a process belongs to an MPI job.
const JOB_VARIABLES: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "MPI_LOCALNRANKS",
];

/// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, `srun`).
pub fn launched() -> bool {
    JOB_VARIABLES.iter().any(|v| std::env::var_os(v).is_some())
}

/// The number of processes the launcher says it started, when it says.
pub fn launched_size() -> Option<usize> {
    SIZE_VARIABLES
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}
