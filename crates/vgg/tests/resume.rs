//! Its own test binary: fresh weights are drawn from the device's global generator, which tests
//! running in parallel in one process would share.
//!
//! A run resumed from its checkpoint continues exactly: 2 epochs straight and 1 epoch +
//! resume + 1 epoch give identical weights (momentum, schedule and data order restored;
//! dropout masks drawn from (seed, epoch, micro-batch)).

use burn::tensor::Device;
use vgg::arch::parse_layers;
use vgg::data::transform::{Normalize, Pca, Stats, Transform};
use vgg::data::{Dataset, Image, Images, Rng};
use vgg::train::{Observer, RunSpec, SgdSettings, Single, Start, TrainConfig, Trainer};
use vgg::{InitScheme, VggConfig, VggError, Weights};

/// Held by every test here, so that none draws random numbers while another runs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Silent;
impl Observer for Silent {}

/// A new run of `config` from fresh weights, in one process.
fn new(
    config: TrainConfig,
    train: Dataset,
    val: Dataset,
    out: &std::path::Path,
    force: bool,
    device: &Device,
) -> Result<Trainer, VggError> {
    start(config, Start::Fresh, train, val, out, force, device)
}

fn start(
    config: TrainConfig,
    start: Start,
    train: Dataset,
    val: Dataset,
    out: &std::path::Path,
    force: bool,
    device: &Device,
) -> Result<Trainer, VggError> {
    let spec = RunSpec {
        config,
        start,
        train,
        val,
        out: out.to_path_buf(),
        force,
    };
    Trainer::start(spec, device, std::rc::Rc::new(Single))
}

fn resume(
    dir: &std::path::Path,
    train: Dataset,
    val: Dataset,
    device: &Device,
) -> Result<Trainer, VggError> {
    Trainer::resume(dir, train, val, device, std::rc::Rc::new(Single))
}

/// `n` grey 36x36 images of 3 classes: noise plus a class-dependent bright square.
pub fn toy_dataset(n: usize) -> Dataset {
    toy_task(n, 0, 7)
}

/// A toy task: 3 classes, a bright 8x10 square in one of 3 rows, in column band `band` (0 or 1)
/// of the image; the noise drawn from `seed`. Two bands make two related tasks.
fn toy_task(n: usize, band: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let label = i % 3;
        let mut pixels: Vec<u8> = (0..36 * 36).map(|_| (rng.uniform() * 60.0) as u8).collect();
        for y in 4 + 8 * label..12 + 8 * label {
            for x in 10 + 14 * band..20 + 14 * band {
                pixels[y * 36 + x] = 220;
            }
        }
        images.push(Image {
            channels: 1,
            height: 36,
            width: 36,
            pixels,
        });
        labels.push(label);
    }
    Dataset {
        name: "toy".into(),
        images: Images::Memory(images),
        labels,
        classes: vec!["a".into(), "b".into(), "c".into()],
    }
}

pub fn toy_config() -> TrainConfig {
    let model = VggConfig::from_layers("toy", parse_layers("4,M,8,M,8,M,8,M,8,M").unwrap(), true)
        .with_in_channels(1)
        .with_num_classes(3)
        .with_hidden(16)
        .with_pool_size(1);
    TrainConfig {
        model,
        init: InitScheme::Glorot,
        init_from: None,
        epochs: 2,
        batch: 16,
        micro_batch: 8,
        lr: 0.01,
        sgd: SgdSettings::default(),
        lr_factor: 0.1,
        patience: 1,
        max_reductions: 3,
        seed: 3,
        workers: 2,
        skip_bad: false,
        transform: Transform {
            channels: 1,
            crop: 32,
            scale_min: 32,
            scale_max: 40,
            eval_scale: 32,
            flip: true,
            pca_std: 0.1,
            stats: Stats {
                mean: vec![0.2],
                pca: Pca {
                    std: vec![0.1],
                    vectors: vec![vec![1.0]],
                },
            },
            normalize: Normalize::mean_only(vec![0.2]),
        },
        train_data: "toy".into(),
        val_data: "toy".into(),
        classes: vec!["a".into(), "b".into(), "c".into()],
        data: None,
        train_images: 0,
        val_images: 0,
        pretrained: None,
        precision: Default::default(),
        no_test: false,
    }
}

fn dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vgg-resume-{}-{name}", std::process::id()))
}

#[test]
fn two_epochs_equal_one_plus_resume_plus_one() {
    let _serial = serial();
    straight_equals_resumed(toy_config(), "f32");
}

/// float16 mixed precision resumes exactly too: its loss scale is part of the run's state.
#[test]
fn two_epochs_in_float16_equal_one_plus_resume_plus_one() {
    let _serial = serial();
    let mut config = toy_config();
    config.precision = vgg::nn::Precision::F16;
    let (straight, resumed) = straight_equals_resumed(config, "f16");
    let scale = straight
        .state
        .loss_scale
        .expect("a float16 run keeps a loss scale");
    assert_eq!(resumed.state.loss_scale, Some(scale));
    // 6 steps (3 batches of at most 16 images a epoch), from PyTorch's initial 2^16: two
    // overflow and are skipped, halving the scale each time, and the three since the last are
    // clean (the dropout masks of the toy's micro-batches decide which steps overflow).
    assert_eq!(
        (scale.scale, scale.good_steps, scale.skipped_steps),
        (16384.0, 3, 2)
    );
    assert!(
        straight
            .state
            .history
            .iter()
            .all(|r| r.train_loss.is_finite())
    );
}

/// The trainer divides float16's loss scale out exactly once: an epoch in float16 moves the
/// weights as far as in float32, and nearly the same way (a scale divided twice would make the
/// update 2^10 times shorter; one not divided, 2^10 times longer). The scale starts at 2^10,
/// where the toy's first step does not overflow, so both runs take the same steps.
#[test]
fn float16_training_moves_the_weights_as_float32_does() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let update = |precision: vgg::nn::Precision, tag: &str| -> Vec<f64> {
        let mut config = toy_config();
        config.precision = precision;
        let mut trainer = new(
            config,
            toy_dataset(40),
            toy_dataset(12),
            &dir(tag),
            true,
            &device,
        )
        .unwrap();
        if let Some(scale) = trainer.state.loss_scale.as_mut() {
            scale.scale = 1024.0;
        }
        let before = trainer.model.state_dict();
        trainer.run_epochs(1, &mut Silent).unwrap();
        assert!(
            trainer
                .state
                .loss_scale
                .is_none_or(|s| s.skipped_steps == 0)
        );
        let after = trainer.model.state_dict();
        before
            .iter()
            .filter(|(k, _)| !k.contains("running_") && !k.ends_with("num_batches_tracked"))
            .flat_map(|(k, t)| {
                let a = after[k].to_f32();
                t.to_f32()
                    .into_iter()
                    .zip(a)
                    .map(|(b, a)| (a - b) as f64)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (full, half) = (
        update(vgg::nn::Precision::F32, "update-f32"),
        update(vgg::nn::Precision::F16, "update-f16"),
    );
    let dot: f64 = full.iter().zip(&half).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (cosine, ratio) = (dot / (norm(&full) * norm(&half)), norm(&half) / norm(&full));
    eprintln!("float16 against float32 over an epoch: cosine {cosine:.4}, length ratio {ratio:.4}");
    assert!(
        cosine > 0.98 && (ratio - 1.0).abs() < 0.02,
        "cosine {cosine}, ratio {ratio}"
    );
}

/// Trains `config` 2 epochs straight, and 1 + resume + 1 in another folder; asserts both end
/// with the same bits, history and log. Returns both trainers.
fn straight_equals_resumed(config: TrainConfig, tag: &str) -> (Trainer, Trainer) {
    let device = Device::flex().autodiff();
    let (a, b) = (dir(&format!("{tag}-a")), dir(&format!("{tag}-b")));
    let mut straight = new(
        config.clone(),
        toy_dataset(40),
        toy_dataset(12),
        &a,
        true,
        &device,
    )
    .unwrap();
    straight.run(&mut Silent).unwrap();
    assert_eq!(straight.state.epoch, 2);

    let mut first = new(config, toy_dataset(40), toy_dataset(12), &b, true, &device).unwrap();
    first.run_epochs(1, &mut Silent).unwrap();
    drop(first);
    let mut resumed = resume(&b, toy_dataset(40), toy_dataset(12), &device).unwrap();
    assert_eq!(resumed.state.epoch, 1);
    resumed.run(&mut Silent).unwrap();

    let (x, y) = (straight.model.state_dict(), resumed.model.state_dict());
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    for (k, t) in &x {
        assert_eq!(t.to_f32(), y[k].to_f32(), "{k} differs after resume");
    }
    assert_eq!(straight.state.history.len(), resumed.state.history.len());
    assert_eq!(
        straight.state.history[1].train_loss,
        resumed.state.history[1].train_loss
    );
    // The log has one row per epoch, resumed or not.
    let log = std::fs::read_to_string(b.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(b.join("best.safetensors").exists());
    (straight, resumed)
}

#[test]
fn an_existing_run_folder_is_not_overwritten() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let path = dir("exists");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("precious.txt"), "keep me").unwrap();
    let err = new(
        toy_config(),
        toy_dataset(12),
        toy_dataset(6),
        &path,
        false,
        &device,
    )
    .err()
    .unwrap();
    assert!(matches!(err, VggError::RunExists { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(path.join("precious.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn labels_out_of_range_and_empty_sets_are_refused() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let mut bad = toy_dataset(6);
    bad.labels[4] = 7;
    let err = new(
        toy_config(),
        bad,
        toy_dataset(6),
        &dir("labels"),
        true,
        &device,
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            VggError::LabelOutOfRange {
                index: 4,
                label: 7,
                num_classes: 3,
                ..
            }
        ),
        "{err}"
    );
    let empty = Dataset {
        name: "empty".into(),
        images: Images::Memory(vec![]),
        labels: vec![],
        classes: vec![],
    };
    let err = new(
        toy_config(),
        empty,
        toy_dataset(6),
        &dir("empty"),
        true,
        &device,
    )
    .err()
    .unwrap();
    assert!(matches!(err, VggError::Dataset { .. }), "{err}");
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let mut config = toy_config();
    config.epochs = 3;
    let path = dir("nan");
    let mut trainer = new(
        config,
        toy_dataset(24),
        toy_dataset(6),
        &path,
        true,
        &device,
    )
    .unwrap();
    trainer.run_epochs(1, &mut Silent).unwrap();
    let state_before = std::fs::read_to_string(path.join("state.json")).unwrap();
    // A learning rate no run survives.
    trainer.state.schedule.lr = 1e30;
    let err = trainer.run(&mut Silent).unwrap_err();
    // Training is bit-reproducible: the same step diverges every time. The first step at lr 1e30
    // is taken, the next one's loss is not finite; no accuracy is reported for epoch 2.
    assert!(
        matches!(
            err,
            VggError::NonFiniteLoss {
                epoch: 2,
                step: 4,
                kept: Some(1),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("keeps the checkpoint of epoch 1"),
        "{err}"
    );
    // The checkpoint on disk is still epoch 1's, and it loads.
    assert_eq!(
        std::fs::read_to_string(path.join("state.json")).unwrap(),
        state_before
    );
    // One trainer writes a run at a time: the diverged one lets go of the folder first.
    drop(trainer);
    let resumed = resume(&path, toy_dataset(24), toy_dataset(6), &device).unwrap();
    assert_eq!((resumed.state.epoch, resumed.state.history.len()), (1, 1));
}

/// Training gives the same bits whatever the number of threads: two runs on 2 threads, one on
/// 1 and one on 3 end in identical weights and logs (every reduction sums in a fixed order).
#[test]
fn training_is_bit_reproducible_whatever_the_threads() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let run = |threads: usize, name: &str| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut t = new(
                    toy_config(),
                    toy_dataset(40),
                    toy_dataset(12),
                    &dir(name),
                    true,
                    &device,
                )
                .unwrap();
                t.run(&mut Silent).unwrap();
                let losses: Vec<f64> = t.state.history.iter().map(|r| r.train_loss).collect();
                (t.model.state_dict(), losses)
            })
    };
    let first = run(2, "threads-2a");
    for (threads, name) in [(2, "threads-2b"), (1, "threads-1"), (3, "threads-3")] {
        let other = run(threads, name);
        assert!(
            other.1 == first.1,
            "{threads} threads: losses {:?} vs {:?}",
            other.1,
            first.1
        );
        for (k, t) in &first.0 {
            assert!(other.0[k] == *t, "{k} differs on {threads} threads");
        }
    }
}

/// The toy task's network and config, trained on band 0, then fine-tuned on few images of band
/// 1: what loads, what is new, what stays frozen, and that it pays against training from scratch.
#[test]
fn fine_tuning_loads_what_fits_freezes_and_pays() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let mut pre_config = toy_config();
    pre_config.epochs = 4;
    let mut pre = new(
        pre_config,
        toy_task(60, 0, 1),
        toy_task(12, 0, 2),
        &dir("pretrain"),
        true,
        &device,
    )
    .unwrap();
    pre.run(&mut Silent).unwrap();
    // A run's checkpoint is a source of weights like any file (the run's weights card gives
    // its network and preset): the last epoch's, as the run ended.
    let last = dir("pretrain").join(pre.state.model_file.as_ref().unwrap());
    let weights = Weights::open(
        &last,
        || unreachable!("a run carries its network"),
        &Default::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(weights.config, pre.config.model);
    assert_eq!(weights.preset, pre.config.preset());
    assert_eq!(
        weights.origin.run.as_deref(),
        Some(dir("pretrain").as_path())
    );
    let source = weights.dict.clone();

    let few = |seed| toy_task(12, 1, seed);
    // Few images, small batches, a constant learning rate: the same for every run below.
    let short = || {
        let mut config = toy_config();
        (config.epochs, config.batch, config.micro_batch, config.lr) = (10, 4, 4, 0.1);
        config.patience = 100;
        config
    };
    let fine = |freeze: Option<&str>, lr_scale: f64, name: &str| {
        let tune = Start::FineTune {
            weights: weights.clone(),
            freeze: freeze.map(String::from),
            lr_scale,
        };
        let mut t = start(
            short(),
            tune,
            few(3),
            toy_task(30, 1, 4),
            &dir(name),
            true,
            &device,
        )
        .unwrap();
        t.run(&mut Silent).unwrap();
        t
    };
    // Frozen convolutions: every tensor but the last layer's is loaded; the frozen ones, BN
    // running statistics included, end as they started; the head trains.
    let frozen = fine(Some("features"), 1.0, "fine-frozen");
    let record = frozen.config.pretrained.clone().unwrap();
    assert_eq!(record.fresh, ["classifier.6.weight", "classifier.6.bias"]);
    assert_eq!(
        record.loaded.len(),
        source.len() - 2 - 5,
        "{:?}",
        record.loaded
    ); // 5 num_batches_tracked
    let after = frozen.model.state_dict();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        source.keys().collect::<Vec<_>>()
    );
    for (key, t) in &source {
        let changed = after[key].to_f32() != t.to_f32();
        if key.starts_with("features.") && !key.ends_with("num_batches_tracked") {
            assert!(!changed, "{key} is frozen but changed");
        }
        if key.starts_with("classifier.0.") || key.starts_with("classifier.3.") {
            assert!(changed, "{key} trains but did not change");
        }
    }
    // A learning-rate factor of 0: the loaded tensors stay, only the new layer learns.
    let still = fine(None, 0.0, "fine-lr0");
    let after = still.model.state_dict();
    for key in &still.config.pretrained.as_ref().unwrap().loaded {
        if !key.contains("running_") {
            assert_eq!(
                after[key].to_f32(),
                source[key].to_f32(),
                "{key} moved at lr 0"
            );
        }
    }
    assert_ne!(after["classifier.6.bias"].to_f32(), vec![0.0; 3]);
    // It pays: the same 12 images and epochs from scratch do worse.
    let mut scratch = new(
        short(),
        few(3),
        toy_task(30, 1, 4),
        &dir("scratch"),
        true,
        &device,
    )
    .unwrap();
    scratch.run(&mut Silent).unwrap();
    let (fine_acc, scratch_acc) = (
        frozen.state.best_val_accuracy.unwrap(),
        scratch.state.best_val_accuracy.unwrap(),
    );
    eprintln!(
        "pretrained {:.3}; fine-tuned {fine_acc:.3} (lr 0: {:.3}), scratch {scratch_acc:.3}",
        pre.state.best_val_accuracy.unwrap(),
        still.state.best_val_accuracy.unwrap()
    );
    assert!(
        fine_acc > scratch_acc + 0.2,
        "fine-tuned {fine_acc}, scratch {scratch_acc}"
    );

    // A frozen fine-tuned run resumes exactly (the freeze and the learning rates come back).
    let straight = fine(Some("conv3_1"), 0.5, "fine-resume").model.state_dict();
    let tune = Start::FineTune {
        weights: weights.clone(),
        freeze: Some("conv3_1".into()),
        lr_scale: 0.5,
    };
    let mut part = start(
        short(),
        tune,
        few(3),
        toy_task(30, 1, 4),
        &dir("fine-part"),
        true,
        &device,
    )
    .unwrap();
    part.run_epochs(2, &mut Silent).unwrap();
    drop(part);
    let mut resumed = resume(&dir("fine-part"), few(3), toy_task(30, 1, 4), &device).unwrap();
    resumed.run(&mut Silent).unwrap();
    let resumed = resumed.model.state_dict();
    for (k, t) in &straight {
        assert!(
            resumed[k] == *t,
            "{k} differs after resuming a fine-tuned run"
        );
    }
}

/// The kernel policy is a value a program switches (no environment, no restart): Winograd off
/// gives the direct convolution, burn's operations on request, and the same forward within
/// float32's reach either way; the default comes back.
#[test]
fn the_kernel_policy_switches_without_a_restart() {
    use vgg::kernels::{Policy, policy};
    use vgg::nn::ops::conv_algorithm;
    let _serial = serial();
    let device = Device::flex();
    let layer = [8, 64, 64, 56, 56, 3];
    let config = toy_config().model;
    let model = vgg::Vgg::new(&config, InitScheme::Glorot, &device).unwrap();
    let x = burn::tensor::Tensor::<4>::random(
        [2, 1, 32, 32],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let forward = || -> Vec<f32> {
        model
            .forward(x.clone())
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(policy::get(), Policy::DEFAULT);
    assert_eq!(conv_algorithm(&device, layer), "Winograd F(4x4,3x3)");
    let ours = forward();
    let mut results = Vec::new();
    for switched in [
        Policy {
            winograd: false,
            ..Policy::DEFAULT
        },
        Policy {
            ours: false,
            ..Policy::DEFAULT
        },
    ] {
        policy::set(switched).unwrap();
        results.push((conv_algorithm(&device, layer), forward()));
    }
    policy::set(Policy::DEFAULT).unwrap();
    assert_eq!(results[0].0, "im2col+GEMM tiles");
    assert_eq!(results[1].0, "burn generic");
    for (name, other) in &results {
        let worst = ours
            .iter()
            .zip(other)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{name}: {worst}");
    }
    assert_eq!(conv_algorithm(&device, layer), "Winograd F(4x4,3x3)");
    assert_eq!(forward(), ours);
}
