//! Where a run's images come from, stored in its config, so that a resumed run reads the very
//! same training, validation and test sets (and the same held-out split) as the run it continues.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Dataset, Split, cifar, demo, idx, open};
use crate::error::VggError;

/// One set of images: the embedded demo or a path (stored absolute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The embedded Fashion-MNIST subset ([`demo`]).
    Demo,
    /// An image folder, IDX files or CIFAR-10 batches ([`open`]).
    Path(PathBuf),
}

impl Source {
    /// A path, made absolute so the run can be resumed from anywhere.
    pub fn path(path: &Path) -> Self {
        Self::Path(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
    }

    pub fn open(&self, split: Split) -> Result<Dataset, VggError> {
        match self {
            Self::Demo => demo::load(split),
            Self::Path(p) => open(p, split),
        }
    }
}

/// Where validation images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// A class-balanced held-out share of the training set, drawn with the run's seed.
    HeldOut { fraction: f64 },
    /// A separate set (its test split where it has one).
    Set(Source),
}

/// A run's data: training set, validation, and the test set that the source holds beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    pub train: Source,
    pub validation: Validation,
}

/// The sets a [`DataSpec`] opens to.
pub struct Sets {
    pub train: Dataset,
    pub val: Dataset,
    /// The source's test split (the demo's, or a folder's `t10k`/`test_batch` files), when it
    /// has one apart from the training set.
    pub test: Option<Dataset>,
}

impl DataSpec {
    /// Opens every set; `seed` draws the held-out split.
    pub fn open(&self, seed: u64) -> Result<Sets, VggError> {
        let full = self.train.open(Split::Train)?;
        let test = match &self.train {
            Source::Demo => Some(demo::load(Split::Test)?),
            // IDX or CIFAR-10 folders hold a test split beside the training one.
            Source::Path(p)
                if p.is_dir()
                    && (idx::find(p, Split::Test).is_some()
                        || cifar::find(p, Split::Test).is_some()) =>
            {
                Some(open(p, Split::Test)?)
            }
            Source::Path(_) => None,
        };
        let (train, val) = match &self.validation {
            Validation::HeldOut { fraction } => full.split(*fraction, seed)?,
            Validation::Set(source) => (full, source.open(Split::Test)?),
        };
        Ok(Sets { train, val, test })
    }
}
