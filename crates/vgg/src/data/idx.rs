//! MNIST / Fashion-MNIST IDX files (LeCun's format), plain or gzip.
//! Debian's `dataset-fashion-mnist` installs them in `/usr/share/datasets/fashion-mnist/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, Image, Images};
use crate::error::VggError;

/// Fashion-MNIST's class names (Zalando's README), used when the images are 10-class IDX.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Finds `(images, labels)` files for `split` (`train` or `test`/`t10k`) at `path`: the images
/// file itself, or a folder holding them.
pub fn find(path: &Path, split: &str) -> Option<(PathBuf, PathBuf)> {
    let prefix = if split == "train" { "train" } else { "t10k" };
    let images = if path.is_file() {
        path.to_path_buf()
    } else {
        ["", ".gz"]
            .iter()
            .map(|ext| path.join(format!("{prefix}-images-idx3-ubyte{ext}")))
            .find(|p| p.exists())?
    };
    let name = images.file_name()?.to_str()?;
    if !name.contains("-images-idx3-ubyte") {
        return None;
    }
    let labels_name = name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte");
    Some((images.clone(), images.with_file_name(labels_name)))
}

fn read_all(path: &Path) -> Result<Vec<u8>, VggError> {
    let raw = std::fs::read(path).map_err(|e| VggError::io(path, e))?;
    gunzip(path, raw)
}

/// The bytes, decompressed when they are gzip.
fn gunzip(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, VggError> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| VggError::Dataset {
                path: path.to_path_buf(),
                reason: format!("bad gzip: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file: magic `0 0 8 ndim`, big-endian dims, then u8 data.
fn parse(path: &Path, bytes: &[u8], ndim: u8) -> Result<(Vec<usize>, Vec<u8>), VggError> {
    let bad = |reason: String| VggError::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 8 || bytes[3] != ndim {
        return Err(bad(format!(
            "not an IDX file of {ndim}-d unsigned bytes (bad magic number)"
        )));
    }
    let header = 4 + 4 * ndim as usize;
    if bytes.len() < header {
        return Err(bad("truncated header".into()));
    }
    let dims: Vec<usize> = (0..ndim as usize)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .collect();
    let len: usize = dims.iter().product();
    if bytes.len() < header + len {
        return Err(bad(format!(
            "truncated: the header promises {len} bytes of data, the file has {}",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..header + len].to_vec()))
}

/// Reads an images file and its labels file.
pub fn read(images: &Path, labels: &Path) -> Result<Dataset, VggError> {
    let image_bytes = read_all(images)?;
    if !labels.exists() {
        return Err(VggError::Dataset {
            path: labels.to_path_buf(),
            reason: "the labels file beside the images is missing".into(),
        });
    }
    from_bytes(images, image_bytes, labels, read_all(labels)?)
}

/// Parses IDX images and labels already in memory (plain or gzip); the paths name them in
/// errors.
pub fn from_bytes(
    images: &Path,
    image_bytes: Vec<u8>,
    labels: &Path,
    label_bytes: Vec<u8>,
) -> Result<Dataset, VggError> {
    let (dims, pixels) = parse(images, &gunzip(images, image_bytes)?, 3)?;
    let (ldims, labels_raw) = parse(labels, &gunzip(labels, label_bytes)?, 1)?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    if ldims[0] != n {
        return Err(VggError::Dataset {
            path: labels.to_path_buf(),
            reason: format!("{} labels for {n} images", ldims[0]),
        });
    }
    let images_vec = pixels
        .chunks_exact(h * w)
        .map(|p| Image {
            channels: 1,
            height: h,
            width: w,
            pixels: p.to_vec(),
        })
        .collect();
    let labels_vec: Vec<usize> = labels_raw.iter().map(|&l| l as usize).collect();
    let max = labels_vec.iter().copied().max().unwrap_or(0);
    let classes = if max < 10 {
        FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..=max).map(|c| c.to_string()).collect()
    };
    Ok(Dataset {
        name: images.display().to_string(),
        images: Images::Memory(images_vec),
        labels: labels_vec,
        classes,
    })
}
