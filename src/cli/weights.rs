//! The flags that say which weights to use (`-w`, `--arch` and the network flags for files,
//! the preprocessing, `--labels`, the cache of published weights); the library's
//! [`vgg::preset::open`] does the rest.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use vgg::eval::Classifier;
use vgg::preset::{Convention, NormalizeOverrides, Options};

use super::arch_args::ArchArgs;

/// The flags that say which weights to use and how they expect their input.
#[derive(clap::Args, Debug, Clone)]
pub struct WeightArgs {
    /// Weights: a run folder (uses its best.bpk), a checkpoint in a run folder, a weight file
    /// (.pth/.safetensors in torchvision's, Caffe's or Keras' names; .bpk) with --arch, or a
    /// published name, torchvision:vgg16 (vgg11 ... vgg19_bn, vgg16_features), fetched into the
    /// cache. Repeat for an ensemble.
    #[arg(long, short, value_name = "PATH|NAME", required = true)]
    pub weights: Vec<PathBuf>,
    /// Architecture of weight files.
    #[arg(long, default_value = "vgg16")]
    pub arch: String,
    #[command(flatten)]
    pub net: ArchArgs,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Class names, one per line (default: the run's classes, or ImageNet's for 1000 classes).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

/// How weights that do not say it themselves are read: their preprocessing, their head, and
/// where published ones come from.
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Preprocessing of weight files: torchvision (RGB, [0, 1], ImageNet mean and std), caffe
    /// (BGR, 0-255, mean pixel; the authors' release, Keras) or none (RGB, [0, 1]). Default:
    /// caffe for files with Caffe or Keras layer names, torchvision otherwise. Runs and
    /// published names carry their own; --mean, --std, --pixel-scale and --bgr correct any.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Subtracted from each channel after --pixel-scale, e.g. 0.5,0.5,0.5.
    #[arg(long, value_name = "R,G,B")]
    pub mean: Option<Floats>,
    /// Each channel divided by this after the mean, e.g. 0.5,0.5,0.5.
    #[arg(long, value_name = "R,G,B")]
    pub std: Option<Floats>,
    /// Pixels (0-255) multiplied by this first: 1/255 for [0, 1] (Keras' rescale=1/255), 1.
    #[arg(long, value_name = "F", value_parser = fraction)]
    pub pixel_scale: Option<f32>,
    /// Feed the channels in BGR order.
    #[arg(long)]
    pub bgr: bool,
    /// Drop whatever head the weights carry and take their convolutions (a trunk).
    #[arg(long)]
    pub no_top: bool,
    /// Cache of published weights (torchvision:NAME). Default: $XDG_CACHE_HOME/vgg or
    /// ~/.cache/vgg.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where torchvision:NAME files are fetched from (a mirror); default
    /// https://download.pytorch.org/models.
    #[arg(long, value_name = "URL")]
    pub weights_url: Option<String>,
}

/// Comma-separated numbers (`0.5,0.5,0.5`).
#[derive(Debug, Clone)]
pub struct Floats(pub Vec<f32>);

impl std::str::FromStr for Floats {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(|v| {
                v.trim()
                    .parse::<f32>()
                    .map_err(|_| format!("`{v}` is not a number"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Floats)
    }
}

/// A number or a fraction (`1/255`).
fn fraction(text: &str) -> Result<f32, String> {
    let value = match text.split_once('/') {
        Some((a, b)) => a
            .trim()
            .parse::<f32>()
            .ok()
            .zip(b.trim().parse::<f32>().ok())
            .map(|(a, b)| a / b),
        None => text.trim().parse::<f32>().ok(),
    };
    match value {
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{text}` is not a positive number or fraction (e.g. 1/255)"
        )),
    }
}

impl SourceArgs {
    /// The library's options for these flags.
    pub fn options(&self) -> Options {
        Options {
            convention: self.preset.map(Into::into),
            overrides: NormalizeOverrides {
                scale: self.pixel_scale,
                mean: self.mean.clone().map(|f| f.0),
                std: self.std.clone().map(|f| f.0),
                bgr: self.bgr.then_some(true),
            },
            no_top: self.no_top,
            cache: self.cache_dir.clone(),
            base_url: self.weights_url.clone(),
        }
    }
}

/// A progress bar for a download, drawn once one starts.
pub fn download_bar() -> impl FnMut(u64, Option<u64>) {
    let mut bar: Option<ProgressBar> = None;
    move |done, total| {
        let bar = bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "downloading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        bar.set_position(done);
        if total == Some(done) {
            bar.finish_and_clear();
        }
    }
}

/// `--preset`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum PresetArg {
    Torchvision,
    Caffe,
    None,
}

impl From<PresetArg> for Convention {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Torchvision => Convention::Torchvision,
            PresetArg::Caffe => Convention::Caffe,
            PresetArg::None => Convention::None,
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

/// The weights at `path` (a file read as `--arch` and the network flags, a run, a published
/// name), with the preprocessing flags applied.
pub fn open(args: &WeightArgs, path: &Path) -> anyhow::Result<vgg::Weights> {
    let weights = vgg::Weights::open(
        path,
        || args.net.config(&args.arch),
        &args.source.options(),
        &mut download_bar(),
    )?;
    note_dropped(&weights);
    Ok(weights)
}

/// Says which layers `--no-top` dropped (a head of any shape).
pub fn note_dropped(weights: &vgg::Weights) {
    let mut layers: Vec<&str> = weights
        .origin
        .dropped
        .iter()
        .map(|k| k.rsplit_once('.').map_or(k.as_str(), |(layer, _)| layer))
        .collect();
    layers.dedup();
    if !layers.is_empty() {
        note!("--no-top dropped the head: {}", layers.join(", "));
    }
}

/// The network at `path` with its preset, and `--labels` applied.
pub fn load(args: &WeightArgs, path: &Path, purpose: Purpose) -> anyhow::Result<Classifier> {
    let weights = open(args, path)?;
    anyhow::ensure!(
        !(weights.trunk && purpose == Purpose::Classify),
        "{}: these weights are a trunk (convolutions only, no classifier{}): they classify nothing; use them with `vgg features` or `vgg train --pretrained`",
        path.display(),
        if args.source.no_top {
            ": --no-top dropped the head"
        } else {
            ""
        }
    );
    let model = vgg::Vgg::from_weights(&weights, &args.device.open()?)?;
    let (trunk, mut preset) = (weights.trunk, weights.preset);
    if let Some(file) = &args.labels {
        // 16 MiB: ImageNet-21k's names are 1 MiB.
        let text = super::read_text_file(file, 16 << 20, "a class-name list")
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        preset.classes = text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    let n = model.config().num_classes;
    anyhow::ensure!(
        trunk || preset.classes.len() == n,
        "{}: the weights have {n} classes but there are {} labels; give --labels with one name per class",
        path.display(),
        preset.classes.len()
    );
    Ok(Classifier {
        model,
        preset,
        trunk,
    })
}

/// Every `--weights` (an ensemble when there are several), as classifiers; the members of an
/// ensemble must score the same classes in the same order.
pub fn load_all(args: &WeightArgs) -> anyhow::Result<Vec<Classifier>> {
    let models = args
        .weights
        .iter()
        .map(|w| load(args, w, Purpose::Classify))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let names: Vec<String> = args
        .weights
        .iter()
        .map(|w| w.display().to_string())
        .collect();
    vgg::eval::classes::same_classes(
        names
            .iter()
            .map(String::as_str)
            .zip(models.iter().map(|m| &m.preset)),
    )?;
    Ok(models)
}
