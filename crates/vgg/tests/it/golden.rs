//! Golden parity with PyTorch/torchvision: every `inference` case of the fixtures, from
//! `.safetensors` and, where it exists, `.pth`.

use burn::tensor::{Device, Tensor, TensorData};
use vgg::Vgg;

use crate::common::*;

fn run_case(name: &str, weights: &str) {
    let case = case(name);
    let config = config_of(&case);
    let device = Device::flex();
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
                run_case(name, &file);
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
