//! CIFAR-10's binary format: records of one label byte then 3072 bytes (R, G, B planes of
//! 32x32), in `data_batch_1.bin` ... `data_batch_5.bin` and `test_batch.bin`.

use std::path::{Path, PathBuf};

use super::{Dataset, Image, Images, Split};
use crate::error::VggError;
use crate::limits;

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const RECORD: usize = 1 + 3 * 32 * 32;

/// The batch files for `split` at `path` (a `.bin` file, or a folder holding the batches).
pub fn find(path: &Path, split: Split) -> Option<Vec<PathBuf>> {
    if path.is_file() {
        return (path.extension()? == "bin").then(|| vec![path.to_path_buf()]);
    }
    let names: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    };
    let files: Vec<PathBuf> = names
        .iter()
        .map(|n| path.join(n))
        .filter(|p| p.exists())
        .collect();
    (!files.is_empty()).then_some(files)
}

/// Reads the batch files, refusing a truncated file, a label that is not one of the ten
/// classes (naming the record), and more data than [`limits::Limits::max_dataset_bytes`].
pub fn read(files: &[PathBuf]) -> Result<Dataset, VggError> {
    let mut total = 0u64;
    for file in files {
        total += std::fs::metadata(file)
            .map_err(|e| VggError::io(file, e))?
            .len();
    }
    limits::check(
        || format!("dataset {}: bytes of its batch files", files[0].display()),
        total,
        limits::get().max_dataset_bytes,
        "max_dataset_bytes",
    )?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| VggError::io(file, e))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(VggError::Dataset {
                path: file.clone(),
                reason: format!(
                    "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)",
                    bytes.len()
                ),
            });
        }
        for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
            let label = record[0] as usize;
            if label >= CIFAR10_CLASSES.len() {
                return Err(VggError::Dataset {
                    path: file.clone(),
                    reason: format!(
                        "record {i} has label {label}; CIFAR-10 labels are 0-9 (is this CIFAR-100 or another format?)"
                    ),
                });
            }
            labels.push(label);
            images.push(Image {
                channels: 3,
                height: 32,
                width: 32,
                pixels: record[1..].to_vec(),
            });
        }
    }
    Ok(Dataset {
        name: files[0]
            .parent()
            .unwrap_or(Path::new("."))
            .display()
            .to_string(),
        images: Images::Memory(images),
        labels,
        classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    })
}
