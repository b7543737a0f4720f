//! The `vgg` binary as a user runs it: outputs, exit codes, files.

mod support;

use std::path::PathBuf;

use support::{TINY, W16, stderr, tiny_folder, tmp, vgg};

fn fixture(name: &str) -> String {
    support::fixture(name).to_string_lossy().into_owned()
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

/// The network of the fixture `vgg16_bn_w16`, as `convert` flags.
const W16_BN: [&str; 9] = [
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

#[test]
fn convert_pth_to_safetensors_and_burn_and_back() {
    let arch = W16_BN;
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

/// `convert --f16`: half the bytes, every value its f16 rounding (within 2^-11 relative), read
/// back as float32; refused for any output but .safetensors.
#[test]
fn convert_to_half_precision_safetensors() {
    let arch = W16_BN;
    let (full, half) = (tmp("full.safetensors"), tmp("half.safetensors"));
    let _ = std::fs::remove_file(&full);
    let _ = std::fs::remove_file(&half);
    let src = fixture("vgg16_bn_w16.pth");
    for (dst, extra) in [(&full, None), (&half, Some("--f16"))] {
        let mut args = vec!["convert", src.as_str(), dst.to_str().unwrap()];
        args.extend(arch);
        args.extend(extra);
        let out = vgg(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (a, b) = (
        vgg::checkpoint::read_state_dict(&full).unwrap(),
        vgg::checkpoint::read_state_dict(&half).unwrap(),
    );
    let (na, nb) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&half).unwrap().len(),
    );
    assert!(nb * 100 < na * 55, "{nb} bytes against {na}");
    assert_eq!(a.len(), b.len());
    for (key, t) in &a {
        for (x, y) in t.to_f32().iter().zip(b[key].to_f32()) {
            assert!(
                (x - y).abs() <= x.abs() * 2f32.powi(-11) + 6e-8,
                "{key}: {x} vs {y}"
            );
        }
    }
    let mut args = vec![
        "convert",
        src.as_str(),
        "/tmp/vgg-never-written.bpk",
        "--f16",
    ];
    args.extend(arch);
    let out = vgg(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--f16 writes .safetensors only"),
        "{}",
        stderr(&out)
    );
}

/// Every format `-w` reads converts: the authors' 2014 Caffe model to ONNX, that back to
/// safetensors, gives the torchvision-layout weights it was made from, value for value.
#[test]
fn convert_caffe_to_onnx_and_back() {
    let onnx = tmp("from-caffe.onnx");
    let st = tmp("from-onnx.safetensors");
    for p in [&onnx, &st] {
        let _ = std::fs::remove_file(p);
    }
    for (src, dst) in [
        (fixture("vgg11_w16_v1.caffemodel"), &onnx),
        (onnx.to_string_lossy().into_owned(), &st),
    ] {
        let mut args = vec!["convert", src.as_str(), dst.to_str().unwrap()];
        args.extend(&W16[..8]);
        let out = vgg(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let want =
        vgg::checkpoint::read_state_dict(std::path::Path::new(&fixture("vgg11_w16.safetensors")))
            .unwrap();
    let got = vgg::checkpoint::read_state_dict(&st).unwrap();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, t) in &want {
        assert_eq!(got[k].shape, t.shape, "{k}");
        assert!(got[k].to_f32() == t.to_f32(), "{k} differs");
    }
}

/// `vgg train` on a tiny folder with the TINY network, one loader thread.
fn tiny_train<'a>(data: &'a str, out: &'a str, epochs: &'a str, force: bool) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", data, "--epochs", epochs];
    if force {
        args.push("--force");
    }
    args.extend(["--out", out]);
    args.extend(TINY);
    args
}

/// One thread, or three whose lanes run a step's two micro-batches side by side (two and one
/// threads each), train the same weights bit for bit, dropout (0.5) included.
#[test]
fn train_on_one_thread_or_micro_batches_side_by_side_gives_the_same_bits() {
    let data = tiny_folder("tiny-lanes", 12, false);
    let mut weights = Vec::new();
    for threads in ["1", "3"] {
        let out = tmp(&format!("run-lanes-{threads}"));
        let _ = std::fs::remove_dir_all(&out);
        let mut args = tiny_train(data.to_str().unwrap(), out.to_str().unwrap(), "2", false);
        args.extend(["--threads", threads, "--dropout", "0.5"]);
        let run = vgg(&args);
        assert!(run.status.success(), "{}", stderr(&run));
        assert_eq!(
            stderr(&run).contains("2 micro-batches at a time side by side"),
            threads == "3",
            "{}",
            stderr(&run)
        );
        weights.push(std::fs::read(out.join("best.safetensors")).unwrap());
    }
    assert!(weights[0] == weights[1], "the weights differ");
}

#[test]
fn train_writes_log_plot_and_checkpoints_then_resumes() {
    let data = tiny_folder("tiny", 12, false);
    let out = tmp("run-tiny");
    let _ = std::fs::remove_dir_all(&out);
    let args = tiny_train(data.to_str().unwrap(), out.to_str().unwrap(), "2", false);
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
    // Small images: S jittered in [32, 36], and the test scale is the paper's
    // Q = (Smin + Smax) / 2 (Section 4.1), not Smin.
    let t = &config["transform"];
    assert_eq!((&t["scale_min"], &t["scale_max"]), (&32.into(), &36.into()));
    assert_eq!(t["eval_scale"], 34);
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

/// `--precision f16` trains (float16 forward, loss scaling) and is the run's: recorded in its
/// config and state, and a resume cannot change it.
#[test]
fn train_in_float16_records_its_precision_and_keeps_it() {
    let data = tiny_folder("tiny-f16", 12, false);
    let out = tmp("run-f16");
    let _ = std::fs::remove_dir_all(&out);
    let mut args = tiny_train(data.to_str().unwrap(), out.to_str().unwrap(), "1", false);
    args.extend(["--precision", "f16"]);
    let run = vgg(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("float16 mixed precision with loss scaling"),
        "{}",
        stderr(&run)
    );
    let json = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap()
    };
    assert_eq!(json("config.json")["precision"], "f16");
    let scale = &json("state.json")["loss_scale"];
    assert!(scale["scale"].as_f64().unwrap() > 0.0, "{scale}");
    let resumed = vgg(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--resume",
        out.to_str().unwrap(),
        "--epochs",
        "2",
        "--precision",
        "bf16",
    ]);
    assert_eq!(resumed.status.code(), Some(2), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("--precision cannot change a resumed run"),
        "{}",
        stderr(&resumed)
    );
    // Every flag that defines the run, whichever it is, is the run's: the ones a resume
    // applies are listed, the rest refused (the run's own value is harmless).
    let dir = out.to_str().unwrap();
    for (flag, value) in [
        ("--momentum", "0.5"),
        ("--hidden", "64"),
        ("--init", "paper"),
        ("--pca-std", "0"),
        ("--mean", "0.5,0.5,0.5"),
    ] {
        let changed = vgg(&["train", "--resume", dir, "--epochs", "2", flag, value]);
        assert_eq!(
            changed.status.code(),
            Some(2),
            "{flag}: {}",
            stderr(&changed)
        );
        assert!(
            stderr(&changed).contains(&format!("{flag} cannot change a resumed run")),
            "{}",
            stderr(&changed)
        );
    }
    let bad = vgg(&["train", "--precision", "f8", "--epochs", "1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("f32, f16 or bf16"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn train_names_a_broken_image_and_skip_bad_counts_it() {
    let data = tiny_folder("tiny-broken", 12, true);
    let out = tmp("run-broken");
    let mut args = tiny_train(data.to_str().unwrap(), out.to_str().unwrap(), "1", true);
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
        .map(|l| l.split(',').nth(10).unwrap().parse::<usize>().unwrap())
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

/// chelsea.png (scikit-image's cat photo), centre-cropped and resized to 224x224 here, so the
/// network sees exactly these pixels.
fn chelsea_224() -> PathBuf {
    let path = tmp("chelsea224.png");
    let img = image::open(fixture("chelsea.png")).unwrap().to_rgb8();
    let side = img.width().min(img.height());
    let square = image::imageops::crop_imm(
        &img,
        (img.width() - side) / 2,
        (img.height() - side) / 2,
        side,
        side,
    )
    .to_image();
    image::imageops::resize(&square, 224, 224, image::imageops::FilterType::Triangle)
        .save(&path)
        .unwrap();
    path
}

fn labels_file(n: usize) -> PathBuf {
    let path = tmp(&format!("labels{n}.txt"));
    std::fs::write(
        &path,
        (0..n).map(|i| format!("class {i}\n")).collect::<String>(),
    )
    .unwrap();
    path
}

#[test]
fn predict_a_real_photo_round_trip() {
    let photo = chelsea_224();
    let weights = fixture("vgg11_w16.safetensors");
    let labels = labels_file(10);
    let mut args = vec![
        "predict",
        photo.to_str().unwrap(),
        "-w",
        weights.as_str(),
        "--labels",
        labels.to_str().unwrap(),
        "--json",
        "-k",
        "3",
    ];
    args.extend(W16);
    let out = vgg(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = json[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(json[0]["path"], photo.to_str().unwrap());

    // The same pixels through the library by hand: [0, 1], ImageNet mean/std, softmax.
    use burn::tensor::{Device, Tensor, TensorData, activation::softmax};
    let img = image::open(&photo).unwrap().to_rgb8();
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let mut x = vec![0f32; 3 * 224 * 224];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            x[c * 224 * 224 + i] = (p[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    let device = Device::flex();
    let config = vgg::VggConfig::named("vgg11")
        .unwrap()
        .with_hidden(32)
        .with_num_classes(10);
    let config = vgg::VggConfig {
        layers: vgg::arch::parse_layers("4,M,8,M,16,16,M,32,32,M,32,32,M").unwrap(),
        ..config
    };
    let model = vgg::Vgg::load(&config, std::path::Path::new(&weights), &device).unwrap();
    let probs = softmax(
        model.forward(Tensor::from_data(
            TensorData::new(x, [1, 3, 224, 224]),
            &device,
        )),
        1,
    );
    let probs = probs
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    for guess in top {
        let i = guess["index"].as_u64().unwrap() as usize;
        assert_eq!(guess["label"], format!("class {i}"));
        assert!((guess["probability"].as_f64().unwrap() as f32 - probs[i]).abs() < 1e-6);
    }
    let best = (0..10)
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
        .unwrap();
    assert_eq!(top[0]["index"], best);

    // Weights whose class count differs from the labels: exit 2, named.
    let predict = |image: &PathBuf, labels: &PathBuf| {
        let mut args = vec![
            "predict",
            image.to_str().unwrap(),
            "-w",
            weights.as_str(),
            "--labels",
            labels.to_str().unwrap(),
        ];
        args.extend(W16);
        vgg(&args)
    };
    let out = predict(&photo, &labels_file(11));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("10 classes but there are 11 labels"),
        "{}",
        stderr(&out)
    );
    // An image too small to be upscaled to 224: named, exit 2.
    let tiny = tmp("tiny.png");
    image::GrayImage::new(8, 8).save(&tiny).unwrap();
    let out = predict(&tiny, &labels);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("tiny.png") && stderr(&out).contains("too small"),
        "{}",
        stderr(&out)
    );
    // A truncated image: named, exit 2.
    let cut = tmp("cut.png");
    let bytes = std::fs::read(&photo).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = predict(&cut, &labels);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cut.png"), "{}", stderr(&out));
}

#[test]
fn features_to_safetensors_and_npy() {
    let photo = chelsea_224();
    let weights = fixture("vgg11_w16.safetensors");
    let st = tmp("feats.safetensors");
    let mut args = vec![
        "features",
        photo.to_str().unwrap(),
        photo.to_str().unwrap(),
        "-w",
        weights.as_str(),
        "--at",
        "relu1_1,pool5,features.3,fc7",
        "-o",
        st.to_str().unwrap(),
    ];
    args.extend(W16);
    let out = vgg(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let dict = vgg::checkpoint::read_state_dict(&st).unwrap();
    assert_eq!(dict["relu1_1"].shape, vec![2, 4, 224, 224]);
    assert_eq!(dict["pool5"].shape, vec![2, 32, 7, 7]);
    assert_eq!(dict["features.3"].shape, vec![2, 8, 112, 112]);
    assert_eq!(dict["fc7"].shape, vec![2, 32]);
    // Both images are the same: the two rows agree.
    let fc7 = dict["fc7"].to_f32();
    assert_eq!(fc7[..32], fc7[32..]);
    let dir = tmp("npy");
    let mut args = vec![
        "features",
        photo.to_str().unwrap(),
        "-w",
        weights.as_str(),
        "--at",
        "fc7",
        "-o",
        dir.to_str().unwrap(),
    ];
    args.extend(W16);
    assert!(vgg(&args).status.success());
    let npy = std::fs::read(dir.join("fc7.npy")).unwrap();
    assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert!(String::from_utf8_lossy(&npy[10..10 + header_len]).contains("'shape': (1, 32)"));
    let first = f32::from_le_bytes(npy[10 + header_len..14 + header_len].try_into().unwrap());
    assert_eq!(first, fc7[0]);
}

#[test]
fn eval_a_run_on_its_data_as_a_table_and_json() {
    let data = tiny_folder("tiny-eval", 12, false);
    let out = tmp("run-eval");
    let args = tiny_train(data.to_str().unwrap(), out.to_str().unwrap(), "1", true);
    assert!(vgg(&args).status.success());
    let run = vgg(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "-w",
        out.to_str().unwrap(),
        "--method",
        "center,dense,multicrop,dense+multicrop",
        "--scales",
        "32,36",
        "--json",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let rows: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["images"], 24);
        assert_eq!(r["scales"], serde_json::json!([32, 36]));
        let (e, a) = (
            r["top1_err"].as_f64().unwrap(),
            r["top1_acc"].as_f64().unwrap(),
        );
        assert!((e + a - 1.0).abs() < 1e-12 && (a * 24.0 - (a * 24.0).round()).abs() < 1e-9);
    }
    let table = vgg(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "-w",
        out.to_str().unwrap(),
        "-w",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("2 model(s)") && text.contains("top-1 err %") && text.contains("center"),
        "{text}"
    );
}

/// An MNIST-style IDX folder: `train` and `t10k` images of two classes (bright top or
/// bottom half, 28x28), half of each class.
fn idx_folder(name: &str, train: usize, test: usize) -> PathBuf {
    let root = tmp(name);
    std::fs::create_dir_all(&root).unwrap();
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let mut images = [0, 0, 8, 3].to_vec();
        let mut labels = [0, 0, 8, 1].to_vec();
        for header in [&mut images, &mut labels] {
            header.extend((n as u32).to_be_bytes());
        }
        images.extend([28u32, 28].iter().flat_map(|v| v.to_be_bytes()));
        for i in 0..n {
            let top = i % 2;
            labels.push(top as u8);
            images.extend((0..28 * 28).map(|p| {
                if (p / 28 < 14) == (top == 1) {
                    200
                } else {
                    (i * 7 % 50) as u8
                }
            }));
        }
        std::fs::write(root.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(root.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
    root
}

/// `--no-test` leaves the test split alone; `vgg eval --split val` scores a run's checkpoint on
/// the very images it validated on (its best validation accuracy, again), and refuses what has
/// no such images.
#[test]
fn eval_on_a_runs_own_validation_split() {
    let data = idx_folder("idx-val", 40, 10);
    let out = tmp("run-val");
    let mut args = tiny_train(data.to_str().unwrap(), out.to_str().unwrap(), "2", true);
    args.extend(["--val-fraction", "0.25", "--no-test"]);
    let trained = vgg(&args);
    assert!(trained.status.success(), "{}", stderr(&trained));
    let text = stderr(&trained);
    assert!(
        text.contains("test set not scored (--no-test)") && !text.contains("test set (10 images)"),
        "{text}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("state.json")).unwrap()).unwrap();
    let best = state["best_val_accuracy"].as_f64().unwrap();

    let run = out.to_str().unwrap();
    let eval = vgg(&["eval", "-w", run, "--split", "val", "--json"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let rows: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    // 10 of the 40 training images (5 per class), the centre crop at the run's Q = 34: what
    // the trainer's validation scored.
    assert_eq!(rows[0]["images"], 10);
    assert_eq!(rows[0]["split"], "val");
    assert_eq!(rows[0]["scales"], serde_json::json!([34]));
    assert!(
        (rows[0]["top1_acc"].as_f64().unwrap() - best).abs() < 1e-9,
        "{rows} vs {best}"
    );
    let table = vgg(&["eval", "-w", run, "-w", run, "--split", "val"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("(validation split) (10 images)"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );

    // The run keeps --no-test: resumed without the flag, it still leaves the test split alone.
    let resumed = vgg(&["train", "--resume", run, "--epochs", "3", "--quiet"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("test set not scored (--no-test)"),
        "{}",
        stderr(&resumed)
    );

    // Without --no-test, the run scores its test split once at the end.
    let other = tmp("run-val-seed");
    let mut args = tiny_train(data.to_str().unwrap(), other.to_str().unwrap(), "1", true);
    args.extend(["--val-fraction", "0.25", "--seed", "7"]);
    let trained = vgg(&args);
    assert!(
        stderr(&trained).contains("test set (10 images)"),
        "{}",
        stderr(&trained)
    );

    // Data that changed since the run: its split would be other images, so it is refused.
    let grown = idx_folder("idx-val", 44, 10);
    assert_eq!(grown, data);
    let refused = vgg(&["eval", "-w", run, "--split", "val"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("the run's training set had 30 images")
            && stderr(&refused).contains("the data is not the run's"),
        "{}",
        stderr(&refused)
    );

    let weights = out.join("best.safetensors");
    let copied = tmp("loose.safetensors");
    std::fs::copy(&weights, &copied).unwrap();
    for (args, needle) in [
        (
            vec![
                "eval",
                "-w",
                run,
                "--split",
                "val",
                "--data",
                data.to_str().unwrap(),
            ],
            "drop --data",
        ),
        (vec!["eval", "-w", run], "give --data"),
        (
            vec!["eval", "-w", copied.to_str().unwrap(), "--split", "val"],
            "a weight file has no validation images",
        ),
        (
            vec![
                "eval",
                "-w",
                run,
                "-w",
                other.to_str().unwrap(),
                "--split",
                "val",
            ],
            "validated on different images",
        ),
    ] {
        let refused = vgg(&args);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&refused)
        );
        assert!(
            stderr(&refused).contains(needle),
            "{args:?}: {}",
            stderr(&refused)
        );
    }
}

/// The bench's rows carry the documented fields (no timing is asserted), float32 unless
/// `--precision` says otherwise.
#[test]
fn bench_json_rows_have_the_documented_fields() {
    let args = [
        "bench",
        "--arch",
        "vgg11_bn",
        "--mode",
        "train",
        "--input",
        "3x32x32",
        "--batch",
        "2",
        "--compact",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--json",
    ];
    let half = vgg(&[&args[..], &["--precision", "f16"]].concat());
    assert!(half.status.success(), "{}", stderr(&half));
    let rows: serde_json::Value = serde_json::from_slice(&half.stdout).unwrap();
    assert_eq!(rows[0]["precision"], "f16");
    assert!(rows[0]["images_per_s"].as_f64().unwrap() > 0.0);
    let out = vgg(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(
        (
            row["variant"].as_str(),
            row["mode"].as_str(),
            row["batch"].as_u64()
        ),
        (Some("vgg11_bn"), Some("train"), Some(2))
    );
    assert_eq!(row["input"], serde_json::json!([3, 32, 32]));
    assert_eq!(row["precision"], "f32");
    for field in [
        "images_per_s",
        "gflops",
        "peak_fraction",
        "peak_rss_bytes",
        "median_ms",
    ] {
        assert!(row[field].as_f64().unwrap() > 0.0, "{field}: {row}");
    }
}

/// Fine-tuning a run on new data: what was loaded and what is new is printed and stored, the
/// frozen layers stay; a trunk (convolutions only) serves `features` and is refused by `predict`.
#[test]
fn fine_tune_a_run_and_use_its_trunk() {
    let data = tiny_folder("ft-data", 8, false);
    let source = tmp("ft-source");
    let args = tiny_train(data.to_str().unwrap(), source.to_str().unwrap(), "1", true);
    assert!(vgg(&args).status.success());
    let other = tiny_folder("ft-other", 6, false);
    let tuned = tmp("ft-tuned");
    let out = vgg(&[
        "train",
        "--pretrained",
        source.to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
        "--out",
        tuned.to_str().unwrap(),
        "--force",
        "--freeze",
        "conv4_1",
        "--lr-pretrained",
        "0.1",
        "--epochs",
        "1",
        "--batch",
        "4",
        "--micro-batch",
        "4",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("loaded 52 tensors; new: classifier.6; frozen before conv4_1"),
        "{}",
        stderr(&out)
    );
    let config = vgg::train::RunFolder::open(&tuned)
        .and_then(|f| f.config())
        .unwrap();
    let p = config.pretrained.unwrap();
    assert_eq!(p.fresh, ["classifier.6.weight", "classifier.6.bias"]);
    assert_eq!((p.freeze.as_deref(), p.lr_scale), (Some("conv4_1"), 0.1));
    // The source's preprocessing is kept: no mean was measured on the new data.
    let src = vgg::train::RunFolder::open(&source)
        .and_then(|f| f.config())
        .unwrap();
    assert_eq!(config.transform.normalize, src.transform.normalize);
    // The frozen convolutions (before conv4_1 = features.15) are the source's, bit for bit.
    let (a, b) = (
        vgg::checkpoint::read_state_dict(&source.join("best.safetensors")).unwrap(),
        vgg::checkpoint::read_state_dict(&tuned.join("best.safetensors")).unwrap(),
    );
    assert_eq!(a["features.0.weight"], b["features.0.weight"]);
    assert_eq!(a["features.12.running_var"], b["features.12.running_var"]);
    assert_ne!(a["features.15.weight"], b["features.15.weight"]);

    // The convolutions alone, as a trunk file: features up to pool5, and nothing that classifies.
    let mut trunk = a.clone();
    trunk.retain(|k, _| k.starts_with("features."));
    let trunk_file = tmp("trunk.safetensors");
    vgg::checkpoint::write_safetensors(&trunk, &trunk_file).unwrap();
    let flags = [
        "--arch",
        "vgg11_bn",
        "--width",
        "0.0625",
        "--hidden",
        "16",
        "--pool-size",
        "1",
        "--in-channels",
        "1",
        "--num-classes",
        "2",
        "--preset",
        "torchvision",
    ];
    let photo = data.join("top/0.png");
    let feats = tmp("trunk-feats.safetensors");
    let run_features = |at: &str| {
        let mut args = vec![
            "features",
            photo.to_str().unwrap(),
            "-w",
            trunk_file.to_str().unwrap(),
            "--at",
            at,
            "-o",
            feats.to_str().unwrap(),
            "--force",
            "--size",
            "32",
        ];
        args.extend(flags);
        vgg(&args)
    };
    let out = run_features("pool5");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        vgg::checkpoint::read_state_dict(&feats).unwrap()["pool5"].shape,
        vec![1, 32, 1, 1]
    );
    let out = run_features("fc7");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("trunk") && stderr(&out).contains("pool5"),
        "{}",
        stderr(&out)
    );
    let mut args = vec![
        "predict",
        photo.to_str().unwrap(),
        "-w",
        trunk_file.to_str().unwrap(),
    ];
    args.extend(flags);
    let out = vgg(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("a trunk"), "{}", stderr(&out));
    // --no-top makes a trunk of a whole run; a trunk missing a convolution is refused by name.
    let out = vgg(&[
        "predict",
        photo.to_str().unwrap(),
        "-w",
        source.to_str().unwrap(),
        "--no-top",
    ]);
    assert!(
        stderr(&out).contains("--no-top dropped the head"),
        "{}",
        stderr(&out)
    );
    trunk.remove("features.4.weight");
    vgg::checkpoint::write_safetensors(&trunk, &trunk_file).unwrap();
    let out = run_features("pool5");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("features.4.weight"),
        "{}",
        stderr(&out)
    );
}

/// Published weights by name: an unknown name lists the known ones; a server that cannot be
/// reached is one line naming the URL (the fetching itself is tested against a local server in
/// the library's tests).
#[test]
fn published_weights_by_name() {
    let photo = fixture("chelsea.png");
    let cache = tmp("cache");
    let out = vgg(&[
        "predict",
        &photo,
        "-w",
        "torchvision:vgg17",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("torchvision:vgg17 is not a published VGG")
            && stderr(&out).contains("vgg16_features"),
        "{}",
        stderr(&out)
    );
    let out = vgg(&[
        "predict",
        &photo,
        "-w",
        "torchvision:vgg11",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--weights-url",
        "http://127.0.0.1:9/models",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("http://127.0.0.1:9/models/vgg11-8a719046.pth"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
}

/// A device this build lacks, or a name that is no device: one line naming `--device`, exit 2.
#[test]
fn device_not_compiled_in_or_unknown_is_refused() {
    if !cfg!(feature = "cuda") {
        let out = vgg(&[
            "bench", "--arch", "vgg11", "--device", "cuda", "--runs", "1",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains("--features cuda") && text.contains("--device"),
            "{text}"
        );
    }
    let out = vgg(&["train", "--device", "tpu", "--epochs", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("wgpu-cpu"), "{}", stderr(&out));
}

/// WGSL has no bfloat16: a wgpu run in bf16 is refused before it starts, naming the flag.
#[cfg(feature = "wgpu")]
#[test]
fn bfloat16_on_wgpu_is_refused_before_training() {
    let out = tmp("run-bf16-wgpu");
    let _ = std::fs::remove_dir_all(&out);
    let run = vgg(&[
        "train",
        "--device",
        "wgpu-cpu",
        "--precision",
        "bf16",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let text = stderr(&run);
    assert!(
        text.contains("bf16") && text.contains("--precision"),
        "{text}"
    );
    assert!(!out.exists(), "nothing is written for a refused run");
}

/// The top-k probabilities `vgg predict --json` gives for `image` with the run `run` on `device`.
#[cfg(feature = "wgpu")]
fn probabilities(run: &std::path::Path, image: &std::path::Path, device: &str) -> Vec<f64> {
    let out = vgg(&[
        "predict",
        image.to_str().unwrap(),
        "-w",
        run.to_str().unwrap(),
        "--json",
        "--device",
        device,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows[0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect()
}

/// Issue 14: a run trained on a GPU device (lavapipe here) is an ordinary run: its checkpoint
/// predicts the same on flex and on the device, and it resumes on flex.
#[cfg(feature = "wgpu")]
#[test]
fn train_on_wgpu_cpu_then_predict_and_resume_on_flex() {
    let data = tiny_folder("tiny-gpu", 8, false);
    let out = tmp("run-gpu");
    let mut args = tiny_train(data.to_str().unwrap(), out.to_str().unwrap(), "1", true);
    args.extend(["--device", "wgpu-cpu"]);
    let run = vgg(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    let image = std::fs::read_dir(data.join("top"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (flex, gpu) = (
        probabilities(&out, &image, "flex"),
        probabilities(&out, &image, "wgpu-cpu"),
    );
    assert_eq!(flex.len(), gpu.len());
    for (a, b) in flex.iter().zip(&gpu) {
        assert!((a - b).abs() < 1e-4, "flex {flex:?} vs wgpu-cpu {gpu:?}");
    }
    // The weights file is the same whichever device wrote it: the run's best.bpk read on flex
    // and written again is the run's best.safetensors (written from the device), byte for byte.
    let again = tmp("run-gpu-again.safetensors");
    let convert = vgg(&[
        "convert",
        out.join("best.bpk").to_str().unwrap(),
        again.to_str().unwrap(),
        "--force",
    ]);
    assert!(convert.status.success(), "{}", stderr(&convert));
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(out.join("best.safetensors")).unwrap(),
        "a checkpoint written on wgpu-cpu and rewritten on flex differs"
    );
    let resumed = vgg(&[
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--epochs",
        "2",
        "--device",
        "flex",
        "--quiet",
    ]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let log = std::fs::read_to_string(out.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
}

/// The small things a user meets first (issue 27): `--batch N` alone picks a micro-batch that
/// divides it, `features --list` needs neither images nor -o, and the help says what each
/// flag and command does.
#[test]
fn first_touch_defaults_and_help() {
    let data = tiny_folder("first-touch", 6, false);
    let run = tmp("first-touch-run");
    let _ = std::fs::remove_dir_all(&run);
    let mut args = vec![
        "train".to_string(),
        "--data".into(),
        data.to_str().unwrap().into(),
        "--out".into(),
        run.to_str().unwrap().into(),
        "--epochs".into(),
        "1".into(),
        "--batch".into(),
        "12".into(),
    ];
    // TINY without its --batch and --micro-batch.
    let mut tiny = TINY.iter();
    while let Some(a) = tiny.next() {
        if *a == "--batch" || *a == "--micro-batch" {
            tiny.next();
        } else {
            args.push(a.to_string());
        }
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = vgg(&argv);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = vgg::train::RunFolder::open(&run)
        .and_then(|f| f.config())
        .unwrap();
    assert_eq!((config.batch, config.micro_batch), (12, 12));

    let list = vgg(&["features", "-w", run.to_str().unwrap(), "--list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("relu1_1") && text.contains("fc8"), "{text}");

    let help = String::from_utf8_lossy(&vgg(&["--help"]).stdout).into_owned();
    assert!(
        help.contains(".caffemodel") && help.contains(".onnx"),
        "{help}"
    );
    let help = String::from_utf8_lossy(&vgg(&["predict", "--help"]).stdout).into_owned();
    assert!(help.contains("Test scale Q"), "{help}");
}
