//! An image folder (torchvision's `ImageFolder`): one sub-folder per class, sorted by name,
//! holding JPEG or PNG files. Grey, grey+alpha, RGBA and palette images are decoded to 8-bit
//! grey or RGB; the transform converts them to the network's channels.

use std::path::{Path, PathBuf};

use super::{Dataset, Image, Images};
use crate::error::VggError;

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "JPEG"];

pub fn read(root: &Path) -> Result<Dataset, VggError> {
    let list = |dir: &Path| -> Result<Vec<PathBuf>, VggError> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| VggError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        Ok(entries)
    };
    let class_dirs: Vec<PathBuf> = list(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        return Err(VggError::Dataset {
            path: root.to_path_buf(),
            reason: "no class sub-folders (expected ROOT/CLASS/IMAGE.jpg)".into(),
        });
    }
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    let mut classes = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        classes.push(
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
        for file in list(dir)? {
            let ext = file
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if EXTENSIONS.contains(&ext.as_str()) {
                paths.push(file);
                labels.push(label);
            }
        }
    }
    Ok(Dataset {
        name: root.display().to_string(),
        images: Images::Files(paths),
        labels,
        classes,
    })
}

/// Decodes one JPEG/PNG file to 8-bit grey (1 channel) or RGB (3 channels), planar.
pub fn decode(path: &Path) -> Result<Image, VggError> {
    let bad = |reason: String| VggError::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::open(path).map_err(|e| VggError::io(path, e))?;
    let reader = reader
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let decoded = reader.decode().map_err(|e| bad(e.to_string()))?;
    let grey = matches!(
        decoded.color(),
        image::ColorType::L8
            | image::ColorType::L16
            | image::ColorType::La8
            | image::ColorType::La16
    );
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    let (channels, interleaved) = if grey {
        (1, decoded.into_luma8().into_raw())
    } else {
        (3, decoded.into_rgb8().into_raw())
    };
    let mut pixels = vec![0u8; interleaved.len()];
    for (i, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            pixels[c * height * width + i] = v;
        }
    }
    Ok(Image {
        channels,
        height,
        width,
        pixels,
    })
}
