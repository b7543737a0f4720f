//! What a new run is: its configuration, the weights it starts from, its data and its folder
//! ([`RunSpec`]), which [`super::Trainer::start`] turns into a run.

use std::path::PathBuf;

use super::config::{Pretrained, TrainConfig};
use crate::data::Dataset;
use crate::preset::Weights;

/// How a new run's weights begin.
#[derive(Debug, Clone)]
pub enum Start {
    /// Drawn by the configuration's initialisation.
    Fresh,
    /// The paper's start of its deeper nets (Section 3.1): the first four conv layers and the
    /// three FC layers of a trained net A (each conv to the next layer of its shape), the rest
    /// drawn.
    FromNetA(Weights),
    /// Fine-tuning: the run keeps the weights' network (with the data's classes) and
    /// preprocessing; every tensor that fits is loaded but the last layer, which is new.
    FineTune {
        weights: Weights,
        /// The first layer that trains; every one before it is frozen
        /// ([`crate::arch::names::freeze_point`]).
        freeze: Option<String>,
        /// The loaded tensors learn at the run's rate times this (0 keeps them).
        lr_scale: f64,
    },
}

impl Start {
    /// What the run's config records of this start: `(pretrained, init_from)`. What a
    /// fine-tuned run loaded and drew fresh is filled in when the run starts.
    pub fn record(&self) -> (Option<Pretrained>, Option<PathBuf>) {
        match self {
            Start::Fresh => (None, None),
            Start::FromNetA(w) => (None, Some(PathBuf::from(&w.origin.given))),
            Start::FineTune {
                weights,
                freeze,
                lr_scale,
            } => (
                Some(Pretrained {
                    source: weights.origin.given.clone(),
                    no_top: weights.trunk,
                    loaded: Vec::new(),
                    fresh: Vec::new(),
                    freeze: freeze.clone(),
                    lr_scale: *lr_scale,
                }),
                None,
            ),
        }
    }
}

/// A new run: everything [`super::Trainer::start`] needs, checked there before the folder is
/// touched.
#[derive(Debug)]
pub struct RunSpec {
    /// The run's settings ([`super::Recipe::config`] makes them from the paper's recipe).
    pub config: TrainConfig,
    pub start: Start,
    pub train: Dataset,
    pub val: Dataset,
    /// The run folder: made, or (with `force`) a run's folder whose own files are replaced.
    pub out: PathBuf,
    pub force: bool,
}
