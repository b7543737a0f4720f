//! A run's weights card (`weights.json`): the network and the preset of the checkpoints beside
//! it, written by training when a run starts, so that a run folder is a source of [`Weights`]
//! like any file (a model card in the sense of timm's `pretrained_cfg`: the preprocessing and
//! the classes travel with the weights, as data).
//!
//! [`Weights`]: super::Weights

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Preset;
use crate::arch::VggConfig;
use crate::checkpoint::run_files::CARD;
use crate::error::VggError;

/// The network a run's checkpoints hold and how they expect their input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    pub model: VggConfig,
    pub preset: Preset,
}

impl Card {
    /// The card of the run in `dir`, checked (a network that can be built, a preset with a
    /// class per output); a run without one was written by a vgg older than the card.
    pub fn read(dir: &Path) -> Result<Self, VggError> {
        let path = dir.join(CARD);
        let bad = |reason: String| VggError::run_file(&path, reason);
        if let Err(e) = std::fs::metadata(&path)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            return Err(bad(
                "is missing: the run was written by a vgg older than its weights card; give \
                 its best.safetensors as a weight file, with its network"
                    .into(),
            ));
        }
        let card: Card = crate::fsio::read_run_json(&path, "card")?;
        card.model
            .validate()
            .map_err(|e| VggError::bad_run_setting(&path, e))?;
        card.preset
            .check(Some(card.model.num_classes))
            .map_err(bad)?;
        Ok(card)
    }

    /// Writes the card into the run folder `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<(), VggError> {
        let json = serde_json::to_vec_pretty(self).expect("a card serialises");
        crate::fsio::write_atomic(&dir.join(CARD), &json)
    }
}
