//! Never silently wrong (issue 25): every file, image and folder means what it says, or is
//! refused with one line and exit 2. Each test is a class of defect, run through the CLI as a
//! user would, against what the real tools computed where a format is involved.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{W16, fixture, refused, resume, stderr, tiny_folder, tiny_train, tmp, vgg};

/// The probabilities `vgg predict --json -k 10` gives each class index of one image.
fn probabilities(out: &Output) -> Vec<f32> {
    assert!(out.status.success(), "{}", stderr(out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut p = vec![f32::NAN; 10];
    for g in json[0]["top"].as_array().unwrap() {
        p[g["index"].as_u64().unwrap() as usize] = g["probability"].as_f64().unwrap() as f32;
    }
    p
}

fn read_probs(key: &str) -> Vec<f32> {
    vgg::checkpoint::read_state_dict(&fixture("default_presets.io.safetensors")).unwrap()[key]
        .to_f32()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-5, "{what}: {got:?} vs {want:?}");
    }
}

/// Each format's weights, given with no preset flag, classify a photo as their own tool does:
/// Keras' files (all four kinds) as Keras with preprocess_input, the authors' .caffemodel with
/// their Caffe preprocessing, torchvision's layout as torchvision (PyTorch's numbers).
#[test]
fn each_format_by_default_computes_what_its_tool_computes() {
    let photo = fixture("photo224.png");
    let arch = &W16[..8]; // the W16 network, no --preset
    for (file, key) in [
        ("keras_224_w16.keras", "keras_probs"),
        ("keras_224_w16.weights.h5", "keras_probs"),
        ("keras_224_w16.h5", "keras_probs"),
        ("keras_224_w16.onnx", "keras_probs"),
        ("vgg11_w16.caffemodel", "caffe_probs"),
        ("vgg11_w16.pth", "torchvision_probs"),
        ("vgg11_w16.safetensors", "torchvision_probs"),
        ("vgg11_w16.onnx", "torchvision_probs"),
    ] {
        let w = fixture(file);
        let mut args = vec!["predict", "-w", w.to_str().unwrap()];
        args.extend(arch);
        args.extend(["--json", "-k", "10", photo.to_str().unwrap()]);
        close(file, &probabilities(&vgg(&args)), &read_probs(key));
    }
    // Converted to .safetensors, Keras' weights keep Keras' preprocessing.
    let out = tmp("keras-converted.safetensors");
    let _ = std::fs::remove_file(&out);
    let w = fixture("keras_224_w16.keras");
    let mut args = vec!["convert", w.to_str().unwrap(), out.to_str().unwrap()];
    args.extend(arch);
    let conv = vgg(&args);
    assert!(conv.status.success(), "{}", stderr(&conv));
    let mut args = vec!["predict", "-w", out.to_str().unwrap()];
    args.extend(arch);
    args.extend(["--json", "-k", "10", photo.to_str().unwrap()]);
    close(
        "converted",
        &probabilities(&vgg(&args)),
        &read_probs("keras_probs"),
    );
}

/// A folder is matched to a run's outputs by class name: one missing class no longer shifts
/// the others, renamed folders are refused naming them, ensembles of runs whose classes
/// differ are refused.
#[test]
fn classes_are_matched_by_name() {
    let data = tiny_folder("names-data", 10, false);
    let run = tmp("names-run");
    let _ = std::fs::remove_dir_all(&run);
    assert!(tiny_train(&data, &run, &[]).status.success());
    let run_s = run.to_str().unwrap();
    // Only `top` (output 1): sorted, it is label 0, which the old mapping scored as `bottom`.
    let only_top = tmp("names-only-top");
    let _ = std::fs::remove_dir_all(&only_top);
    std::fs::create_dir_all(&only_top).unwrap();
    let tops: Vec<PathBuf> = std::fs::read_dir(data.join("top"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    std::fs::create_dir_all(only_top.join("top")).unwrap();
    for p in &tops {
        std::fs::copy(p, only_top.join("top").join(p.file_name().unwrap())).unwrap();
    }
    let eval = vgg(&[
        "eval",
        "-w",
        run_s,
        "--data",
        only_top.to_str().unwrap(),
        "--json",
    ]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let rows: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let acc = rows[0]["top1_acc"].as_f64().unwrap();
    // The same network's own top-1 label of each image: the share called `top`.
    let mut args = vec!["predict", "-w", run_s, "--json", "-k", "1"];
    let paths: Vec<String> = tops.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let pred = vgg(&args);
    assert!(pred.status.success(), "{}", stderr(&pred));
    let json: serde_json::Value = serde_json::from_slice(&pred.stdout).unwrap();
    let called_top = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["top"][0]["label"] == "top")
        .count();
    assert_eq!(acc, called_top as f64 / tops.len() as f64);

    // Renamed: refused, naming the class.
    let renamed = tmp("names-renamed");
    let _ = std::fs::remove_dir_all(&renamed);
    std::fs::create_dir_all(&renamed).unwrap();
    std::fs::rename(only_top.join("top"), renamed.join("zebra")).unwrap();
    refused(
        &vgg(&["eval", "-w", run_s, "--data", renamed.to_str().unwrap()]),
        &[
            "`zebra`",
            "not among the weights' 2 classes",
            "`bottom`, `top`",
        ],
    );

    // An ensemble of two runs whose outputs are the same classes in another order.
    let swapped = tmp("names-run-swapped");
    let _ = std::fs::remove_dir_all(&swapped);
    std::fs::create_dir_all(&swapped).unwrap();
    for e in std::fs::read_dir(&run).unwrap().flatten() {
        std::fs::copy(e.path(), swapped.join(e.file_name())).unwrap();
    }
    // The run's weights card says what its outputs are.
    let card = std::fs::read_to_string(swapped.join("weights.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&card).unwrap();
    json["preset"]["classes"] = serde_json::json!(["top", "bottom"]);
    std::fs::write(swapped.join("weights.json"), json.to_string()).unwrap();
    refused(
        &vgg(&[
            "eval",
            "-w",
            run_s,
            "-w",
            swapped.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]),
        &["different classes", "`bottom`", "`top`"],
    );
}

/// Nothing the tool writes goes through a link it did not make: a run folder that is a link,
/// an output file that is a dangling link; and a run being trained cannot be trained again
/// beside it (its folder is locked).
#[cfg(unix)]
#[test]
fn links_are_never_followed_and_runs_are_locked() {
    let data = tiny_folder("links-data", 6, false);
    let elsewhere = tmp("links-elsewhere");
    let _ = std::fs::remove_dir_all(&elsewhere);
    std::fs::create_dir_all(&elsewhere).unwrap();
    let link = tmp("links-run");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    refused(&tiny_train(&data, &link, &[]), &["is a link"]);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // A dangling link as convert's output: it exists, and is not replaced without --force.
    let dangling = tmp("links-out.safetensors");
    let _ = std::fs::remove_file(&dangling);
    std::os::unix::fs::symlink(tmp("links-nowhere"), &dangling).unwrap();
    let w = fixture("vgg11_w16.safetensors");
    let mut args = vec!["convert", w.to_str().unwrap(), dangling.to_str().unwrap()];
    args.extend(&W16[..8]);
    refused(&vgg(&args), &["exists", "--force"]);
    assert!(std::fs::symlink_metadata(&dangling).unwrap().is_symlink());

    // --resume of a folder that holds no run makes nothing in it; of a link to a run, refused.
    let empty = tmp("links-empty");
    let _ = std::fs::remove_dir_all(&empty);
    std::fs::create_dir_all(&empty).unwrap();
    refused(&resume(&empty, "2"), &["config.json"]);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // A trunk converted to a whole-network format would get a random head: refused.
    let mut trunk = vgg::checkpoint::read_state_dict(&w).unwrap();
    trunk.retain(|k, _| k.starts_with("features."));
    let trunk_file = tmp("links-trunk.safetensors");
    vgg::checkpoint::write_safetensors(&trunk, &trunk_file).unwrap();
    let onnx = tmp("links-trunk.onnx");
    let _ = std::fs::remove_file(&onnx);
    let mut args = vec![
        "convert",
        trunk_file.to_str().unwrap(),
        onnx.to_str().unwrap(),
    ];
    args.extend(&W16[..8]);
    refused(&vgg(&args), &["trunk", "write .safetensors"]);
    assert!(!onnx.exists());

    // A run whose lock is held (a trainer at work in it) is not resumed beside it.
    let run = tmp("links-locked");
    let _ = std::fs::remove_dir_all(&run);
    assert!(tiny_train(&data, &run, &[]).status.success());
    let held = std::fs::OpenOptions::new()
        .append(true)
        .open(run.join(".lock"))
        .unwrap();
    held.lock().unwrap();
    let out = resume(&run, "2");
    refused(&out, &["in use by another `vgg train`"]);
    drop(held);
    let linked = tmp("links-run-link");
    let _ = std::fs::remove_file(&linked);
    std::os::unix::fs::symlink(&run, &linked).unwrap();
    refused(&resume(&linked, "2"), &["is a link"]);
}

/// Inputs that used to panic, hang or take unbounded memory: one line and exit 2.
#[test]
fn no_panics_no_hangs_no_unbounded_reads() {
    let data = tiny_folder("nopanic-data", 6, false);
    let none = tmp("nopanic-run");
    let _ = std::fs::remove_dir_all(&none);
    // A scale no image can be rescaled to: a bad setting, not a bad image.
    refused(
        &tiny_train(&data, &none, &["--scale", "32,99999999"]),
        &["scale", "max_image_pixels"],
    );
    assert!(!none.exists());
    // An all-unreadable validation set under --skip-bad: no panic, no accuracy.
    let broken = tmp("nopanic-broken-val");
    let _ = std::fs::remove_dir_all(&broken);
    for class in ["bottom", "top"] {
        std::fs::create_dir_all(broken.join(class)).unwrap();
        std::fs::write(broken.join(class).join("x.png"), b"not a png").unwrap();
    }
    let out = tiny_train(
        &data,
        &none,
        &["--val", broken.to_str().unwrap(), "--skip-bad", "--no-test"],
    );
    refused(&out, &["validation"]);
    let _ = std::fs::remove_dir_all(&none);
    // RAYON_NUM_THREADS that would hang spawning threads.
    let out = Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args(["summary", "vgg11"])
        .env("RAYON_NUM_THREADS", "100000")
        .output()
        .unwrap();
    refused(&out, &["RAYON_NUM_THREADS=100000", "at most 1024"]);
    // A limit variable that is not a whole number.
    let out = Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args(["summary", "vgg11"])
        .env("VGG_MAX_PARAMS", "0.5")
        .output()
        .unwrap();
    refused(&out, &["VGG_MAX_PARAMS=0.5", "whole number"]);
    // A 2 MB layer file is refused unread; a long bad token is cut in the message.
    let big = tmp("nopanic-layers.txt");
    std::fs::write(&big, "64,".repeat(700_000)).unwrap();
    refused(
        &vgg(&["summary", "x", "--layers", big.to_str().unwrap()]),
        &["too large for a layer list"],
    );
    let token = "9".repeat(100_000);
    let out = vgg(&["summary", "x", "--layers", &format!("64,{token}")]);
    refused(&out, &["expected a width"]);
    assert!(stderr(&out).len() < 400, "{}", stderr(&out).len());
    // Standard error that cannot be written: still exit 2, never a panic's 101.
    let out = Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args(["summary", "no-such-arch"])
        .stderr(Stdio::from(std::fs::File::open("/dev/null").unwrap()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A `--data` path that is not UTF-8 is refused before the run folder is made.
#[cfg(unix)]
#[test]
fn a_path_that_is_not_utf8_is_refused_up_front() {
    use std::os::unix::ffi::OsStrExt;
    let data = tiny_folder("utf8-data", 4, false);
    let odd = data.with_file_name(std::ffi::OsStr::from_bytes(b"utf8-data-\xff"));
    let _ = std::fs::remove_dir_all(&odd);
    std::fs::rename(&data, &odd).unwrap();
    let run = tmp("utf8-run");
    let _ = std::fs::remove_dir_all(&run);
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["train".as_ref(), "--data".as_ref(), odd.as_os_str()];
    args.extend([
        "--out".as_ref(),
        run.as_os_str(),
        "--epochs".as_ref(),
        "1".as_ref(),
    ]);
    args.extend(support::TINY.iter().map(|a| std::ffi::OsStr::new(*a)));
    let out = Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args(&args)
        .output()
        .unwrap();
    refused(&out, &["--data", "not UTF-8"]);
    assert!(!run.exists());
}

/// `features` with no --at works on every network (VGG-11 has no relu1_2), and broken
/// weights give an error, not NaN activations with exit 0; Keras' layer names mean their
/// output in Keras (after the ReLU).
#[test]
fn features_by_default_on_every_network_and_never_nan() {
    let photo = fixture("photo224.png");
    let w = fixture("vgg11_w16.safetensors");
    let out_file = tmp("features-default.safetensors");
    let _ = std::fs::remove_file(&out_file);
    let mut args = vec!["features", "-w", w.to_str().unwrap()];
    args.extend(&W16);
    args.extend(["-o", out_file.to_str().unwrap(), photo.to_str().unwrap()]);
    let out = vgg(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = vgg::checkpoint::read_state_dict(&out_file).unwrap();
    let keys: Vec<&String> = got.keys().collect();
    assert_eq!(
        keys,
        ["relu1_1", "relu2_1", "relu3_2", "relu4_2", "relu5_2"]
    );
    // block1_conv1 (Keras: its ReLU'd output) is relu1_1, not conv1_1.
    let both = tmp("features-keras-names.safetensors");
    let _ = std::fs::remove_file(&both);
    let mut args = vec!["features", "-w", w.to_str().unwrap()];
    args.extend(&W16);
    args.extend([
        "--at",
        "block1_conv1,relu1_1,conv1_1",
        "-o",
        both.to_str().unwrap(),
    ]);
    args.push(photo.to_str().unwrap());
    assert!(vgg(&args).status.success());
    let got = vgg::checkpoint::read_state_dict(&both).unwrap();
    assert!(got["block1_conv1"] == got["relu1_1"]);
    assert!(got["conv1_1"] != got["relu1_1"]);
    // A weight file whose BatchNorm variance is negative: refused, nothing written.
    let mut dict = vgg::checkpoint::read_state_dict(&fixture("vgg11_bn_w16.safetensors")).unwrap();
    let var = dict.get_mut("features.1.running_var").unwrap();
    var.values = vgg::checkpoint::Values::F32(vec![-1.0; var.shape[0]]);
    let bad = tmp("features-negative-var.safetensors");
    vgg::checkpoint::write_safetensors(&dict, &bad).unwrap();
    let nan_out = tmp("features-nan.safetensors");
    let _ = std::fs::remove_file(&nan_out);
    let mut args = vec![
        "features",
        "-w",
        bad.to_str().unwrap(),
        "--arch",
        "vgg11",
        "--bn",
    ];
    args.extend(&W16[2..8]);
    args.extend(["-o", nan_out.to_str().unwrap(), photo.to_str().unwrap()]);
    refused(
        &vgg(&args),
        &["negative variance", "features.1.running_var"],
    );
    assert!(!Path::new(&nan_out).exists());
}

/// The small messages: each names the real cause and the real fix.
#[test]
fn messages_name_the_real_cause() {
    let photo = fixture("photo224.png");
    let home = tmp("msg-home");
    let cwd = tmp("msg-cwd");
    for d in [&home, &cwd] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).unwrap();
    }
    // A relative XDG_CACHE_HOME is ignored (XDG's rule): the cache is $HOME/.cache/vgg, not a
    // folder in the current one. (The server is unreachable: the download itself fails.)
    let out = Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args([
            "predict",
            "-w",
            "torchvision:vgg11",
            "--weights-url",
            "http://127.0.0.1:9",
        ])
        .arg(&photo)
        .env("XDG_CACHE_HOME", "relative-cache")
        .env("HOME", &home)
        .current_dir(&cwd)
        .output()
        .unwrap();
    refused(&out, &["127.0.0.1:9"]);
    assert!(!cwd.join("relative-cache").exists());
    assert!(home.join(".cache/vgg").is_dir());
    // --cache-dir naming a file.
    let file = tmp("msg-cache-file");
    std::fs::write(&file, b"notes").unwrap();
    let out = vgg(&[
        "predict",
        "-w",
        "torchvision:vgg11",
        "--cache-dir",
        file.to_str().unwrap(),
        photo.to_str().unwrap(),
    ]);
    refused(&out, &["is not a folder"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"notes");

    // A limit of this machine is not blamed on a run's config.json.
    let data = tiny_folder("msg-data", 6, false);
    let run = tmp("msg-run");
    let _ = std::fs::remove_dir_all(&run);
    assert!(tiny_train(&data, &run, &[]).status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args(["eval", "-w"])
        .arg(&run)
        .arg("--data")
        .arg(&data)
        .env("VGG_MAX_PARAMS", "1000")
        .output()
        .unwrap();
    refused(&out, &["VGG_MAX_PARAMS=N"]);
    assert!(
        !stderr(&out).contains("holds a bad setting"),
        "{}",
        stderr(&out)
    );

    // A crafted state.json: numbers training never writes are refused, not printed or used.
    let state = std::fs::read_to_string(run.join("state.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&state).unwrap();
    for (pointer, value, needle) in [
        (
            "/best_val_accuracy",
            serde_json::json!(1e308),
            "accuracy of 1e308",
        ),
        (
            "/schedule/lr",
            serde_json::json!(-1.0),
            "learning rate of -1",
        ),
    ] {
        let mut crafted = json.clone();
        *crafted.pointer_mut(pointer).unwrap() = value;
        std::fs::write(run.join("state.json"), crafted.to_string()).unwrap();
        let out = resume(&run, "2");
        refused(&out, &["state.json", needle]);
    }
    std::fs::write(run.join("state.json"), state).unwrap();
}

/// Fine-tuning from a Keras file with no preset flag trains (and stores in the run) Keras'
/// preprocessing, which the run's own weights then carry.
#[test]
fn fine_tuning_from_keras_keeps_its_preprocessing() {
    let data = tiny_folder("ft-keras-data", 6, false);
    let run = tmp("ft-keras-run");
    let _ = std::fs::remove_dir_all(&run);
    let w = fixture("keras_224_w16.weights.h5");
    let mut args = vec![
        "train",
        "--pretrained",
        w.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch",
        "4",
        "--micro-batch",
        "4",
        "--quiet",
        "--no-test",
    ];
    // The W16 trunk under a wider head (ImageNet's head shape): --no-top drops the file's.
    args.extend(&W16[..4]);
    args.extend(["--hidden", "1024", "--num-classes", "10", "--no-top"]);
    let out = vgg(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    // ImageNet's 7x7 head on 32x32 crops is said, with the compact head's size.
    assert!(
        stderr(&out).contains("note: the head is ImageNet's (7x7 map -> 1024 -> 1024")
            && stderr(&out).contains("--pool-size 1 --hidden 512"),
        "{}",
        stderr(&out)
    );
    let config = vgg::train::RunFolder::open(&run)
        .and_then(|f| f.config())
        .unwrap();
    assert_eq!(config.transform.normalize, vgg::preset::Normalize::caffe());
    let carried = vgg::preset::open(
        &run.join("best.safetensors"),
        || Ok(config.model.clone()),
        &vgg::preset::Options::default(),
        &burn::tensor::Device::flex(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(carried.preset.normalize, vgg::preset::Normalize::caffe());
    assert_eq!(carried.preset.classes, ["bottom", "top"]);
}

/// An ONNX model written by `convert` carries its preset in `metadata_props` (as JSON, and as
/// plain `mean`, `std`, `channel_order`, ... entries for other runtimes): read back with no flag,
/// it has Keras' preprocessing and the file's classes.
#[test]
fn onnx_exports_carry_their_preset() {
    let onnx = tmp("keras-converted.onnx");
    let _ = std::fs::remove_file(&onnx);
    let w = fixture("keras_224_w16.keras");
    let mut args = vec!["convert", w.to_str().unwrap(), onnx.to_str().unwrap()];
    args.extend(&W16[..8]);
    let out = vgg(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without the metadata this graph (no NHWC transposes) would open with torchvision's
    // preset: the probabilities are Keras' only if the preset travelled.
    let photo = fixture("photo224.png");
    let mut args = vec!["predict", "-w", onnx.to_str().unwrap()];
    args.extend(&W16[..8]);
    args.extend(["--json", "-k", "10", photo.to_str().unwrap()]);
    let out = vgg(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = vgg::checkpoint::read_state_dict(&fixture("default_presets.io.safetensors"))
        .unwrap()["keras_probs"]
        .to_f32();
    for g in json[0]["top"].as_array().unwrap() {
        let (i, p) = (
            g["index"].as_u64().unwrap() as usize,
            g["probability"].as_f64().unwrap(),
        );
        assert!((p as f32 - want[i]).abs() <= 1e-5, "{json}");
    }
    let bytes = std::fs::read(&onnx).unwrap();
    for needle in ["channel_order", "BGR", "pixel_scale", "vgg.preset"] {
        assert!(
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle}"
        );
    }
}
