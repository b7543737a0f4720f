//! The paper's recipe (Section 3.1) turned into a run's configuration for a dataset, with the
//! defaults that fit small images (Fashion-MNIST's 28x28, CIFAR's 32x32): what `vgg train`
//! runs, and what a library user calls to rebuild the README's demo.

use super::config::TrainConfig;
use super::sgd::SgdSettings;
use super::spec::Start;
use crate::arch::{Overrides, VggConfig};
use crate::data::Dataset;
use crate::data::source::DataSpec;
use crate::data::transform::{Normalize, Stats, Transform};
use crate::error::VggError;
use crate::nn::{InitScheme, Precision};

/// The choices of a run before it meets its data; `None` takes the data's default.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The layer table (a named configuration or a user's list) and BatchNorm.
    pub net: VggConfig,
    /// The caller's choices for the network; on small images, width 0.25, pool 1 and hidden
    /// 512 fill in what is not chosen, and the data gives the classes and channels.
    pub overrides: Overrides,
    /// Side of the square training crop; 32 for images up to 64 pixels, 224 otherwise.
    pub crop: Option<usize>,
    /// Training scale S (shorter side) drawn per image from `[min, max]`; `[crop, crop + crop/8]`
    /// for small images, 256 otherwise.
    pub scale: Option<(usize, usize)>,
    pub flip: bool,
    /// Standard deviation of Krizhevsky's PCA colour shift (0 turns it off).
    pub pca_std: f32,
    pub init: InitScheme,
    pub epochs: usize,
    pub batch: usize,
    pub micro_batch: usize,
    pub lr: f64,
    pub sgd: SgdSettings,
    pub lr_factor: f64,
    pub patience: usize,
    pub max_reductions: usize,
    pub seed: u64,
    /// Threads preparing batches.
    pub workers: usize,
    pub skip_bad: bool,
    /// The dtype of the training forward (mixed precision; float32 is the paper's).
    pub precision: Precision,
}

impl Recipe {
    /// The paper's recipe for `net` (Section 3.1): SGD with momentum 0.9 and weight decay 5e-4,
    /// batch 256 (by micro-batches of 64), learning rate 1e-2 divided by 10 when validation
    /// stops improving (here after 2 epochs without improvement, 3 times at most), scale
    /// jittering off, flips and PCA colour shift 0.1, Glorot initialisation (which the authors
    /// note trains without pre-training). Two settings are not the paper's: 5 epochs (its runs
    /// stopped after 74; 5 is a budget the demo fits in) and 2 threads preparing batches. The
    /// one place the tool's defaults come from (`vgg train --help` shows them).
    pub fn paper(net: VggConfig) -> Self {
        Self {
            net,
            overrides: Overrides::default(),
            crop: None,
            scale: None,
            flip: true,
            pca_std: 0.1,
            init: InitScheme::Glorot,
            epochs: 5,
            batch: 256,
            micro_batch: 64,
            lr: 1e-2,
            sgd: SgdSettings::default(),
            lr_factor: 0.1,
            patience: 2,
            max_reductions: 3,
            seed: 42,
            workers: 2,
            skip_bad: false,
            precision: Precision::F32,
        }
    }

    /// The run's configuration for `data` (opened as `train` and `val`), starting as `start`
    /// says. Small images (at most 64 pixels a side, judged by the first readable one) get a
    /// quarter of the paper's widths and the compact head, so the demo trains in about a minute
    /// on two cores; fine-tuning keeps the weights' network (with the data's classes) and their
    /// preprocessing. Every setting is checked before the training set's mean and colour
    /// covariance are measured (over up to 10,000 images; `measuring` is called first, for a
    /// progress note).
    pub fn config(
        &self,
        data: DataSpec,
        train: &Dataset,
        val: &Dataset,
        start: &Start,
        measuring: impl FnOnce(),
    ) -> Result<TrainConfig, VggError> {
        if train.is_empty() {
            return Err(VggError::Dataset {
                path: train.name.clone().into(),
                reason: "it holds no images".into(),
            });
        }
        let first = (0..train.len())
            .map(|i| train.image(i))
            .find(|r| r.is_ok() || !self.skip_bad)
            .unwrap_or_else(|| train.image(0))?;
        let small = first.height.max(first.width) <= 64;
        let tuned = match start {
            Start::FineTune { weights, .. } => Some(weights),
            _ => None,
        };
        let model = match tuned {
            // The pretrained network, with the new task's classes.
            Some(w) => w.config.clone().with_num_classes(train.classes.len()),
            None => {
                let mut o = self.overrides.clone();
                if small {
                    // Width 1, hidden 4096 and pool 7 would be the paper's net.
                    o.width = o.width.or(Some(0.25));
                    o.pool_size = o.pool_size.or(Some(1));
                    o.hidden = o.hidden.or(Some(512));
                }
                o.num_classes = o.num_classes.or(Some(train.classes.len()));
                o.in_channels = o.in_channels.or(Some(first.channels));
                self.net.clone().with_overrides(&o)?
            }
        };
        model.validate()?;
        let crop = self.crop.unwrap_or(if small { 32 } else { 224 });
        let (scale_min, scale_max) = self.scale.unwrap_or(if small {
            (crop, crop + crop / 8)
        } else {
            (256, 256)
        });
        let channels = model.in_channels;
        let (pretrained, init_from) = start.record();
        let mut config = TrainConfig {
            model,
            init: self.init,
            init_from,
            epochs: self.epochs,
            batch: self.batch,
            micro_batch: self.micro_batch,
            lr: self.lr,
            sgd: self.sgd,
            lr_factor: self.lr_factor,
            patience: self.patience,
            max_reductions: self.max_reductions,
            seed: self.seed,
            workers: self.workers,
            skip_bad: self.skip_bad,
            precision: self.precision,
            no_test: false,
            transform: Transform {
                channels,
                crop,
                scale_min,
                scale_max,
                // Section 4.1: Q = S for a fixed S, Q = (Smin + Smax) / 2 for a jittered one.
                eval_scale: scale_min + scale_max.saturating_sub(scale_min) / 2,
                flip: self.flip,
                pca_std: self.pca_std,
                // Measured below, once every setting is known to be valid.
                normalize: Normalize::mean_only(vec![0.0; channels]),
                stats: Stats::default(),
            },
            train_data: train.name.clone(),
            val_data: val.name.clone(),
            classes: train.classes.clone(),
            data: Some(data),
            train_images: train.len(),
            val_images: val.len(),
            pretrained,
        };
        config.validate()?;
        measuring();
        let stats = Stats::measure(train, channels, 10_000, self.skip_bad)?;
        config.transform.normalize = match tuned {
            Some(w) => w.preset.normalize.clone(),
            None => Normalize::mean_only(stats.mean.clone()),
        };
        config.transform.stats = stats;
        Ok(config)
    }
}
