//! The objective the paper trains (Section 3.1): softmax cross-entropy, the "multinomial
//! logistic regression" objective, which validation reports too.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Mean softmax cross-entropy ("multinomial logistic regression") of `logits` `[N, K]`
/// against class indices `[N]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let log_probs = log_softmax(logits, 1); // [N, K]
    let picked = log_probs.gather(1, targets.reshape([n, 1])); // [N, 1]
    picked.mean().neg()
}
