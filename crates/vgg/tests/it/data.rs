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
