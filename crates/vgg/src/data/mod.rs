//! Datasets for training and evaluation: an image folder, MNIST/Fashion-MNIST IDX files,
//! CIFAR-10's binary batches, and the embedded Fashion-MNIST demo subset.
//!
//! Every source yields [`Image`]s (8-bit, planar `[C, H, W]`) with a class index; the
//! [`transform`] module turns them into network inputs (Section 3.1's preprocessing and
//! augmentation) and [`loader`] does so on worker threads.

pub mod cifar;
pub mod demo;
pub mod folder;
pub mod idx;
mod jpeg;
pub mod loader;
pub mod source;
pub mod transform;

use std::path::{Path, PathBuf};

use crate::error::VggError;
pub use crate::rng::Rng;

/// One 8-bit image, planar `[channels, height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
}

/// Where a dataset's images live: decoded in memory (IDX, CIFAR, demo) or as files decoded
/// when needed (image folders, which may not fit in memory).
#[derive(Debug, Clone)]
pub enum Images {
    Memory(Vec<Image>),
    Files(Vec<PathBuf>),
}

/// A labelled set of images.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// What the set is, for messages and logs (`fashion-mnist train`, a folder path).
    pub name: String,
    pub images: Images,
    pub labels: Vec<usize>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`, decoded.
    pub fn image(&self, i: usize) -> Result<Image, VggError> {
        match &self.images {
            Images::Memory(images) => Ok(images[i].clone()),
            Images::Files(paths) => folder::decode(&paths[i]),
        }
    }

    /// What names image `i` in messages: its file, or `DATASET image i`.
    pub fn item_path(&self, i: usize) -> PathBuf {
        match &self.images {
            Images::Files(paths) => paths[i].clone(),
            Images::Memory(_) => format!("{} image {i}", self.name).into(),
        }
    }

    /// Checks what training needs: at least one image, every label below the class count.
    /// Refuses a dataset whose classes are not `classes` in that order (a run's, which its
    /// outputs score): a folder renamed, missing or added shifts every label after it.
    /// An empty `classes` (a run written before runs kept them) checks nothing.
    pub fn check_classes(&self, classes: &[String], what: &str) -> Result<(), VggError> {
        if classes.is_empty() || self.classes == classes {
            return Ok(());
        }
        let at = self.classes.iter().zip(classes).position(|(a, b)| a != b);
        let reason = match at {
            Some(i) => format!(
                "its class {i} is `{}` where {what} has `{}`; the classes must be the same, in the same order",
                self.classes[i], classes[i]
            ),
            None => format!(
                "it has {} classes where {what} has {}; the classes must be the same, in the same order",
                self.classes.len(),
                classes.len()
            ),
        };
        Err(VggError::Dataset {
            path: self.name.clone().into(),
            reason,
        })
    }

    pub fn check(&self, num_classes: usize) -> Result<(), VggError> {
        if self.is_empty() {
            return Err(VggError::Dataset {
                path: self.name.clone().into(),
                reason: "it holds no images".into(),
            });
        }
        if let Some((i, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l >= num_classes)
        {
            return Err(VggError::LabelOutOfRange {
                dataset: self.name.clone(),
                index: i,
                label,
                num_classes,
            });
        }
        Ok(())
    }

    /// The subset at `indices` (in that order).
    pub fn subset(&self, indices: &[usize], name: &str) -> Dataset {
        let images = match &self.images {
            Images::Memory(v) => Images::Memory(indices.iter().map(|&i| v[i].clone()).collect()),
            Images::Files(v) => Images::Files(indices.iter().map(|&i| v[i].clone()).collect()),
        };
        Dataset {
            name: name.to_string(),
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }

    /// Splits off a held-out `fraction` for validation, with a fixed `seed`, keeping classes
    /// in proportion. Returns `(train, validation)`.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset), VggError> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(VggError::bad_config(
                "val_fraction",
                format!("is {fraction}; it must be in (0, 1)"),
            ));
        }
        let mut rng = Rng::new(seed);
        let mut train = Vec::new();
        let mut val = Vec::new();
        for class in 0..self.classes.len().max(1) {
            let mut members: Vec<usize> = (0..self.len())
                .filter(|&i| self.labels[i] == class)
                .collect();
            rng.shuffle(&mut members);
            let held = ((members.len() as f64) * fraction).round() as usize;
            val.extend_from_slice(&members[..held]);
            train.extend_from_slice(&members[held..]);
        }
        train.sort_unstable();
        val.sort_unstable();
        Ok((
            self.subset(&train, &format!("{} (train split)", self.name)),
            self.subset(&val, &format!("{} (validation split)", self.name)),
        ))
    }
}

/// Which part of a dataset that holds both (IDX, CIFAR-10's batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train-*` IDX files, `data_batch_*.bin`.
    Train,
    /// `t10k-*` IDX files, `test_batch.bin`.
    Test,
}

/// Reads a dataset from `path`, recognising the format: a folder with one sub-folder per
/// class; a folder or file of MNIST-style IDX (`*-images-idx3-ubyte[.gz]`, with the labels
/// beside it); or CIFAR-10's binary batches (`data_batch_*.bin` / `test_batch.bin`).
pub fn open(path: &Path, split: Split) -> Result<Dataset, VggError> {
    if !path.exists() {
        return Err(VggError::Dataset {
            path: path.to_path_buf(),
            reason: "no such file or folder".into(),
        });
    }
    if let Some(found) = idx::find(path, split) {
        return idx::read(&found.0, &found.1);
    }
    if let Some(files) = cifar::find(path, split) {
        return cifar::read(&files);
    }
    if path.is_dir() {
        return folder::read(path);
    }
    Err(VggError::Dataset {
        path: path.to_path_buf(),
        reason: "not a dataset: expected a folder of class folders, MNIST IDX files or CIFAR-10 .bin batches".into(),
    })
}
