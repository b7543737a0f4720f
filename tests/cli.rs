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

/// A tiny image folder: 2 classes of 34x34 PNGs (bright top or bright bottom) and, if asked,
/// one broken file.
fn tiny_folder(name: &str, broken: bool) -> PathBuf {
    let root = tmp(name);
    let _ = std::fs::remove_dir_all(&root);
    for (class, top) in [("bottom", false), ("top", true)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..12u32 {
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

const TINY: [&str; 12] = [
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
];

#[test]
fn train_writes_log_plot_and_checkpoints_then_resumes() {
    let data = tiny_folder("tiny", false);
    let out = tmp("run-tiny");
    let _ = std::fs::remove_dir_all(&out);
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(TINY);
    args.push("1");
    let run = vgg(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stderr(&run);
    assert!(
        text.contains("epoch   2") && text.contains("best validation top-1 accuracy"),
        "{text}"
    );
    let log = std::fs::read_to_string(out.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.starts_with(
        "epoch,lr,train_loss,train_top1_err,train_top5_err,val_loss,val_top1_err,val_top5_err"
    ));
    assert_eq!(
        std::fs::read_to_string(out.join("log.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert_eq!(
        &std::fs::read(out.join("curves.png")).unwrap()[..8],
        b"\x89PNG\r\n\x1a\n"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["num_classes"], 2);
    assert_eq!(config["model"]["in_channels"], 1);
    assert_eq!(config["sgd"]["momentum"], 0.9);
    assert!(
        out.join("best.safetensors").exists()
            && out.join("epoch-2.bpk").exists()
            && !out.join("epoch-1.bpk").exists()
    );

    // The same folder again: refused, nothing touched.
    let again = vgg(&args);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("--force") && stderr(&again).contains("--resume"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(out.join("log.csv")).unwrap(), log);

    // Resume with more epochs in the config: edit nothing, continue to the configured 2 -> no-op,
    // so raise the budget through a fresh run that is resumed after one epoch.
    let out2 = tmp("run-tiny-resume");
    let _ = std::fs::remove_dir_all(&out2);
    let mut first: Vec<&str> = args.clone();
    let pos = first
        .iter()
        .position(|a| *a == out.to_str().unwrap())
        .unwrap();
    first[pos] = out2.to_str().unwrap();
    let epochs_pos = first.iter().position(|a| *a == "2").unwrap();
    first[epochs_pos] = "1";
    assert!(vgg(&first).status.success());
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("config.json")).unwrap()).unwrap();
    config["epochs"] = serde_json::json!(2);
    std::fs::write(out2.join("config.json"), config.to_string()).unwrap();
    let resumed = vgg(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--resume",
        out2.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("epoch   2") && !stderr(&resumed).contains("epoch   1 "),
        "{}",
        stderr(&resumed)
    );
}

#[test]
fn train_names_a_broken_image_and_skip_bad_counts_it() {
    let data = tiny_folder("tiny-broken", true);
    let out = tmp("run-broken");
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--force",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(TINY);
    args.push("1");
    let run = vgg(&args);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("broken.png") && stderr(&run).contains("--skip-bad"),
        "{}",
        stderr(&run)
    );
    args.push("--skip-bad");
    let run = vgg(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    let log = std::fs::read_to_string(out.join("log.csv")).unwrap();
    let skipped: usize = log
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<usize>().unwrap())
        .sum();
    // The broken file is in the training split or the validation split; only training counts it.
    assert!(skipped <= 1, "{log}");
}

#[test]
fn train_refuses_missing_data_and_bad_flags() {
    for (args, needle) in [
        (
            vec!["train", "--data", "/nonexistent/data"],
            "/nonexistent/data",
        ),
        (
            vec![
                "train",
                "--batch",
                "100",
                "--micro-batch",
                "64",
                "--epochs",
                "1",
                "--force",
                "--out",
                "/tmp/vgg-never",
            ],
            "multiple of the micro-batch",
        ),
    ] {
        let out = vgg(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}
