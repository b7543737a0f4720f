//! The `vgg` binary as a user runs it: outputs, exit codes, files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vgg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args(args)
        .output()
        .expect("run vgg")
}

fn fixture(name: &str) -> String {
    format!(
        "{}/crates/vgg/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vgg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The tutorial's check: VGG-16 with 500 classes maps [1, 3, 224, 224] to [1, 500].
#[test]
fn summary_vgg16_500_classes_by_running_the_network() {
    let out = vgg(&["summary", "vgg16", "--num-classes", "500", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["output_shape"], serde_json::json!([1, 500]));
    // 138,357,544 - 4096*1000 - 1000 + 4096*500 + 500
    assert_eq!(json["params"], 136_309_044);
    assert_eq!(json["macs"], 15_468_216_320u64);
    assert_eq!(json["layers"].as_array().unwrap().len(), 13 + 5 + 4);
    let table = vgg(&["summary", "vgg16", "--num-classes", "500"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("output shape:  [1, 500]") && text.contains("136,309,044"),
        "{text}"
    );
}

#[test]
fn summary_of_a_custom_list_from_a_file() {
    let list = tmp("layers.txt");
    std::fs::write(&list, "16, M, 32, L, M, C1-32, M\n").unwrap();
    let out = vgg(&[
        "summary",
        "--layers",
        list.to_str().unwrap(),
        "--input",
        "1x40x48",
        "--in-channels",
        "1",
        "--hidden",
        "8",
        "--num-classes",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["output_shape"], serde_json::json!([1, 3]));
    let pool3 = json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "pool3")
        .unwrap();
    assert_eq!(pool3["output_shape"], serde_json::json!([1, 32, 5, 6]));
}

#[test]
fn bad_input_exits_2_with_a_message() {
    for (args, needle) in [
        (vec!["summary", "vgg17"], "unknown architecture `vgg17`"),
        (vec!["summary", "--layers", "64,Q,M"], "token 2 `Q`"),
        (
            vec!["summary", "vgg11", "--input", "3x31x224"],
            "needs at least 32x32",
        ),
        (
            vec!["summary", "vgg11", "--input", "1x224x224"],
            "1 channel(s) but the network expects 3",
        ),
        (
            vec![
                "convert",
                "/nonexistent/w.pth",
                "/tmp/never-written.safetensors",
            ],
            "/nonexistent/w.pth",
        ),
    ] {
        let out = vgg(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

#[test]
fn convert_pth_to_safetensors_and_burn_and_back() {
    let arch = [
        "--arch",
        "vgg16_bn",
        "--layers",
        "4,4,M,8,8,M,16,16,16,M,32,32,32,M,32,32,32,M",
        "--bn",
        "--hidden",
        "32",
        "--num-classes",
        "10",
    ];
    let st = tmp("w.safetensors");
    let bpk = tmp("w.bpk");
    let back = tmp("back.safetensors");
    for (src, dst) in [
        (fixture("vgg16_bn_w16.pth"), &st),
        (st.to_str().unwrap().to_string(), &bpk),
        (bpk.to_str().unwrap().to_string(), &back),
    ] {
        let mut args = vec!["convert", src.as_str(), dst.to_str().unwrap()];
        args.extend(arch);
        let out = vgg(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        std::fs::read(&st).unwrap() == std::fs::read(&back).unwrap(),
        "pth -> safetensors -> bpk -> safetensors changed bytes"
    );
    // An existing output is never overwritten without --force.
    let before = std::fs::read(&st).unwrap();
    let mut args = vec!["convert", back.to_str().unwrap(), st.to_str().unwrap()];
    args.extend(arch);
    let out = vgg(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"));
    assert!(
        before == std::fs::read(&st).unwrap(),
        "the existing file changed"
    );
    // Weights of another variant: every difference is listed.
    let out = vgg(&[
        "convert",
        &fixture("vgg16_bn_w16.pth"),
        tmp("x.safetensors").to_str().unwrap(),
        "--arch",
        "vgg16",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing key(s)") && stderr(&out).contains("features.1.running_mean"),
        "{}",
        stderr(&out)
    );
}
