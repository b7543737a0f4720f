//! Helpers shared by the binary's test files.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn vgg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args(args)
        .output()
        .expect("run vgg")
}

pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vgg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code 2 and one error line, the last, holding every needle.
pub fn refused(out: &Output, needles: &[&str]) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let last = text.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: "),
        "the error is the last line: {text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "one error line: {text}"
    );
    for n in needles {
        assert!(last.contains(n), "{n:?} not in: {text}");
    }
}

/// A folder of two classes of 34x34 grey PNGs (bright top half or bright bottom half),
/// `per_class` each, and a broken file when `broken`.
pub fn tiny_folder(name: &str, per_class: u32, broken: bool) -> PathBuf {
    let root = tmp(name);
    let _ = std::fs::remove_dir_all(&root);
    for (class, top) in [("bottom", false), ("top", true)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..per_class {
            let img = image::GrayImage::from_fn(34, 34, |_, y| {
                image::Luma([if (y < 17) == top {
                    200
                } else {
                    (i * 7 % 50) as u8
                }])
            });
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    if broken {
        std::fs::write(root.join("top/broken.png"), b"not a png").unwrap();
    }
    root
}

/// The tiny network every CLI test trains (a 1/16-width VGG-11-BN with a 16-wide head, batch 8
/// of micro-batches of 4, no progress bar, one loader thread).
pub const TINY: [&str; 13] = [
    "--arch",
    "vgg11_bn",
    "--width",
    "0.0625",
    "--hidden",
    "16",
    "--batch",
    "8",
    "--micro-batch",
    "4",
    "--quiet",
    "--workers",
    "1",
];

/// `vgg train --data DATA --out OUT [--epochs 1] TINY EXTRA...` (`--epochs 1` unless EXTRA
/// sets it).
pub fn tiny_train(data: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--epochs") {
        args.extend(["--epochs", "1"]);
    }
    args.extend(TINY);
    args.extend(extra);
    vgg(&args)
}

/// `vgg train --resume RUN --epochs EPOCHS --quiet`.
pub fn resume(run: &std::path::Path, epochs: &str) -> Output {
    vgg(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        epochs,
        "--quiet",
    ])
}

/// The vgg11_w16 fixture's flags (torchvision layout, 10 classes).
pub const W16: [&str; 10] = [
    "--arch",
    "vgg11",
    "--layers",
    "4,M,8,M,16,16,M,32,32,M,32,32,M",
    "--hidden",
    "32",
    "--num-classes",
    "10",
    "--preset",
    "torchvision",
];

/// `crates/vgg/tests/fixtures/NAME`: the PyTorch-made golden files.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/crates/vgg/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}
