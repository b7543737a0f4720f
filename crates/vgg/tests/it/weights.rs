//! Weight files: exact round trips, strict loading, and the errors users meet.

use burn::tensor::{Device, Tensor};
use vgg::checkpoint::{read_state_dict, write_safetensors};
use vgg::{Vgg, VggConfig, VggError};

use crate::common::*;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vgg-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn small(name: &str) -> VggConfig {
    config_of(&case(name))
}

#[test]
fn safetensors_round_trip_is_exact() {
    let device = Device::flex();
    let src = fixture("vgg16_bn_w16.pth");
    let model = Vgg::load(&small("vgg16_bn_w16"), &src, &device).unwrap();
    let out = tmp("rt.safetensors");
    model.save(&out).unwrap();
    let original = read_state_dict(&src).unwrap();
    let written = read_state_dict(&out).unwrap();
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>()
    );
    for (k, t) in &original {
        assert_eq!(t.shape, written[k].shape, "{k}");
        assert_eq!(
            t.to_f32(),
            written[k].to_f32(),
            "{k}: values differ after the round trip"
        );
    }
}

#[test]
fn burn_record_round_trip_is_exact() {
    let device = Device::flex();
    let config = small("vgg_a_lrn_w16");
    let model = Vgg::load(&config, &fixture("vgg_a_lrn_w16.pth"), &device).unwrap();
    let out = tmp("rt.bpk");
    model.save(&out).unwrap();
    let back = Vgg::load(&config, &out, &device).unwrap();
    assert_eq!(model.state_dict(), back.state_dict());
}

#[test]
fn strict_loading_lists_every_difference() {
    let device = Device::flex();
    let mut dict = read_state_dict(&fixture("vgg11_w16.safetensors")).unwrap();
    dict.remove("features.3.bias");
    let extra = dict["classifier.6.bias"].clone();
    dict.insert("features.99.weight".into(), extra);
    dict.get_mut("classifier.6.bias").unwrap().shape = vec![11];
    let path = tmp("broken.safetensors");
    write_safetensors(&dict, &path).unwrap_or_else(|_| {
        // A shape that disagrees with its data cannot be written; fix the data too.
        let t = dict.get_mut("classifier.6.bias").unwrap();
        t.values = vgg::checkpoint::Values::F32(vec![0.0; 11]);
        write_safetensors(&dict, &path).unwrap()
    });
    let err = Vgg::load(&small("vgg11_w16"), &path, &device).unwrap_err();
    let VggError::WeightMismatch {
        missing,
        unexpected,
        misshaped,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(missing, &["features.3.bias"]);
    assert_eq!(unexpected, &["features.99.weight"]);
    assert_eq!(
        misshaped,
        &[("classifier.6.bias".to_string(), vec![10], vec![11])]
    );
    let message = err.to_string();
    assert!(
        message.contains("features.3.bias") && message.contains("expected [10], file has [11]"),
        "{message}"
    );
}

#[test]
fn weights_of_another_variant_are_refused() {
    let device = Device::flex();
    // vgg13 weights into a vgg11 network: the indices differ.
    let err = Vgg::load(
        &small("vgg11_w16"),
        &fixture("vgg13_w16.safetensors"),
        &device,
    )
    .unwrap_err();
    assert!(matches!(err, VggError::WeightMismatch { .. }), "{err}");
    // BN weights into a plain network.
    let err = Vgg::load(
        &small("vgg11_w16"),
        &fixture("vgg11_bn_w16.safetensors"),
        &device,
    )
    .unwrap_err();
    assert!(matches!(err, VggError::WeightMismatch { .. }), "{err}");
}

#[test]
fn missing_truncated_and_corrupt_files_are_named() {
    let device = Device::flex();
    let config = small("vgg11_w16");
    let err = Vgg::load(&config, &tmp("nope.safetensors"), &device).unwrap_err();
    assert!(
        matches!(err, VggError::Io { .. }) && err.to_string().contains("nope.safetensors"),
        "{err}"
    );

    for (src, name) in [
        ("vgg11_w16.safetensors", "cut.safetensors"),
        ("vgg11_w16.pth", "cut.pth"),
    ] {
        let bytes = std::fs::read(fixture(src)).unwrap();
        let path = tmp(name);
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = Vgg::load(&config, &path, &device).unwrap_err();
        assert!(
            matches!(err, VggError::CorruptWeights { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");

        let path = tmp(&format!("garbage-{name}"));
        std::fs::write(&path, b"this is not a weight file at all, just text").unwrap();
        let err = Vgg::load(&config, &path, &device).unwrap_err();
        assert!(
            matches!(err, VggError::CorruptWeights { .. }),
            "{name}: {err}"
        );
    }
    let err = Vgg::load(&config, &tmp("weights.txt"), &device).unwrap_err();
    assert!(matches!(err, VggError::UnknownFormat { .. }), "{err}");
}

#[test]
fn inputs_that_cannot_pass_are_refused() {
    let device = Device::flex();
    let model = Vgg::load(
        &small("vgg11_w16"),
        &fixture("vgg11_w16.safetensors"),
        &device,
    )
    .unwrap();
    let err = model
        .try_forward(Tensor::zeros([1, 3, 31, 64], &device))
        .unwrap_err();
    assert!(
        matches!(err, VggError::InputTooSmall { min: 32, .. }),
        "{err}"
    );
    let err = model
        .try_forward(Tensor::zeros([1, 1, 32, 32], &device))
        .unwrap_err();
    assert!(
        matches!(
            err,
            VggError::ChannelMismatch {
                expected: 3,
                got: 1
            }
        ),
        "{err}"
    );
}

/// The authors' Caffe names and Keras' names and layouts, made here from the torchvision
/// fixture, load to the same network.
#[test]
fn caffe_and_keras_layouts_load_to_the_same_network() {
    use vgg::checkpoint::layouts::{Layout, detect};
    use vgg::checkpoint::{StateTensor, Values};
    let device = Device::flex();
    let config = small("vgg16_w16");
    let src = fixture("vgg16_w16.safetensors");
    let reference = Vgg::load(&config, &src, &device).unwrap();
    let tv = read_state_dict(&src).unwrap();
    let convs = [
        (0, "1_1"),
        (2, "1_2"),
        (5, "2_1"),
        (7, "2_2"),
        (10, "3_1"),
        (12, "3_2"),
        (14, "3_3"),
        (17, "4_1"),
        (19, "4_2"),
        (21, "4_3"),
        (24, "5_1"),
        (26, "5_2"),
        (28, "5_3"),
    ];
    let fcs = [
        (0, "fc6", "fc1"),
        (3, "fc7", "fc2"),
        (6, "fc8", "predictions"),
    ];
    let mut caffe = vgg::StateDict::new();
    let mut keras = vgg::StateDict::new();
    for (i, n) in convs {
        let w = &tv[&format!("features.{i}.weight")];
        caffe.insert(format!("conv{n}.0"), w.clone());
        caffe.insert(
            format!("conv{n}.1"),
            tv[&format!("features.{i}.bias")].clone(),
        );
        let [o, c, kh, kw] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
        let v = w.to_f32();
        let mut k = vec![0f32; v.len()];
        for a in 0..o {
            for b in 0..c {
                for y in 0..kh {
                    for x in 0..kw {
                        k[((y * kw + x) * c + b) * o + a] = v[((a * c + b) * kh + y) * kw + x];
                    }
                }
            }
        }
        let (block, conv) = n.split_once('_').unwrap();
        keras.insert(
            format!("block{block}_conv{conv}/kernel:0"),
            StateTensor {
                shape: vec![kh, kw, c, o],
                values: Values::F32(k),
            },
        );
        keras.insert(
            format!("block{block}_conv{conv}/bias:0"),
            tv[&format!("features.{i}.bias")].clone(),
        );
    }
    for (i, caffe_name, keras_name) in fcs {
        let w = &tv[&format!("classifier.{i}.weight")];
        caffe.insert(format!("{caffe_name}.weight"), w.clone());
        caffe.insert(
            format!("{caffe_name}.bias"),
            tv[&format!("classifier.{i}.bias")].clone(),
        );
        let [o, n] = [w.shape[0], w.shape[1]];
        let v = w.to_f32();
        let mut k = vec![0f32; v.len()];
        for a in 0..o {
            for col in 0..n {
                // Keras' fc1 reads [7, 7, 32] channels-last; torchvision reads [32, 7, 7].
                let row = if i == 0 {
                    let (ch, yx) = (col / 49, col % 49);
                    yx * 32 + ch
                } else {
                    col
                };
                k[row * o + a] = v[a * n + col];
            }
        }
        keras.insert(
            format!("{keras_name}/kernel:0"),
            StateTensor {
                shape: vec![n, o],
                values: Values::F32(k),
            },
        );
        keras.insert(
            format!("{keras_name}/bias:0"),
            tv[&format!("classifier.{i}.bias")].clone(),
        );
    }
    assert_eq!(
        (detect(&caffe), detect(&keras), detect(&tv)),
        (Layout::Caffe, Layout::Keras, Layout::Torchvision)
    );
    let x = Tensor::<4>::random([1, 3, 32, 32], burn::tensor::Distribution::Default, &device);
    let want = reference
        .forward(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for (name, dict) in [("caffe.safetensors", caffe), ("keras.safetensors", keras)] {
        let path = tmp(name);
        write_safetensors(&dict, &path).unwrap();
        let model = Vgg::load(&config, &path, &device).unwrap();
        let got = model
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_close(name, &got, &want, (1e-5, 1e-5));
        assert_eq!(model.state_dict(), reference.state_dict(), "{name}");
    }
}

/// A write that fails (here: the rename onto a folder; a full disk fails the same way, before
/// the rename) leaves what was there untouched and no temporary file behind.
#[test]
fn a_failed_write_loses_nothing() {
    let dir = tmp("atomic");
    std::fs::create_dir_all(dir.join("target.safetensors")).unwrap();
    std::fs::write(dir.join("target.safetensors/keep"), b"old").unwrap();
    let err = vgg::fsio::write_atomic(&dir.join("target.safetensors"), b"new bytes").unwrap_err();
    assert!(err.to_string().contains("target.safetensors"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("target.safetensors/keep")).unwrap(),
        b"old"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let err = vgg::fsio::write_atomic(std::path::Path::new("/nonexistent-dir/w.safetensors"), b"x")
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/w.safetensors"),
        "{err}"
    );
}
