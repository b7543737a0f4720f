//! Weight files written by (or encoded exactly as) the real tools: the authors' Caffe models in
//! both forms, ONNX exports, Keras' files. Each loads to the same network as the torchvision-layout
//! fixture it was made from (`tests/fixtures/make_formats.py`), and malformed ones are named.

use std::path::Path;

use burn::tensor::Device;
use vgg::Vgg;
use vgg::checkpoint::{StateDict, read_state_dict};

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

/// The Keras fixtures' network: keras.applications' VGG at widths 4 ... 32, 64x64 input (a
/// 2x2 map before FC1), FC width 32, 10 classes; with BatchNorm after each convolution if `bn`.
fn keras_w16(bn: bool) -> vgg::VggConfig {
    vgg::VggConfig::from_layers(
        "keras_w16",
        vgg::arch::parse_layers("4,M,8,M,16,16,M,32,32,M,32,32,M").unwrap(),
        bn,
    )
    .with_hidden(32)
    .with_num_classes(10)
    .with_pool_size(2)
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
    let config = keras_w16(false);
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

fn open_default(
    path: &Path,
    config: &vgg::VggConfig,
) -> Result<vgg::preset::Opened, vgg::VggError> {
    vgg::preset::open(
        path,
        || Ok(config.clone()),
        &vgg::preset::Options::default(),
        &Device::flex(),
        &mut |_, _| {},
    )
}

/// With no preset asked for, every format opens with its own tool's preprocessing, told by
/// the format before any key is renamed: Caffe's for every Keras file (.keras, .weights.h5,
/// legacy .h5, Keras 1 names, a nested trunk, Keras' ONNX export) and .caffemodel; torchvision's
/// for torchvision's layout in .pth, .safetensors and torch.onnx's export.
#[test]
fn every_format_opens_with_its_own_preprocessing() {
    let keras = keras_w16(false);
    let tv = config_of(&case("vgg11_w16"));
    let caffe = vgg::preset::Normalize::caffe();
    let torch = vgg::preset::Normalize::torchvision();
    for (name, config, want) in [
        ("keras_w16.keras", &keras, &caffe),
        ("keras_w16.weights.h5", &keras, &caffe),
        ("keras_w16.h5", &keras, &caffe),
        ("keras_w16_weights_only.h5", &keras, &caffe),
        ("keras1_w16.h5", &keras, &caffe),
        ("keras_nested_w16.h5", &keras, &caffe),
        ("keras_w16.onnx", &keras, &caffe),
        ("vgg11_w16.caffemodel", &tv, &caffe),
        ("vgg11_w16_v1.caffemodel", &tv, &caffe),
        ("vgg11_w16.pth", &tv, &torch),
        ("vgg11_w16.safetensors", &tv, &torch),
        ("vgg11_w16.onnx", &tv, &torch),
    ] {
        let opened = open_default(&fixture(name), config).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&opened.preset.normalize, want, "{name}");
    }
}

/// A file converted from Keras or Caffe keeps its preset: `.safetensors` carries it in its
/// metadata, and opening it with no flag gives it back (classes included).
#[test]
fn converted_weights_carry_their_preset() {
    let config = config_of(&case("vgg11_w16"));
    let weights = vgg::Weights::open(
        &fixture("vgg11_w16.caffemodel"),
        || Ok(config.clone()),
        &vgg::preset::Options::default(),
        &mut |_, _| {},
    )
    .unwrap();
    // One value: the network, torchvision's tensors, the preset, where they came from.
    assert_eq!(weights.config, config);
    assert_eq!(
        weights.origin.layout,
        vgg::checkpoint::layouts::Layout::Caffe
    );
    assert!(!weights.trunk && weights.dict.contains_key("classifier.6.weight"));
    let d = scratch("carried");
    let out = d.join("from_caffe.safetensors");
    let mut preset = weights.preset.clone();
    preset.classes = (0..10).map(|i| format!("class {i}")).collect();
    vgg::checkpoint::safetensors::write_with_metadata(
        &weights.dict,
        &out,
        false,
        &preset.to_metadata(),
    )
    .unwrap();
    let back = open_default(&out, &config).unwrap();
    assert_eq!(back.preset, preset);
    assert!(
        back.model.state_dict()
            == Vgg::from_weights(&weights, &Device::flex())
                .unwrap()
                .state_dict()
    );
    // A preprocessing asked for replaces the carried one; the classes, crop and scale stay.
    let asked = vgg::preset::open(
        &out,
        || Ok(config.clone()),
        &vgg::preset::Options {
            convention: Some(vgg::preset::Convention::Torchvision),
            ..Default::default()
        },
        &Device::flex(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        asked.preset.normalize,
        vgg::preset::Normalize::torchvision()
    );
    assert_eq!(asked.preset.classes, preset.classes);

    // A preset for another network's classes is an error naming the file.
    let eleven = config.clone().with_num_classes(11);
    let err = open_default(&out, &eleven).err().unwrap().to_string();
    assert!(
        err.contains("from_caffe.safetensors") && err.contains("10 classes"),
        "{err}"
    );
}

/// Two names for one tensor, in any format, are an error naming both: a Caffe name beside
/// torchvision's (which would also switch the preprocessing), a Caffe layer in both of its
/// blob namings, a layer twice in a .caffemodel, an ONNX initializer twice.
#[test]
fn two_names_for_one_tensor_are_refused() {
    use vgg::checkpoint::{StateTensor, write_safetensors};
    let config = config_of(&case("vgg11_w16"));
    let d = scratch("two-names");
    let mut dict = read_state_dict(&fixture("vgg11_w16.safetensors")).unwrap();
    let stray = dict["classifier.6.weight"].clone();
    dict.insert("fc8.weight".into(), stray);
    let mixed = d.join("mixed.safetensors");
    write_safetensors(&dict, &mixed).unwrap();
    let err = open_default(&mixed, &config).err().unwrap().to_string();
    assert!(
        err.contains("`fc8.weight`") && err.contains("(torchvision's)"),
        "{err}"
    );
    // conv1_1 as `.0` and as `.weight`: both fill features.0.weight.
    let mut caffe = StateDict::new();
    let w = StateTensor::f32(vec![4, 3, 3, 3], vec![0.0; 108]);
    caffe.insert("conv1_1.0".into(), w.clone());
    caffe.insert("conv1_1.weight".into(), w);
    let both = d.join("both.safetensors");
    write_safetensors(&caffe, &both).unwrap();
    let err = Vgg::load(&config, &both, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`conv1_1.0` and `conv1_1.weight`"), "{err}");
    // Protocol Buffers concatenated is one message with every repeated field twice: every
    // Caffe layer, every ONNX initializer.
    for (name, needle) in [
        ("vgg11_w16.caffemodel", "has weights twice"),
        ("vgg11_w16.onnx", "two initializers are named"),
    ] {
        let whole = std::fs::read(fixture(name)).unwrap();
        let twice = d.join(format!("twice-{name}"));
        std::fs::write(&twice, [whole.clone(), whole].concat()).unwrap();
        let err = Vgg::load(&config, &twice, &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(needle) && err.contains("twice-"),
            "{name}: {err}"
        );
    }
}

/// Keras' BatchNorm epsilon is the one the file's model config says (0.01 here, in .keras
/// and legacy .h5), not the default: the logits are Keras' own.
#[test]
fn keras_batchnorm_epsilon_from_the_files_config() {
    let config = keras_w16(true);
    for name in ["keras_bn_eps_w16.keras", "keras_bn_eps_w16.h5"] {
        let model = Vgg::load(&config, &fixture(name), &Device::flex())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (got, want) = logits(&model, &fixture("keras_bn_eps_w16.io.safetensors"));
        close(name, &got, &want);
    }
}

/// ONNX initializers in float16 (torch.onnx's export after `.half()`) load as every other
/// format's half-precision weights do: widened to float32, equal to the float32 weights rounded
/// to float16.
#[test]
fn onnx_float16_initializers() {
    let config = config_of(&case("vgg11_w16"));
    let model = Vgg::load(&config, &fixture("vgg11_w16_f16.onnx"), &Device::flex())
        .unwrap_or_else(|e| panic!("{e}"));
    let want = read_state_dict(&fixture("vgg11_w16.safetensors")).unwrap();
    let got = model.state_dict();
    for (k, t) in &want {
        let rounded: Vec<f32> = t
            .to_f32()
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        assert!(got[k].to_f32() == rounded, "{k}");
    }
}

/// timm's VGG checkpoint (its head as convolutions, `pre_logits.fc1/fc2`, and `head.fc`) loads
/// with torchvision's preprocessing and computes timm's own logits; `--no-top` keeps its trunk.
#[test]
fn timm_checkpoints() {
    let config = config_of(&case("vgg11_w16"));
    let weights = vgg::Weights::open(
        &fixture("timm_w16.safetensors"),
        || Ok(config.clone()),
        &vgg::preset::Options::default(),
        &mut |_, _| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        weights.origin.layout,
        vgg::checkpoint::layouts::Layout::Timm
    );
    assert_eq!(
        weights.preset.normalize,
        vgg::preset::Normalize::torchvision()
    );
    let model = Vgg::from_weights(&weights, &Device::flex()).unwrap();
    let (got, want) = logits(&model, &fixture("timm_w16.io.safetensors"));
    close("timm", &got, &want);
    let trunk = vgg::Weights::open(
        &fixture("timm_w16.safetensors"),
        || Ok(config.clone()),
        &vgg::preset::Options {
            no_top: true,
            ..Default::default()
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert!(trunk.trunk && trunk.dict.keys().all(|k| k.starts_with("features.")));
    assert_eq!(trunk.origin.dropped.len(), 6);
}

/// `--no-top` drops a head of any count and width: weights with a fourth fully connected layer
/// (refused whole without it, naming the key) load as their trunk, the dropped keys listed.
#[test]
fn no_top_drops_any_head() {
    let config = config_of(&case("vgg11_w16"));
    let mut dict = read_state_dict(&fixture("vgg11_w16.safetensors")).unwrap();
    let extra = vgg::checkpoint::StateTensor::f32(vec![5, 10], vec![0.1; 50]);
    dict.insert("classifier.9.weight".into(), extra);
    let d = scratch("no-top");
    let path = d.join("four_fc.safetensors");
    vgg::checkpoint::write_safetensors(&dict, &path).unwrap();
    let open = |no_top| {
        vgg::Weights::open(
            &path,
            || Ok(config.clone()),
            &vgg::preset::Options {
                no_top,
                ..Default::default()
            },
            &mut |_, _| {},
        )
    };
    let err = open(false).unwrap_err().to_string();
    assert!(err.contains("classifier.9.weight"), "{err}");
    let trunk = open(true).unwrap();
    assert!(trunk.trunk);
    assert!(
        trunk
            .origin
            .dropped
            .contains(&"classifier.9.weight".to_string())
    );
}
