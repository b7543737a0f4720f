//! Helpers shared by the integration tests: the fixtures' manifest and tolerances.

use std::path::PathBuf;

use serde_json::Value;
use vgg::arch::{VggConfig, parse_layers};
use vgg::checkpoint::{StateDict, read_state_dict};

/// `tests/fixtures/NAME`, the PyTorch-generated golden files (copied from shared/fixtures).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("manifest.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["cases"].as_array().unwrap().clone()
}

pub fn case(name: &str) -> Value {
    manifest()
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// The network a manifest case describes.
pub fn config_of(case: &Value) -> VggConfig {
    let tokens: Vec<String> = case["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| match t {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let layers = parse_layers(&tokens.join(",")).unwrap();
    let mut config = VggConfig::from_layers(
        case["name"].as_str().unwrap(),
        layers,
        case["batch_norm"].as_bool().unwrap(),
    )
    .with_in_channels(case["in_channels"].as_u64().unwrap() as usize)
    .with_num_classes(case["num_classes"].as_u64().unwrap() as usize)
    .with_hidden(case["hidden"].as_u64().unwrap() as usize);
    if let Some(p) = case["dropout"].as_f64() {
        config = config.with_dropout(p);
    }
    config
}

/// `(abs, rel)` from the case.
pub fn tolerance(case: &Value) -> (f32, f32) {
    (
        case["tolerance"]["abs"].as_f64().unwrap() as f32,
        case["tolerance"]["rel"].as_f64().unwrap() as f32,
    )
}

pub fn io(name: &str) -> StateDict {
    read_state_dict(&fixture(&format!("{name}.io.safetensors"))).unwrap()
}

/// Asserts `|got - want| <= abs + rel * |want|` elementwise, naming the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], (abs, rel): (f32, f32)) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (abs + rel * w.abs());
        if excess > worst.1 || g.is_nan() {
            worst = (i, excess.max(f32::MIN_POSITIVE));
        }
    }
    assert!(
        worst.1 <= 0.0,
        "{what}: element {} is {} but PyTorch has {}",
        worst.0,
        got[worst.0],
        want[worst.0]
    );
}

/// A fresh, empty folder for one test (`vgg-it-PID-NAME` in the temporary folder).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vgg-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An IDX file: magic, big-endian dims, then the bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `bytes`, gzipped.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}
