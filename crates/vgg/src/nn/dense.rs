//! The paper's dense evaluation (Section 3.2): the FC layers become convolutions (FC1 a
//! `pool x pool` conv, FC2 and FC3 1x1 convs) applied to the whole rescaled image, giving a class
//! score map that is averaged spatially. The convolution kernels are views of the FC weights
//! (a transpose and a reshape), so one set of weights serves both heads.

use burn::tensor::Tensor;
use burn::tensor::activation::{relu, softmax};

use super::model::Vgg;
use super::ops::conv_valid;
use crate::error::VggError;

fn as_conv(
    linear: &burn::nn::Linear,
    channels: usize,
    side: usize,
) -> (Tensor<4>, Option<Tensor<1>>) {
    let w = linear.weight.val(); // burn: [in, out]
    let [_, out] = w.dims();
    // [in, out] -> [out, in] -> [out, C, k, k]: torchvision flattens [C, k, k] row-major.
    (
        w.transpose().reshape([out, channels, side, side]),
        linear.bias.as_ref().map(|b| b.val()),
    )
}

impl Vgg {
    /// The class score map of the fully-convolutional net: `[N, C, H, W] -> [N, classes, h, w]`
    /// with `h = H/2^p - pool + 1` for `p` pools (2x4 for 256x320, VGG-16 and the 7x7 head).
    pub fn dense_scores(&self, x: Tensor<4>) -> Result<Tensor<4>, VggError> {
        self.check_input(&x.dims())?;
        let config = self.config();
        let (c, p, hidden) = (config.feature_channels(), config.pool_size, config.hidden);
        let f = self.features(x); // [N, C, H/2^p, W/2^p]
        let [_, _, h, w] = f.dims();
        if h < p || w < p {
            let scale = 1usize << config.num_pools();
            let (ih, iw) = (h * scale, w * scale);
            return Err(VggError::BadConfig {
                what: "dense evaluation".into(),
                reason: format!(
                    "needs a feature map of at least {p}x{p}, the image gives {h}x{w} (about {ih}x{iw} pixels); use a larger scale Q"
                ),
            });
        }
        let (w1, b1) = as_conv(&self.fc1, c, p);
        let (w2, b2) = as_conv(&self.fc2, hidden, 1);
        let (w3, b3) = as_conv(&self.fc3, hidden, 1);
        let s = relu(conv_valid(f, w1, b1)); // [N, hidden, h-p+1, w-p+1]
        let s = relu(conv_valid(s, w2, b2)); // [N, hidden, ., .]
        Ok(conv_valid(s, w3, b3)) // [N, classes, ., .]
    }

    /// Spatially averaged class scores of the dense net: `[N, classes]`.
    pub fn dense_logits(&self, x: Tensor<4>) -> Result<Tensor<2>, VggError> {
        let s = self.dense_scores(x)?; // [N, K, h, w]
        let [n, k, _, _] = s.dims();
        Ok(s.mean_dim(3).mean_dim(2).reshape([n, k]))
    }

    /// Section 3.2's test-time output: the softmax of the image and of its horizontal flip,
    /// averaged. `[N, C, H, W] -> [N, classes]`.
    pub fn dense_probs(&self, x: Tensor<4>) -> Result<Tensor<2>, VggError> {
        let flipped = x.clone().flip([3]);
        let p = softmax(self.dense_logits(x)?, 1);
        let q = softmax(self.dense_logits(flipped)?, 1);
        Ok((p + q).div_scalar(2.0))
    }
}
