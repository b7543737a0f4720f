//! torchvision's published VGG weights (`torchvision.models.VGG*_Weights`), by name: where each
//! file is, the SHA-256 prefix its name carries, its network and preprocessing, and its
//! ImageNet-1k accuracy (center crop 224 of a shorter side of 256).

use super::{Normalize, Preset, imagenet_classes};
use crate::arch::VggConfig;
use crate::error::VggError;

/// Where torchvision serves its weights; replaced by the caller for a mirror (or a test server).
pub const TORCHVISION_URL: &str = "https://download.pytorch.org/models";

/// One published file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// The name after `torchvision:` (`vgg16`, `vgg16_bn`, `vgg16_features`).
    pub name: &'static str,
    /// The architecture ([`VggConfig::named`]).
    pub arch: &'static str,
    /// The file's name on the server; it ends in the first hex digits of its SHA-256.
    pub file: &'static str,
    /// ImageNet-1k top-1 and top-5 accuracy in %, as torchvision lists them (`None`: a trunk).
    pub accuracy: Option<(f64, f64)>,
    /// The file holds a trunk: `vgg16_features` (amdegroot's SSD backbone) ships a classifier
    /// of NaN, which is dropped.
    pub trunk: bool,
    /// The file's size in MB.
    pub size_mb: f64,
}

/// Every VGG torchvision publishes.
pub const TORCHVISION: [Published; 9] = [
    entry(
        "vgg11",
        "vgg11",
        "vgg11-8a719046.pth",
        Some((69.020, 88.628)),
        506.8,
    ),
    entry(
        "vgg11_bn",
        "vgg11_bn",
        "vgg11_bn-6002323d.pth",
        Some((70.370, 89.810)),
        506.9,
    ),
    entry(
        "vgg13",
        "vgg13",
        "vgg13-19584684.pth",
        Some((69.928, 89.246)),
        507.5,
    ),
    entry(
        "vgg13_bn",
        "vgg13_bn",
        "vgg13_bn-abd245e5.pth",
        Some((71.586, 90.374)),
        507.6,
    ),
    entry(
        "vgg16",
        "vgg16",
        "vgg16-397923af.pth",
        Some((71.592, 90.382)),
        527.8,
    ),
    entry(
        "vgg16_bn",
        "vgg16_bn",
        "vgg16_bn-6c64b313.pth",
        Some((73.360, 91.516)),
        527.9,
    ),
    entry(
        "vgg19",
        "vgg19",
        "vgg19-dcbb9e9d.pth",
        Some((72.376, 90.876)),
        548.1,
    ),
    entry(
        "vgg19_bn",
        "vgg19_bn",
        "vgg19_bn-c79401a0.pth",
        Some((74.218, 91.842)),
        548.1,
    ),
    Published {
        trunk: true,
        ..entry(
            "vgg16_features",
            "vgg16",
            "vgg16_features-amdegroot-88682ab5.pth",
            None,
            527.8,
        )
    },
];

const fn entry(
    name: &'static str,
    arch: &'static str,
    file: &'static str,
    accuracy: Option<(f64, f64)>,
    size_mb: f64,
) -> Published {
    Published {
        name,
        arch,
        file,
        accuracy,
        trunk: false,
        size_mb,
    }
}

impl Published {
    /// The entry of `torchvision:NAME`.
    pub fn find(name: &str) -> Result<Self, VggError> {
        TORCHVISION
            .iter()
            .find(|p| p.name == name)
            .copied()
            .ok_or_else(|| VggError::BadConfig {
                what: "weights".into(),
                reason: format!(
                    "torchvision:{name} is not a published VGG; known: {}",
                    TORCHVISION
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// The hex digits of the file's SHA-256 its name carries (`397923af`).
    pub fn sha256_prefix(&self) -> &'static str {
        let stem = self.file.trim_end_matches(".pth");
        stem.rsplit('-').next().unwrap_or(stem)
    }

    /// The network the file holds.
    pub fn config(&self) -> VggConfig {
        VggConfig::named(self.arch).expect("the table names known architectures")
    }

    /// The preprocessing the weights were trained with: torchvision's ImageNet mean and std,
    /// or for `vgg16_features` the SSD port's 0-255 pixels minus the mean pixel.
    pub fn preset(&self) -> Preset {
        let normalize = if self.trunk {
            Normalize {
                scale: 1.0 / 255.0,
                mean: vec![0.48235, 0.45882, 0.40784],
                std: vec![1.0 / 255.0; 3],
                bgr: false,
            }
        } else {
            Normalize::torchvision()
        };
        Preset {
            normalize,
            crop: 224,
            scale: 256,
            classes: imagenet_classes(),
            resize: super::Resize::Torchvision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hashes_and_networks() {
        let d = Published::find("vgg16").unwrap();
        assert_eq!(d.sha256_prefix(), "397923af");
        assert_eq!(d.config().num_params(), 138_357_544);
        let f = Published::find("vgg16_features").unwrap();
        assert_eq!((f.sha256_prefix(), f.trunk), ("88682ab5", true));
        assert!(Published::find("vgg17").is_err());
        for p in TORCHVISION {
            assert_eq!(p.sha256_prefix().len(), 8, "{}", p.name);
        }
    }
}
