//! Opening weights with their preset, from what a user points at: a run folder, a checkpoint
//! in one, a weight file in torchvision's, the authors' Caffe or Keras' layout (a trunk when it
//! holds no classifier), or a published name (`torchvision:vgg16`, fetched into the cache).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Deserialize;

use super::download::{self, Progress};
use super::zoo::{self, Published};
use super::{Convention, Normalize, NormalizeOverrides, Preset};
use crate::arch::VggConfig;
use crate::checkpoint::layouts::{Layout, to_torchvision};
use crate::checkpoint::run_files::{CONFIG, is_run_file};
use crate::checkpoint::{Format, is_trunk, read_state_dict, read_weight_file};
use crate::error::VggError;
use crate::nn::Vgg;

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
/// (a folder of someone else's with a config of its own). Returns `(run folder, weight file)`.
pub fn run_of(path: &Path) -> Option<(PathBuf, PathBuf)> {
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
        .map_err(|e| VggError::bad_run_setting(&path, e))?;
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// The preprocessing of a weight file (a run carries its own).
    pub convention: Option<Convention>,
    /// Corrections to the preprocessing, whatever the weights' own.
    pub overrides: NormalizeOverrides,
    /// Drop whatever head the weights carry and take the trunk.
    pub no_top: bool,
    /// Where published weights (`torchvision:NAME`) are cached ([`download::default_cache`]
    /// when `None`), and the server they come from ([`zoo::TORCHVISION_URL`] when `None`).
    pub cache: Option<PathBuf>,
    pub base_url: Option<String>,
}

/// Opens the weights at `path` with their preset: a run folder or a run's checkpoint carries
/// its own network and preset; any other file is read as `config` (asked for only then), with
/// the preset it carries (files `vgg convert` wrote), else its layout's: the authors' Caffe
/// preprocessing for every Keras file and `.caffemodel` (keras.applications' VGG16/19 take
/// `preprocess_input`'s "caffe" mode), a Keras ONNX export and Caffe- or Keras-named dicts,
/// torchvision's for the rest; `options.convention` overrides both. A file without a
/// classifier opens as a trunk (strict for every convolution).
pub fn open(
    path: &Path,
    config: impl FnOnce() -> Result<VggConfig, VggError>,
    options: &Options,
    device: &Device,
    progress: Progress<'_>,
) -> Result<Opened, VggError> {
    if let Some(name) = path.to_str().and_then(|p| p.strip_prefix("torchvision:")) {
        return open_published(name, options, device, progress);
    }
    if let Some((dir, file)) = run_of(path) {
        let card = read_card(&dir)?;
        let model = Vgg::load(&card.model, &file, device)?;
        let preset = Preset {
            normalize: card.transform.normalize.with(&options.overrides)?,
            crop: card.transform.crop,
            scale: card.transform.eval_scale,
            classes: card.classes,
            // Our training pipeline's rescaling ([`crate::train::TrainConfig::preset`]).
            resize: super::Resize::Bilinear,
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
    let (model, layout, carried, trunk) = if Format::of(path)? == Format::Burn {
        (
            Vgg::load(&config, path, device)?,
            Layout::Torchvision,
            None,
            options.no_top,
        )
    } else {
        let file = read_weight_file(path)?;
        let corrupt = |reason: String| VggError::CorruptWeights {
            path: path.to_path_buf(),
            format: "weights",
            reason,
        };
        let mut dict = to_torchvision(file.dict, file.layout, &config).map_err(corrupt)?;
        if options.no_top {
            dict.retain(|k, _| !k.starts_with("classifier."));
        }
        let trunk = is_trunk(&dict);
        let mut carried =
            Preset::from_metadata(&file.metadata, (!trunk).then_some(config.num_classes))
                .map_err(corrupt)?;
        if trunk && let Some(p) = carried.as_mut() {
            // A trunk classifies nothing: its head's names do not carry over.
            p.classes = Preset::published(Convention::None, config.num_classes).classes;
        }
        let model = if trunk {
            Vgg::from_trunk_dict(&config, &dict, path, device)?
        } else {
            Vgg::from_state_dict(&config, &dict, path, device)?
        };
        (model, file.layout, carried, trunk)
    };
    // A preset the file carries (one we wrote) is the file's word; a convention the caller
    // names overrides it; otherwise the layout's own, told before any renaming.
    let mut preset = match (options.convention, carried) {
        (None, Some(preset)) => preset,
        // The caller's preprocessing; the file's classes, crop and scale stay.
        (Some(convention), Some(carried)) => {
            let published = Preset::published(convention, config.num_classes);
            Preset {
                normalize: published.normalize,
                resize: published.resize,
                ..carried
            }
        }
        (convention, None) => Preset::published(
            convention.unwrap_or(match layout {
                Layout::Torchvision => Convention::Torchvision,
                Layout::Caffe | Layout::Keras => Convention::Caffe,
            }),
            config.num_classes,
        ),
    };
    preset.normalize = preset.normalize.with(&options.overrides)?;
    Ok(Opened {
        model,
        preset,
        trunk,
    })
}

/// `torchvision:NAME`: the published file, fetched into the cache unless it is there, opened
/// with its own network and preprocessing (a trunk for `vgg16_features`, whose classifier is
/// NaN).
fn open_published(
    name: &str,
    options: &Options,
    device: &Device,
    progress: Progress<'_>,
) -> Result<Opened, VggError> {
    let published = Published::find(name)?;
    let cache = options
        .cache
        .clone()
        .or_else(download::default_cache)
        .ok_or_else(|| {
            VggError::bad_config(
                "cache",
                "has no default here (neither XDG_CACHE_HOME nor HOME is set)",
            )
        })?;
    let base = options.base_url.as_deref().unwrap_or(zoo::TORCHVISION_URL);
    let url = format!("{}/{}", base.trim_end_matches('/'), published.file);
    let config = published.config();
    let limit = (config.num_params() as u64)
        .saturating_mul(4)
        .saturating_add(64 << 20);
    let file = download::fetch(
        &url,
        &cache,
        published.file,
        published.sha256_prefix(),
        limit,
        progress,
    )?;
    let mut dict = read_state_dict(&file)?;
    let trunk = published.trunk || options.no_top;
    if trunk {
        dict.retain(|k, _| !k.starts_with("classifier."));
    }
    let model = if trunk {
        Vgg::from_trunk_dict(&config, &dict, &file, device)?
    } else {
        Vgg::from_state_dict(&config, &dict, &file, device)?
    };
    let mut preset = published.preset();
    preset.normalize = preset.normalize.with(&options.overrides)?;
    Ok(Opened {
        model,
        preset,
        trunk,
    })
}
