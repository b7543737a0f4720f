//! The test protocols of Section 3.2 computed together (`vgg eval --method a,b,...`) give each
//! method exactly what it gives alone.

use burn::tensor::Device;
use vgg::data::Image;
use vgg::eval::{Classifier, Method, average_probs, average_probs_each};
use vgg::preset::{Normalize, Preset};
use vgg::{InitScheme, Vgg, VggConfig};

/// A tiny randomly initialised network (two calls, two different networks).
fn classifier() -> Classifier {
    let device = Device::flex();
    let config = VggConfig::from_layers(
        "tiny",
        vgg::arch::parse_layers("4,M,8,M,8,M").unwrap(),
        false,
    )
    .with_hidden(16)
    .with_num_classes(7)
    .with_pool_size(1);
    Classifier {
        model: Vgg::new(&config, InitScheme::Glorot, &device).unwrap(),
        preset: Preset {
            normalize: Normalize::none(),
            crop: 16,
            scale: 20,
            classes: (0..7).map(|i| i.to_string()).collect(),
        },
        trunk: false,
    }
}

#[test]
fn methods_together_equal_methods_alone() {
    let models = [classifier(), classifier()];
    // A 23x31 image with a gradient and some texture.
    let (h, w) = (23, 31);
    let pixels = (0..h * w * 3)
        .map(|i| ((i * 37 + i / 7) % 256) as u8)
        .collect();
    let img = Image {
        channels: 3,
        height: h,
        width: w,
        pixels,
    };
    let path = std::path::Path::new("gradient.png");
    let methods = [
        Method::DenseMulticrop,
        Method::Center,
        Method::Dense,
        Method::Multicrop,
    ];
    let scales = [16, 20, 27];
    let together = average_probs_each(&models, &img, path, &methods, &scales).unwrap();
    assert_eq!(together.len(), 4);
    for (method, got) in methods.iter().zip(&together) {
        let alone = average_probs(&models, &img, path, *method, &scales).unwrap();
        assert_eq!(got, &alone, "{}", method.name());
        assert_eq!(got.len(), 7);
        let total: f32 = got.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "{}: {total}", method.name());
    }
    // dense+multicrop is the mean of the two.
    for ((both, dense), multi) in together[0].iter().zip(&together[2]).zip(&together[3]) {
        assert!((both - (dense + multi) / 2.0).abs() < 1e-6);
    }
    // The methods do differ on this image (the test would pass trivially otherwise).
    assert_ne!(together[1], together[2]);
    assert_ne!(together[2], together[3]);
}
