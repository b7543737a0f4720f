//! MNIST / Fashion-MNIST IDX files (LeCun's format), plain or gzip.
//! Debian's `dataset-fashion-mnist` installs them in `/usr/share/datasets/fashion-mnist/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, Image, Images, Split};
use crate::error::VggError;
use crate::limits;

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

/// Finds `(images, labels)` files for `split` at `path`: the images file itself, or a folder
/// holding them.
pub fn find(path: &Path, split: Split) -> Option<(PathBuf, PathBuf)> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
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

/// The file's bytes as stored (gzip or not), refusing a file larger than a dataset may be.
fn read_raw(path: &Path) -> Result<Vec<u8>, VggError> {
    let size = std::fs::metadata(path)
        .map_err(|e| VggError::io(path, e))?
        .len();
    limits::check(
        || format!("dataset {}: file size in bytes", path.display()),
        size,
        limits::get().max_dataset_bytes,
        "max_dataset_bytes",
    )?;
    std::fs::read(path).map_err(|e| VggError::io(path, e))
}

/// Parses an IDX file (plain or gzip): magic `0 0 8 ndim`, big-endian dims, then u8 data.
/// The header's size is checked against the limits before the data is read, and no more than
/// that is decompressed, so a small gzip cannot expand into gigabytes.
fn parse(path: &Path, raw: &[u8], ndim: u8) -> Result<(Vec<usize>, Vec<u8>), VggError> {
    let bad = |reason: String| VggError::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader: Box<dyn Read + '_> = if raw.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut header = vec![0u8; 4 + 4 * ndim as usize];
    reader.read_exact(&mut header).map_err(|e| {
        bad(format!(
            "not an IDX file: its header is unreadable or truncated ({e})"
        ))
    })?;
    if header[..4] != [0, 0, 8, ndim] {
        return Err(bad(format!(
            "not an IDX file of {ndim}-d unsigned bytes (bad magic number)"
        )));
    }
    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    if dims.contains(&0) {
        return Err(bad(format!(
            "the header's sizes are {dims:?}: it holds no images"
        )));
    }
    let len = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    limits::check(
        || format!("dataset {}: bytes its header promises", path.display()),
        len,
        limits::get().max_dataset_bytes,
        "max_dataset_bytes",
    )?;
    let mut data = Vec::new();
    reader
        .take(len)
        .read_to_end(&mut data)
        .map_err(|e| bad(format!("bad gzip: {e}")))?;
    if (data.len() as u64) < len {
        return Err(bad(format!(
            "truncated: the header promises {len} bytes of data, the file has {}",
            data.len()
        )));
    }
    Ok((dims, data))
}

/// Reads an images file and its labels file.
pub fn read(images: &Path, labels: &Path) -> Result<Dataset, VggError> {
    let image_bytes = read_raw(images)?;
    if !labels.exists() {
        return Err(VggError::Dataset {
            path: labels.to_path_buf(),
            reason: "the labels file beside the images is missing".into(),
        });
    }
    from_bytes(images, &image_bytes, labels, &read_raw(labels)?)
}

/// Parses IDX images and labels already in memory (plain or gzip); the paths name them in
/// errors. Ten classes are named as Fashion-MNIST's when a path says `fashion`, as digits
/// otherwise (MNIST has the same format).
pub fn from_bytes(
    images: &Path,
    image_bytes: &[u8],
    labels: &Path,
    label_bytes: &[u8],
) -> Result<Dataset, VggError> {
    let (dims, pixels) = parse(images, image_bytes, 3)?;
    let (ldims, labels_raw) = parse(labels, label_bytes, 1)?;
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
    let fashion = images
        .to_string_lossy()
        .to_ascii_lowercase()
        .contains("fashion");
    let classes = if max < 10 && fashion {
        FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..=max.max(9)).map(|c| c.to_string()).collect()
    };
    Ok(Dataset {
        name: images.display().to_string(),
        images: Images::Memory(images_vec),
        labels: labels_vec,
        classes,
    })
}
