//! The architecture as data: one table of layer tokens (paper Table 1).
//!
//! Every configuration of the paper, torchvision's `_bn` variants and a user's own list go
//! through [`Layer`] tokens. The model ([`crate::Vgg`]), the parameter and MAC counts, the
//! summary, the checkpoint keys and every layer name ([`names`]) are derived from the token
//! list by [`VggConfig::plan`], so they cannot disagree.

mod infer;
pub mod names;

use serde::{Deserialize, Serialize};

use crate::error::VggError;

/// One entry of a configuration column of the paper's Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layer {
    /// 3x3 convolution, stride 1, padding 1, with `n` output channels, then ReLU ("conv3-n").
    Conv3(usize),
    /// 1x1 convolution, stride 1, padding 0 (configuration C's "conv1-n"), then ReLU.
    Conv1(usize),
    /// Krizhevsky's local response normalisation (configuration A-LRN), Section 2.1.
    Lrn,
    /// 2x2 max-pool, stride 2.
    Pool,
}

use Layer::{Conv1 as C1, Conv3 as C3, Lrn as L, Pool as M};

/// The paper's Table 1, one column per configuration.
const TABLE1: [(&str, &[Layer]); 6] = [
    (
        "A",
        &[
            C3(64),
            M,
            C3(128),
            M,
            C3(256),
            C3(256),
            M,
            C3(512),
            C3(512),
            M,
            C3(512),
            C3(512),
            M,
        ],
    ),
    (
        "A-LRN",
        &[
            C3(64),
            L,
            M,
            C3(128),
            M,
            C3(256),
            C3(256),
            M,
            C3(512),
            C3(512),
            M,
            C3(512),
            C3(512),
            M,
        ],
    ),
    (
        "B",
        &[
            C3(64),
            C3(64),
            M,
            C3(128),
            C3(128),
            M,
            C3(256),
            C3(256),
            M,
            C3(512),
            C3(512),
            M,
            C3(512),
            C3(512),
            M,
        ],
    ),
    (
        "C",
        &[
            C3(64),
            C3(64),
            M,
            C3(128),
            C3(128),
            M,
            C3(256),
            C3(256),
            C1(256),
            M,
            C3(512),
            C3(512),
            C1(512),
            M,
            C3(512),
            C3(512),
            C1(512),
            M,
        ],
    ),
    (
        "D",
        &[
            C3(64),
            C3(64),
            M,
            C3(128),
            C3(128),
            M,
            C3(256),
            C3(256),
            C3(256),
            M,
            C3(512),
            C3(512),
            C3(512),
            M,
            C3(512),
            C3(512),
            C3(512),
            M,
        ],
    ),
    (
        "E",
        &[
            C3(64),
            C3(64),
            M,
            C3(128),
            C3(128),
            M,
            C3(256),
            C3(256),
            C3(256),
            C3(256),
            M,
            C3(512),
            C3(512),
            C3(512),
            C3(512),
            M,
            C3(512),
            C3(512),
            C3(512),
            C3(512),
            M,
        ],
    ),
];

/// Practical names (torchvision's, plus `vgg11_lrn` and `vgg16_c`) for the paper's letters.
const NAMES: [(&str, &str); 6] = [
    ("vgg11", "A"),
    ("vgg11_lrn", "A-LRN"),
    ("vgg13", "B"),
    ("vgg16_c", "C"),
    ("vgg16", "D"),
    ("vgg19", "E"),
];

/// Every architecture name [`VggConfig::named`] accepts, for help texts and error messages.
pub fn known_names() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in NAMES {
        names.push(name.to_string());
        names.push(format!("{name}_bn"));
    }
    names.extend(TABLE1.iter().map(|(letter, _)| letter.to_string()));
    names
}

/// The layer list of one of the paper's configurations, by letter (`"A"` ... `"E"`, `"A-LRN"`).
pub fn table1(letter: &str) -> Option<&'static [Layer]> {
    TABLE1
        .iter()
        .find(|(l, _)| l.eq_ignore_ascii_case(letter))
        .map(|(_, layers)| *layers)
}

/// Parses a layer list in the tutorial form: `64,64,M,128,C1-256,L,...`.
///
/// Tokens are separated by commas or white space; a number is a 3x3 conv of that width, `M` a
/// max-pool, `C1-n` a 1x1 conv of width `n`, `L` (or `LRN`) an LRN layer.
pub fn parse_layers(text: &str) -> Result<Vec<Layer>, VggError> {
    // A token is echoed into the error cut to 40 characters (not a 50 MB line).
    let bad = |token: &str, position: usize, reason: &str| VggError::BadLayerList {
        token: match token.char_indices().nth(40) {
            Some((end, _)) => format!("{}...", &token[..end]),
            None => token.to_string(),
        },
        position,
        reason: reason.to_string(),
    };
    let tokens = text
        .split(|c: char| {
            c == ',' || c.is_whitespace() || c == '[' || c == ']' || c == '"' || c == '\''
        })
        .filter(|t| !t.is_empty());
    let mut layers = Vec::new();
    for (i, token) in tokens.enumerate() {
        let position = i + 1;
        if position > MAX_LAYERS {
            return Err(bad(
                token,
                position,
                &format!("more than {MAX_LAYERS} layers; a VGG has a few dozen"),
            ));
        }
        let width = |digits: &str| match digits.parse::<usize>() {
            Ok(0) => Err(bad(
                token,
                position,
                "a convolution needs at least one channel",
            )),
            Ok(n) => Ok(n),
            Err(_) => Err(bad(token, position, "expected a width (64), M, L or C1-n")),
        };
        if token.len() > 24 {
            return Err(bad(token, position, "expected a width (64), M, L or C1-n"));
        }
        let layer = match token.to_ascii_uppercase().as_str() {
            "M" | "P" | "POOL" => Layer::Pool,
            "L" | "LRN" => Layer::Lrn,
            t if t.starts_with("C1-") => Layer::Conv1(width(&token[3..])?),
            t if t.starts_with("C3-") => Layer::Conv3(width(&token[3..])?),
            _ => Layer::Conv3(width(token)?),
        };
        layers.push(layer);
    }
    if !layers
        .iter()
        .any(|l| matches!(l, Layer::Conv3(_) | Layer::Conv1(_)))
    {
        return Err(bad(text, 0, "the list has no convolution"));
    }
    if matches!(layers.first(), Some(Layer::Lrn)) {
        return Err(bad("L", 1, "LRN must follow a convolution"));
    }
    Ok(layers)
}

/// The most layers a list may name: far beyond any VGG (E has 24), short of what exhausts
/// memory.
pub const MAX_LAYERS: usize = 4096;

/// Writes a layer list back in the tutorial form (the inverse of [`parse_layers`]).
pub fn format_layers(layers: &[Layer]) -> String {
    let tokens: Vec<String> = layers
        .iter()
        .map(|l| match l {
            Layer::Conv3(n) => n.to_string(),
            Layer::Conv1(n) => format!("C1-{n}"),
            Layer::Lrn => "L".to_string(),
            Layer::Pool => "M".to_string(),
        })
        .collect();
    tokens.join(",")
}

/// The numbers of a network a caller may choose apart from its layer table; `None` keeps the
/// table's (or a recipe's) choice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub num_classes: Option<usize>,
    pub in_channels: Option<usize>,
    pub hidden: Option<usize>,
    pub dropout: Option<f64>,
    /// Every conv width multiplied by this.
    pub width: Option<f64>,
    pub pool_size: Option<usize>,
}

/// Everything needed to build a VGG network. Serialised next to checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggConfig {
    /// A display name (`vgg16_bn`, `D`, or `custom`).
    pub name: String,
    /// The layer tokens of the convolutional part (`features` in torchvision).
    pub layers: Vec<Layer>,
    /// BatchNorm after every convolution (torchvision's `vgg*_bn`).
    pub batch_norm: bool,
    /// Input channels (3 for RGB, 1 for grey).
    pub in_channels: usize,
    /// Output classes.
    pub num_classes: usize,
    /// Width of the two hidden FC layers (4096 in the paper).
    pub hidden: usize,
    /// Dropout probability after FC1 and FC2 (0.5 in the paper), in training only.
    pub dropout: f64,
    /// Side of the adaptive average pool before FC1 (torchvision: 7). 1 gives the compact
    /// head for 32x32 inputs: the 512x1x1 map feeds FC1 directly.
    pub pool_size: usize,
}

impl VggConfig {
    /// A configuration from a list of layers, with the paper's head (4096, dropout 0.5,
    /// 1000 classes, RGB input) and torchvision's 7x7 adaptive pool.
    pub fn from_layers(name: &str, layers: Vec<Layer>, batch_norm: bool) -> Self {
        Self {
            name: name.to_string(),
            layers,
            batch_norm,
            in_channels: 3,
            num_classes: 1000,
            hidden: 4096,
            dropout: 0.5,
            pool_size: 7,
        }
    }

    /// A named architecture: `vgg11`, `vgg11_lrn`, `vgg13`, `vgg16_c`, `vgg16`, `vgg19`, each
    /// also with `_bn`, or a letter of Table 1 (`A`, `A-LRN`, `B`, `C`, `D`, `E`).
    pub fn named(name: &str) -> Result<Self, VggError> {
        let lower = name.trim().to_ascii_lowercase();
        let (base, batch_norm) = match lower.strip_suffix("_bn") {
            Some(base) => (base, true),
            None => (lower.as_str(), false),
        };
        let letter = NAMES
            .iter()
            .find(|(n, _)| *n == base)
            .map(|(_, letter)| *letter)
            .or_else(|| {
                TABLE1
                    .iter()
                    .find(|(l, _)| l.eq_ignore_ascii_case(base))
                    .map(|(l, _)| *l)
            });
        match letter.and_then(table1) {
            Some(layers) => Ok(Self::from_layers(&lower, layers.to_vec(), batch_norm)),
            None => Err(VggError::UnknownArch {
                name: name.to_string(),
                known: known_names(),
            }),
        }
    }

    /// The configuration with the caller's choices applied where they made one.
    pub fn with_overrides(mut self, o: &Overrides) -> Result<Self, VggError> {
        if let Some(w) = o.width {
            if !(w.is_finite() && w > 0.0) {
                return Err(VggError::BadConfig {
                    what: "width".into(),
                    reason: format!("is {w}; it must be a positive number"),
                });
            }
            self = self.with_width(w);
        }
        if let Some(n) = o.num_classes {
            self.num_classes = n;
        }
        if let Some(n) = o.in_channels {
            self.in_channels = n;
        }
        if let Some(n) = o.hidden {
            self.hidden = n;
        }
        if let Some(p) = o.dropout {
            self.dropout = p;
        }
        if let Some(n) = o.pool_size {
            self.pool_size = n;
        }
        Ok(self)
    }

    /// Builder-style setters, so that callers can write `VggConfig::named("vgg16")?.with_num_classes(500)`.
    pub fn with_num_classes(mut self, n: usize) -> Self {
        self.num_classes = n;
        self
    }
    pub fn with_in_channels(mut self, n: usize) -> Self {
        self.in_channels = n;
        self
    }
    pub fn with_hidden(mut self, n: usize) -> Self {
        self.hidden = n;
        self
    }
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }
    /// Scales every conv width by `factor` (at least one channel each).
    pub fn with_width(mut self, factor: f64) -> Self {
        let scale = |n: usize| ((n as f64 * factor).round() as usize).max(1);
        for layer in &mut self.layers {
            match layer {
                Layer::Conv3(n) | Layer::Conv1(n) => *n = scale(*n),
                Layer::Lrn | Layer::Pool => {}
            }
        }
        self
    }
    pub fn with_batch_norm(mut self, bn: bool) -> Self {
        self.batch_norm = bn;
        self
    }

    /// Checks the numbers a user can get wrong, before anything is allocated.
    pub fn validate(&self) -> Result<(), VggError> {
        let bad = |what: &str, why: &str| {
            Err(VggError::BadConfig {
                what: what.to_string(),
                reason: why.to_string(),
            })
        };
        if self.in_channels == 0 {
            return bad("in_channels", "must be at least 1");
        }
        if self.num_classes == 0 {
            return bad("num_classes", "must be at least 1");
        }
        if self.hidden == 0 {
            return bad("hidden", "must be at least 1");
        }
        if self.pool_size == 0 {
            return bad("pool_size", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", "must be in [0, 1)");
        }
        if self.layers.is_empty() || matches!(self.layers.first(), Some(Layer::Lrn)) {
            return bad("layers", "must start with a convolution or a pool");
        }
        if self.num_pools() >= usize::BITS as usize - 1 {
            return bad(
                "layers",
                "has more max-pools than any image can pass through",
            );
        }
        let Some(params) = self.checked_params() else {
            return bad("width", "gives more parameters than a 64-bit count holds");
        };
        crate::limits::check(
            || format!("{}: parameters", self.name),
            params,
            crate::limits::get().max_params,
            "max_params",
        )
    }

    /// The parameter count computed without overflow (`None` past `u64`), so that a
    /// configuration can be checked before [`VggConfig::num_params`] or any allocation.
    fn checked_params(&self) -> Option<u64> {
        let mut total: u64 = 0;
        let mut channels = self.in_channels as u64;
        let add = |total: u64, terms: &[u64]| -> Option<u64> {
            terms
                .iter()
                .try_fold(1u64, |acc, &t| acc.checked_mul(t))?
                .checked_add(total)
        };
        for layer in &self.layers {
            let (k, out) = match *layer {
                Layer::Conv3(n) => (3u64, n as u64),
                Layer::Conv1(n) => (1u64, n as u64),
                Layer::Lrn | Layer::Pool => continue,
            };
            total = add(total, &[out, channels, k, k])?.checked_add(out)?;
            if self.batch_norm {
                total = total.checked_add(out.checked_mul(2)?)?;
            }
            channels = out;
        }
        let p = self.pool_size as u64;
        let fc1 = channels.checked_mul(p)?.checked_mul(p)?;
        let (hidden, classes) = (self.hidden as u64, self.num_classes as u64);
        total = add(total, &[fc1, hidden])?.checked_add(hidden)?;
        total = add(total, &[hidden, hidden])?.checked_add(hidden)?;
        add(total, &[hidden, classes])?.checked_add(classes)
    }

    /// How many entries of torchvision's `features` a layer makes: conv, (BN,) ReLU; or one.
    pub fn stages_of(&self, layer: &Layer) -> usize {
        match layer {
            Layer::Conv3(_) | Layer::Conv1(_) => 2 + self.batch_norm as usize,
            Layer::Lrn | Layer::Pool => 1,
        }
    }

    /// Number of 2x2 max-pools, which fixes the smallest input: `2^pools` pixels a side.
    pub fn num_pools(&self) -> usize {
        self.layers.iter().filter(|l| **l == Layer::Pool).count()
    }

    /// Smallest input side that survives every pool with at least one pixel.
    pub fn min_input(&self) -> usize {
        1 << self.num_pools()
    }

    /// Channels of the last convolution: the width of the feature map fed to the head.
    pub fn feature_channels(&self) -> usize {
        self.layers
            .iter()
            .rev()
            .find_map(|l| match l {
                Layer::Conv3(n) | Layer::Conv1(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(self.in_channels)
    }

    /// Inputs to FC1: `channels x pool x pool`.
    pub fn fc1_inputs(&self) -> usize {
        self.feature_channels() * self.pool_size * self.pool_size
    }

    /// Checks that a batch can pass through the network: 4-D, the right channels, at least
    /// `2^pools` pixels a side, and no activation larger than [`crate::limits::Limits::max_tensor_bytes`].
    pub fn check_input(&self, dims: &[usize]) -> Result<(), VggError> {
        let [_, c, h, w] = dims else {
            return Err(VggError::BadInputShape {
                shape: dims.to_vec(),
            });
        };
        if *c != self.in_channels {
            return Err(VggError::ChannelMismatch {
                expected: self.in_channels,
                got: *c,
            });
        }
        if dims[0] == 0 {
            return Err(VggError::BadInputShape {
                shape: dims.to_vec(),
            });
        }
        let min = self.min_input();
        if *h < min || *w < min {
            return Err(VggError::InputTooSmall {
                height: *h,
                width: *w,
                pools: self.num_pools(),
                min,
            });
        }
        crate::limits::check(
            || format!("a batch of shape {dims:?}: bytes of the largest activation"),
            self.largest_activation(dims),
            crate::limits::get().max_tensor_bytes,
            "max_tensor_bytes",
        )
    }

    /// Bytes of the largest tensor `features` makes for a batch of `[N, C, H, W]` (saturating).
    fn largest_activation(&self, dims: &[usize]) -> u64 {
        let (n, mut c, mut h, mut w) = (
            dims[0] as u128,
            dims[1] as u128,
            dims[2] as u128,
            dims[3] as u128,
        );
        let mut largest = n * c * h * w;
        for layer in &self.layers {
            match *layer {
                Layer::Conv3(out) | Layer::Conv1(out) => c = out as u128,
                Layer::Pool => (h, w) = (h / 2, w / 2),
                Layer::Lrn => {}
            }
            largest = largest.max(n.saturating_mul(c).saturating_mul(h).saturating_mul(w));
        }
        u64::try_from(largest.saturating_mul(4)).unwrap_or(u64::MAX)
    }

    /// Derives the torchvision-ordered plan: one [`Stage`] per layer of `features` with its
    /// index, then the three FC layers of `classifier`.
    pub fn plan(&self) -> Vec<Stage> {
        let mut stages = Vec::new();
        let mut index = 0;
        let mut channels = self.in_channels;
        for layer in &self.layers {
            match *layer {
                Layer::Conv3(out) | Layer::Conv1(out) => {
                    let kernel = if matches!(layer, Layer::Conv3(_)) {
                        3
                    } else {
                        1
                    };
                    stages.push(Stage {
                        kind: StageKind::Conv {
                            kernel,
                            in_channels: channels,
                            out_channels: out,
                        },
                        index,
                    });
                    index += 1;
                    if self.batch_norm {
                        stages.push(Stage {
                            kind: StageKind::BatchNorm { channels: out },
                            index,
                        });
                        index += 1;
                    }
                    stages.push(Stage {
                        kind: StageKind::Relu,
                        index,
                    });
                    index += 1;
                    channels = out;
                }
                Layer::Lrn => {
                    stages.push(Stage {
                        kind: StageKind::Lrn,
                        index,
                    });
                    index += 1;
                }
                Layer::Pool => {
                    stages.push(Stage {
                        kind: StageKind::Pool,
                        index,
                    });
                    index += 1;
                }
            }
        }
        stages
    }

    /// The three FC layers as `(torchvision index, in, out)`: `classifier.0`, `.3`, `.6`.
    pub fn fc_layers(&self) -> [(usize, usize, usize); 3] {
        [
            (0, self.fc1_inputs(), self.hidden),
            (3, self.hidden, self.hidden),
            (6, self.hidden, self.num_classes),
        ]
    }

    /// Every key of the torchvision state dict with its shape, in torchvision's order.
    /// `num_batches_tracked` is a scalar (shape `[]`).
    pub fn state_keys(&self) -> Vec<(String, Vec<usize>)> {
        let mut keys = Vec::new();
        for stage in self.plan() {
            let p = format!("features.{}", stage.index);
            match stage.kind {
                StageKind::Conv {
                    kernel,
                    in_channels,
                    out_channels,
                } => {
                    keys.push((
                        format!("{p}.weight"),
                        vec![out_channels, in_channels, kernel, kernel],
                    ));
                    keys.push((format!("{p}.bias"), vec![out_channels]));
                }
                StageKind::BatchNorm { channels } => {
                    for name in ["weight", "bias", "running_mean", "running_var"] {
                        keys.push((format!("{p}.{name}"), vec![channels]));
                    }
                    keys.push((format!("{p}.num_batches_tracked"), vec![]));
                }
                _ => {}
            }
        }
        for (i, inputs, outputs) in self.fc_layers() {
            keys.push((format!("classifier.{i}.weight"), vec![outputs, inputs]));
            keys.push((format!("classifier.{i}.bias"), vec![outputs]));
        }
        keys
    }

    /// Trainable parameters (torchvision's `sum(p.numel() for p in model.parameters())`;
    /// BatchNorm running statistics are buffers, not parameters).
    pub fn num_params(&self) -> usize {
        self.state_keys()
            .iter()
            .filter(|(k, _)| {
                !k.ends_with("running_mean")
                    && !k.ends_with("running_var")
                    && !k.ends_with("num_batches_tracked")
            })
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// One layer of torchvision's `features` Sequential, with the index that names its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub kind: StageKind,
    /// Position in torchvision's `features` (`features.{index}.weight`).
    pub index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Conv {
        kernel: usize,
        in_channels: usize,
        out_channels: usize,
    },
    BatchNorm {
        channels: usize,
    },
    Relu,
    Lrn,
    Pool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's Table 2 (133 ... 144 million), exactly as torchvision counts them.
    #[test]
    fn parameter_counts_match_torchvision() {
        let expected = [
            ("vgg11", 132_863_336),
            ("vgg13", 133_047_848),
            ("vgg16_c", 133_638_952),
            ("vgg16", 138_357_544),
            ("vgg19", 143_667_240),
            ("vgg11_bn", 132_868_840),
            ("vgg13_bn", 133_053_736),
            ("vgg16_bn", 138_365_992),
            ("vgg19_bn", 143_678_248),
            ("A", 132_863_336),
            ("E", 143_667_240),
            // LRN has no parameters: A-LRN counts as A.
            ("vgg11_lrn", 132_863_336),
        ];
        for (name, count) in expected {
            assert_eq!(
                VggConfig::named(name).unwrap().num_params(),
                count,
                "{name}"
            );
        }
    }

    #[test]
    fn torchvision_indices_follow_the_table() {
        // A: conv(0) relu(1) pool(2) conv(3) ...; A-LRN: conv(0) relu(1) lrn(2) pool(3) conv(4).
        let keys: Vec<String> = VggConfig::named("vgg11_lrn")
            .unwrap()
            .state_keys()
            .into_iter()
            .map(|k| k.0)
            .collect();
        assert_eq!(
            &keys[..4],
            [
                "features.0.weight",
                "features.0.bias",
                "features.4.weight",
                "features.4.bias"
            ]
        );
        let bn = VggConfig::named("vgg11_bn").unwrap().state_keys();
        assert_eq!(bn[2].0, "features.1.weight");
        assert_eq!(
            bn[6],
            ("features.1.num_batches_tracked".to_string(), vec![])
        );
        assert_eq!(bn[7].0, "features.4.weight");
    }

    #[test]
    fn layer_lists_round_trip_and_reject_garbage() {
        let text = "64,64,M,128,C1-256,L,M";
        let layers = parse_layers(text).unwrap();
        assert_eq!(layers, vec![C3(64), C3(64), M, C3(128), C1(256), L, M]);
        assert_eq!(format_layers(&layers), text);
        assert_eq!(
            parse_layers("[64, 'M', 128]").unwrap(),
            vec![C3(64), M, C3(128)]
        );
        assert!(matches!(
            parse_layers("64,X,M"),
            Err(VggError::BadLayerList { position: 2, .. })
        ));
        assert!(parse_layers("M,M").is_err());
        assert!(parse_layers("0,M").is_err());
        assert!(parse_layers("L,64").is_err());
    }

    #[test]
    fn names_and_letters() {
        assert_eq!(
            VggConfig::named("D").unwrap().layers,
            VggConfig::named("vgg16").unwrap().layers
        );
        assert!(VggConfig::named("VGG16_BN").unwrap().batch_norm);
        assert_eq!(VggConfig::named("a-lrn").unwrap().layers[1], L);
        assert!(matches!(
            VggConfig::named("vgg17"),
            Err(VggError::UnknownArch { .. })
        ));
        assert_eq!(VggConfig::named("vgg16").unwrap().min_input(), 32);
    }
}
