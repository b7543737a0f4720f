//! Hostile inputs for every parser: truncated, oversized, malformed and wrong-type files give an
//! error that names the file, never a panic and never an allocation the file did not pay for.
//! (What the fuzzers found is replayed by `tests/fuzz_replay.rs`.)

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use vgg::arch::{VggConfig, parse_layers};
use vgg::checkpoint::{StateTensor, Values, read_state_dict, write_safetensors};
use vgg::data::{self, Split};
use vgg::{Vgg, VggError};

use crate::common::{case, config_of, fixture, gz, idx, scratch};

fn dir(name: &str) -> PathBuf {
    scratch(&format!("hostile-{name}"))
}

/// Every prefix length worth trying on a file of `len` bytes.
fn cuts(len: usize) -> Vec<usize> {
    let mut c = vec![0, 1, 2, 7, 8, 9, 16, 64, len / 3, len / 2, len - 1];
    c.retain(|&n| n < len);
    c
}

fn names(err: &VggError, path: &Path) -> bool {
    err.to_string()
        .contains(&*path.file_name().unwrap().to_string_lossy())
}

#[test]
fn truncated_and_corrupt_weight_files_are_named() {
    let d = dir("weights");
    for name in ["vgg11_w16.safetensors", "vgg11_w16.pth"] {
        let whole = std::fs::read(fixture(name)).unwrap();
        let ext = Path::new(name).extension().unwrap().to_str().unwrap();
        for cut in cuts(whole.len()) {
            let path = d.join(format!("cut{cut}.{ext}"));
            std::fs::write(&path, &whole[..cut]).unwrap();
            let err = read_state_dict(&path).unwrap_err();
            assert!(names(&err, &path), "{name} cut at {cut}: {err}");
        }
        // Bytes flipped in the header.
        let mut flipped = whole.clone();
        for b in flipped.iter_mut().skip(8).take(40) {
            *b ^= 0x5a;
        }
        let path = d.join(format!("flipped.{ext}"));
        std::fs::write(&path, &flipped).unwrap();
        let err = read_state_dict(&path).unwrap_err();
        assert!(names(&err, &path), "{name} flipped: {err}");
    }
    // Wrong types: a PNG called .safetensors, a safetensors called .pth, garbage as .bpk.
    let png = d.join("photo.safetensors");
    std::fs::copy(fixture("chelsea.png"), &png).unwrap();
    assert!(matches!(
        read_state_dict(&png),
        Err(VggError::CorruptWeights { .. })
    ));
    let pth = d.join("st.pth");
    std::fs::copy(fixture("vgg11_w16.safetensors"), &pth).unwrap();
    assert!(matches!(
        read_state_dict(&pth),
        Err(VggError::CorruptWeights { .. })
    ));
    let config = config_of(&case("vgg11_w16"));
    let bpk = d.join("garbage.bpk");
    std::fs::write(&bpk, b"BURNPACK? no, just words").unwrap();
    let err = Vgg::load(&config, &bpk, &Device::flex()).unwrap_err();
    assert!(
        matches!(err, VggError::CorruptWeights { .. }) && names(&err, &bpk),
        "{err}"
    );
    // A safetensors header that promises more data than the file holds.
    let lie = d.join("lie.safetensors");
    let header = br#"{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&lie, &bytes).unwrap();
    assert!(matches!(
        read_state_dict(&lie),
        Err(VggError::CorruptWeights { .. })
    ));
}

/// A pickle that runs `os.system` on load is refused: only tensors and plain containers are
/// read.
#[test]
fn a_malicious_pickle_is_refused() {
    let d = dir("pickle");
    // pickle protocol 2: os.system("echo pwned"), as `pickle.dumps` of a __reduce__ object.
    let mut payload =
        b"\x80\x02cposix\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.".to_vec();
    let path = d.join("evil.pth");
    std::fs::write(&path, &payload).unwrap();
    assert!(read_state_dict(&path).is_err());
    payload[3..8].copy_from_slice(b"os\nsy");
    std::fs::write(&path, &payload).unwrap();
    assert!(read_state_dict(&path).is_err());
}

#[test]
fn weights_with_nan_or_inf_are_refused_by_key() {
    let d = dir("nan");
    let config = config_of(&case("vgg11_w16"));
    let mut dict = read_state_dict(&fixture("vgg11_w16.safetensors")).unwrap();
    let key = "features.3.weight";
    let t = dict.get_mut(key).unwrap();
    if let Values::F32(v) = &mut t.values {
        v[5] = f32::NAN;
        v[6] = f32::INFINITY;
    }
    let path = d.join("nan.safetensors");
    write_safetensors(&dict, &path).unwrap();
    let err = Vgg::load(&config, &path, &Device::flex()).unwrap_err();
    assert!(
        matches!(&err, VggError::NonFiniteWeights { key: k, count: 2, .. } if k == key),
        "{err}"
    );
    // The same weights through burn's format.
    let good = Vgg::load(&config, &fixture("vgg11_w16.safetensors"), &Device::flex()).unwrap();
    let poisoned = good.load_state_dict_unchecked(&dict, &Device::flex());
    let bpk = d.join("nan.bpk");
    poisoned.save(&bpk).unwrap();
    let err = Vgg::load(&config, &bpk, &Device::flex()).unwrap_err();
    assert!(matches!(err, VggError::NonFiniteWeights { .. }), "{err}");
}

/// A PNG whose header claims 20000x20000 pixels (1.2 GB of RGB) is refused from its header,
/// before a pixel is decoded.
#[test]
fn images_too_large_truncated_or_of_the_wrong_type() {
    let d = dir("images");
    std::fs::create_dir_all(d.join("a")).unwrap();
    // A valid PNG of 1x1, its IHDR rewritten to 20000x20000 (CRC fixed).
    let mut png = Vec::new();
    image::GrayImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&20000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let huge = d.join("a/huge.png");
    std::fs::write(&huge, &png).unwrap();
    let err = data::folder::decode(&huge).unwrap_err();
    assert!(
        matches!(
            &err,
            VggError::LimitExceeded {
                limit_name: "max_image_pixels",
                value: 400_000_000,
                ..
            }
        ) && names(&err, &huge),
        "{err}"
    );
    // A real JPEG, cut: refused as truncated (decoders fill the rest with grey).
    let photo = image::open(fixture("chelsea.png")).unwrap().to_rgb8();
    let mut jpeg = Vec::new();
    photo
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let whole = d.join("a/whole.jpg");
    std::fs::write(&whole, &jpeg).unwrap();
    let img = data::folder::decode(&whole).unwrap();
    assert_eq!((img.width, img.height, img.channels), (451, 300, 3));
    for cut in [
        jpeg.len() - 2,
        jpeg.len() * 9 / 10,
        jpeg.len() / 2,
        600,
        20,
        3,
    ] {
        let path = d.join(format!("a/cut{cut}.jpg"));
        std::fs::write(&path, &jpeg[..cut]).unwrap();
        let Err(err) = data::folder::decode(&path) else {
            panic!("a JPEG cut at {cut} of {} bytes decoded", jpeg.len());
        };
        assert!(
            matches!(err, VggError::BadImage { .. }) && names(&err, &path),
            "cut {cut}: {err}"
        );
    }
    // A PNG cut before its last 12 bytes (the IEND chunk, after every pixel) is missing pixels.
    let png_bytes = std::fs::read(fixture("chelsea.png")).unwrap();
    for cut in cuts(png_bytes.len() - 12) {
        let path = d.join(format!("a/cut{cut}.png"));
        std::fs::write(&path, &png_bytes[..cut]).unwrap();
        let Err(err) = data::folder::decode(&path) else {
            panic!("a PNG cut at {cut} of {} bytes decoded", png_bytes.len());
        };
        assert!(names(&err, &path), "cut {cut}: {err}");
    }
    for (name, bytes) in [("text.png", &b"plain words"[..]), ("empty.jpg", &b""[..])] {
        let path = d.join("a").join(name);
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            data::folder::decode(&path),
            Err(VggError::BadImage { .. })
        ));
    }
}

/// A 1x60000 strip decodes (60,000 pixels) but is refused before it is rescaled to 32 on its
/// short side (which would be 32 x 1,920,000 floats a channel).
#[test]
fn a_strip_is_not_enlarged_past_the_limits() {
    use vgg::data::transform::{Normalize, Pca, Stats, Transform};
    let strip = data::Image {
        channels: 1,
        height: 1,
        width: 60000,
        pixels: vec![9; 60000],
    };
    let t = Transform {
        channels: 1,
        crop: 32,
        scale_min: 32,
        scale_max: 36,
        eval_scale: 32,
        flip: true,
        pca_std: 0.0,
        stats: Stats {
            mean: vec![0.5],
            pca: Pca {
                std: vec![0.0],
                vectors: vec![vec![1.0]],
            },
        },
        normalize: Normalize::mean_only(vec![0.5]),
    };
    assert!(t.eval(&strip).unwrap_err().contains("enlarged"));
    assert!(t.train(&strip, &mut data::Rng::new(1)).is_err());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn idx_files_with_no_images_lies_and_bombs() {
    let d = dir("idx");
    let labels = idx(&[2], &[1, 2]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zero-images", idx(&[0, 28, 28], &[]), "no images"),
        ("zero-side", idx(&[2, 0, 28], &[]), "no images"),
        ("bad-magic", b"\x00\x00\x09\x03rest".to_vec(), "magic"),
        ("short-header", vec![0, 0, 8, 3, 0, 0], "header"),
        ("truncated", idx(&[2, 28, 28], &[0; 100]), "truncated"),
        // 10^8 images of 28x28 promised by a few bytes: refused before any is read.
        (
            "lie",
            idx(&[100_000_000, 28, 28], &[0; 10]),
            "max_dataset_bytes",
        ),
        // A gzip bomb: the header promises 4 GB of zeros.
        (
            "bomb.gz",
            gz(&idx(&[65536, 256, 257], &vec![0; 1 << 20])),
            "max_dataset_bytes",
        ),
        ("not-gzip.gz", b"\x1f\x8bnot really gzip".to_vec(), "IDX"),
    ];
    for (name, bytes, needle) in cases {
        let images = d.join(format!("{name}-images-idx3-ubyte"));
        std::fs::write(&images, &bytes).unwrap();
        let labels_path = d.join(format!("{name}-labels-idx1-ubyte"));
        std::fs::write(&labels_path, &labels).unwrap();
        let err = data::open(&images, Split::Train).unwrap_err();
        assert!(
            err.to_string().contains(needle) && names(&err, &images),
            "{name}: {err}"
        );
    }
    // Labels that do not match the images.
    let images = d.join("ok-images-idx3-ubyte");
    std::fs::write(&images, idx(&[3, 2, 2], &[0; 12])).unwrap();
    std::fs::write(d.join("ok-labels-idx1-ubyte"), idx(&[2], &[0, 1])).unwrap();
    let err = data::open(&images, Split::Train).unwrap_err();
    assert!(err.to_string().contains("2 labels for 3 images"), "{err}");
}

#[test]
fn cifar_batches_with_foreign_labels_are_refused() {
    let d = dir("cifar");
    let mut bytes = Vec::new();
    for label in [3u8, 200] {
        bytes.push(label);
        bytes.extend(std::iter::repeat_n(7u8, 3072));
    }
    let file = d.join("data_batch_1.bin");
    std::fs::write(&file, &bytes).unwrap();
    let err = data::open(&d, Split::Train).unwrap_err();
    assert!(
        err.to_string().contains("record 1 has label 200") && names(&err, &file),
        "{err}"
    );
    std::fs::write(&file, b"").unwrap();
    assert!(data::open(&d, Split::Train).is_err());
}

#[test]
fn layer_lists_and_sizes_that_cannot_be_built() {
    for text in [
        "",
        ",,,",
        "M",
        "C1-",
        "C3-0",
        "0",
        "64,X",
        "L,64",
        "99999999999999999999999",
        "６４",
    ] {
        assert!(parse_layers(text).is_err(), "{text:?}");
    }
    // 70 pools: more than any input can pass; refused, not a shift overflow.
    let many = std::iter::repeat_n("M", 70)
        .chain(["8"])
        .collect::<Vec<_>>()
        .join(",");
    let config = VggConfig::from_layers("many", parse_layers(&many).unwrap(), false);
    assert!(config.validate().is_err());
    // --width 1e4: 640,000 channels, 3.7e12 parameters; refused by the parameter limit before
    // anything is allocated. --width 1e9 or inf: more than a 64-bit count, refused too.
    let wide = VggConfig::named("vgg16").unwrap().with_width(1e4);
    assert!(matches!(
        wide.validate(),
        Err(VggError::LimitExceeded {
            limit_name: "max_params",
            ..
        })
    ));
    for w in [1e9, f64::INFINITY] {
        let wide = VggConfig::named("vgg16").unwrap().with_width(w);
        assert!(
            matches!(wide.validate(), Err(VggError::BadConfig { .. })),
            "{w}"
        );
    }
    // A 20000x20000 input: its first activation is 102 GB; refused by the tensor limit.
    let d = VggConfig::named("vgg16").unwrap();
    assert!(matches!(
        d.check_input(&[1, 3, 20000, 20000]),
        Err(VggError::LimitExceeded {
            limit_name: "max_tensor_bytes",
            ..
        })
    ));
    assert!(matches!(
        d.check_input(&[0, 3, 224, 224]),
        Err(VggError::BadInputShape { .. })
    ));
}

#[test]
fn a_state_dict_with_a_huge_scalar_shape_is_refused() {
    let d = dir("shape");
    let mut dict = vgg::StateDict::new();
    dict.insert(
        "x".into(),
        StateTensor {
            shape: vec![2, 2],
            values: Values::F32(vec![1.0; 4]),
        },
    );
    let path = d.join("x.safetensors");
    write_safetensors(&dict, &path).unwrap();
    let config = config_of(&case("vgg11_w16"));
    assert!(matches!(
        Vgg::load(&config, &path, &Device::flex()),
        Err(VggError::WeightMismatch { .. })
    ));
}
