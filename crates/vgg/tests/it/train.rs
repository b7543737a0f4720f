//! The `train` fixtures: three SGD steps in PyTorch (lr 0.01, momentum 0.9, dampening 0,
//! weight decay 5e-4, batch 8, dropout 0): the losses and the final state, BN running stats
//! included, reproduced by the step `vgg train` runs (`Sgd::micro_batch`, `take`, `apply`:
//! BatchNorm's statistics handed out by the forward pass and folded after the step).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use vgg::Vgg;
use vgg::nn::Precision;
use vgg::train::{GradLayout, LossScale, Sgd, SgdSettings};

use crate::common::*;

/// The fixture's batches, one per SGD step: images `[batch, C, H, W]` and class indices.
fn batches(name: &str, device: &Device) -> Vec<(Tensor<4>, Tensor<1, Int>)> {
    let io = io(name);
    let (inputs, labels) = (&io["inputs"], &io["labels"]);
    let [steps, batch, c, h, w] = inputs.shape[..] else {
        panic!("{name}: inputs are [steps, batch, C, H, W]")
    };
    let (images, targets) = (inputs.to_f32(), labels.to_f32());
    let per = batch * c * h * w;
    (0..steps)
        .map(|step| {
            let pixels = images[step * per..(step + 1) * per].to_vec();
            let x = Tensor::<4>::from_data(TensorData::new(pixels, [batch, c, h, w]), device);
            let y: Vec<i64> = targets[step * batch..(step + 1) * batch]
                .iter()
                .map(|&t| t as i64)
                .collect();
            (
                x,
                Tensor::<1, Int>::from_data(TensorData::new(y, [batch]), device),
            )
        })
        .collect()
}

/// Three SGD steps of the fixture `name` on `device` (a plain device; autodiff added here).
pub fn reproduce(name: &str, device: &Device) {
    let case = case(name);
    let config = config_of(&case);
    let device = device.clone().autodiff();
    let mut model = Vgg::load(
        &config,
        &fixture(&format!("{name}_init.safetensors")),
        &device,
    )
    .unwrap();
    let mut sgd = Sgd::new(SgdSettings::default());
    let want = case["losses"].as_array().unwrap();
    for (step, (x, y)) in batches(name, &device).into_iter().enumerate() {
        // The trainer's own step: one micro-batch making the whole batch.
        let loss = sgd.micro_batch(&model, x, y, 1.0, (0, 1), 0).loss();
        let expected = want[step].as_f64().unwrap() as f32;
        assert!(
            (loss - expected).abs() <= 1e-4 + 1e-3 * expected.abs(),
            "{name} step {step}: loss {loss}, PyTorch {expected}"
        );
        model = sgd.step(model, 0.01, 1);
    }
    let final_state =
        vgg::checkpoint::read_state_dict(&fixture(&format!("{name}_final.safetensors"))).unwrap();
    let got = model.valid().state_dict();
    let tol = tolerance(&case);
    for (key, want) in &final_state {
        assert_eq!(got[key].shape, want.shape, "{key}");
        assert_close(
            &format!("{name}: {key}"),
            &got[key].to_f32(),
            &want.to_f32(),
            tol,
        );
    }
}

/// The PyTorch SGD fixtures (float32 throughout) with a mixed-precision forward
/// ([`vgg::nn::precision`]) and, in float16, the trainer's loss scaling, on float32 master
/// weights: each loss within `rel` of PyTorch's, and the update of the three steps (final -
/// initial weights, all parameters as one vector) at a cosine of at least `cos` to PyTorch's and
/// of its length within `1 - cos`.
/// Elementwise the updates differ more: a conv bias before BatchNorm has no gradient but
/// rounding, and small gradients are sums of larger terms of both signs.
pub fn reproduce_mixed(name: &str, device: &Device, precision: Precision, (rel, cos): (f32, f64)) {
    let case = case(name);
    let config = config_of(&case);
    let device = device.clone().autodiff();
    let init = fixture(&format!("{name}_init.safetensors"));
    let mut model = Vgg::load(&config, &init, &device).unwrap();
    let layout = GradLayout::of(&model);
    let mut sgd = Sgd::new(SgdSettings::default());
    let mut scale = LossScale::default();
    let want = case["losses"].as_array().unwrap();
    for (step, (x, y)) in batches(name, &device).into_iter().enumerate() {
        let factor = if precision.scales_loss() {
            scale.scale
        } else {
            1.0
        };
        sgd.set_loss_scale(factor);
        let loss = sgd
            .micro_batch(&model, precision.apply(x), y, 1.0, (0, 1), 0)
            .loss();
        let expected = want[step].as_f64().unwrap() as f32;
        assert!(
            (loss - expected).abs() <= rel * expected.abs(),
            "{name} in {precision}, step {step}: loss {loss}, PyTorch {expected}"
        );
        let (grads, running) = sgd.take(&model);
        let (grads, finite) = sgd.unscale(&layout, grads);
        assert!(finite, "{name} in {precision}: step {step} overflowed");
        scale.update(finite).unwrap();
        model = sgd.apply(model, 0.01, grads, &running, 1);
    }
    let start = vgg::checkpoint::read_state_dict(&init).unwrap();
    let end =
        vgg::checkpoint::read_state_dict(&fixture(&format!("{name}_final.safetensors"))).unwrap();
    let got = model.valid().state_dict();
    let (mut dot, mut ours, mut theirs) = (0f64, 0f64, 0f64);
    for (key, want) in &end {
        if key.contains("running_") || key.ends_with("num_batches_tracked") {
            continue;
        }
        let (s, w, g) = (start[key].to_f32(), want.to_f32(), got[key].to_f32());
        for ((g, w), s) in g.iter().zip(&w).zip(&s) {
            let (u, v) = ((g - s) as f64, (w - s) as f64);
            (dot, ours, theirs) = (dot + u * v, ours + u * u, theirs + v * v);
        }
    }
    let (cosine, ratio) = (dot / (ours.sqrt() * theirs.sqrt()), (ours / theirs).sqrt());
    eprintln!("{name} in {precision}: updates at cosine {cosine:.6}, length ratio {ratio:.5}");
    assert!(
        cosine >= cos,
        "{name} in {precision}: cosine {cosine} of the updates to PyTorch's"
    );
    // The cosine cannot see a scale: the loss scale must be divided out exactly once.
    assert!(
        (ratio - 1.0).abs() <= 1.0 - cos,
        "{name} in {precision}: update {ratio} times as long as PyTorch's"
    );
}

#[test]
fn three_sgd_steps_in_float16_and_bfloat16_match_pytorch_float32() {
    for name in ["vgg11_w16_sgd", "vgg11_bn_w16_sgd"] {
        reproduce_mixed(name, &Device::flex(), Precision::F16, (1e-3, 0.99));
        reproduce_mixed(name, &Device::flex(), Precision::Bf16, (2e-3, 0.97));
    }
}

/// A loss scale too large for float16 overflows the gradients: the trainer's check sees it.
#[test]
fn an_overflowing_loss_scale_is_caught() {
    let name = "vgg11_w16_sgd";
    let config = config_of(&case(name));
    let device = Device::flex().autodiff();
    let model = Vgg::load(
        &config,
        &fixture(&format!("{name}_init.safetensors")),
        &device,
    )
    .unwrap();
    let io = io(name);
    let [_, batch, c, h, w] = io["inputs"].shape[..] else {
        panic!()
    };
    let per = batch * c * h * w;
    let x = Tensor::<4>::from_data(
        TensorData::new(io["inputs"].to_f32()[..per].to_vec(), [batch, c, h, w]),
        &device,
    );
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64; batch], [batch]), &device);
    let mut sgd = Sgd::new(SgdSettings::default());
    sgd.set_loss_scale(1e30); // past float16's 65,504
    sgd.micro_batch(&model, Precision::F16.apply(x), y, 1.0, (0, 1), 0);
    let (grads, _) = sgd.take(&model);
    let (_, finite) = sgd.unscale(&GradLayout::of(&model), grads);
    assert!(!finite);
}

#[test]
fn three_sgd_steps_match_pytorch() {
    reproduce("vgg11_w16_sgd", &Device::flex());
}

#[test]
fn three_sgd_steps_with_batchnorm_match_pytorch() {
    reproduce("vgg11_bn_w16_sgd", &Device::flex());
}

/// Section 3.1: a deeper net starts from net A's first four conv layers and three FC layers.
#[test]
fn init_from_takes_four_convs_and_the_fcs_of_net_a() {
    let device = Device::flex();
    let a = config_of(&case("vgg11_w16"));
    let d = config_of(&case("vgg16_w16"));
    let path = fixture("vgg11_w16.safetensors");
    let source = vgg::Vgg::load(&a, &path, &device).unwrap();
    // Net A's file names no network: its keys and shapes tell it.
    let net_a = vgg::Weights::open(
        &path,
        || vgg::preset::open::infer_config(&path),
        &Default::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        (
            &net_a.config.layers,
            net_a.config.hidden,
            net_a.config.num_classes
        ),
        (&a.layers, a.hidden, a.num_classes)
    );
    let fresh = vgg::Vgg::new(&d, vgg::InitScheme::Glorot, &device).unwrap();
    let before = fresh.state_dict();
    let deeper = vgg::checkpoint::partial::init_from(fresh, &net_a.dict, &path, &device).unwrap();
    let (src, dst) = (source.state_dict(), deeper.state_dict());
    // A's conv1_1, conv2_1, conv3_1, conv3_2 (features.0, 3, 6, 8) land on D's layers of
    // those names (features.0, 5, 10, 12); D's conv1_2 and conv2_2 stay random.
    for (from, to) in [(0, 0), (3, 5), (6, 10), (8, 12)] {
        assert_eq!(
            src[&format!("features.{from}.weight")].to_f32(),
            dst[&format!("features.{to}.weight")].to_f32(),
            "features.{to}"
        );
        assert_eq!(
            src[&format!("features.{from}.bias")].to_f32(),
            dst[&format!("features.{to}.bias")].to_f32(),
            "features.{to}"
        );
    }
    for random in [2, 7, 14, 17] {
        assert_eq!(
            dst[&format!("features.{random}.weight")].to_f32(),
            before[&format!("features.{random}.weight")].to_f32(),
            "features.{random}"
        );
    }
    assert_eq!(
        src["classifier.3.weight"].to_f32(),
        dst["classifier.3.weight"].to_f32()
    );
}

/// The trainer's SGD ([`vgg::train::FusedSgd`], two passes per parameter on flex) against
/// burn's `Sgd` set up the same way (momentum 0.9, dampening 0, weight decay 5e-4): the same
/// bits after each of three steps, and burn's saved state (a run folder written before the fused
/// update) resumed by ours gives the same fourth step.
#[test]
fn fused_sgd_is_burns_sgd_bit_for_bit() {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::Distribution;

    let device = Device::flex().autodiff();
    let burns = || {
        SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum: 0.9,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay(Some(WeightDecayConfig { penalty: 5e-4 }))
            .init()
    };
    // 67 x 300 weights: 20,100 values, a task of the fused passes (16,384) and part of another.
    let start: Linear = LinearConfig::new(67, 300).init(&device);
    let x = Tensor::<2>::random([4, 67], Distribution::Default, &device);
    let grads = |m: &Linear| {
        let loss = m.forward(x.clone()).powi_scalar(2).mean();
        GradientsParams::from_grads(loss.backward(), m)
    };
    let bits = |m: &Linear| -> Vec<u32> {
        let mut v = m.weight.val().into_data().try_to_vec::<f32>().unwrap();
        v.extend(
            m.bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        );
        v.iter().map(|f| f.to_bits()).collect()
    };
    let (mut theirs, mut ours) = (burns(), Sgd::new(SgdSettings::default()).optim);
    let (mut a, mut b) = (start.clone(), start);
    for step in 0..3 {
        let lr = 0.01 * (step + 1) as f64;
        a = theirs.step(lr, a.clone(), grads(&a));
        b = ours.step(lr, b.clone(), grads(&b));
        assert!(bits(&a) == bits(&b), "step {step}: the updates differ");
    }
    let saved = theirs.into_bytes().unwrap().to_vec();
    let mut resumed = Sgd::new(SgdSettings::default())
        .with_state(saved)
        .unwrap()
        .optim;
    let next = theirs.step(0.01, a.clone(), grads(&a));
    let resumed_next = resumed.step(0.01, a.clone(), grads(&a));
    assert!(
        bits(&next) == bits(&resumed_next),
        "burn's state resumed differs"
    );
    // Without the saved velocity the step would differ: the check above has teeth.
    let fresh = Sgd::new(SgdSettings::default())
        .optim
        .step(0.01, a.clone(), grads(&a));
    assert!(bits(&fresh) != bits(&next));
}

/// A step's micro-batches run side by side on lanes (one core each, `vgg train` on flex) give
/// the bits of the same micro-batches one after another on one thread: gradients and BatchNorm
/// statistics added in micro-batch order, dropout masks drawn per micro-batch. A BN network
/// with dropout 0.5, three micro-batches of the fixture's batch (two lanes: a wave of two, then
/// one alone), two steps.
#[test]
fn micro_batches_side_by_side_are_one_after_another_bit_for_bit() {
    use vgg::train::lanes::Lanes;
    use vgg::train::sgd::compute;

    let name = "vgg11_bn_w16_sgd";
    let mut config = config_of(&case(name));
    config.dropout = 0.5;
    let flex = Device::flex().autodiff();
    let init = fixture(&format!("{name}_init.safetensors"));
    let pools: Vec<_> = [1, 2]
        .map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        })
        .into();
    let lanes = pools[1].install(|| Lanes::for_device(&flex, &config, [3, 32, 32], (3, 3)));
    assert_eq!(lanes.width(), 2);
    // Micro-batches of 3, 3 and 2 of the fixture's batches of 8.
    let micro = |x: &Tensor<4>, y: &Tensor<1, Int>| -> Vec<(Tensor<4>, Tensor<1, Int>)> {
        [(0, 3), (3, 6), (6, 8)]
            .map(|(a, b)| (x.clone().slice(a..b), y.clone().slice(a..b)))
            .into()
    };
    let train = |side_by_side: bool| -> Vec<f32> {
        let mut model = Vgg::load(&config, &init, &flex).unwrap();
        let mut sgd = Sgd::new(SgdSettings::default());
        for (step, (x, y)) in batches(name, &flex).into_iter().take(2).enumerate() {
            let parts = micro(&x, &y);
            let count = parts.len();
            let jobs: Vec<_> = parts
                .into_iter()
                .enumerate()
                .map(|(k, (x, y))| {
                    let share = x.dims()[0] as f64 / 8.0;
                    move |m: &Vgg| compute(m, x, y, share, (k, count), (step * 10 + k) as u64)
                })
                .collect();
            // The lone third micro-batch runs on the caller's pool: one thread here too.
            let done = if side_by_side {
                pools[0].install(|| lanes.run(&model, jobs))
            } else {
                pools[0].install(|| jobs.into_iter().map(|job| job(&model)).collect())
            };
            for d in done {
                sgd.add(&model, d);
            }
            model = pools[0].install(|| sgd.step(model, 0.01, count));
        }
        let dict = model.valid().state_dict();
        dict.values().flat_map(|t| t.to_f32()).collect()
    };
    let (apart, together) = (train(false), train(true));
    assert_eq!(apart.len(), together.len());
    let differ = apart
        .iter()
        .zip(&together)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} of {} values differ", apart.len());
    // Dropout is on, its masks a function of the seed alone.
    let model = Vgg::load(&config, &init, &flex).unwrap();
    let (x, y) = batches(name, &flex).remove(0);
    let loss = |seed| {
        let mut sgd = Sgd::new(SgdSettings::default());
        sgd.micro_batch(&model, x.clone(), y.clone(), 1.0, (0, 1), seed)
            .loss()
    };
    assert_eq!(loss(1).to_bits(), loss(1).to_bits());
    assert_ne!(loss(1), loss(2));
}
