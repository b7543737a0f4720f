//! Entry points for fuzzing every parser of untrusted input with raw bytes: the targets under
//! `fuzz/` call [`run`], and the test suite replays the seeds and the inputs that once crashed
//! (`tests/hostile/PARSER/`).
//!
//! Each parser must return (a value or an error) for any input: a panic, a hang or an
//! allocation beyond the limits ([`crate::limits`]) is a bug. Results are otherwise ignored.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::arch::{VggConfig, parse_layers};
use crate::data::{Split, cifar, folder, idx};
use crate::limits::{self, Limits};
use crate::train::{RunState, TrainConfig};

/// The parsers, by the name of their corpus folder.
pub const PARSERS: [&str; 12] = [
    "safetensors",
    "pth",
    "bpk",
    "caffe",
    "onnx",
    "keras",
    "image",
    "idx",
    "cifar",
    "config",
    "state",
    "layers",
];

/// Feeds `bytes` to `parser`. `Err` only for an unknown parser name. Call [`small_limits`]
/// first in a process that fuzzes.
pub fn run(parser: &str, bytes: &[u8]) -> Result<(), String> {
    match parser {
        "safetensors" | "pth" | "caffe" | "onnx" | "keras" => {
            let ext = match parser {
                "caffe" => "caffemodel",
                "keras" => "h5",
                other => other,
            };
            let path = scratch(&format!("input.{ext}"), bytes);
            if let Ok(file) = crate::checkpoint::read_weight_file(&path) {
                let config = tiny();
                let renamed =
                    crate::checkpoint::layouts::to_torchvision(file.dict, file.layout, &config);
                if let Ok(dict) = renamed {
                    let _ = crate::Vgg::from_state_dict(&config, &dict, &path, &Device::flex());
                }
            }
        }
        "bpk" => {
            let path = scratch("input.bpk", bytes);
            let _ = crate::checkpoint::burnpack::load(&tiny(), &path, &Device::flex());
        }
        "image" => {
            let path = scratch("input.img", bytes);
            if let Ok(img) = folder::decode(&path) {
                let _ = limits::check_rescale(img.height, img.width, 32);
            }
        }
        "idx" => {
            // The first byte splits the rest into the images file and the labels file.
            let (images, labels) = match bytes.split_first() {
                Some((&k, rest)) => rest.split_at((k as usize).min(rest.len())),
                None => (bytes, bytes),
            };
            let _ = idx::from_bytes(Path::new("images"), labels, Path::new("labels"), images);
            let _ = idx::from_bytes(Path::new("images"), images, Path::new("labels"), labels);
        }
        "cifar" => {
            let path = scratch("data_batch_1.bin", bytes);
            let _ = cifar::read(&[path]);
            let _ = cifar::find(&scratch_dir(), Split::Test);
        }
        "config" => {
            if let Ok(config) = serde_json::from_slice::<TrainConfig>(bytes) {
                let _ = config.validate();
            }
        }
        "state" => {
            let dir = scratch_dir();
            let _ = std::fs::write(dir.join(crate::train::folder::STATE), bytes);
            let _ = crate::train::RunFolder::unheld(&dir).state();
            let _ = serde_json::from_slice::<RunState>(bytes);
        }
        "layers" => {
            if let Ok(layers) = parse_layers(&String::from_utf8_lossy(bytes)) {
                let config = VggConfig::from_layers("fuzz", layers, bytes.len().is_multiple_of(2))
                    .with_hidden(8)
                    .with_num_classes(3);
                if config.validate().is_ok() {
                    let side = 1usize << config.num_pools().min(12);
                    let _ = config.check_input(&[1, 3, side, side]);
                }
            }
        }
        other => {
            return Err(format!(
                "unknown parser `{other}`; known: {}",
                PARSERS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Sets limits small enough that no input of a fuzzer's size may make a parser allocate more
/// than a few hundred MB legitimately (for the whole process).
pub fn small_limits() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        limits::set(Limits {
            max_image_pixels: 4 << 20,
            max_upscale: 8.0,
            max_dataset_bytes: 64 << 20,
            max_params: 10_000_000,
            max_tensor_bytes: 64 << 20,
        })
    });
}

/// The network of the weight seeds in `tests/hostile` (made by `fuzz/make_seeds.py`): five
/// convolutions of 4-8 channels, the compact head (pool 1, hidden 8), 10 classes; 12 KB of
/// weights, small enough for a fuzzer to mutate.
pub fn tiny() -> VggConfig {
    VggConfig::from_layers(
        "tiny",
        parse_layers(TINY_LAYERS).expect("a valid list"),
        false,
    )
    .with_hidden(8)
    .with_pool_size(1)
    .with_num_classes(10)
}

/// [`tiny`]'s layer list.
pub const TINY_LAYERS: &str = "4,M,8,M,8,M,8,M,8,M";

/// A folder of this process's own for the parsers that read files (in memory where /dev/shm is).
fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("vgg-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    let _ = std::fs::write(&path, bytes);
    path
}
