//! What travels with weights (torchvision's `Weights` idea): the preprocessing they expect,
//! the crop and scale they were trained at, and their class names ([`Preset`]); weights with
//! their preset from what a user points at ([`Weights`], [`open()`]); torchvision's published
//! VGG weights by name ([`zoo`]) and their download into a cache ([`download`]).

pub mod card;
pub mod download;
pub mod open;
pub mod zoo;

use serde::{Deserialize, Serialize};

pub use card::Card;
pub use open::{Opened, Options, Origin, Weights, open};

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
    /// None: RGB in [0, 1] as they are (to be completed by [`NormalizeOverrides`]).
    None,
}

/// A caller's corrections to a preprocessing: each field given replaces the preset's (a Keras
/// model fine-tuned with `rescale=1/255`, say).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NormalizeOverrides {
    pub scale: Option<f32>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub bgr: Option<bool>,
}

impl Normalize {
    /// This preprocessing with `o`'s fields where it gives them; `Err` for a mean or std that is
    /// empty, not finite, or (std) zero.
    pub fn with(mut self, o: &NormalizeOverrides) -> Result<Self, crate::error::VggError> {
        let check = |what: &str, v: &[f32]| {
            if v.is_empty()
                || v.iter().any(|x| !x.is_finite())
                || (what == "std" && v.contains(&0.0))
            {
                Err(crate::error::VggError::bad_config(
                    what,
                    format!(
                        "{v:?} must be finite numbers{}",
                        if what == "std" { ", none 0" } else { "" }
                    ),
                ))
            } else {
                Ok(v.to_vec())
            }
        };
        if let Some(s) = o.scale {
            if !(s.is_finite() && s > 0.0) {
                return Err(crate::error::VggError::bad_config(
                    "pixel_scale",
                    format!("is {s}; it must be positive"),
                ));
            }
            self.scale = s;
        }
        if let Some(m) = &o.mean {
            self.mean = check("mean", m)?;
        }
        if let Some(s) = &o.std {
            self.std = check("std", s)?;
        }
        if let Some(b) = o.bgr {
            self.bgr = b;
        }
        Ok(self)
    }

    /// In words: the convention's name where it is one, else the numbers.
    pub fn describe(&self) -> String {
        if *self == Self::torchvision() {
            "torchvision's: RGB in [0, 1], ImageNet mean and std".into()
        } else if *self == Self::caffe() {
            "Caffe's: BGR in 0-255 minus the mean pixel".into()
        } else {
            format!(
                "{} x {}, mean {:?}, std {:?}",
                if self.bgr { "BGR" } else { "RGB" },
                self.scale,
                self.mean,
                self.std
            )
        }
    }

    /// Raw pixels in [0, 1], RGB: nothing subtracted.
    pub fn none() -> Self {
        Self {
            scale: 1.0 / 255.0,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            bgr: false,
        }
    }
}

/// How an image is rescaled to a test scale and centre-cropped: the way the weights were
/// trained to see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Bilinear interpolation between the nearest pixels (no antialiasing), the longer side
    /// rounded, the crop's offset rounded down: our training pipeline's, and what Caffe's and
    /// Keras' VGG tools feed.
    #[default]
    Bilinear,
    /// torchvision's `Resize(Q)` + `CenterCrop(C)` on tensors: antialiased bilinear
    /// ([`crate::data::transform::resize_antialias`]), the longer side `int(Q * long / short)` (truncated), the crop's
    /// offset `round((size - C) / 2)` (half to even, as Python rounds).
    Torchvision,
}

/// How a network's weights expect to be used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub normalize: Normalize,
    /// The side of the square crop the network was trained on (224, or 32 for small images).
    pub crop: usize,
    /// The test scale Q (shorter side) the weights were trained for (256 for torchvision's).
    pub scale: usize,
    /// Class names, indexed by output.
    pub classes: Vec<String>,
    /// How images are rescaled and cropped: torchvision's antialiased resize for its weights,
    /// plain bilinear for Caffe-style weights and our runs.
    #[serde(default)]
    pub resize: Resize,
}

impl Preset {
    /// The preset of published ImageNet-style weights of `num_classes` outputs: crop 224,
    /// scale 256, ImageNet's class names for 1000 classes (numbers otherwise).
    pub fn published(convention: Convention, num_classes: usize) -> Self {
        Self {
            normalize: match convention {
                Convention::Torchvision => Normalize::torchvision(),
                Convention::Caffe => Normalize::caffe(),
                Convention::None => Normalize::none(),
            },
            crop: 224,
            scale: 256,
            resize: match convention {
                Convention::Torchvision => Resize::Torchvision,
                Convention::Caffe | Convention::None => Resize::Bilinear,
            },
            classes: if num_classes == 1000 {
                imagenet_classes()
            } else {
                (0..num_classes).map(|i| i.to_string()).collect()
            },
        }
    }
}

/// The metadata key under which the weight files we write carry their preset as JSON
/// (safetensors' `__metadata__`), so that weights converted from Keras or Caffe keep Caffe's
/// preprocessing and their class names.
pub const PRESET_KEY: &str = "vgg.preset";

impl Preset {
    /// The preset as weight-file metadata ([`PRESET_KEY`]).
    pub fn to_metadata(&self) -> std::collections::BTreeMap<String, String> {
        let json = serde_json::to_string(self).expect("a preset serialises");
        [(PRESET_KEY.to_string(), json)].into()
    }

    /// [`Preset::to_metadata`] plus the same facts as plain entries, for an ONNX model's
    /// `metadata_props` that people and other runtimes read: `mean`, `std` and `pixel_scale`
    /// (`(pixel * pixel_scale - mean) / std`), `channel_order` (RGB or BGR), `resize`, `crop`,
    /// `scale` (the shorter side before the crop) and `classes` (one per line).
    pub fn to_onnx_metadata(&self) -> std::collections::BTreeMap<String, String> {
        let list = |v: &[f32]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let n = &self.normalize;
        let mut m = self.to_metadata();
        m.insert("mean".into(), list(&n.mean));
        m.insert("std".into(), list(&n.std));
        m.insert("pixel_scale".into(), n.scale.to_string());
        m.insert(
            "channel_order".into(),
            if n.bgr { "BGR" } else { "RGB" }.into(),
        );
        m.insert(
            "resize".into(),
            match self.resize {
                Resize::Bilinear => "bilinear",
                Resize::Torchvision => "torchvision (antialiased bilinear)",
            }
            .into(),
        );
        m.insert("crop".into(), self.crop.to_string());
        m.insert("scale".into(), self.scale.to_string());
        m.insert("classes".into(), self.classes.join("\n"));
        m
    }

    /// Refuses what no weights can expect: a mean, std or scale that is not usable, a crop
    /// larger than the scale, class names that do not fit `num_classes` outputs (`None`: a
    /// trunk's, whose classes are not used). `Err` says what is wrong.
    pub fn check(&self, num_classes: Option<usize>) -> Result<(), String> {
        let n = &self.normalize;
        let finite = n.mean.iter().chain(&n.std).all(|v| v.is_finite())
            && !n.std.contains(&0.0)
            && n.scale.is_finite()
            && n.scale > 0.0;
        if n.mean.is_empty() || n.std.is_empty() || !finite {
            return Err("holds a mean, std or scale that is not usable".into());
        }
        if self.crop == 0 || self.scale < self.crop {
            return Err(format!(
                "holds crop {} and scale {}; the scale must be at least the crop",
                self.crop, self.scale
            ));
        }
        if let Some(num_classes) = num_classes
            && self.classes.len() != num_classes
        {
            return Err(format!(
                "names {} classes for a network of {num_classes}",
                self.classes.len()
            ));
        }
        Ok(())
    }

    /// The preset a file's metadata carries, if any; `Err` (the reason) for one that is not
    /// readable, or whose class names do not fit a network of `num_classes` outputs (`None`
    /// for a trunk, whose head and so whose classes are not used).
    pub fn from_metadata(
        metadata: &std::collections::BTreeMap<String, String>,
        num_classes: Option<usize>,
    ) -> Result<Option<Self>, String> {
        let Some(json) = metadata.get(PRESET_KEY) else {
            return Ok(None);
        };
        let preset: Self = serde_json::from_str(json)
            .map_err(|e| format!("its `{PRESET_KEY}` metadata is not a preset: {e}"))?;
        preset
            .check(num_classes)
            .map_err(|e| format!("its `{PRESET_KEY}` metadata {e}"))?;
        Ok(Some(preset))
    }
}

/// ImageNet-1k's 1000 class names, in the order of torchvision's and Caffe's outputs (public
/// data, as shipped by Debian's opencv-doc, `classification_classes_ILSVRC2012.txt`).
pub fn imagenet_classes() -> Vec<String> {
    include_str!("../../data/imagenet_classes.txt")
        .lines()
        .map(|l| l.to_string())
        .collect()
}

/// The WordNet ids of ImageNet-1k's classes in the same order (`n01440764` ... `n15075141`,
/// sorted, as ImageNet's folders are named; public data, as shipped by timm,
/// `timm/data/_info/imagenet_synsets.txt`, whose lemmas equal [`imagenet_classes`] line by line).
pub fn imagenet_wnids() -> Vec<String> {
    include_str!("../../data/imagenet_wnids.txt")
        .lines()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_wnids_are_1000_sorted_ids() {
        let w = imagenet_wnids();
        assert_eq!(w.len(), 1000);
        assert_eq!((w[0].as_str(), w[999].as_str()), ("n01440764", "n15075141"));
        assert!(w.windows(2).all(|p| p[0] < p[1]));
    }

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
