//! Our flex kernels against burn's generic operations on random shapes (odd sizes, batch 1,
//! one channel, 1x1 maps): outputs and every gradient.

use burn::tensor::module::batch_norm_train;
use burn::tensor::{Device, Distribution, Tensor};
use vgg::kernels;

/// Largest difference relative to the tensor's scale (its largest magnitude, at least 1):
/// sums of thousands of products cancel to values near 0 whose own relative error means little.
fn max_err<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let (a, b) = (
        a.into_data().try_to_vec::<f32>().unwrap(),
        b.into_data().try_to_vec::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f32::max)
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.5, 2.0), device)
}

/// BatchNorm in training, alone and with the ReLU fused, against burn's BatchNorm (then its
/// ReLU): outputs, statistics and the three gradients.
#[test]
fn batch_norm_kernel_matches_the_generic_path() {
    use burn::tensor::activation::relu;
    let device = Device::flex().autodiff();
    assert!(kernels::supported(&device));
    let mut worst = 0f32;
    let shapes = [
        [1, 1, 3, 3],
        [2, 3, 5, 7],
        [1, 16, 1, 2],
        [4, 5, 1, 1],
        [3, 8, 9, 11],
    ];
    for ([n, c, h, w], fused) in shapes.iter().flat_map(|&s| [(s, false), (s, true)]) {
        let x = random([n, c, h, w], &device).require_grad();
        let gamma = random([c], &device).require_grad();
        let beta = random([c], &device).require_grad();
        let dy = random([n, c, h, w], &device);
        let eps = 1e-5;

        let generic = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), eps);
        let g_out = match fused {
            true => relu(generic.output.clone()),
            false => generic.output.clone(),
        };
        let g_grads = (g_out.clone() * dy.clone()).sum().backward();
        let stats = kernels::batch_norm_stats(x.clone());
        let (g, b) = (gamma.clone(), beta.clone());
        let ours = kernels::batch_norm_train(x.clone(), stats.clone(), g, b, eps, fused);
        let o_grads = (ours.clone() * dy).sum().backward();

        let errs = [
            max_err(ours, g_out),
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
                "{what} of [{n}, {c}, {h}, {w}], ReLU fused {fused}: relative error {e}"
            );
            worst = worst.max(e);
        }
    }
    eprintln!("batch norm kernel: largest relative error {worst:e}");
}

#[test]
fn conv_kernel_matches_the_generic_path() {
    use burn::tensor::activation::relu;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    let device = Device::flex().autodiff();
    let mut worst = 0f32;
    // [n, c_in, c_out, h, w, k]: odd sizes, batch 1, one channel, 1x1 maps and 1x1 kernels.
    for [n, ci, co, h, w, k] in [
        [1, 1, 1, 3, 3, 3],
        [2, 3, 5, 7, 5, 3],
        [1, 4, 6, 1, 1, 3],
        [3, 5, 2, 9, 11, 1],
        [2, 16, 8, 2, 2, 3],
        [1, 2, 3, 13, 6, 5],
        // Several row bands per sample in the tiled path, run in parallel.
        [2, 64, 3, 30, 40, 3],
        // Winograd F(4x4, 3x3), forward and input gradient: blocks cut by the edges (10x13),
        // exact blocks (8x8), many chunks in parallel (3 x 36 x 52 maps).
        [2, 16, 24, 10, 13, 3],
        [1, 32, 16, 8, 8, 3],
        [3, 16, 16, 36, 52, 3],
    ] {
        let x = random([n, ci, h, w], &device).require_grad();
        let weight = random([co, ci, k, k], &device).require_grad();
        let bias = random([co], &device).require_grad();
        let dy = random([n, co, h, w], &device);
        let p = k / 2;
        let options = ConvOptions::new([1, 1], [p, p], [1, 1], 1);

        // The plain convolution against conv2d; the one with ReLU fused (forward and its masked
        // backward) against our plain one followed by burn's relu. (Against conv2d + relu, an
        // output within rounding of 0 can take the mask's other side and move dx by a whole
        // term: the random data of a full test run met one.)
        for fused in [false, true] {
            let generic = if fused {
                relu(kernels::conv_same(x.clone(), weight.clone(), bias.clone()))
            } else {
                conv2d(
                    x.clone(),
                    weight.clone(),
                    Some(bias.clone()),
                    options.clone(),
                )
            };
            let g_grads = (generic.clone() * dy.clone()).sum().backward();
            let ours = if fused {
                kernels::conv_same_relu(x.clone(), weight.clone(), bias.clone())
            } else {
                kernels::conv_same(x.clone(), weight.clone(), bias.clone())
            };
            let o_grads = (ours.clone() * dy.clone()).sum().backward();

            let errs = [
                max_err(ours, generic),
                max_err(x.grad(&o_grads).unwrap(), x.grad(&g_grads).unwrap()),
                max_err(
                    weight.grad(&o_grads).unwrap(),
                    weight.grad(&g_grads).unwrap(),
                ),
                max_err(bias.grad(&o_grads).unwrap(), bias.grad(&g_grads).unwrap()),
            ];
            for (what, e) in ["output", "dx", "dweight", "dbias"].iter().zip(errs) {
                assert!(
                    e < 1e-4,
                    "{what} of n{n} {ci}->{co} {h}x{w} k{k} (ReLU fused: {fused}): relative error {e}"
                );
                worst = worst.max(e);
            }
        }
    }
    eprintln!("conv kernel: largest relative error {worst:e}");
}

#[test]
fn max_pool_kernel_matches_the_generic_path() {
    let pool = burn::nn::pool::MaxPool2dConfig::new([2, 2])
        .with_strides([2, 2])
        .init();
    let device = Device::flex().autodiff();
    // Odd sizes drop the last row/column; a 2x3 map pools to 1x1; one channel, batch 1; rows
    // of 16 and 17 outputs (the vector path's groups of 8 and a remainder).
    let shapes = [[1, 1, 2, 2], [2, 3, 5, 7], [1, 4, 2, 3], [3, 2, 8, 6]];
    for [n, c, h, w] in shapes.into_iter().chain([[1, 2, 32, 32], [2, 3, 9, 35]]) {
        let x = random([n, c, h, w], &device).require_grad();
        let dy = random([n, c, h / 2, w / 2], &device);
        let generic = pool.forward(x.clone());
        let g_grads = (generic.clone() * dy.clone()).sum().backward();
        let ours = kernels::max_pool2x2(x.clone());
        let o_grads = (ours.clone() * dy).sum().backward();
        assert_eq!(
            max_err(ours, generic),
            0.0,
            "output of [{n}, {c}, {h}, {w}]"
        );
        let e = max_err(x.grad(&o_grads).unwrap(), x.grad(&g_grads).unwrap());
        assert_eq!(e, 0.0, "dx of [{n}, {c}, {h}, {w}]");
    }
}

/// The few-rows FC kernel (inference, 1 to 8 rows) against burn's matmul + bias: 1, 3 and 8
/// rows, an input width that is no multiple of 4 and spans three blocks of rows (1,030), one of
/// 3, an odd output width, an empty batch.
#[test]
fn few_rows_linear_matches_the_generic_path() {
    let device = Device::flex();
    for [n, k, out] in [
        [1, 1030, 37],
        [3, 1030, 64],
        [8, 3, 5],
        [1, 4, 1],
        [0, 7, 3],
    ] {
        let x = random([n, k], &device);
        let b = random([out], &device);
        // W row-major, and W as PyTorch's weights load: the transposed view of [out, in].
        let row_major = random([k, out], &device);
        let transposed = random([out, k], &device).transpose();
        for (layout, w) in [("row-major", row_major), ("transposed", transposed)] {
            let want = x.clone().matmul(w.clone()) + b.clone().reshape([1, out]);
            let got = kernels::linear_few_rows(x.clone(), w, b.clone());
            assert_eq!(got.dims(), [n, out]);
            if n > 0 {
                let e = max_err(got, want);
                assert!(e < 1e-5, "[{n}, {k}] x [{k}, {out}] {layout}: {e}");
            }
        }
    }
}

/// An FC layer whose parameters track gradients keeps them when its input does not (burn runs
/// such an operation on the autodiff path, which the few-rows kernel does not serve).
#[test]
fn few_rows_linear_keeps_the_parameters_gradients() {
    let layer = burn::nn::LinearConfig::new(5, 3).init(&Device::flex().autodiff());
    let x = random([2, 5], &Device::flex());
    let grads = vgg::nn::ops::linear(x, &layer).sum().backward();
    let g = layer
        .weight
        .grad(&grads)
        .expect("FC weights have a gradient");
    assert_eq!(g.dims(), [5, 3]);
    assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
}
