//! Weights as one value ([`Weights`]): the network's config, its tensors in torchvision's
//! layout and its preset, from whatever a user points at (a run folder, a checkpoint in one, a
//! weight file in torchvision's, the authors' Caffe or Keras' layout, a published name such as
//! `torchvision:vgg16`, fetched into the cache), nothing on a device yet;
//! [`Vgg::from_weights`] puts them on one.

use std::path::{Path, PathBuf};

use super::card::Card;
use super::download::{self, Progress};
use super::zoo::{self, Published};
use super::{Convention, NormalizeOverrides, Preset};
use crate::arch::VggConfig;
use crate::checkpoint::layouts::{Layout, to_torchvision};
use crate::checkpoint::run_files::{BEST, CARD, is_run_file};
use crate::checkpoint::strict::{check_state_dict, check_trunk};
use crate::checkpoint::{
    Format, StateDict, check_finite, is_trunk, read_state_dict, read_weight_file,
};
use crate::error::VggError;
use crate::nn::Vgg;
use burn::tensor::Device;

/// The run a weight path belongs to: a run folder (its `best.bpk`), or one of a run's own
/// checkpoint files in its folder, beside the run's weights card. Any other file is not a
/// run's, even beside a `config.json` (a folder of someone else's with a config of its own).
/// Returns `(run folder, weight file)`.
pub fn run_of(path: &Path) -> Option<(PathBuf, PathBuf)> {
    if path.is_dir() {
        return Some((path.to_path_buf(), path.join(BEST)));
    }
    let name = path.file_name()?.to_string_lossy();
    let dir = path.parent()?;
    (is_run_file(&name) && dir.join(CARD).exists()).then(|| (dir.to_path_buf(), path.to_path_buf()))
}

/// Weights as a value, nothing on a device yet: the network they fit, their tensors in
/// torchvision's layout (a trunk's hold `features.*` only), what they expect of their input and
/// where they came from. Every source opens to one ([`Weights::open`]); a network is made of
/// them by [`Vgg::from_weights`]; training starts from them (`train --pretrained`).
#[derive(Debug, Clone)]
pub struct Weights {
    pub config: VggConfig,
    pub dict: StateDict,
    pub preset: Preset,
    /// The convolutions only (Keras' `include_top=False`, torchvision's `IMAGENET1K_FEATURES`,
    /// or any head dropped by [`Options::no_top`]): they classify nothing.
    pub trunk: bool,
    pub origin: Origin,
}

/// Where weights came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// What the user named: a path, a run folder, `torchvision:vgg16`.
    pub given: String,
    /// The file read (the cached download, a run's checkpoint).
    pub file: PathBuf,
    /// The layout the file was in, before renaming to torchvision's.
    pub layout: Layout,
    /// A training run's folder, when the weights are a run's.
    pub run: Option<PathBuf>,
    /// The keys a dropped head held ([`Options::no_top`]): whatever follows the convolutions,
    /// of any count and width.
    pub dropped: Vec<String>,
}

/// Drops everything but the convolutions (`features.*`): a head of any shape, as renamed or
/// left unknown by its layout. Returns the keys dropped.
fn drop_head(dict: &mut StateDict) -> Vec<String> {
    let dropped: Vec<String> = dict
        .keys()
        .filter(|k| !k.starts_with("features."))
        .cloned()
        .collect();
    for k in &dropped {
        dict.remove(k);
    }
    dropped
}

/// Weights opened with their preset onto a device ([`open`]).
pub struct Opened {
    pub model: Vgg,
    pub preset: Preset,
    /// The weights are a trunk: the network's head is fresh and means nothing.
    pub trunk: bool,
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

impl Weights {
    /// Opens the weights `source` names with their preset: a run folder or a run's checkpoint
    /// carries its own network and preset; a published name (`torchvision:NAME`) its own,
    /// fetched into the cache unless it is there; any other file is read as `config` (asked for
    /// only then), with the preset it carries (files `vgg convert` wrote), else its layout's:
    /// the authors' Caffe preprocessing for every Keras file and `.caffemodel`
    /// (keras.applications' VGG16/19 take `preprocess_input`'s "caffe" mode), a Keras ONNX
    /// export and Caffe- or Keras-named dicts, torchvision's for the rest; `options.convention`
    /// overrides both. A file without a classifier opens as a trunk. Strict: every tensor the
    /// network has, with its shape, finite, and no other.
    pub fn open(
        source: &Path,
        config: impl FnOnce() -> Result<VggConfig, VggError>,
        options: &Options,
        progress: Progress<'_>,
    ) -> Result<Self, VggError> {
        let given = source.display().to_string();
        let mut weights =
            if let Some(name) = source.to_str().and_then(|p| p.strip_prefix("torchvision:")) {
                open_published(name, options, progress)?
            } else if let Some((dir, file)) = run_of(source) {
                open_run(&dir, &file)?
            } else {
                open_file(source, config()?, options)?
            };
        weights.origin.given = given;
        if options.no_top || weights.trunk {
            weights.origin.dropped.extend(drop_head(&mut weights.dict));
            weights.trunk = true;
        }
        let file = weights.origin.file.clone();
        if weights.trunk {
            check_trunk(&weights.config, &weights.dict, &file)?;
        } else {
            check_state_dict(&weights.config, &weights.dict, &file)?;
        }
        check_finite(&weights.dict, &file)?;
        weights.preset.normalize = weights.preset.normalize.with(&options.overrides)?;
        Ok(weights)
    }
}

impl Vgg {
    /// The network `weights` make, on `device` (strict, as they were opened; a trunk's head is
    /// drawn fresh).
    pub fn from_weights(weights: &Weights, device: &Device) -> Result<Self, VggError> {
        let file = &weights.origin.file;
        if weights.trunk {
            Vgg::from_trunk_dict(&weights.config, &weights.dict, file, device)
        } else {
            Vgg::from_state_dict(&weights.config, &weights.dict, file, device)
        }
    }
}

/// [`Weights::open`] and [`Vgg::from_weights`] at once: the network on `device` with its preset.
pub fn open(
    path: &Path,
    config: impl FnOnce() -> Result<VggConfig, VggError>,
    options: &Options,
    device: &Device,
    progress: Progress<'_>,
) -> Result<Opened, VggError> {
    let weights = Weights::open(path, config, options, progress)?;
    Ok(Opened {
        model: Vgg::from_weights(&weights, device)?,
        preset: weights.preset,
        trunk: weights.trunk,
    })
}

/// A run's checkpoint (burn's record) with the network and preset of its weights card.
fn open_run(dir: &Path, file: &Path) -> Result<Weights, VggError> {
    let Card { model, preset } = Card::read(dir)?;
    // The record is read onto the CPU and handed on as tensors.
    let dict = Vgg::load(&model, file, &Device::flex())?.state_dict();
    Ok(Weights {
        config: model,
        dict,
        // A run carries its own preset; only the caller's corrections
        // ([`Options::overrides`]) apply.
        preset,
        trunk: false,
        origin: Origin {
            given: String::new(),
            file: file.to_path_buf(),
            layout: Layout::Torchvision,
            run: Some(dir.to_path_buf()),
            dropped: Vec::new(),
        },
    })
}

/// A weight file of any format, read as `config`.
fn open_file(path: &Path, config: VggConfig, options: &Options) -> Result<Weights, VggError> {
    if !path.exists() {
        return Err(VggError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such weight file or run folder",
            ),
        ));
    }
    let mut dropped = Vec::new();
    let (dict, layout, carried) = if Format::of(path)? == Format::Burn {
        let dict = Vgg::load(&config, path, &Device::flex())?.state_dict();
        (dict, Layout::Torchvision, None)
    } else {
        let file = read_weight_file(path)?;
        let corrupt = |reason: String| VggError::CorruptWeights {
            path: path.to_path_buf(),
            format: "weights",
            reason,
        };
        let mut dict = to_torchvision(file.dict, file.layout, &config).map_err(corrupt)?;
        if options.no_top {
            dropped = drop_head(&mut dict);
        }
        let trunk = is_trunk(&dict);
        let mut carried =
            Preset::from_metadata(&file.metadata, (!trunk).then_some(config.num_classes))
                .map_err(corrupt)?;
        if trunk && let Some(p) = carried.as_mut() {
            // A trunk classifies nothing: its head's names do not carry over.
            p.classes = Preset::published(Convention::None, config.num_classes).classes;
        }
        (dict, file.layout, carried)
    };
    // A preset the file carries (one we wrote) is the file's word; a convention the caller
    // names overrides its preprocessing (its classes, crop and scale stay); otherwise the
    // layout's own, told before any renaming.
    let preset = match (options.convention, carried) {
        (None, Some(preset)) => preset,
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
                Layout::Torchvision | Layout::Timm => Convention::Torchvision,
                Layout::Caffe | Layout::Keras => Convention::Caffe,
            }),
            config.num_classes,
        ),
    };
    Ok(Weights {
        trunk: is_trunk(&dict),
        config,
        dict,
        preset,
        origin: Origin {
            given: String::new(),
            file: path.to_path_buf(),
            layout,
            run: None,
            dropped,
        },
    })
}

/// `torchvision:NAME`: the published file, fetched into the cache unless it is there, with its
/// own network and preprocessing (a trunk for `vgg16_features`, whose classifier is NaN).
fn open_published(
    name: &str,
    options: &Options,
    progress: Progress<'_>,
) -> Result<Weights, VggError> {
    let published = Published::find(name)?;
    let cache = options
        .cache
        .clone()
        .or_else(download::default_cache)
        .ok_or_else(|| {
            VggError::bad_config(
                "cache",
                "has no default here (neither XDG_CACHE_HOME nor HOME is an absolute path)",
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
    // Published weights carry their own preset; only the caller's corrections apply.
    let dict = read_state_dict(&file)?;
    Ok(Weights {
        preset: published.preset(),
        config,
        dict,
        trunk: published.trunk,
        origin: Origin {
            given: String::new(),
            file,
            layout: Layout::Torchvision,
            run: None,
            dropped: Vec::new(),
        },
    })
}

/// The network of a weight file in torchvision's layout, told by its keys and shapes alone
/// ([`VggConfig::infer`]): for weights whose network nobody names, such as the paper's net A
/// handed to a deeper net.
pub fn infer_config(path: &Path) -> Result<VggConfig, VggError> {
    let dict = read_state_dict(path)?;
    VggConfig::infer(dict.iter().map(|(k, t)| (k.as_str(), t.shape.as_slice()))).ok_or_else(|| {
        VggError::CorruptWeights {
            path: path.to_path_buf(),
            format: "weights",
            reason: "its keys and shapes are not those of a VGG in torchvision's layout, so its \
                     network cannot be told"
                .into(),
        }
    })
}
