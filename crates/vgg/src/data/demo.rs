//! The embedded demo dataset: a class-balanced subset of Fashion-MNIST (MIT licence,
//! Zalando Research; taken from Debian's `dataset-fashion-mnist`), so that `vgg train` works
//! on a fresh clone with no download. 500 training and 100 test images per class.

use std::path::Path;

use super::{Dataset, idx};
use crate::error::VggError;

const TRAIN_IMAGES: &[u8] = include_bytes!("../../data/demo/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../data/demo/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../data/demo/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../data/demo/t10k-labels-idx1-ubyte.gz");

/// The demo's `train` or `test` split.
pub fn load(split: &str) -> Result<Dataset, VggError> {
    let (images, labels) = if split == "train" {
        (TRAIN_IMAGES, TRAIN_LABELS)
    } else {
        (TEST_IMAGES, TEST_LABELS)
    };
    let mut set = idx::from_bytes(
        Path::new(&format!("<embedded {split} images>")),
        images.to_vec(),
        Path::new(&format!("<embedded {split} labels>")),
        labels.to_vec(),
    )?;
    set.name = format!("demo Fashion-MNIST subset ({split})");
    Ok(set)
}

/// `true` when `path` names the demo data rather than a file.
pub fn is_demo(path: Option<&Path>) -> bool {
    path.is_none_or(|p| p.as_os_str() == "demo")
}
