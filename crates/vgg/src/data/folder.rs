//! An image folder (torchvision's `ImageFolder`): one sub-folder per class, sorted by name,
//! holding JPEG or PNG files. Grey, grey+alpha, RGBA and palette images are decoded to 8-bit
//! grey or RGB; the transform converts them to the network's channels.

use std::path::{Path, PathBuf};

use super::{Dataset, Image, Images};
use crate::error::VggError;
use crate::limits;

/// The image files of a folder dataset: torchvision's `IMG_EXTENSIONS` (and GIF, its first
/// frame).
const EXTENSIONS: [&str; 10] = [
    "jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm",
];

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
///
/// The size in the file's header is checked against [`Limits::max_image_pixels`] before any
/// pixel is decoded, and a JPEG must reach its end-of-image marker: decoders fill a truncated
/// JPEG with grey without a word, where PIL refuses it ("image file is truncated").
///
/// [`Limits::max_image_pixels`]: crate::limits::Limits::max_image_pixels
pub fn decode(path: &Path) -> Result<Image, VggError> {
    let bad = |reason: String| VggError::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let max_pixels = limits::get().max_image_pixels;
    // A compressed file is smaller than its pixels: 8 bytes a pixel bounds any PNG or JPEG.
    let size = std::fs::metadata(path)
        .map_err(|e| VggError::io(path, e))?
        .len();
    limits::check(
        || format!("{}: file size in bytes", path.display()),
        size,
        max_pixels.saturating_mul(8).saturating_add(1 << 20),
        "max_image_pixels",
    )?;
    let bytes = std::fs::read(path).map_err(|e| VggError::io(path, e))?;
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(|e| bad(e.to_string()))
    };
    // Third-party decoders run contained: one that panics on a malformed file is an error
    // naming the file, not a crash.
    use crate::checkpoint::contain::contained;
    let (width, height) = contained(|| {
        reader()
            .map_err(|e| e.to_string())?
            .into_dimensions()
            .map_err(|e| e.to_string())
    })
    .map_err(bad)?;
    limits::check(
        || format!("{}: pixels ({width}x{height})", path.display()),
        width as u64 * height as u64,
        max_pixels,
        "max_image_pixels",
    )?;
    let mut reader = reader()?;
    let mut bounds = image::Limits::default();
    bounds.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(bounds);
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_complete(&bytes) {
        return Err(bad(
            "truncated JPEG: the file ends before its end-of-image marker".into(),
        ));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        let (channels, height, width, interleaved) =
            contained(|| decode_jpeg(&bytes)).map_err(bad)?;
        return Ok(planar(channels, height, width, interleaved));
    }
    let decoded = contained(|| reader.decode().map_err(|e| e.to_string())).map_err(bad)?;
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
    Ok(planar(channels, height, width, interleaved))
}

/// Interleaved pixels (HWC) as a planar [`Image`] (CHW).
fn planar(channels: usize, height: usize, width: usize, interleaved: Vec<u8>) -> Image {
    let mut pixels = vec![0u8; interleaved.len()];
    for (i, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            pixels[c * height * width + i] = v;
        }
    }
    Image {
        channels,
        height,
        width,
        pixels,
    }
}

/// The most pixels a JPEG of `bytes` bytes can really hold: Huffman coding spends at least one
/// bit on each 8x8 block of each component (its DC difference; 2 with its end of block in a
/// baseline scan), so even a progressive grey image of one flat colour holds at most 512
/// pixels a byte. Twice that, and the header's size is one the file cannot fill: the decoder
/// would invent the rest (a 637-byte file declaring 8000x8000).
const JPEG_MAX_PIXELS_PER_BYTE: u64 = 1024;

/// A JPEG decoded strictly: `(channels, height, width, HWC pixels)`, grey as 1 channel, every
/// other colour space as RGB. Where the non-strict decoder fills what it cannot read with grey
/// (a scan cut short, even with its end marker put back; a marker inside the coded data), this
/// is an error; and a size the file cannot hold is refused before anything is allocated.
fn decode_jpeg(bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>), String> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let (width, height) = decoder.dimensions().ok_or("a JPEG without dimensions")?;
    let most = (bytes.len() as u64).saturating_mul(JPEG_MAX_PIXELS_PER_BYTE);
    if (width as u64) * (height as u64) > most {
        return Err(format!(
            "a JPEG of {} bytes cannot hold the {width}x{height} pixels its header declares (at most {most}): corrupt",
            bytes.len()
        ));
    }
    super::jpeg::check_scans(bytes).map_err(|e| format!("corrupt JPEG: {e}"))?;
    let grey = matches!(
        decoder.input_colorspace(),
        Some(ColorSpace::Luma | ColorSpace::LumaA)
    );
    let out = if grey {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let pixels = decoder.decode().map_err(|e| format!("corrupt JPEG: {e}"))?;
    let channels = if grey { 1 } else { 3 };
    if pixels.len() != channels * width * height {
        return Err(format!(
            "corrupt JPEG: decoded {} values for {width}x{height}x{channels}",
            pixels.len()
        ));
    }
    Ok((channels, height, width, pixels))
}

/// Whether a JPEG's bytes reach its end-of-image marker (FF D9), walking its segments by their
/// lengths (so a thumbnail's marker inside EXIF does not count) and the entropy-coded data of
/// each scan (baseline and progressive).
fn jpeg_complete(b: &[u8]) -> bool {
    let mut i = 2; // after SOI
    loop {
        // A marker: one or more 0xFF, then its code.
        if b.get(i) != Some(&0xFF) {
            return false;
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = b.get(i) else {
            return false;
        };
        i += 1;
        match code {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue, // markers without a length
            _ => {
                let Some(len) = b
                    .get(i..i + 2)
                    .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
                else {
                    return false;
                };
                if len < 2 {
                    return false;
                }
                i += len;
                if code == 0xDA {
                    // Entropy-coded data: up to the next marker that is not a stuffed 0xFF00 or
                    // a restart marker.
                    loop {
                        match (b.get(i), b.get(i + 1)) {
                            (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => i += 2,
                            (Some(0xFF), Some(0xFF)) => i += 1,
                            (Some(0xFF), Some(_)) => break,
                            (Some(_), _) => i += 1,
                            (None, _) => return false,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_end_marker_is_found_by_walking_segments() {
        // SOI, APP0 of 4 bytes (holding a fake FF D9), SOS header, data with a stuffed FF 00 and a
        // restart marker, EOI.
        let whole = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xFF, 0xD9, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF,
            0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9,
        ];
        assert!(jpeg_complete(&whole));
        for cut in 2..whole.len() - 1 {
            assert!(!jpeg_complete(&whole[..cut]), "cut at {cut}");
        }
    }
}
