//! The library's errors: each message says what is wrong, in the library's words. A program
//! built on it (the `vgg` tool) adds which of its own flags would fix it.

use std::path::PathBuf;

/// Everything that can go wrong when building, running, loading or training a VGG network.
#[derive(Debug, thiserror::Error)]
pub enum VggError {
    /// An architecture name that is not one of the paper's or torchvision's.
    #[error("unknown architecture `{name}`; known: {}", known.join(", "))]
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

    /// A setting out of range; `what` is the setting's name in the library (`lr`, `num_classes`).
    #[error("bad setting: {what} {reason}")]
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
    #[error("input has {got} channel(s) but the network expects {expected}")]
    ChannelMismatch { expected: usize, got: usize },

    /// An input that is not a 4-D `[N, C, H, W]` batch.
    #[error("input must be [N, C, H, W] with N >= 1, got shape {shape:?}")]
    BadInputShape { shape: Vec<usize> },

    /// Something would need more memory than a [`crate::limits::Limits`] bound allows.
    #[error("{what}: {value} is over the limit of {limit} ({limit_name})")]
    LimitExceeded {
        what: String,
        value: u64,
        limit: u64,
        /// The field of [`crate::limits::Limits`].
        limit_name: &'static str,
    },

    /// Published weights that could not be fetched, or did not match their hash.
    #[error("{url}: {reason}")]
    Download { url: String, reason: String },

    /// A file that could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A weight file that is not what its extension says, or is truncated or corrupt.
    #[error("{}: not a readable {format} weight file: {reason}", path.display())]
    CorruptWeights {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },

    /// A weight file holding NaN or infinite values: training diverged before it was saved.
    #[error("{}: `{key}` holds {count} NaN or infinite value(s); these weights cannot give true results", path.display())]
    NonFiniteWeights {
        path: PathBuf,
        key: String,
        count: usize,
    },

    /// A weight file whose extension is none of the supported ones.
    #[error("{}: unknown weight format; use .pth/.pt (PyTorch), .safetensors, .caffemodel (Caffe), .onnx, .h5/.keras (Keras) or .bpk (burn)", path.display())]
    UnknownFormat { path: PathBuf },

    /// A dataset that cannot be used as it is.
    #[error("dataset {}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },

    /// An image file that cannot be decoded, or cannot be used at the network's size.
    #[error("{}: unusable image: {reason}", path.display())]
    BadImage { path: PathBuf, reason: String },

    /// A label not below the network's class count.
    #[error("{dataset}: image {index} has label {label} but the network has {num_classes} classes")]
    LabelOutOfRange {
        dataset: String,
        index: usize,
        label: usize,
        num_classes: usize,
    },

    /// Training diverged: the loss is NaN or infinite. No accuracy is reported for such a run.
    #[error(
        "the loss became {value} at epoch {epoch}, step {step}; training stopped. {}",
        match kept {
            Some(e) => format!("The run folder keeps the checkpoint of epoch {e}, the last good one; lower the learning rate and start again"),
            None => "No checkpoint was written (it diverged in the first epoch); lower the learning rate and start again".to_string(),
        }
    )]
    NonFiniteLoss {
        value: f32,
        epoch: usize,
        step: usize,
        /// The epoch whose checkpoint the run folder still holds, if any.
        kept: Option<usize>,
    },

    /// The network gave NaN or infinite scores: no metric can be computed from them.
    #[error(
        "the network's scores are NaN or infinite ({what}); the weights are broken (diverged training?)"
    )]
    NonFiniteOutput { what: String },

    /// A run folder that exists already.
    #[error("{} exists", path.display())]
    RunExists { path: PathBuf },

    /// A folder that was to be replaced but was not made by this library: nothing in it is touched.
    #[error(
        "{} exists and is not a vgg run folder (no readable config.json of a run); nothing in it was touched",
        path.display()
    )]
    NotARun { path: PathBuf },

    /// A run folder's own file (`config.json`, `state.json`, a checkpoint) that is unreadable,
    /// inconsistent or names something outside the folder.
    #[error("{}: {reason}", path.display())]
    RunFile { path: PathBuf, reason: String },

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
    out
}

impl VggError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn bad_config(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadConfig {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A run file's setting that validation refused, blamed on the file, except a limit this
    /// machine sets (`VGG_MAX_*`): the file is fine, the limit is what to raise.
    pub(crate) fn bad_run_setting(path: impl Into<PathBuf>, err: Self) -> Self {
        match err {
            limit @ Self::LimitExceeded { .. } => limit,
            other => Self::run_file(path, format!("holds a bad setting: {other}")),
        }
    }

    pub(crate) fn run_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::RunFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
