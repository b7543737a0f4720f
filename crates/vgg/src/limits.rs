//! Bounds on what untrusted input (an image, a dataset file, a layer list, a shape) may make the
//! library allocate, checked before allocating: a 200-byte PNG must not ask for 47 GB.
//!
//! The bounds are process-wide, like a thread count: [`set`] them once at start (the `vgg` tool
//! reads them from `VGG_MAX_*` environment variables); [`get`] returns the current ones.

use std::sync::RwLock;

use crate::error::VggError;

/// The bounds. The defaults fit a 16 GB machine and every dataset and network of the paper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Pixels of one decoded image (`width x height`), and of one image after rescaling.
    pub max_image_pixels: u64,
    /// How much an image's shorter side may be enlarged to reach the network's scale (a 1-pixel
    /// strip is not an image to classify).
    pub max_upscale: f64,
    /// Bytes of a dataset held in memory once decompressed (IDX, CIFAR-10).
    pub max_dataset_bytes: u64,
    /// Parameters of a network.
    pub max_params: u64,
    /// Bytes of the largest activation of a forward pass (batch x channels x height x width x 4).
    pub max_tensor_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_image_pixels: 8192 * 8192,
            max_upscale: 8.0,
            max_dataset_bytes: 4 << 30,
            max_params: 1_000_000_000,
            max_tensor_bytes: 4 << 30,
        }
    }
}

static CURRENT: RwLock<Option<Limits>> = RwLock::new(None);

/// The bounds in force.
pub fn get() -> Limits {
    CURRENT
        .read()
        .map(|l| l.unwrap_or_default())
        .unwrap_or_default()
}

/// Replaces the bounds for the whole process.
pub fn set(limits: Limits) {
    if let Ok(mut current) = CURRENT.write() {
        *current = Some(limits);
    }
}

/// `Err(LimitExceeded)` when `value > limit`.
pub fn check(
    what: impl FnOnce() -> String,
    value: u64,
    limit: u64,
    limit_name: &'static str,
) -> Result<(), VggError> {
    if value > limit {
        return Err(VggError::LimitExceeded {
            what: what(),
            value,
            limit,
            limit_name,
        });
    }
    Ok(())
}

/// Checks that an image of `height x width` may be rescaled so its shorter side is `side`:
/// enlarged at most [`Limits::max_upscale`] times and at most [`Limits::max_image_pixels`]
/// afterwards. `Err` holds the reason, for the caller to name the image.
pub fn check_rescale(height: usize, width: usize, side: usize) -> Result<(), String> {
    let limits = get();
    let shorter = height.min(width);
    if shorter == 0 {
        return Err(format!("it is {width}x{height} pixels"));
    }
    let factor = side as f64 / shorter as f64;
    if factor > limits.max_upscale {
        return Err(format!(
            "{width}x{height} is too small: it would be enlarged {factor:.1}x to reach the network's scale {side} (at most {}x: max_upscale)",
            limits.max_upscale
        ));
    }
    let longer = height.max(width) as f64 * side as f64 / shorter as f64;
    let pixels = longer.round() * side as f64;
    if pixels > limits.max_image_pixels as f64 {
        return Err(format!(
            "{width}x{height} rescaled to a shorter side of {side} is {pixels:.0} pixels, over the limit of {} (max_image_pixels)",
            limits.max_image_pixels
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_bounds() {
        assert!(check_rescale(28, 28, 32).is_ok());
        assert!(check_rescale(4, 4, 32).is_ok()); // 8x exactly
        assert!(check_rescale(3, 300, 32).unwrap_err().contains("enlarged"));
        // A 1x60000 strip: refused before anything is allocated.
        assert!(check_rescale(1, 60000, 32).is_err());
        // 100x60000 down to 32 is 32x19200: fine.
        assert!(check_rescale(100, 60000, 32).is_ok());
        assert!(check_rescale(0, 10, 32).is_err());
    }
}
