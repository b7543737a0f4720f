//! The activations a perceptual (LPIPS-style) or style loss reads, relu1_2 ... relu5_3, for an
//! image, with the library alone: `cargo run --release -p vgg --example perceptual_features --
//! WEIGHTS ARCH IMAGE` (e.g. `torchvision:vgg16 vgg16 cat.jpg`).

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use vgg::arch::names::default_taps;
use vgg::eval::Classifier;
use vgg::{Vgg, VggConfig, Weights};

fn main() -> Result<(), vgg::VggError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, arch, image] = &args[..] else {
        panic!("usage: perceptual_features WEIGHTS ARCH IMAGE");
    };
    let weights = Weights::open(
        Path::new(weights),
        || VggConfig::named(arch),
        &Default::default(),
        &mut |_, _| {},
    )?;
    let device = Device::flex();
    let classifier = Classifier {
        model: Vgg::from_weights(&weights, &device)?,
        preset: weights.preset.clone(),
        trunk: weights.trunk,
    };
    // The image as the weights expect it: their resize, crop and normalisation.
    let side = classifier.preset.crop;
    let pixels = classifier
        .center(&vgg::data::folder::decode(Path::new(image))?, side)
        .map_err(|reason| vgg::VggError::BadImage {
            path: image.into(),
            reason,
        })?;
    let channels = classifier.model.config().in_channels;
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [1, channels, side, side]), &device);
    let layers = default_taps(classifier.model.config());
    for (name, a) in classifier.model.activations(x, &layers)? {
        let mean = a.values.iter().map(|v| *v as f64).sum::<f64>() / a.values.len() as f64;
        println!("{name:<8} {:?} mean {mean:.4}", a.shape);
    }
    Ok(())
}
