//! Training the paper's way (Section 3.1): softmax cross-entropy, SGD with momentum 0.9 and
//! weight decay 5e-4, batch 256 (by gradient accumulation), learning rate divided by 10 when
//! validation accuracy stops improving.

pub mod folder;
pub mod plateau;
pub mod run;
pub mod step;

pub use plateau::Plateau;
pub use run::{
    EpochRecord, Observer, Progress, RunState, TrainConfig, Trainer, evaluate, evaluate_shard,
    read_config, read_state,
};
pub use step::{Sgd, SgdSettings, cross_entropy};
