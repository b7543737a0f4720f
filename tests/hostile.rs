//! The tool against a hostile user: each defect of issue 10 ("Nothing lost, nothing wrong") as
//! the command that showed it, now answered with one clear line and exit code 2, nothing of the
//! user's touched, no number that is not true.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{W16, fixture, refused, resume, stderr, tiny_folder, tiny_train as train, tmp, vgg};

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Defect 1: `--force` named a folder of notes: it deleted them, then failed. Now only a run's own
/// files go, only from a run's folder, and only once every input is valid.
#[test]
fn force_never_deletes_what_vgg_did_not_write() {
    let data = tiny_folder("force-data", 6, false);
    let notes = tmp("notes");
    let _ = std::fs::remove_dir_all(&notes);
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("thesis.txt"), "five years of work").unwrap();
    let before = listing(&notes);
    refused(
        &train(&data, &notes, &["--force"]),
        &["not a vgg run folder", "nothing in it was touched", "--out"],
    );
    assert_eq!(listing(&notes), before);

    // A real run, a user's file put beside it, then --force with a missing --init-from: the
    // error comes first, the folder is as it was.
    let run = tmp("force-run");
    let _ = std::fs::remove_dir_all(&run);
    assert!(train(&data, &run, &[]).status.success());
    std::fs::write(run.join("my-notes.txt"), "keep me").unwrap();
    let before = listing(&run);
    refused(
        &train(
            &data,
            &run,
            &["--force", "--init-from", "/missing.safetensors"],
        ),
        &["/missing.safetensors"],
    );
    assert_eq!(listing(&run), before);
    // A valid --force replaces the run's files and keeps the user's.
    let again = train(&data, &run, &["--force"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_to_string(run.join("my-notes.txt")).unwrap(),
        "keep me"
    );
    assert!(run.join("best.bpk").exists());
}

/// Defect 2: Ties and NaN counted as hits: an all-zero network scored 0% error, `--lr nan` reported
/// 100% accuracy. Now ties rank against the true class and non-finite numbers are errors.
#[test]
fn ties_are_not_hits_and_nan_is_never_an_accuracy() {
    let data = tiny_folder("ties-data", 6, false);
    let run = tmp("ties-run");
    let _ = std::fs::remove_dir_all(&run);
    assert!(train(&data, &run, &[]).status.success());
    // The run's network with every weight zero: every class scores the same.
    let config = vgg::train::RunFolder::open(&run)
        .and_then(|f| f.config())
        .unwrap();
    let device = burn::tensor::Device::flex();
    let model = vgg::Vgg::load(&config.model, &run.join("best.bpk"), &device).unwrap();
    let zero: vgg::StateDict = model
        .state_dict()
        .into_iter()
        .map(|(k, mut t)| {
            if let vgg::checkpoint::Values::F32(v) = &mut t.values {
                v.iter_mut().for_each(|x| *x = 0.0);
            }
            (k, t)
        })
        .collect();
    model
        .load_state_dict_unchecked(&zero, &device)
        .save(&run.join("best.bpk"))
        .unwrap();
    let out = vgg(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "-w",
        run.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["top1_err"], 1.0, "{rows}");

    let nan = tmp("nan-run");
    let _ = std::fs::remove_dir_all(&nan);
    refused(
        &train(&data, &nan, &["--lr", "nan"]),
        &["lr", "NaN", "--lr"],
    );
    assert!(!nan.exists(), "nothing is written for a bad setting");
    // A learning rate that diverges: the run stops, no accuracy is printed.
    let out = train(&data, &nan, &["--lr", "1e30"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        (text.contains("loss became") || text.contains("NaN or infinite"))
            && !text.contains("accuracy"),
        "{text}"
    );
}

/// Defect 3: `--resume` took the data, seed and split from the command line. Now the run's config
/// decides, flags that contradict it are refused by name, and a foreign checkpoint is refused.
#[test]
fn resume_continues_the_run_it_names() {
    let data = tiny_folder("resume-a", 6, false);
    let other = tiny_folder("resume-b", 9, false);
    let run = tmp("resume-run");
    let _ = std::fs::remove_dir_all(&run);
    assert!(train(&data, &run, &[]).status.success());
    let resume = |extra: &[&str]| {
        let mut args = vec!["train", "--resume", run.to_str().unwrap(), "--quiet"];
        args.extend(extra);
        vgg(&args)
    };
    refused(
        &resume(&["--data", other.to_str().unwrap(), "--epochs", "2"]),
        &["--data cannot change"],
    );
    refused(
        &resume(&["--seed", "7", "--epochs", "2"]),
        &["--seed cannot change"],
    );
    refused(
        &resume(&["--lr", "0.5", "--epochs", "2"]),
        &["--lr cannot change"],
    );
    refused(&resume(&["--epochs", "1"]), &["trained 1 epoch"]);
    // The same value as the run's is not a contradiction; the data comes from config.json.
    let out = resume(&["--epochs", "2", "--seed", "42"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    let config = vgg::train::RunFolder::open(&run)
        .and_then(|f| f.config())
        .unwrap();
    assert_eq!(config.epochs, 2);
    assert_eq!(config.train_images + config.val_images, 12);

    // Another run's optimiser state put in place of this one's.
    let stranger = tmp("resume-stranger");
    let _ = std::fs::remove_dir_all(&stranger);
    assert!(
        train(&data, &stranger, &["--seed", "5", "--epochs", "2"])
            .status
            .success()
    );
    std::fs::copy(
        stranger.join("epoch-2-optim.bpk"),
        run.join("epoch-2-optim.bpk"),
    )
    .unwrap();
    refused(
        &resume(&["--epochs", "3"]),
        &["epoch-2-optim.bpk", "is not the checkpoint this run wrote"],
    );
}

/// Defect 4: A crafted state.json named `../VICTIM/epoch-1.bpk`, and resume deleted it.
#[test]
fn run_files_cannot_point_outside_the_run() {
    let data = tiny_folder("victim-data", 6, false);
    let victim = tmp("victim");
    let run = tmp("crafted");
    for d in [&victim, &run] {
        let _ = std::fs::remove_dir_all(d);
        assert!(train(&data, d, &[]).status.success());
    }
    let state_path = run.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["model_file"] = serde_json::json!("../victim/epoch-1.bpk");
    std::fs::write(&state_path, state.to_string()).unwrap();
    let out = resume(&run, "2");
    refused(&out, &["state.json", "not this run's epoch-1.bpk"]);
    assert!(victim.join("epoch-1.bpk").exists());
    // A run-file error is about the run file, not a "dataset".
    assert!(!stderr(&out).contains("dataset"), "{}", stderr(&out));
}

/// Defect 5: Panics: IDX with no images, a closed stdout, `bench --batch 0`, more pools than pixels.
#[test]
fn hostile_inputs_are_errors_not_panics() {
    let d = tmp("idx-empty");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("train-images-idx3-ubyte"),
        [0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28],
    )
    .unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 0]).unwrap();
    refused(
        &vgg(&["train", "--data", d.to_str().unwrap()]),
        &["no images"],
    );
    std::fs::write(
        d.join("train-images-idx3-ubyte"),
        [0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 28],
    )
    .unwrap();
    refused(
        &vgg(&["train", "--data", d.to_str().unwrap()]),
        &["no images"],
    );
    refused(
        &vgg(&["summary", "--layers", "8,M,M,M,M,M,M", "--input", "3x32x32"]),
        &["too small"],
    );
    // A network's pools on a map smaller than they need: refused before any child runs.
    refused(
        &vgg(&[
            "bench", "--arch", "vgg16", "--input", "3x16x16", "--batch", "1", "--runs", "1",
        ]),
        &["16x16 is too small", "5 max-pools"],
    );
    let out = vgg(&["bench", "--batch", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--batch") && !stderr(&out).contains("panicked"));
    // stdout closed before vgg writes: it stops quietly.
    for args in [vec!["summary", "vgg16"], vec!["summary", "vgg11", "--json"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vgg"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
}

/// Defect 6: Tiny files that asked for gigabytes: refused from their headers, naming the limit.
#[test]
fn tiny_files_cannot_ask_for_gigabytes() {
    // A 1x60000 PNG (a few hundred bytes) in an eval folder: 47 GB once rescaled to 224.
    let d = tmp("strip");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("a")).unwrap();
    image::GrayImage::new(60000, 1)
        .save(d.join("a/strip.png"))
        .unwrap();
    let weights = format!(
        "{}/crates/vgg/tests/fixtures/vgg11_w16.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut args = vec![
        "eval",
        "--data",
        d.to_str().unwrap(),
        "-w",
        weights.as_str(),
    ];
    args.extend(W16);
    refused(
        &vgg(&args),
        &["strip.png", "too small", "enlarged", "--skip-bad"],
    );
    // A gzip IDX whose header promises 4 GB.
    let bomb = tmp("bomb");
    let _ = std::fs::remove_dir_all(&bomb);
    std::fs::create_dir_all(&bomb).unwrap();
    let mut header = vec![0, 0, 8, 3];
    for dim in [65536u32, 256, 257] {
        header.extend(dim.to_be_bytes());
    }
    header.extend(vec![0u8; 1 << 16]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &header).unwrap();
    std::fs::write(
        bomb.join("train-images-idx3-ubyte.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    std::fs::write(
        bomb.join("train-labels-idx1-ubyte.gz"),
        [0, 0, 8, 1, 0, 1, 0, 0],
    )
    .unwrap();
    refused(
        &vgg(&["train", "--data", bomb.to_str().unwrap()]),
        &["max_dataset_bytes", "VGG_MAX_DATASET_BYTES"],
    );
    refused(
        &vgg(&["summary", "vgg16", "--width", "1e4"]),
        &["max_params", "VGG_MAX_PARAMS"],
    );
    refused(
        &vgg(&["summary", "vgg16", "--width", "1e9"]),
        &["64-bit", "--width"],
    );
    refused(
        &vgg(&["summary", "vgg16", "--input", "3x20000x20000"]),
        &["max_tensor_bytes", "VGG_MAX_TENSOR_BYTES"],
    );
    let data = tiny_folder("channels-data", 6, false);
    let out = tmp("channels-run");
    refused(
        &train(&data, &out, &["--in-channels", "1000"]),
        &["1 or 3", "--in-channels"],
    );
    // A limit is set by its variable; a value that is not a number is refused.
    let raised = Command::new(env!("CARGO_BIN_EXE_vgg"))
        .args(["summary", "vgg16", "--input", "3x20000x20000"])
        .env("VGG_MAX_TENSOR_BYTES", "nonsense")
        .output()
        .unwrap();
    refused(&raised, &["VGG_MAX_TENSOR_BYTES=nonsense"]);
    // An instruction set the CPU does not run (or that does not exist) is refused by name, the
    // sets there are listed; a portable run is always possible.
    let isa = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_vgg"))
            .args(["summary", "vgg11"])
            .env("VGG_ISA", name)
            .output()
            .unwrap()
    };
    refused(&isa("avx9"), &["VGG_ISA", "\"avx9\"", "portable"]);
    assert_eq!(isa("portable").status.code(), Some(0));
}

/// Defect 7: Accepted silently: a truncated JPEG, NaN weights, a CIFAR label of 200, negative or NaN
/// hyper-parameters, an overwritten features file, zero epochs.
#[test]
fn what_was_accepted_silently_is_refused() {
    let jpeg = tmp("cut.jpg");
    let photo = image::open(fixture("chelsea.png")).unwrap().to_rgb8();
    let mut bytes = Vec::new();
    photo
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(&jpeg, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let weights = fixture("vgg11_w16.safetensors");
    let mut args = vec![
        "predict",
        jpeg.to_str().unwrap(),
        "-w",
        weights.to_str().unwrap(),
    ];
    args.extend(W16);
    let out = vgg(&args);
    refused(&out, &["cut.jpg", "truncated JPEG"]);
    // predict has no --skip-bad: it is not suggested.
    assert!(!stderr(&out).contains("--skip-bad"));

    let mut dict = vgg::checkpoint::read_state_dict(&weights).unwrap();
    if let vgg::checkpoint::Values::F32(v) = &mut dict.get_mut("classifier.6.bias").unwrap().values
    {
        v[0] = f32::NAN;
    }
    let nan = tmp("nan.safetensors");
    vgg::checkpoint::write_safetensors(&dict, &nan).unwrap();
    let photo_png = tmp("photo.png");
    photo.save(&photo_png).unwrap();
    let mut args = vec![
        "predict",
        photo_png.to_str().unwrap(),
        "-w",
        nan.to_str().unwrap(),
    ];
    args.extend(W16);
    refused(
        &vgg(&args),
        &["nan.safetensors", "classifier.6.bias", "NaN"],
    );

    let cifar = tmp("cifar200");
    let _ = std::fs::remove_dir_all(&cifar);
    std::fs::create_dir_all(&cifar).unwrap();
    let mut record = vec![200u8];
    record.extend(vec![0u8; 3072]);
    std::fs::write(cifar.join("data_batch_1.bin"), &record).unwrap();
    refused(
        &vgg(&["train", "--data", cifar.to_str().unwrap()]),
        &["label 200"],
    );

    let data = tiny_folder("flags-data", 6, false);
    let out = tmp("flags-run");
    for (flag, value) in [
        ("--lr", "-0.1"),
        ("--momentum", "nan"),
        ("--momentum", "1.5"),
        ("--weight-decay", "-1"),
        ("--pca-std", "nan"),
        ("--pca-std", "-2"),
        ("--val-fraction", "1.5"),
    ] {
        refused(&train(&data, &out, &[&format!("{flag}={value}")]), &[flag]);
        assert!(!out.exists(), "{flag} {value}: nothing written");
    }
    let out0 = vgg(&["train", "--data", data.to_str().unwrap(), "--epochs", "0"]);
    assert_eq!(out0.status.code(), Some(2));
    assert!(stderr(&out0).contains("--epochs"));

    let existing = tmp("feats-existing.safetensors");
    std::fs::write(&existing, b"my own file").unwrap();
    let mut args = vec![
        "features",
        photo_png.to_str().unwrap(),
        "-w",
        weights.to_str().unwrap(),
        "--at",
        "fc7",
        "-o",
        existing.to_str().unwrap(),
    ];
    args.extend(W16);
    refused(&vgg(&args), &["exists", "--force"]);
    assert_eq!(std::fs::read(&existing).unwrap(), b"my own file");
    args.push("--force");
    assert!(vgg(&args).status.success());
    assert!(
        vgg::checkpoint::read_state_dict(&existing)
            .unwrap()
            .contains_key("fc7")
    );
}

/// Defect 8: Unclear errors: a doubled `caused by`, run files called "dataset", a corrupt config.json
/// called an unknown weight format, a NaN message that promised a checkpoint, `--limit 0`,
/// temporary files left by a kill.
#[test]
fn errors_are_one_clear_line() {
    let missing = vgg(&[
        "convert",
        "/nonexistent/w.pth",
        tmp("never.safetensors").to_str().unwrap(),
    ]);
    refused(&missing, &["/nonexistent/w.pth"]);
    assert!(!stderr(&missing).contains("caused by"));

    let data = tiny_folder("errors-data", 6, false);
    let run = tmp("errors-run");
    let _ = std::fs::remove_dir_all(&run);
    assert!(train(&data, &run, &[]).status.success());
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--data",
            data.to_str().unwrap(),
            "-w",
            run.to_str().unwrap(),
        ];
        args.extend(extra);
        vgg(&args)
    };
    let out = eval(&["--limit", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--limit"));
    // eval takes --skip-bad: a broken image is skipped and counted.
    std::fs::write(data.join("top/broken.png"), b"not a png").unwrap();
    refused(&eval(&[]), &["broken.png", "--skip-bad"]);
    let out = eval(&["--skip-bad", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (rows[0]["images"].as_u64(), rows[0]["skipped"].as_u64()),
        (Some(12), Some(1))
    );
    std::fs::remove_file(data.join("top/broken.png")).unwrap();

    // A temporary file left by a kill is cleaned when the run is resumed.
    let orphan = run.join(".best.bpk.tmp-4194305");
    std::fs::write(&orphan, b"half a checkpoint").unwrap();
    let out = resume(&run, "2");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!orphan.exists());

    // The run's weights card, for its weights; its config, for training it on.
    let card = std::fs::read(run.join("weights.json")).unwrap();
    std::fs::write(run.join("weights.json"), b"{ not json").unwrap();
    let out = eval(&[]);
    refused(&out, &["weights.json", "not a readable card"]);
    assert!(!stderr(&out).contains("unknown weight format"));
    std::fs::remove_file(run.join("weights.json")).unwrap();
    refused(
        &eval(&[]),
        &["weights.json", "is missing", "older than its weights card"],
    );
    std::fs::write(run.join("weights.json"), card).unwrap();
    std::fs::write(run.join("config.json"), b"{ not json").unwrap();
    refused(
        &resume(&run, "3"),
        &["config.json", "not a readable run file"],
    );

    // Diverging in the first epoch: no checkpoint is promised.
    let nan = tmp("errors-nan");
    let _ = std::fs::remove_dir_all(&nan);
    let out = train(&data, &nan, &["--lr", "1e30"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("last good checkpoint was kept"), "{text}");
    assert!(
        text.contains("No checkpoint was written") || text.contains("training stopped"),
        "{text}"
    );
}

/// Weight files of every format, cut short or not what their name says: one line naming the file,
/// exit 2, nothing written.
#[test]
fn broken_weight_files_of_every_format() {
    for name in [
        "vgg11_w16.pth",
        "vgg11_w16.safetensors",
        "vgg11_w16_v1.caffemodel",
        "vgg11_w16.onnx",
        "keras_w16.h5",
        "keras_w16.weights.h5",
        "keras_w16.keras",
    ] {
        let whole = std::fs::read(fixture(name)).unwrap();
        let ext = name.split_once('.').unwrap().1;
        let out = tmp(&format!("never-{ext}.safetensors"));
        for (what, bytes) in [
            ("cut", &whole[..whole.len() / 2]),
            ("text", &b"<html>404 Not Found</html>"[..]),
        ] {
            let path = tmp(&format!("{what}-{name}"));
            std::fs::write(&path, bytes).unwrap();
            let mut args = vec!["convert", path.to_str().unwrap(), out.to_str().unwrap()];
            args.extend(&W16[..8]);
            refused(&vgg(&args), &[&format!("{what}-{name}")]);
            assert!(!out.exists(), "{name}: {} was written", out.display());
        }
    }
}
