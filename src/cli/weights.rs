//! The flags that say which weights to use (`-w`, `--arch` and the network flags for files,
//! `--preset`, `--labels`); the library's [`vgg::preset::open`] does the rest.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vgg::eval::Classifier;
use vgg::preset::Convention;

use super::arch_args::ArchArgs;

/// The flags that say which weights to use and how they expect their input.
#[derive(clap::Args, Debug, Clone)]
pub struct WeightArgs {
    /// Weights: a run folder (uses its best.bpk), a checkpoint in a run folder, or a
    /// torchvision-layout .pth/.safetensors (with --arch). Repeat for an ensemble.
    #[arg(long, short, value_name = "PATH", required = true)]
    pub weights: Vec<PathBuf>,
    /// Architecture of torchvision-layout weights.
    #[arg(long, default_value = "vgg16")]
    pub arch: String,
    #[command(flatten)]
    pub net: ArchArgs,
    /// Preprocessing of torchvision-layout weights: torchvision (RGB, [0, 1], ImageNet mean and
    /// std) or caffe (BGR, 0-255, mean pixel; the authors' release). Default: caffe for files
    /// with Caffe or Keras layer names, torchvision otherwise. Runs carry their own.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Class names, one per line (default: the run's classes, or ImageNet's for 1000 classes).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Drop whatever head the weights carry and load their convolutions (a trunk): for
    /// `features`.
    #[arg(long)]
    pub no_top: bool,
}

/// `--preset`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum PresetArg {
    Torchvision,
    Caffe,
}

impl From<PresetArg> for Convention {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Torchvision => Convention::Torchvision,
            PresetArg::Caffe => Convention::Caffe,
        }
    }
}

/// What the weights are loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `predict` and `eval`: a classifier; a trunk is refused.
    Classify,
    /// `features`: a trunk will do.
    Features,
}

/// The network at `path` with its preset, and `--labels` applied.
pub fn load(args: &WeightArgs, path: &Path, purpose: Purpose) -> anyhow::Result<Classifier> {
    let options = vgg::preset::Options {
        convention: args.preset.map(Into::into),
        no_top: args.no_top,
    };
    let opened = vgg::preset::open(
        path,
        || args.net.config(&args.arch),
        &options,
        &super::device(),
    )?;
    anyhow::ensure!(
        !(opened.trunk && purpose == Purpose::Classify),
        "{}: these weights are a trunk (convolutions only, no classifier{}): they classify nothing; use them with `vgg features` or `vgg train --pretrained`",
        path.display(),
        if args.no_top {
            ": --no-top dropped the head"
        } else {
            ""
        }
    );
    let (model, mut preset) = (opened.model, opened.preset);
    if let Some(file) = &args.labels {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the labels {}", file.display()))?;
        preset.classes = text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    let n = model.config().num_classes;
    anyhow::ensure!(
        opened.trunk || preset.classes.len() == n,
        "{}: the weights have {n} classes but there are {} labels; give --labels with one name per class",
        path.display(),
        preset.classes.len()
    );
    Ok(Classifier {
        model,
        preset,
        trunk: opened.trunk,
    })
}

/// Every `--weights` (an ensemble when there are several), as classifiers.
pub fn load_all(args: &WeightArgs) -> anyhow::Result<Vec<Classifier>> {
    args.weights
        .iter()
        .map(|w| load(args, w, Purpose::Classify))
        .collect()
}
