//! The embedded demo dataset: a class-balanced subset of Fashion-MNIST (MIT licence,
//! Zalando Research; taken from Debian's `dataset-fashion-mnist`), so that `vgg train` works
//! on a fresh clone with no download. 500 training and 100 test images per class.

use std::path::Path;

use super::{Dataset, Split, idx};
use crate::error::VggError;

const TRAIN_IMAGES: &[u8] = include_bytes!("../../data/demo/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../data/demo/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../data/demo/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../data/demo/t10k-labels-idx1-ubyte.gz");

/// The demo's training or test split.
pub fn load(split: Split) -> Result<Dataset, VggError> {
    let (images, labels, name) = match split {
        Split::Train => (TRAIN_IMAGES, TRAIN_LABELS, "train"),
        Split::Test => (TEST_IMAGES, TEST_LABELS, "test"),
    };
    let mut set = idx::from_bytes(
        Path::new(&format!("<embedded fashion-mnist {name} images>")),
        images,
        Path::new(&format!("<embedded fashion-mnist {name} labels>")),
        labels,
    )?;
    set.name = format!("demo Fashion-MNIST subset ({name})");
    Ok(set)
}
