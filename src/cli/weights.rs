//! Finding a network and its preprocessing from what the user points at: a run folder, a
//! checkpoint inside one (its `config.json` carries the preprocessing and class names), or a
//! torchvision/Caffe-layout weight file with `--arch` and `--preset`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vgg::Vgg;
use vgg::data::transform::Normalize;
use vgg::eval::{Classifier, imagenet_classes};
use vgg::layouts::{Layout, detect, to_torchvision};
use vgg::train::folder::{CONFIG, is_run_file};
use vgg::train::{TrainConfig, read_config};
use vgg::weights::{Format, read_state_dict};

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
    #[arg(long, value_parser = ["torchvision", "caffe"])]
    pub preset: Option<String>,
    /// Class names, one per line (default: the run's classes, or ImageNet's for 1000 classes).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
}

/// A loaded network with what it needs to classify.
pub struct Loaded {
    pub classifier: Classifier,
    pub classes: Vec<String>,
    /// The scale Q its weights were trained for (256 for torchvision's, S_min for our runs).
    pub default_scale: usize,
}

/// The run a weight path belongs to: a run folder (its `best.bpk`), or one of a run's own
/// checkpoint files in its folder. A run's config.json that does not read is an error; any other
/// file is not a run's (a folder of someone else's with a config.json of its own, say).
fn run_config(path: &Path) -> anyhow::Result<Option<(TrainConfig, PathBuf)>> {
    let (dir, file) = if path.is_dir() {
        (path.to_path_buf(), path.join("best.bpk"))
    } else {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        match (path.parent(), name) {
            (Some(dir), Some(name)) if is_run_file(&name) && dir.join(CONFIG).exists() => {
                (dir.to_path_buf(), path.to_path_buf())
            }
            _ => return Ok(None),
        }
    };
    Ok(Some((read_config(&dir)?, file)))
}

pub fn load(args: &WeightArgs, path: &Path) -> anyhow::Result<Loaded> {
    let device = super::device();
    let (classifier, mut classes, default_scale) = match run_config(path)? {
        Some((config, file)) => {
            let model = Vgg::load(&config.model, &file, &device)
                .with_context(|| format!("loading {}", file.display()))?;
            let t = &config.transform;
            (
                Classifier {
                    model,
                    normalize: t.normalize.clone(),
                    crop: t.crop,
                },
                config.classes.clone(),
                t.eval_scale,
            )
        }
        None => {
            anyhow::ensure!(
                path.exists(),
                "{}: no such weight file or run folder",
                path.display()
            );
            let config = args.net.config(Some(&args.arch))?;
            let (model, layout) = if Format::of(path)? == Format::Burn {
                (Vgg::load(&config, path, &device)?, Layout::Torchvision)
            } else {
                let dict = read_state_dict(path)?;
                let layout = detect(&dict);
                let dict = to_torchvision(dict, &config);
                (Vgg::from_state_dict(&config, &dict, path, &device)?, layout)
            };
            let caffe = match args.preset.as_deref() {
                Some(preset) => preset == "caffe",
                None => layout != Layout::Torchvision,
            };
            let normalize = if caffe {
                Normalize::caffe()
            } else {
                Normalize::torchvision()
            };
            let classes = if config.num_classes == 1000 {
                imagenet_classes()
            } else {
                (0..config.num_classes).map(|i| i.to_string()).collect()
            };
            (
                Classifier {
                    model,
                    normalize,
                    crop: 224,
                },
                classes,
                256,
            )
        }
    };
    if let Some(file) = &args.labels {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the labels {}", file.display()))?;
        classes = text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    let n = classifier.model.config().num_classes;
    anyhow::ensure!(
        classes.len() == n,
        "{}: the weights have {n} classes but there are {} labels; give --labels with one name per class",
        path.display(),
        classes.len()
    );
    Ok(Loaded {
        classifier,
        classes,
        default_scale,
    })
}

/// Every `--weights` (an ensemble when there are several).
pub fn load_all(args: &WeightArgs) -> anyhow::Result<Vec<Loaded>> {
    args.weights.iter().map(|w| load(args, w)).collect()
}
