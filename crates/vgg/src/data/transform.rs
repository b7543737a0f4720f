//! From an 8-bit image to a network input (paper Section 3.1): convert to the network's
//! channels, rescale isotropically so the shorter side is S (fixed, or jittered per image in
//! [Smin, Smax]), take a crop (random in training, central in evaluation), flip horizontally at
//! random, shift colours along the training set's principal components (Krizhevsky et al.'s
//! "PCA lighting"), and subtract the training set's mean value per channel.

use serde::{Deserialize, Serialize};

use super::{Dataset, Image, Rng};
use crate::error::VggError;
use crate::limits::check_rescale;
pub use crate::preset::{Normalize, Resize};

/// Krizhevsky's PCA colour shift: eigen-decomposition of the channel covariance of the
/// training pixels (values in [0, 1]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pca {
    /// Standard deviation along each principal component (square roots of the eigenvalues).
    pub std: Vec<f32>,
    /// Eigenvectors, `vectors[k]` is component k.
    pub vectors: Vec<Vec<f32>>,
}

/// The training set's statistics, measured once and stored with the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub mean: Vec<f32>,
    pub pca: Pca,
}

impl Stats {
    /// Mean and covariance per channel over up to `limit` images (evenly spaced), after
    /// conversion to `channels`.
    /// With `skip_bad`, unreadable images are left out instead of failing.
    #[allow(clippy::needless_range_loop)]
    pub fn measure(
        data: &Dataset,
        channels: usize,
        limit: usize,
        skip_bad: bool,
    ) -> Result<Self, VggError> {
        if !(1..=3).contains(&channels) {
            return Err(VggError::bad_config(
                "in_channels",
                format!(
                    "is {channels}; images are grey or RGB, so a network trained on them reads 1 or 3 channels"
                ),
            ));
        }
        let step = (data.len() / limit.max(1)).max(1);
        let mut sum = vec![0f64; channels];
        let mut cross = vec![vec![0f64; channels]; channels];
        let mut count = 0f64;
        for i in (0..data.len()).step_by(step) {
            let img = match data.image(i) {
                Ok(img) => to_channels(&img, channels, 1.0 / 255.0),
                Err(_) if skip_bad => continue,
                Err(e) => return Err(e),
            };
            let plane = img.height * img.width;
            for p in 0..plane {
                for a in 0..channels {
                    let va = img.data[a * plane + p] as f64;
                    sum[a] += va;
                    for b in 0..channels {
                        cross[a][b] += va * img.data[b * plane + p] as f64;
                    }
                }
            }
            count += plane as f64;
        }
        if count == 0.0 {
            return Err(VggError::Dataset {
                path: data.name.clone().into(),
                reason: "no readable image to measure the mean from".into(),
            });
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let cov: Vec<Vec<f64>> = (0..channels)
            .map(|a| {
                (0..channels)
                    .map(|b| cross[a][b] / count - mean[a] * mean[b])
                    .collect()
            })
            .collect();
        let (values, vectors) = jacobi_eigen(cov);
        Ok(Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            pca: Pca {
                std: values.iter().map(|&v| v.max(0.0).sqrt() as f32).collect(),
                vectors: vectors
                    .iter()
                    .map(|v| v.iter().map(|&x| x as f32).collect())
                    .collect(),
            },
        })
    }
}

/// Eigenvalues and eigenvectors of a small symmetric matrix (cyclic Jacobi rotations), indexed
/// as in the textbook.
#[allow(clippy::needless_range_loop)]
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let values = (0..n).map(|i| a[i][i]).collect();
    let vectors = (0..n).map(|k| (0..n).map(|i| v[i][k]).collect()).collect();
    (values, vectors)
}

/// A float image, planar `[C, H, W]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

/// Converts to `channels` (grey -> RGB by copying, RGB -> grey by ITU-R 601 luma, as PIL's
/// `convert("L")`) and scales the values.
pub fn to_channels(img: &Image, channels: usize, scale: f32) -> Planar {
    let plane = img.height * img.width;
    let src: Vec<f32> = img.pixels.iter().map(|&p| p as f32 * scale).collect();
    let data = match (img.channels, channels) {
        (a, b) if a == b => src,
        (1, n) => (0..n).flat_map(|_| src.iter().copied()).collect(),
        (3, 1) => (0..plane)
            .map(|p| 0.299 * src[p] + 0.587 * src[plane + p] + 0.114 * src[2 * plane + p])
            .collect(),
        (a, n) => (0..n)
            .flat_map(|c| src[(c % a) * plane..(c % a + 1) * plane].to_vec())
            .collect(),
    };
    Planar {
        channels,
        height: img.height,
        width: img.width,
        data,
    }
}

/// Bilinear resize with half-pixel centres (`torch.nn.functional.interpolate(mode="bilinear",
/// align_corners=False)`).
pub fn resize(img: &Planar, height: usize, width: usize) -> Planar {
    if img.height == height && img.width == width {
        return img.clone();
    }
    let (sy, sx) = (
        img.height as f32 / height as f32,
        img.width as f32 / width as f32,
    );
    let coords = |out: usize, scale: f32, len: usize| -> Vec<(usize, usize, f32)> {
        (0..out)
            .map(|o| {
                let x = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let x0 = (x.floor() as usize).min(len - 1);
                let x1 = (x0 + 1).min(len - 1);
                (x0, x1, x - x0 as f32)
            })
            .collect()
    };
    let ys = coords(height, sy, img.height);
    let xs = coords(width, sx, img.width);
    let mut data = Vec::with_capacity(img.channels * height * width);
    for c in 0..img.channels {
        let plane = &img.data[c * img.height * img.width..(c + 1) * img.height * img.width];
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                let top = plane[y0 * img.width + x0] * (1.0 - fx) + plane[y0 * img.width + x1] * fx;
                let bottom =
                    plane[y1 * img.width + x0] * (1.0 - fx) + plane[y1 * img.width + x1] * fx;
                data.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    Planar {
        channels: img.channels,
        height,
        width,
        data,
    }
}

/// torchvision's antialiased bilinear resize (`transforms.Resize(..., antialias=True)` on a
/// float tensor: PyTorch's `_upsample_bilinear2d_aa`, PIL's algorithm in float32): each output
/// pixel is the mean of the input under a triangle filter as wide as the downscaling factor
/// (at least one pixel), so every input pixel counts; width first, then height.
pub fn resize_antialias(img: &Planar, height: usize, width: usize) -> Planar {
    // (first input index, normalised weights) of each output index, as PyTorch computes them.
    let taps = |out: usize, len: usize| -> Vec<(usize, Vec<f32>)> {
        let scale = len as f32 / out as f32;
        let support = scale.max(1.0);
        let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        (0..out)
            .map(|i| {
                let center = scale * (i as f32 + 0.5);
                let first = ((center - support + 0.5) as i64).max(0) as usize;
                let last = ((center + support + 0.5) as i64).clamp(0, len as i64) as usize;
                let mut w: Vec<f32> = (first..last.max(first))
                    .map(|j| (1.0 - ((j as f32 - center + 0.5) * invscale).abs()).max(0.0))
                    .collect();
                let total: f32 = w.iter().sum();
                if total != 0.0 {
                    w.iter_mut().for_each(|v| *v /= total);
                }
                (first, w)
            })
            .collect()
    };
    let (h, w) = (img.height, img.width);
    let mut x = img.clone();
    if width != w {
        let xs = taps(width, w);
        let mut data = Vec::with_capacity(img.channels * h * width);
        for row in x.data.chunks_exact(w) {
            for (first, ws) in &xs {
                data.push(
                    ws.iter()
                        .zip(&row[*first..])
                        .map(|(a, b)| a * b)
                        .sum::<f32>(),
                );
            }
        }
        x = Planar {
            channels: img.channels,
            height: h,
            width,
            data,
        };
    }
    if height != h {
        let ys = taps(height, h);
        let mut data = Vec::with_capacity(img.channels * height * width);
        for plane in x.data.chunks_exact(h * width) {
            for (first, ws) in &ys {
                for col in 0..width {
                    let mut v = 0f32;
                    for (k, wt) in ws.iter().enumerate() {
                        v += wt * plane[(first + k) * width + col];
                    }
                    data.push(v);
                }
            }
        }
        x = Planar {
            channels: img.channels,
            height,
            width,
            data,
        };
    }
    x
}

/// The rescaling and cropping of each [`Resize`] (the preset's choice).
impl Resize {
    /// Rescales so the shorter side is `side`.
    pub fn rescale_shorter(self, img: &Planar, side: usize) -> Planar {
        match self {
            Self::Bilinear => rescale_shorter(img, side),
            Self::Torchvision => {
                let (h, w) = (img.height, img.width);
                let long =
                    |l: usize, s: usize| ((side as f64 * l as f64 / s as f64) as usize).max(1);
                let (nh, nw) = if h <= w {
                    (side, long(w, h))
                } else {
                    (long(h, w), side)
                };
                resize_antialias(img, nh, nw)
            }
        }
    }

    /// Rescales to the shorter side `scale`, then crops the central `side` x `side` square.
    /// `Err` for an image that would be enlarged past the limits.
    pub fn center_crop(self, x: &Planar, scale: usize, side: usize) -> Result<Planar, String> {
        check_rescale(x.height, x.width, scale)?;
        let x = self.rescale_shorter(x, scale);
        let offset = |len: usize| match self {
            Self::Bilinear => (len - side) / 2,
            Self::Torchvision => {
                // round(d / 2), half to even: an odd d rounds to the even neighbour.
                let d = len - side;
                if d % 4 == 1 { d / 2 } else { d.div_ceil(2) }
            }
        };
        Ok(crop(
            &x,
            offset(x.height),
            offset(x.width),
            side,
            side,
            false,
        ))
    }
}

/// Rescales so the shorter side is `side`, keeping the aspect ratio (isotropic rescaling).
pub fn rescale_shorter(img: &Planar, side: usize) -> Planar {
    let (h, w) = (img.height, img.width);
    let (nh, nw) = if h <= w {
        (
            side,
            ((w * side) as f64 / h as f64).round().max(1.0) as usize,
        )
    } else {
        (
            ((h * side) as f64 / w as f64).round().max(1.0) as usize,
            side,
        )
    };
    resize(img, nh, nw)
}

/// The `height x width` window at (`top`, `left`), flipped horizontally if asked.
pub fn crop(
    img: &Planar,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    flip: bool,
) -> Planar {
    let mut data = Vec::with_capacity(img.channels * height * width);
    for c in 0..img.channels {
        for y in 0..height {
            let row = c * img.height * img.width + (top + y) * img.width + left;
            if flip {
                data.extend((0..width).rev().map(|x| img.data[row + x]));
            } else {
                data.extend_from_slice(&img.data[row..row + width]);
            }
        }
    }
    Planar {
        channels: img.channels,
        height,
        width,
        data,
    }
}

/// torchvision's evaluation crop: the shorter side rescaled to `scale` (refused past the
/// [limits](crate::limits)), then the central `crop` x `crop` window.
pub fn center_crop(x: &Planar, scale: usize, side: usize) -> Result<Planar, String> {
    check_rescale(x.height, x.width, scale)?;
    let x = rescale_shorter(x, scale);
    let (top, left) = ((x.height - side) / 2, (x.width - side) / 2);
    Ok(crop(&x, top, left, side, side, false))
}

/// The augmentation and preprocessing of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    pub channels: usize,
    /// Side of the square crop fed to the network (224 in the paper).
    pub crop: usize,
    /// Training scale S: shorter side drawn per image from [scale_min, scale_max].
    pub scale_min: usize,
    pub scale_max: usize,
    /// Test scale Q for the centre crop of evaluation: S for a fixed S, (Smin + Smax) / 2 for a
    /// jittered one (Section 4.1).
    pub eval_scale: usize,
    pub flip: bool,
    /// Standard deviation of the PCA colour-shift coefficients (0.1 in Krizhevsky et al.;
    /// 0 turns it off).
    pub pca_std: f32,
    pub stats: Stats,
    pub normalize: Normalize,
}

impl Transform {
    /// One training sample: random scale, random crop, random flip, colour shift, normalise.
    /// `Err` (the reason) for an image that would be enlarged or grown past the limits.
    pub fn train(&self, img: &Image, rng: &mut Rng) -> Result<Vec<f32>, String> {
        let side = rng.range(self.scale_min, self.scale_max);
        check_rescale(img.height, img.width, side)?;
        let x = to_channels(img, self.channels, self.normalize.scale);
        let x = rescale_shorter(&x, side);
        let top = rng.range(0, x.height - self.crop);
        let left = rng.range(0, x.width - self.crop);
        let flip = self.flip && rng.uniform() < 0.5;
        let mut x = crop(&x, top, left, self.crop, self.crop, flip);
        if self.pca_std > 0.0 {
            let alphas: Vec<f32> = (0..self.channels)
                .map(|_| rng.normal() as f32 * self.pca_std)
                .collect();
            let plane = self.crop * self.crop;
            for c in 0..self.channels {
                // shift_c = sum_k vectors[k][c] * alpha_k * std_k, in the pixel scale.
                let shift: f32 = (0..self.channels)
                    .map(|k| self.stats.pca.vectors[k][c] * alphas[k] * self.stats.pca.std[k])
                    .sum::<f32>();
                x.data[c * plane..(c + 1) * plane]
                    .iter_mut()
                    .for_each(|v| *v += shift);
            }
        }
        Ok(self.finish(x))
    }

    /// One evaluation sample: shorter side to Q, central crop.
    pub fn eval(&self, img: &Image) -> Result<Vec<f32>, String> {
        let x = to_channels(img, self.channels, self.normalize.scale);
        Ok(self.finish(center_crop(&x, self.eval_scale, self.crop)?))
    }

    fn finish(&self, x: Planar) -> Vec<f32> {
        self.normalize.apply(x.data, x.channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(c: usize, h: usize, w: usize) -> Image {
        Image {
            channels: c,
            height: h,
            width: w,
            pixels: (0..c * h * w).map(|i| (i % 251) as u8).collect(),
        }
    }

    #[test]
    fn crop_and_flip_pick_the_right_pixels() {
        let x = to_channels(&img(1, 4, 4), 1, 1.0);
        assert_eq!(crop(&x, 1, 1, 2, 2, false).data, vec![5.0, 6.0, 9.0, 10.0]);
        assert_eq!(crop(&x, 1, 1, 2, 2, true).data, vec![6.0, 5.0, 10.0, 9.0]);
    }

    #[test]
    fn bilinear_doubling_matches_torch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4),
        //   mode="bilinear", align_corners=False)[0, 0, 0] == [0, 0.25, 0.75, 1]
        let x = Planar {
            channels: 1,
            height: 2,
            width: 2,
            data: vec![0.0, 1.0, 2.0, 3.0],
        };
        let y = resize(&x, 4, 4);
        assert_eq!(&y.data[..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&y.data[12..], &[2.0, 2.25, 2.75, 3.0]);
        let r = rescale_shorter(
            &Planar {
                channels: 1,
                height: 28,
                width: 56,
                data: vec![0.0; 28 * 56],
            },
            32,
        );
        assert_eq!((r.height, r.width), (32, 64));
    }

    #[test]
    fn grey_and_rgb_conversions() {
        let g = Image {
            channels: 1,
            height: 1,
            width: 2,
            pixels: vec![10, 20],
        };
        assert_eq!(
            to_channels(&g, 3, 1.0).data,
            vec![10.0, 20.0, 10.0, 20.0, 10.0, 20.0]
        );
        let rgb = Image {
            channels: 3,
            height: 1,
            width: 1,
            pixels: vec![100, 100, 100],
        };
        assert!((to_channels(&rgb, 1, 1.0).data[0] - 100.0).abs() < 1e-4);
    }

    #[test]
    fn pca_of_a_known_covariance() {
        let (values, vectors) = jacobi_eigen(vec![vec![2.0, 1.0], vec![1.0, 2.0]]);
        let mut pairs: Vec<(f64, Vec<f64>)> = values.into_iter().zip(vectors).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!((pairs[0].0 - 1.0).abs() < 1e-12 && (pairs[1].0 - 3.0).abs() < 1e-12);
        assert!((pairs[1].1[0].abs() - 0.5f64.sqrt()).abs() < 1e-9);
    }
}
