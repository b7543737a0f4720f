//! What travels with weights (torchvision's `Weights` idea): the preprocessing they expect,
//! the crop and scale they were trained at, and their class names; and [`open`], which finds a
//! network and its preset from what a user points at: a run folder, a checkpoint in one, or a
//! torchvision-, Caffe- or Keras-layout weight file.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::arch::VggConfig;
use crate::checkpoint::layouts::{Layout, detect, to_torchvision};
use crate::checkpoint::run_files::{CONFIG, is_run_file};
use crate::checkpoint::{Format, is_trunk, read_state_dict};
use crate::error::VggError;
use crate::nn::Vgg;

/// How pixels become network inputs: `(pixel * scale - mean) / std`, channel by channel, after
/// an optional RGB -> BGR swap. Carried with the weights, so evaluation preprocesses as training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// 1/255 for inputs in [0, 1], 1 for Caffe's 0-255.
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Feed channels in BGR order (the authors' Caffe release).
    pub bgr: bool,
}

impl Normalize {
    /// Our training runs: [0, 1] inputs minus the training set's mean per channel (the paper's
    /// only preprocessing, Section 2.1).
    pub fn mean_only(mean: Vec<f32>) -> Self {
        let std = vec![1.0; mean.len()];
        Self {
            scale: 1.0 / 255.0,
            mean,
            std,
            bgr: false,
        }
    }

    /// Applies the channel order, mean and std to a planar `[C, H, W]` image of `channels`
    /// (values already scaled).
    pub fn apply(&self, mut data: Vec<f32>, channels: usize) -> Vec<f32> {
        let plane = data.len() / channels.max(1);
        if self.bgr && channels == 3 {
            let (r, rest) = data.split_at_mut(plane);
            r.swap_with_slice(&mut rest[plane..2 * plane]);
        }
        for c in 0..channels {
            let (m, s) = (self.mean[c % self.mean.len()], self.std[c % self.std.len()]);
            data[c * plane..(c + 1) * plane]
                .iter_mut()
                .for_each(|v| *v = (*v - m) / s);
        }
        data
    }

    /// torchvision's ImageNet weights: RGB in [0, 1], mean (0.485, 0.456, 0.406),
    /// std (0.229, 0.224, 0.225).
    pub fn torchvision() -> Self {
        Self {
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            bgr: false,
        }
    }

    /// The authors' Caffe release: BGR, 0-255, mean pixel (103.939, 116.779, 123.68) in BGR order.
    pub fn caffe() -> Self {
        Self {
            scale: 1.0,
            mean: vec![103.939, 116.779, 123.68],
            std: vec![1.0; 3],
            bgr: true,
        }
    }
}

/// The preprocessing conventions of published weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// torchvision's: RGB in [0, 1], ImageNet mean and std.
    Torchvision,
    /// The authors' Caffe release (and Keras'): BGR, 0-255, minus the mean pixel.
    Caffe,
}

/// How a network's weights expect to be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub normalize: Normalize,
    /// The side of the square crop the network was trained on (224, or 32 for small images).
    pub crop: usize,
    /// The test scale Q (shorter side) the weights were trained for (256 for torchvision's).
    pub scale: usize,
    /// Class names, indexed by output.
    pub classes: Vec<String>,
}

impl Preset {
    /// The preset of published ImageNet-style weights of `num_classes` outputs: crop 224,
    /// scale 256, ImageNet's class names for 1000 classes (numbers otherwise).
    pub fn published(convention: Convention, num_classes: usize) -> Self {
        Self {
            normalize: match convention {
                Convention::Torchvision => Normalize::torchvision(),
                Convention::Caffe => Normalize::caffe(),
            },
            crop: 224,
            scale: 256,
            classes: if num_classes == 1000 {
                imagenet_classes()
            } else {
                (0..num_classes).map(|i| i.to_string()).collect()
            },
        }
    }
}

/// ImageNet-1k's 1000 class names, in the order of torchvision's and Caffe's outputs (public
/// data, as shipped by Debian's opencv-doc, `classification_classes_ILSVRC2012.txt`).
pub fn imagenet_classes() -> Vec<String> {
    include_str!("../data/imagenet_classes.txt")
        .lines()
        .map(|l| l.to_string())
        .collect()
}

/// What a training run's `config.json` says about its weights (the rest of it is training's).
#[derive(Deserialize)]
struct RunCard {
    model: VggConfig,
    transform: RunTransform,
    classes: Vec<String>,
}

#[derive(Deserialize)]
struct RunTransform {
    normalize: Normalize,
    crop: usize,
    eval_scale: usize,
}

/// The run a weight path belongs to: a run folder (its `best.bpk`), or one of a run's own
/// checkpoint files in its folder. Any other file is not a run's, even beside a `config.json`
/// (a folder of someone else's with a config of its own).
fn run_of(path: &Path) -> Option<(PathBuf, PathBuf)> {
    if path.is_dir() {
        return Some((path.to_path_buf(), path.join("best.bpk")));
    }
    let name = path.file_name()?.to_string_lossy();
    let dir = path.parent()?;
    (is_run_file(&name) && dir.join(CONFIG).exists())
        .then(|| (dir.to_path_buf(), path.to_path_buf()))
}

fn read_card(dir: &Path) -> Result<RunCard, VggError> {
    let path = dir.join(CONFIG);
    let bad = |reason: String| VggError::RunFile {
        path: path.clone(),
        reason,
    };
    let size = std::fs::metadata(&path)
        .map_err(|e| VggError::io(&path, e))?
        .len();
    if size > 64 << 20 {
        return Err(bad(format!("{size} bytes is too large for a run file")));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| VggError::io(&path, e))?;
    let card: RunCard =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a readable run file: {e}")))?;
    card.model
        .validate()
        .map_err(|e| bad(format!("holds a bad setting: {e}")))?;
    let n = &card.transform.normalize;
    let finite =
        n.mean.iter().chain(&n.std).all(|v| v.is_finite()) && n.std.iter().all(|&v| v != 0.0);
    if n.mean.is_empty()
        || n.std.is_empty()
        || !finite
        || card.classes.len() != card.model.num_classes
    {
        return Err(bad(
            "holds a preprocessing or class list that does not fit its network".into(),
        ));
    }
    Ok(card)
}

/// Weights opened with their preset.
pub struct Opened {
    pub model: Vgg,
    pub preset: Preset,
    /// The weights are a trunk: the convolutions only (Keras' `include_top=False`,
    /// torchvision's `IMAGENET1K_FEATURES`, or any head dropped by [`Options::no_top`]). The
    /// network's head is fresh and means nothing: it classifies nothing.
    pub trunk: bool,
}

impl Opened {
    /// The weights as a state dict, without a trunk's meaningless head.
    pub fn state_dict(&self) -> crate::checkpoint::StateDict {
        let mut dict = self.model.state_dict();
        if self.trunk {
            dict.retain(|k, _| !k.starts_with("classifier."));
        }
        dict
    }
}

/// How to read weights that do not say it themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The preprocessing of a weight file (a run carries its own).
    pub convention: Option<Convention>,
    /// Drop whatever head the weights carry and take the trunk.
    pub no_top: bool,
}

/// Opens the weights at `path` with their preset: a run folder or a run's checkpoint carries
/// its own network and preset; any other file is read as `config` (asked for only then), with
/// torchvision's conventions, or the authors' for files with Caffe or Keras names, unless
/// `options` says otherwise. A file without a classifier opens as a trunk (strict for every
/// convolution).
pub fn open(
    path: &Path,
    config: impl FnOnce() -> Result<VggConfig, VggError>,
    options: &Options,
    device: &Device,
) -> Result<Opened, VggError> {
    if let Some((dir, file)) = run_of(path) {
        let card = read_card(&dir)?;
        let model = Vgg::load(&card.model, &file, device)?;
        let preset = Preset {
            normalize: card.transform.normalize,
            crop: card.transform.crop,
            scale: card.transform.eval_scale,
            classes: card.classes,
        };
        return Ok(Opened {
            model,
            preset,
            trunk: options.no_top,
        });
    }
    if !path.exists() {
        return Err(VggError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such weight file or run folder",
            ),
        ));
    }
    let config = config()?;
    let (model, layout, trunk) = if Format::of(path)? == Format::Burn {
        (
            Vgg::load(&config, path, device)?,
            Layout::Torchvision,
            options.no_top,
        )
    } else {
        let dict = read_state_dict(path)?;
        let layout = detect(&dict);
        let mut dict = to_torchvision(dict, &config);
        if options.no_top {
            dict.retain(|k, _| !k.starts_with("classifier."));
        }
        if is_trunk(&dict) {
            (
                Vgg::from_trunk_dict(&config, &dict, path, device)?,
                layout,
                true,
            )
        } else {
            (
                Vgg::from_state_dict(&config, &dict, path, device)?,
                layout,
                false,
            )
        }
    };
    let convention = options.convention.unwrap_or(match layout {
        Layout::Torchvision => Convention::Torchvision,
        Layout::Caffe | Layout::Keras => Convention::Caffe,
    });
    let preset = Preset::published(convention, config.num_classes);
    Ok(Opened {
        model,
        preset,
        trunk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_has_1000_names_in_order() {
        let c = imagenet_classes();
        assert_eq!(c.len(), 1000);
        assert_eq!(c[0], "tench, Tinca tinca");
        assert!(c[281].starts_with("tabby"));
        assert!(c[999].starts_with("toilet tissue"));
    }

    #[test]
    fn normalize_swaps_to_bgr_and_standardises() {
        let n = Normalize::caffe();
        let out = n.apply(vec![10.0, 20.0, 30.0], 3);
        assert_eq!(out, vec![30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68]);
    }
}
