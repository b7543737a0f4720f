//! The `train` fixtures: three SGD steps in PyTorch (lr 0.01, momentum 0.9, dampening 0,
//! weight decay 5e-4, batch 8, dropout 0): the losses and the final state, BN running stats
//! included.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use vgg::Vgg;
use vgg::train::{Sgd, SgdSettings};

use crate::common::*;

fn reproduce(name: &str) {
    let case = case(name);
    let config = config_of(&case);
    let device = Device::flex().autodiff();
    let mut model = Vgg::load(
        &config,
        &fixture(&format!("{name}_init.safetensors")),
        &device,
    )
    .unwrap();
    let io = io(name);
    let (inputs, labels) = (&io["inputs"], &io["labels"]);
    let [steps, batch, c, h, w] = inputs.shape[..] else {
        panic!()
    };
    let images = inputs.to_f32();
    let targets = labels.to_f32();
    let per = batch * c * h * w;
    let mut sgd = Sgd::new(SgdSettings::default());
    let want = case["losses"].as_array().unwrap();
    for step in 0..steps {
        let x = Tensor::<4>::from_data(
            TensorData::new(
                images[step * per..(step + 1) * per].to_vec(),
                [batch, c, h, w],
            ),
            &device,
        );
        let y: Vec<i64> = targets[step * batch..(step + 1) * batch]
            .iter()
            .map(|&t| t as i64)
            .collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [batch]), &device);
        let (loss, _) = sgd.accumulate(&model, x, y, 1.0);
        let expected = want[step].as_f64().unwrap() as f32;
        assert!(
            (loss - expected).abs() <= 1e-4 + 1e-3 * expected.abs(),
            "{name} step {step}: loss {loss}, PyTorch {expected}"
        );
        model = sgd.step(model, 0.01);
        model.add_batches_tracked(1);
    }
    let final_state =
        vgg::weights::read_state_dict(&fixture(&format!("{name}_final.safetensors"))).unwrap();
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

#[test]
fn three_sgd_steps_match_pytorch() {
    reproduce("vgg11_w16_sgd");
}

#[test]
fn three_sgd_steps_with_batchnorm_match_pytorch() {
    reproduce("vgg11_bn_w16_sgd");
}
