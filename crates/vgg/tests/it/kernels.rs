//! Our flex kernels against burn's generic operations on random shapes (odd sizes, batch 1,
//! one channel, 1x1 maps): outputs and every gradient.

use burn::tensor::module::batch_norm_train;
use burn::tensor::{Device, Distribution, Tensor};
use vgg::kernels;

fn max_err<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let (a, b) = (
        a.into_data().to_vec::<f32>().unwrap(),
        b.into_data().to_vec::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.5, 2.0), device)
}

#[test]
fn batch_norm_kernel_matches_the_generic_path() {
    let device = Device::flex().autodiff();
    assert!(kernels::supported(&device));
    let mut worst = 0f32;
    for [n, c, h, w] in [
        [1, 1, 3, 3],
        [2, 3, 5, 7],
        [1, 16, 1, 2],
        [4, 5, 1, 1],
        [3, 8, 9, 11],
    ] {
        let x = random([n, c, h, w], &device).require_grad();
        let gamma = random([c], &device).require_grad();
        let beta = random([c], &device).require_grad();
        let dy = random([n, c, h, w], &device);
        let eps = 1e-5;

        let generic = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), eps);
        let g_grads = (generic.output.clone() * dy.clone()).sum().backward();
        let stats = kernels::batch_norm_stats(x.clone());
        let ours =
            kernels::batch_norm_train(x.clone(), stats.clone(), gamma.clone(), beta.clone(), eps);
        let o_grads = (ours.clone() * dy).sum().backward();

        let errs = [
            max_err(ours, generic.output),
            max_err(stats.clone().slice([0..1, 0..c]).reshape([c]), generic.mean),
            max_err(stats.slice([1..2, 0..c]).reshape([c]), generic.variance),
            max_err(x.grad(&o_grads).unwrap(), x.grad(&g_grads).unwrap()),
            max_err(gamma.grad(&o_grads).unwrap(), gamma.grad(&g_grads).unwrap()),
            max_err(beta.grad(&o_grads).unwrap(), beta.grad(&g_grads).unwrap()),
        ];
        for (what, e) in ["output", "mean", "variance", "dx", "dgamma", "dbeta"]
            .iter()
            .zip(errs)
        {
            assert!(
                e < 1e-4,
                "{what} of [{n}, {c}, {h}, {w}]: relative error {e}"
            );
            worst = worst.max(e);
        }
    }
    eprintln!("batch norm kernel: largest relative error {worst:e}");
}
