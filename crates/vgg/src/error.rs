//! The library's errors: each message says what is wrong and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong when building, running or loading a VGG network.
#[derive(Debug, thiserror::Error)]
pub enum VggError {
    /// An architecture name that is not one of the paper's or torchvision's.
    #[error("unknown architecture `{name}`; known: {}; or give your own list with --layers (e.g. 64,M,128,M)", known.join(", "))]
    UnknownArch { name: String, known: Vec<String> },

    /// A user's layer list with a token that is not a width, `M`, `L` or `C1-n`.
    #[error(
        "bad layer list: token {position} `{token}`: {reason} (the form is e.g. 64,64,M,128,C1-256,L,M)"
    )]
    BadLayerList {
        token: String,
        position: usize,
        reason: String,
    },

    /// A number of the configuration out of range.
    #[error("bad configuration: {what} {reason}")]
    BadConfig { what: String, reason: String },

    /// An input whose spatial size cannot pass through every 2x2 max-pool.
    #[error(
        "input {height}x{width} is too small: this network has {pools} max-pools and needs at least {min}x{min} pixels; resize or pad the images (e.g. 28 -> 32 for MNIST)"
    )]
    InputTooSmall {
        height: usize,
        width: usize,
        pools: usize,
        min: usize,
    },

    /// An input with a channel count other than the network's.
    #[error(
        "input has {got} channel(s) but the network expects {expected}; convert the images or build the network with --in-channels {got}"
    )]
    ChannelMismatch { expected: usize, got: usize },

    /// An input that is not a 4-D `[N, C, H, W]` batch.
    #[error("input must be [N, C, H, W], got shape {shape:?}")]
    BadInputShape { shape: Vec<usize> },

    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A weight file that is not what its extension says, or is truncated or corrupt.
    #[error("{}: not a readable {format} weight file: {reason}", path.display())]
    CorruptWeights {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },

    /// A weight file whose extension is none of the supported ones.
    #[error("{}: unknown weight format; use .pth/.pt (PyTorch), .safetensors or .bpk (burn)", path.display())]
    UnknownFormat { path: PathBuf },

    /// A dataset that cannot be used as it is.
    #[error("dataset {}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },

    /// An image file that cannot be decoded.
    #[error("{}: unreadable image: {reason} (pass --skip-bad to skip and count such files)", path.display())]
    BadImage { path: PathBuf, reason: String },

    /// A label not below the network's class count.
    #[error(
        "{dataset}: image {index} has label {label} but the network has {num_classes} classes; set --num-classes"
    )]
    LabelOutOfRange {
        dataset: String,
        index: usize,
        label: usize,
        num_classes: usize,
    },

    /// Training diverged.
    #[error(
        "the loss became {value} at epoch {epoch}, step {step}; training stopped and the last good checkpoint was kept (try a lower --lr)"
    )]
    NonFiniteLoss {
        value: f32,
        epoch: usize,
        step: usize,
    },

    /// A run folder that exists already.
    #[error("{} exists; pass --force to overwrite it or --resume {} to continue it", path.display(), path.display())]
    RunExists { path: PathBuf },

    /// A state dict that does not fit the network: every difference is listed.
    #[error("{}: the weights do not fit {arch}:{}", path.display(), list_mismatch(missing, unexpected, misshaped))]
    WeightMismatch {
        path: PathBuf,
        arch: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        /// `(key, expected shape, shape in the file)`.
        misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
}

fn list_mismatch(
    missing: &[String],
    unexpected: &[String],
    misshaped: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    const SHOWN: usize = 12;
    let mut out = String::new();
    let mut section = |title: &str, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        out.push_str(&format!("\n  {} {title}:", items.len()));
        for item in items.iter().take(SHOWN) {
            out.push_str(&format!("\n    {item}"));
        }
        if items.len() > SHOWN {
            out.push_str(&format!("\n    ... and {} more", items.len() - SHOWN));
        }
    };
    section("missing key(s)", missing.to_vec());
    section("unexpected key(s)", unexpected.to_vec());
    section(
        "key(s) with another shape",
        misshaped
            .iter()
            .map(|(k, want, got)| format!("{k}: expected {want:?}, file has {got:?}"))
            .collect(),
    );
    out.push_str("\n  (is this the right architecture? check --arch, --num-classes, --in-channels and --layers)");
    out
}

impl VggError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
