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
            resize: vgg::preset::Resize::Bilinear,
        },
        trunk: false,
    }
}

/// An RGB `h x w` image with a gradient and some texture (`mul`, `div` vary it).
fn textured(h: usize, w: usize, mul: usize, div: usize) -> Image {
    Image {
        channels: 3,
        height: h,
        width: w,
        pixels: (0..h * w * 3)
            .map(|i| ((i * mul + i / div) % 256) as u8)
            .collect(),
    }
}

#[test]
fn methods_together_equal_methods_alone() {
    let models = [classifier(), classifier()];
    let img = textured(23, 31, 37, 7);
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

/// Multi-crop is the mean softmax of the 5x5 grid of crops and their flips (Section 3.2), also
/// where grid positions coincide (an image little larger than the crop, computed once each):
/// checked against the 50 crops one by one on a 19x24 image with crops of 16, at Q = crop (5
/// distinct positions of 25), crop + 2 (15) and crop + 7 (25).
#[test]
fn multicrop_is_the_mean_of_the_fifty_crops() {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Tensor, TensorData};
    use vgg::data::transform::{crop, rescale_shorter, to_channels};

    let model = classifier();
    let img = textured(19, 24, 53, 5);
    let c = model.preset.crop;
    for q in [c, c + 2, c + 7] {
        let n = &model.preset.normalize;
        let x = rescale_shorter(&to_channels(&img, 3, n.scale), q);
        let mut mean = [0f64; 7];
        for i in 0..5 {
            for j in 0..5 {
                let (top, left) = ((x.height - c) * i / 4, (x.width - c) * j / 4);
                for flip in [false, true] {
                    let one = n.apply(crop(&x, top, left, c, c, flip).data, 3);
                    let t =
                        Tensor::<4>::from_data(TensorData::new(one, [1, 3, c, c]), &Device::flex());
                    let p = softmax(model.model.forward(t), 1)
                        .into_data()
                        .try_into_vec::<f32>()
                        .unwrap();
                    mean.iter_mut()
                        .zip(p)
                        .for_each(|(m, v)| *m += v as f64 / 50.0);
                }
            }
        }
        let got = average_probs(
            std::slice::from_ref(&model),
            &img,
            std::path::Path::new("grid.png"),
            Method::Multicrop,
            &[q],
        )
        .unwrap();
        for (g, m) in got.iter().zip(mean) {
            assert!((*g as f64 - m).abs() < 1e-6, "Q = {q}: {got:?} vs {mean:?}");
        }
    }
}
