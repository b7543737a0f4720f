//! Training the paper's way (Section 3.1): softmax cross-entropy, SGD with momentum 0.9 and
//! weight decay 5e-4, batch 256 (by gradient accumulation), learning rate divided by 10 when
//! validation accuracy stops improving.
//!
//! - [`recipe`]: the paper's choices (and the small-image ones) turned into a [`TrainConfig`]
//!   ([`config`]) for a dataset.
//! - [`sgd`]: the step (PyTorch's SGD, micro-batches, BatchNorm's running statistics), and
//!   [`scaler`]: the loss scaling of float16 mixed precision.
//! - [`trainer`]: epochs, validation ([`validate`]), the schedule ([`plateau`]), checkpoints
//!   in the run folder ([`folder`], [`state`]).
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
pub mod state;
pub mod trainer;
pub mod validate;

pub use collective::{Collective, GradLayout, Single};
pub use config::TrainConfig;
pub use plateau::Plateau;
pub use recipe::Recipe;
pub use scaler::LossScale;
pub use sgd::{FusedSgd, MicroBatch, Sgd, SgdSettings, cross_entropy};
pub use state::{
    EpochRecord, Observer, Progress, RunState, read_config, read_state, validation_set,
};
pub use trainer::Trainer;
pub use validate::{Evaluation, evaluate, evaluate_shard};
