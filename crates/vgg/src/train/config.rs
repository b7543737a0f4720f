//! Everything that defines a run, written to its `config.json`, and the checks it passes
//! before anything is allocated or written.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sgd::SgdSettings;
use crate::arch::VggConfig;
use crate::data::source::DataSpec;
use crate::data::transform::Transform;
use crate::error::VggError;
use crate::nn::{InitScheme, Precision};

/// Everything that defines a run; written to `config.json`. Defaults are the paper's (Section 3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: VggConfig,
    pub init: InitScheme,
    /// The paper's trick: take the first four conv layers and the three FC layers from a
    /// trained net (A), the rest random.
    pub init_from: Option<PathBuf>,
    pub epochs: usize,
    /// Images per SGD step (256 in the paper).
    pub batch: usize,
    /// Images per forward/backward; `batch` is reached by accumulating gradients.
    pub micro_batch: usize,
    pub lr: f64,
    pub sgd: SgdSettings,
    /// Factor of each learning-rate reduction (0.1) and epochs without improvement before one.
    pub lr_factor: f64,
    pub patience: usize,
    /// Reductions in all (3 in the paper); a plateau after the last one ends the run.
    pub max_reductions: usize,
    pub seed: u64,
    /// Threads preparing batches.
    pub workers: usize,
    pub skip_bad: bool,
    pub transform: Transform,
    /// Where the data came from, for the record.
    pub train_data: String,
    pub val_data: String,
    pub classes: Vec<String>,
    /// Where the images are read from, so that a resumed run reads the same sets (`None` in
    /// runs written before it was recorded).
    #[serde(default)]
    pub data: Option<DataSpec>,
    /// Images in the training and validation sets when the run started (0: not recorded);
    /// a resumed run refuses data of another size.
    #[serde(default)]
    pub train_images: usize,
    #[serde(default)]
    pub val_images: usize,
    /// Fine-tuning: the run started from pretrained weights.
    #[serde(default)]
    pub pretrained: Option<Pretrained>,
    /// The dtype the training forward computes in (float32 unless chosen; runs written before
    /// mixed precision existed are float32).
    #[serde(default)]
    pub precision: Precision,
    /// Leave the test split unscored when training ends (`vgg train --no-test`), so that it is
    /// scored once, by an evaluation chosen on the validation images; a resumed run keeps it.
    #[serde(default)]
    pub no_test: bool,
}

/// A fine-tuned run's start, as recorded in its config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pretrained {
    /// The weights as given (a run folder, a file, a name).
    pub source: String,
    /// The source's head was dropped: only its convolutions were candidates.
    pub no_top: bool,
    /// torchvision keys taken from the source (filled in when the run starts).
    pub loaded: Vec<String>,
    /// Keys drawn fresh: the last FC layer, and what the source lacked.
    pub fresh: Vec<String>,
    /// The first layer that trains; every one before it is frozen
    /// ([`crate::arch::names::freeze_point`]).
    pub freeze: Option<String>,
    /// The learning rate of the loaded tensors is the run's times this.
    pub lr_scale: f64,
}

impl TrainConfig {
    /// What the run's weights expect ([`crate::preset::Preset`]): its preprocessing (the
    /// training set's mean), its crop, its test scale Q, its classes, and our rescaling. The
    /// run's `best.safetensors` carries it, as a run folder does.
    pub fn preset(&self) -> crate::preset::Preset {
        crate::preset::Preset {
            normalize: self.transform.normalize.clone(),
            crop: self.transform.crop,
            scale: self.transform.eval_scale,
            classes: self.classes.clone(),
            resize: crate::preset::Resize::Bilinear,
        }
    }

    /// Checks every number before anything is allocated or written: a NaN learning rate must
    /// not train for an epoch and report an accuracy.
    pub fn validate(&self) -> Result<(), VggError> {
        self.model.validate()?;
        let bad = |what: &str, reason: String| Err(VggError::bad_config(what, reason));
        let finite_in = |what: &str, v: f64, lo: f64, hi: f64, text: &str| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                bad(what, format!("is {v}; it must be {text}"))
            }
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(
                "lr",
                format!("is {}; it must be a positive number", self.lr),
            );
        }
        finite_in("momentum", self.sgd.momentum, 0.0, 0.999_999, "in [0, 1)")?;
        finite_in("weight_decay", self.sgd.weight_decay, 0.0, 1.0, "in [0, 1]")?;
        finite_in("lr_factor", self.lr_factor, 1e-9, 1.0, "in (0, 1]")?;
        finite_in(
            "pca_std",
            self.transform.pca_std as f64,
            0.0,
            10.0,
            "in [0, 10]",
        )?;
        if self.epochs == 0 {
            return bad("epochs", "is 0; a run trains at least one epoch".into());
        }
        if self.batch == 0 || self.micro_batch == 0 || !self.batch.is_multiple_of(self.micro_batch)
        {
            return bad(
                "batch",
                format!(
                    "{} must be a positive multiple of the micro-batch {}",
                    self.batch, self.micro_batch
                ),
            );
        }
        if self.patience == 0 {
            return bad("patience", "is 0; it must be at least one epoch".into());
        }
        let t = &self.transform;
        if t.channels != self.model.in_channels {
            return bad(
                "transform.channels",
                format!(
                    "{} differs from the network's {}",
                    t.channels, self.model.in_channels
                ),
            );
        }
        if t.crop < self.model.min_input() {
            return bad(
                "crop",
                format!(
                    "{} is smaller than the {} pixels the network's {} pools need",
                    t.crop,
                    self.model.min_input(),
                    self.model.num_pools()
                ),
            );
        }
        if t.scale_min < t.crop || t.scale_max < t.scale_min || t.eval_scale < t.crop {
            return bad(
                "scale",
                format!(
                    "[{}, {}] (evaluation {}) must be at least the crop {} and in order",
                    t.scale_min, t.scale_max, t.eval_scale, t.crop
                ),
            );
        }
        // The smallest image at the largest scale is a square of that side.
        let side = t.scale_max.max(t.eval_scale) as u64;
        crate::limits::check(
            || {
                format!(
                    "scale {side}: pixels of every image rescaled to it (at least {side}x{side})"
                )
            },
            side.saturating_mul(side),
            crate::limits::get().max_image_pixels,
            "max_image_pixels",
        )?;
        if t.normalize.mean.is_empty()
            || t.normalize.std.is_empty()
            || t.normalize
                .mean
                .iter()
                .chain(&t.normalize.std)
                .any(|v| !v.is_finite())
            || t.normalize.std.contains(&0.0)
        {
            return bad(
                "normalize",
                "needs finite means and non-zero standard deviations".into(),
            );
        }
        if let Some(p) = &self.pretrained {
            if !(p.lr_scale.is_finite() && p.lr_scale >= 0.0) {
                return bad(
                    "lr_pretrained",
                    format!("is {}; it must be a number >= 0", p.lr_scale),
                );
            }
            if let Some(name) = &p.freeze {
                crate::arch::names::freeze_point(&self.model, name)?;
            }
        }
        self.model
            .check_input(&[self.micro_batch, t.channels, t.crop, t.crop])
    }
}
