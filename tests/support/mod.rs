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
