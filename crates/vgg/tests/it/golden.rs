//! Golden parity with PyTorch/torchvision: every `inference` case of the fixtures, from
//! `.safetensors` and, where it exists, `.pth`.

use burn::tensor::{Device, Tensor, TensorData};
use vgg::Vgg;

use crate::common::*;

/// One inference case on `device`: features and logits against PyTorch's.
pub fn run_case(name: &str, weights: &str, device: &Device) {
    let case = case(name);
    let config = config_of(&case);
    let device = device.clone();
    let model = Vgg::load(&config, &fixture(weights), &device).unwrap();
    let io = io(name);
    let input = &io["input"];
    let x: Tensor<4> = Tensor::from_data(
        TensorData::new(input.to_f32(), input.shape.clone()),
        &device,
    );
    let features = model.features(x.clone());
    assert_eq!(
        features.dims().to_vec(),
        io["features"].shape,
        "{name}: features shape"
    );
    let tol = tolerance(&case);
    let got = features.into_data().try_to_vec::<f32>().unwrap();
    assert_close(
        &format!("{weights}: features"),
        &got,
        &io["features"].to_f32(),
        tol,
    );
    let logits = model.try_forward(x).unwrap();
    assert_eq!(
        logits.dims().to_vec(),
        io["logits"].shape,
        "{name}: logits shape"
    );
    let got = logits.into_data().try_to_vec::<f32>().unwrap();
    assert_close(
        &format!("{weights}: logits"),
        &got,
        &io["logits"].to_f32(),
        tol,
    );
}

/// Every inference case, from every weight file it has.
#[test]
fn every_inference_case_matches_pytorch() {
    let mut checked = 0;
    for case in manifest().iter().filter(|c| c["kind"] == "inference") {
        let name = case["name"].as_str().unwrap();
        for ext in ["safetensors", "pth"] {
            let file = format!("{name}.{ext}");
            if fixture(&file).exists() {
                run_case(name, &file, &Device::flex());
                checked += 1;
            }
        }
    }
    // 12 inference cases; 5 of them also ship a .pth.
    assert_eq!(checked, 17);
}

#[test]
fn gray_500_classes_gives_1x500() {
    // The tutorial's check, on the fixture with 1 input channel and 500 classes.
    let case = case("vgg16_bn_w16_gray500");
    let config = config_of(&case);
    let device = Device::flex();
    let model = Vgg::load(&config, &fixture("vgg16_bn_w16_gray500.pth"), &device).unwrap();
    let logits = model.forward(Tensor::zeros([1, 1, 32, 32], &device));
    assert_eq!(logits.dims(), [1, 500]);
}

/// Section 3.2's dense evaluation against PyTorch: score map, its spatial mean, the softmax,
/// and the flip-averaged softmax, on a 256x320 image.
#[test]
fn dense_evaluation_matches_pytorch() {
    dense_case(&Device::flex());
}

/// The dense fixture on `device`.
pub fn dense_case(device: &Device) {
    let case = case("vgg16_w16_dense");
    let config = config_of(&case);
    let device = device.clone();
    let model = Vgg::load(&config, &fixture("vgg16_w16_dense.safetensors"), &device).unwrap();
    let io = io("vgg16_w16_dense");
    let x: Tensor<4> = Tensor::from_data(
        TensorData::new(io["input"].to_f32(), io["input"].shape.clone()),
        &device,
    );
    let tol = tolerance(&case);
    let scores = model.dense_scores(x.clone()).unwrap();
    assert_eq!(scores.dims().to_vec(), io["score_map"].shape);
    assert_close(
        "score_map",
        &scores.into_data().try_to_vec::<f32>().unwrap(),
        &io["score_map"].to_f32(),
        tol,
    );
    let logits = model.dense_logits(x.clone()).unwrap();
    assert_close(
        "logits",
        &logits.clone().into_data().try_to_vec::<f32>().unwrap(),
        &io["logits"].to_f32(),
        tol,
    );
    let probs = burn::tensor::activation::softmax(logits, 1);
    assert_close(
        "probs",
        &probs.into_data().try_to_vec::<f32>().unwrap(),
        &io["probs"].to_f32(),
        tol,
    );
    let averaged = model.dense_probs(x).unwrap();
    assert_close(
        "probs_flip_averaged",
        &averaged.into_data().try_to_vec::<f32>().unwrap(),
        &io["probs_flip_averaged"].to_f32(),
        tol,
    );
}

/// `features` (pool5 / features.N of the last pool) and `fc8` equal the fixture's features and
/// logits; names and aliases agree.
#[test]
fn named_activations_match_pytorch() {
    let case = case("vgg16_bn_w16");
    let device = Device::flex();
    let model = Vgg::load(
        &config_of(&case),
        &fixture("vgg16_bn_w16.safetensors"),
        &device,
    )
    .unwrap();
    let io = io("vgg16_bn_w16");
    let x: Tensor<4> = Tensor::from_data(
        TensorData::new(io["input"].to_f32(), io["input"].shape.clone()),
        &device,
    );
    let names: Vec<String> = ["pool5", "features.43", "fc8", "relu1_2", "conv5_3", "relu6"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let acts = model.activations(x, &names).unwrap();
    let tol = tolerance(&case);
    assert_close(
        "pool5",
        &acts["pool5"].values,
        &io["features"].to_f32(),
        tol,
    );
    assert_eq!(acts["pool5"], acts["features.43"]);
    assert_close("fc8", &acts["fc8"].values, &io["logits"].to_f32(), tol);
    assert_eq!(acts["relu1_2"].shape, vec![2, 4, 32, 32]);
    assert!(acts["relu1_2"].values.iter().all(|&v| v >= 0.0));
    assert!(
        acts["conv5_3"].values.iter().any(|&v| v < 0.0),
        "conv5_3 is before the ReLU"
    );
    assert_eq!(acts["relu6"].shape, vec![2, 32]);
    let names = model.layer_names();
    assert!(
        names.contains(&("relu4_3".to_string(), "features.32".to_string())),
        "{names:?}"
    );
    let err = model
        .activations(
            Tensor::zeros([1, 3, 32, 32], &device),
            &["conv6_1".to_string()],
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("conv6_1") && err.to_string().contains("relu5_3 (features.42)"),
        "{err}"
    );
}
