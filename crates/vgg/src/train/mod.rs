//! Training the paper's way (Section 3.1): softmax cross-entropy, SGD with momentum 0.9 and
//! weight decay 5e-4, batch 256 (by gradient accumulation), learning rate divided by 10 when
//! validation accuracy stops improving.
//!
//! - [`recipe`]: the paper's choices (and the small-image ones) turned into a [`TrainConfig`]
//!   ([`config`]) for a dataset; [`spec`]: a new run ([`RunSpec`]) and the weights it starts
//!   from ([`Start`]), which [`Trainer::start`] begins.
//! - [`sgd`]: the step (PyTorch's SGD, micro-batches, BatchNorm's running statistics), and
//!   [`scaler`]: the loss scaling of float16 mixed precision.
//! - [`trainer`]: epochs, validation ([`crate::eval::center`]), the schedule ([`plateau`]), checkpoints
//!   in the run folder ([`RunFolder`], [`state`]).
//! - [`lanes`]: a step's micro-batches side by side on the CPU's cores.
//! - [`collective`]: what the trainer needs of data-parallel ranks (MPI is in
//!   [`crate::dist`]).

pub mod collective;
pub mod config;
pub mod folder;
pub mod lanes;
pub mod plateau;
pub mod recipe;
pub mod scaler;
pub mod sgd;
pub mod spec;
pub mod state;
pub mod trainer;

pub use collective::{Collective, GradLayout, Single};
pub use config::TrainConfig;
pub use folder::RunFolder;
pub use plateau::Plateau;
pub use recipe::Recipe;
pub use scaler::LossScale;
pub use sgd::{FusedSgd, MicroBatch, Sgd, SgdSettings};
pub use spec::{RunSpec, Start};
pub use state::{EpochRecord, Observer, Progress, RunState};
pub use trainer::Trainer;
