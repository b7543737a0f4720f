//! Dataset formats, image conversions and the errors users meet, on small files made here.

use std::path::{Path, PathBuf};

use vgg::VggError;
use vgg::data::{self, Images, Split};

use crate::common::{gz, idx, scratch};

fn dir(name: &str) -> PathBuf {
    scratch(&format!("data-{name}"))
}

#[test]
fn idx_plain_and_gzip() {
    let pixels: Vec<u8> = (0..3 * 28 * 28).map(|i| (i % 256) as u8).collect();
    for compress in [false, true] {
        // The gzip copy lives in a folder named like Debian's `fashion-mnist`.
        let d = dir(if compress { "fashion-mnist" } else { "mnist" });
        let (images, labels) = (idx(&[3, 28, 28], &pixels), idx(&[3], &[9, 0, 4]));
        let ext = if compress { ".gz" } else { "" };
        let write = |name: &str, b: Vec<u8>| {
            std::fs::write(
                d.join(format!("{name}{ext}")),
                if compress { gz(&b) } else { b },
            )
            .unwrap()
        };
        write("train-images-idx3-ubyte", images);
        write("train-labels-idx1-ubyte", labels);
        let set = data::open(&d, Split::Train).unwrap();
        assert_eq!(set.labels, vec![9, 0, 4]);
        // Ten classes of IDX are digits (MNIST) unless the path says Fashion-MNIST.
        assert_eq!(set.classes[9], if compress { "Ankle boot" } else { "9" });
        let img = set.image(1).unwrap();
        assert_eq!((img.channels, img.height, img.width), (1, 28, 28));
        assert_eq!(img.pixels[..], pixels[784..1568]);
    }
}

#[test]
fn truncated_idx_and_missing_labels_are_named() {
    let d = dir("idxbad");
    let images = idx(&[3, 28, 28], &[0; 100]);
    std::fs::write(d.join("train-images-idx3-ubyte"), &images).unwrap();
    let err = data::open(&d, Split::Train).unwrap_err();
    assert!(
        err.to_string().contains("labels file")
            && err.to_string().contains("train-labels-idx1-ubyte"),
        "{err}"
    );
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(&[3], &[1, 2, 3])).unwrap();
    let err = data::open(&d, Split::Train).unwrap_err();
    assert!(
        err.to_string().contains("truncated")
            && err.to_string().contains("train-images-idx3-ubyte"),
        "{err}"
    );
}

#[test]
fn cifar10_binary_batches() {
    let d = dir("cifar");
    let mut bytes = Vec::new();
    for label in [3u8, 7] {
        bytes.push(label);
        bytes.extend((0..3072).map(|i| (i / 1024) as u8 * 100));
    }
    std::fs::write(d.join("data_batch_1.bin"), &bytes).unwrap();
    std::fs::write(d.join("test_batch.bin"), &bytes[..3073]).unwrap();
    let train = data::open(&d, Split::Train).unwrap();
    assert_eq!(
        (train.labels.clone(), train.classes[3].as_str()),
        (vec![3, 7], "cat")
    );
    let img = train.image(1).unwrap();
    assert_eq!(
        (
            img.channels,
            img.pixels[0],
            img.pixels[1024],
            img.pixels[2048]
        ),
        (3, 0, 100, 200)
    );
    assert_eq!(data::open(&d, Split::Test).unwrap().len(), 1);
    std::fs::write(d.join("data_batch_1.bin"), &bytes[..5000]).unwrap();
    let err = data::open(&d, Split::Train).unwrap_err();
    assert!(
        err.to_string().contains("data_batch_1.bin") && err.to_string().contains("truncated"),
        "{err}"
    );
}

fn save(path: &Path, img: image::DynamicImage) {
    img.save(path).unwrap();
}

#[test]
fn image_folder_converts_grey_rgba_and_palette() {
    let d = dir("folder");
    for class in ["cats", "dogs"] {
        std::fs::create_dir_all(d.join(class)).unwrap();
    }
    save(
        &d.join("cats/rgb.jpg"),
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            40,
            30,
            image::Rgb([200, 10, 10]),
        )),
    );
    save(
        &d.join("cats/grey.png"),
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 8, image::Luma([77]))),
    );
    save(
        &d.join("dogs/rgba.png"),
        image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            5,
            6,
            image::Rgba([1, 2, 3, 4]),
        )),
    );
    // A palette PNG, written by hand: 2x1, palette [red, blue].
    {
        let file = std::fs::File::create(d.join("dogs/palette.png")).unwrap();
        let mut enc = png::Encoder::new(file, 2, 1);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
        enc.write_header()
            .unwrap()
            .write_image_data(&[0, 1])
            .unwrap();
    }
    std::fs::write(d.join("dogs/notes.txt"), "not an image").unwrap();
    let set = data::open(&d, Split::Train).unwrap();
    assert_eq!(set.classes, vec!["cats", "dogs"]);
    assert_eq!(set.labels, vec![0, 0, 1, 1]);
    let Images::Files(paths) = &set.images else {
        panic!()
    };
    assert!(paths[0].ends_with("grey.png"));
    let grey = set.image(0).unwrap();
    assert_eq!((grey.channels, grey.pixels[0]), (1, 77));
    let palette = set.image(2).unwrap();
    assert_eq!(
        (palette.channels, palette.pixels.clone()),
        (3, vec![255, 0, 0, 0, 0, 255])
    );
    let rgba = set.image(3).unwrap();
    assert_eq!(
        (rgba.channels, rgba.height, rgba.width, rgba.pixels[0]),
        (3, 6, 5, 1)
    );
}

#[test]
fn unreadable_images_are_named() {
    let d = dir("badimg");
    std::fs::create_dir_all(d.join("a")).unwrap();
    std::fs::write(d.join("a/broken.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let set = data::open(&d, Split::Train).unwrap();
    let err = set.image(0).unwrap_err();
    assert!(
        matches!(err, VggError::BadImage { .. })
            && err.to_string().contains("broken.png")
            // The library names no flag of the tool's (the tool adds `--skip-bad`).
            && !err.to_string().contains("--"),
        "{err}"
    );
    let err = data::open(&d.join("nope"), Split::Train).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn the_demo_is_class_balanced_fashion_mnist() {
    let train = data::demo::load(Split::Train).unwrap();
    let test = data::demo::load(Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (5000, 1000));
    for c in 0..10 {
        assert_eq!(train.labels.iter().filter(|&&l| l == c).count(), 500);
    }
    let (t, v) = train.split(0.1, 42).unwrap();
    assert_eq!((t.len(), v.len()), (4500, 500));
    assert_eq!(v.labels.iter().filter(|&&l| l == 3).count(), 50);
}

/// JPEGs decode strictly: a valid file as the image crate's decoder gives it (baseline colour,
/// progressive grey, restart intervals), and never what the decoder would have to invent: a
/// scan cut short with its end marker put back, a header declaring 8000x8000 pixels in a small
/// file (refused before any allocation).
#[test]
fn jpegs_decode_strictly() {
    use vgg::data::folder::decode;
    for (name, channels) in [
        ("chelsea.jpg", 3),
        ("chelsea_restart.jpg", 3),
        ("chelsea_grey_progressive.jpg", 1),
    ] {
        let path = crate::common::fixture(name);
        let ours = decode(&path).unwrap();
        let theirs = image::open(&path).unwrap();
        assert_eq!(
            (ours.channels, ours.width, ours.height),
            (channels, 451, 300),
            "{name}"
        );
        let interleaved = if channels == 1 {
            theirs.into_luma8().into_raw()
        } else {
            theirs.into_rgb8().into_raw()
        };
        let plane = ours.width * ours.height;
        for (i, px) in interleaved.chunks_exact(channels).enumerate() {
            for (c, v) in px.iter().enumerate() {
                assert_eq!(ours.pixels[c * plane + i], *v, "{name}: pixel {i}");
            }
        }
    }
    let d = dir("strict-jpeg");
    // Cut in the middle of the scan (or within a restart interval), the end-of-image marker
    // appended again: the decoder would fill the rest with what it invents.
    for name in ["chelsea.jpg", "chelsea_restart.jpg"] {
        let whole = std::fs::read(crate::common::fixture(name)).unwrap();
        for cut in [whole.len() / 2, whole.len() - 200] {
            let path = d.join(format!("cut-{cut}-{name}"));
            std::fs::write(&path, [&whole[..cut], &[0xFF, 0xD9][..]].concat()).unwrap();
            let Err(err) = decode(&path) else {
                panic!("{name} cut at {cut}: decoded, not refused");
            };
            let err = err.to_string();
            assert!(
                err.contains("cut short") && err.contains(&format!("cut-{cut}")),
                "{err}"
            );
        }
    }
    // Fill bytes (0xFF) before each restart marker are allowed (T.81 B.1.1.2).
    let restart = std::fs::read(crate::common::fixture("chelsea_restart.jpg")).unwrap();
    let mut filled = Vec::with_capacity(restart.len() + 4096);
    let sos = restart.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    for (k, &byte) in restart.iter().enumerate() {
        if k > sos && byte == 0xFF && matches!(restart.get(k + 1), Some(0xD0..=0xD7)) {
            filled.push(0xFF);
        }
        filled.push(byte);
    }
    let path = d.join("filled.jpg");
    std::fs::write(&path, &filled).unwrap();
    let (a, b) = (
        decode(&path).unwrap(),
        decode(&crate::common::fixture("chelsea_restart.jpg")).unwrap(),
    );
    assert!(a.pixels == b.pixels, "fill bytes changed the picture");
    let whole = std::fs::read(crate::common::fixture("chelsea.jpg")).unwrap();
    // The frame header (SOF0) rewritten to 8000x8000: 28 KB cannot hold 64 M pixels.
    let mut bomb = whole.clone();
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x1F, 0x40, 0x1F, 0x40]);
    let path = d.join("bomb.jpg");
    std::fs::write(&path, &bomb).unwrap();
    let err = decode(&path).unwrap_err().to_string();
    assert!(err.contains("cannot hold the 8000x8000 pixels"), "{err}");
}

/// The torchvision preset rescales and crops as torchvision's `Resize(256)` + `CenterCrop(224)`
/// (antialiased, long side truncated, offsets rounded half to even): within 1e-5 of the float
/// pixels torchvision computed, for a downscale and an upscale; the plain bilinear resize,
/// kept for Caffe-style weights, differs visibly on the downscale.
#[test]
fn torchvision_resize_as_torchvision() {
    use vgg::data::folder::decode;
    use vgg::data::transform::to_channels;
    use vgg::preset::Resize;
    let want =
        vgg::checkpoint::read_state_dict(&crate::common::fixture("resize.io.safetensors")).unwrap();
    for (file, key) in [("chelsea.png", "chelsea"), ("small150x100.png", "small")] {
        let img = decode(&crate::common::fixture(file)).unwrap();
        let x = to_channels(&img, 3, 1.0 / 255.0);
        let got = Resize::Torchvision.center_crop(&x, 256, 224).unwrap();
        let want = want[key].to_f32();
        assert_eq!(got.data.len(), want.len(), "{file}");
        let worst = got
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{file}: off by {worst}");
        if key == "chelsea" {
            let plain = Resize::Bilinear.center_crop(&x, 256, 224).unwrap();
            let off = plain
                .data
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(off > 1e-2, "{off}");
        }
    }
}

/// Every image format torchvision's `ImageFolder` reads (and GIF): the lossless ones give the
/// PNG's pixels exactly, GIF (a palette) its size; a folder of them is a dataset.
#[test]
fn bmp_tiff_webp_pnm_gif_images() {
    use vgg::data::folder::decode;
    let png = crate::common::fixture("small150x100.png");
    let want = decode(&png).unwrap();
    let img = image::open(&png).unwrap();
    let d = dir("formats");
    for (ext, exact) in [
        ("bmp", true),
        ("tiff", true),
        ("webp", true),
        ("ppm", true),
        ("gif", false),
    ] {
        let class = d.join("all");
        std::fs::create_dir_all(&class).unwrap();
        let path = class.join(format!("x.{ext}"));
        img.save(&path).unwrap_or_else(|e| panic!("{ext}: {e}"));
        let got = decode(&path).unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!(
            (got.width, got.height, got.channels),
            (150, 100, 3),
            "{ext}"
        );
        if exact {
            assert!(got.pixels == want.pixels, "{ext}: pixels differ");
        }
    }
    let set = data::open(&d, Split::Train).unwrap();
    assert_eq!(set.len(), 5);
}
