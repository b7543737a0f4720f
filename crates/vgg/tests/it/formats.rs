//! Weight files written by (or encoded exactly as) the real tools: the authors' Caffe models in
//! both forms, ONNX exports, Keras' files. Each loads to the same network as the torchvision-layout
//! fixture it was made from (`tests/fixtures/make_formats.py`), and malformed ones are named.

use std::path::Path;

use burn::tensor::Device;
use vgg::Vgg;
use vgg::checkpoint::read_state_dict;

use crate::common::{case, config_of, fixture, scratch};

fn same_weights(path: &Path, reference: &Path) {
    let config = config_of(&case("vgg11_w16"));
    let device = Device::flex();
    let model = Vgg::load(&config, path, &device).unwrap_or_else(|e| panic!("{e}"));
    let want = read_state_dict(reference).unwrap();
    let got = model.state_dict();
    for (k, t) in &want {
        assert_eq!(got[k].shape, t.shape, "{}: {k}", path.display());
        assert!(
            got[k].to_f32() == t.to_f32(),
            "{}: {k} differs",
            path.display()
        );
    }
}

/// The authors' 2014 form (V1 layers, legacy 4-D dims, packed floats) and today's (`layer`,
/// `BlobShape`, unpacked floats) both load; their preset is Caffe's (BGR, 0-255, mean pixel).
#[test]
fn caffe_models_in_both_forms() {
    for name in ["vgg11_w16_v1.caffemodel", "vgg11_w16.caffemodel"] {
        same_weights(&fixture(name), &fixture("vgg11_w16.safetensors"));
    }
    let config = config_of(&case("vgg11_w16"));
    let opened = vgg::preset::open(
        &fixture("vgg11_w16.caffemodel"),
        || Ok(config.clone()),
        &vgg::preset::Options::default(),
        &Device::flex(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(opened.preset.normalize, vgg::preset::Normalize::caffe());
    // Truncated anywhere or flipped: an error naming the file, never a panic.
    let whole = std::fs::read(fixture("vgg11_w16_v1.caffemodel")).unwrap();
    let d = scratch("caffe-bad");
    for cut in [1, 5, 40, 1000, whole.len() / 2, whole.len() - 3] {
        let path = d.join(format!("cut{cut}.caffemodel"));
        std::fs::write(&path, &whole[..cut]).unwrap();
        let err = Vgg::load(&config, &path, &Device::flex()).unwrap_err();
        assert!(
            err.to_string().contains(&format!("cut{cut}.caffemodel")),
            "{err}"
        );
    }
    let path = d.join("text.caffemodel");
    std::fs::write(&path, b"name: \"VGG_ILSVRC_16_layers\"\nlayers { }").unwrap();
    assert!(Vgg::load(&config, &path, &Device::flex()).is_err());
}

fn logits(model: &Vgg, io: &Path) -> (Vec<f32>, Vec<f32>) {
    use burn::tensor::{Tensor, TensorData};
    let io = read_state_dict(io).unwrap();
    let x = &io["input"];
    let input = Tensor::<4>::from_data(
        TensorData::new(x.to_f32(), x.shape.clone()),
        &Device::flex(),
    );
    let got = model
        .forward(input)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    (got, io["logits"].to_f32())
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-4 + 1e-4 * b.abs(), "{what}: {a} vs {b}");
    }
}

/// An ONNX export by torch.onnx (its initializers taken in graph order) gives onnxruntime's
/// logits; a VGG written as ONNX reads back to the same weights.
#[test]
fn onnx_models_read_and_written() {
    let config = config_of(&case("vgg11_w16"));
    same_weights(
        &fixture("vgg11_w16.onnx"),
        &fixture("vgg11_w16.safetensors"),
    );
    let model = Vgg::load(&config, &fixture("vgg11_w16.onnx"), &Device::flex()).unwrap();
    let (got, want) = logits(&model, &fixture("vgg11_w16.onnx.io.safetensors"));
    close("onnxruntime", &got, &want);
    let d = scratch("onnx");
    for name in ["vgg11_w16_bn", "vgg_a_lrn_w16", "vgg_c_w16"] {
        let source = if name == "vgg11_w16_bn" {
            "vgg11_bn_w16"
        } else {
            name
        };
        let config = config_of(&case(source));
        let model = Vgg::load(
            &config,
            &fixture(&format!("{source}.safetensors")),
            &Device::flex(),
        )
        .unwrap();
        let path = d.join(format!("{name}.onnx"));
        model.save(&path).unwrap();
        let back = Vgg::load(&config, &path, &Device::flex()).unwrap();
        assert_eq!(back.state_dict().len(), model.state_dict().len(), "{name}");
        for (k, t) in model.state_dict() {
            if !k.ends_with("num_batches_tracked") {
                assert!(back.state_dict()[&k] == t, "{name}: {k}");
            }
        }
    }
    for cut in [3, 100, 5000] {
        let whole = std::fs::read(fixture("vgg11_w16.onnx")).unwrap();
        let path = d.join(format!("cut{cut}.onnx"));
        std::fs::write(&path, &whole[..cut]).unwrap();
        let err = Vgg::load(&config, &path, &Device::flex()).unwrap_err();
        assert!(err.to_string().contains(&format!("cut{cut}.onnx")), "{err}");
    }
}

/// Keras 3's .keras and .weights.h5, the legacy model.save(".h5") and save_weights layouts,
/// Keras 1's weight names, a trunk nested in a Sequential, and Keras' ONNX export (channels
/// last, biases as `Add`s): one network, which computes Keras' own logits (kernels transposed,
/// FC1's channels-last flatten reordered).
#[test]
fn keras_files_of_every_generation() {
    let config = vgg::VggConfig::from_layers(
        "keras_w16",
        vgg::arch::parse_layers("4,M,8,M,16,16,M,32,32,M,32,32,M").unwrap(),
        false,
    )
    .with_hidden(32)
    .with_num_classes(10)
    .with_pool_size(2);
    let mut first = None;
    for name in [
        "keras_w16.keras",
        "keras_w16.weights.h5",
        "keras_w16.h5",
        "keras_w16_weights_only.h5",
        "keras1_w16.h5",
        "keras_nested_w16.h5",
        "keras_w16.onnx",
    ] {
        let model = Vgg::load(&config, &fixture(name), &Device::flex())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (got, want) = logits(&model, &fixture("keras_w16.io.safetensors"));
        close(name, &got, &want);
        let dict = model.state_dict();
        match &first {
            None => first = Some(dict),
            Some(f) => assert!(f == &dict, "{name} differs from keras_w16.keras"),
        }
    }
    // BatchNorm with Keras' epsilon (1e-3, stored nowhere) folded into the variance: the
    // moving variances are small (0.002-0.02), so 1e-5 instead would move the logits visibly.
    let bn_config = vgg::VggConfig {
        batch_norm: true,
        ..config.clone()
    };
    for name in ["keras_bn_w16.weights.h5", "keras_bn_w16.h5"] {
        let model = Vgg::load(&bn_config, &fixture(name), &Device::flex())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (got, want) = logits(&model, &fixture("keras_bn_w16.io.safetensors"));
        close(name, &got, &want);
    }
    // 30 KB declaring ten never-written kernels of 921 MB each (HDF5 would fill them in):
    // refused from the declaration, before anything is allocated.
    let err = Vgg::load(&config, &fixture("keras_fill_bomb.h5"), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keras_fill_bomb.h5") && err.contains("values declared"),
        "{err}"
    );
    let d = scratch("keras-bad");
    let whole = std::fs::read(fixture("keras_w16.h5")).unwrap();
    for cut in [8, 600, whole.len() / 2] {
        let path = d.join(format!("cut{cut}.h5"));
        std::fs::write(&path, &whole[..cut]).unwrap();
        let err = Vgg::load(&config, &path, &Device::flex()).unwrap_err();
        assert!(err.to_string().contains(&format!("cut{cut}.h5")), "{err}");
    }
}
