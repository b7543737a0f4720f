//! Subcommands, one file each, and the flags they share.

mod arch_args;
mod bench;
mod convert;
mod eval;
mod features;
pub mod hints;
mod plot;
mod predict;
mod ranks;
mod summary;
mod train;
mod weights;

use std::io::Write;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

/// VGG very deep convolutional networks (Simonyan & Zisserman, ICLR 2015) on burn.
#[derive(Parser, Debug)]
#[command(
    name = "vgg",
    version,
    about,
    long_about = None,
    after_help = LIMITS_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const LIMITS_HELP: &str = "Limits on what an input may make vgg allocate (environment variables):
  VGG_MAX_IMAGE_PIXELS   pixels of a decoded or rescaled image      (default 67108864, 8192x8192)
  VGG_MAX_UPSCALE        enlargement of an image's shorter side     (default 8)
  VGG_MAX_DATASET_BYTES  bytes of an in-memory dataset (IDX, CIFAR) (default 4294967296)
  VGG_MAX_PARAMS         parameters of a network                    (default 1000000000)
  VGG_MAX_TENSOR_BYTES   bytes of the largest activation            (default 4294967296)";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Per-layer table of a network: output shapes, parameters, multiply-adds.
    Summary(summary::Args),
    /// Train a network with the paper's recipe (default: on the embedded Fashion-MNIST demo).
    Train(Box<train::Args>),
    /// Top-1/top-5 error on a dataset: center, dense, multicrop, multi-scale, ensembles.
    Eval(Box<eval::Args>),
    /// Classify images: the top-k classes with probabilities.
    Predict(Box<predict::Args>),
    /// Activations at named layers (conv1_1 ... fc7) to .safetensors or .npy.
    Features(Box<features::Args>),
    /// Time inference and training steps: median ms, images/s, GFLOP/s, % of FP32 peak, memory.
    Bench(Box<bench::Args>),
    /// Convert weights: reads every format -w reads (.pth, .safetensors, .bpk, .caffemodel,
    /// Keras' .h5/.weights.h5/.keras, .onnx, runs); writes .safetensors (with its preset), .bpk
    /// or .onnx.
    Convert(convert::Args),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Summary(_) => "summary",
            Self::Train(_) => "train",
            Self::Eval(_) => "eval",
            Self::Predict(_) => "predict",
            Self::Features(_) => "features",
            Self::Bench(_) => "bench",
            Self::Convert(_) => "convert",
        }
    }
}

/// The parsed flags, and clap's matches (which say which flags were typed, for `--resume`).
pub fn parse() -> (Cli, ArgMatches) {
    let matches = Cli::command().get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli, matches),
        Err(e) => e.exit(),
    }
}

pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    vgg::limits::set(limits_from_env()?);
    check_rayon_env()?;
    // The kernel policy's variables, read once here: the library reads no environment.
    vgg::kernels::policy::set(vgg::kernels::Policy::from_env()?)?;
    let sub = matches
        .subcommand()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    match cli.command {
        Command::Summary(args) => summary::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Bench(args) => bench::run(*args),
        Command::Train(args) => train::run(*args, &sub),
        Command::Eval(args) => eval::run(*args),
        Command::Predict(args) => predict::run(*args),
        Command::Features(args) => features::run(*args),
    }
}

/// rayon starts `RAYON_NUM_THREADS` compute threads where a command builds no pool of its own:
/// a count it would hang spawning (100000) is refused before any starts.
fn check_rayon_env() -> anyhow::Result<()> {
    match std::env::var_os("RAYON_NUM_THREADS") {
        None => Ok(()),
        Some(v) if v.is_empty() || v == "0" => Ok(()), // rayon's own "one per core"
        Some(v) => {
            let text = v.to_string_lossy();
            arch_args::threads(&text)
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("bad setting: RAYON_NUM_THREADS={text}: {e}"))
        }
    }
}

/// A small text file the user names (a layer list, class names), read only up to `limit`
/// bytes: a larger one is refused, never read whole.
pub fn read_text_file(path: &std::path::Path, limit: u64, what: &str) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("over {limit} bytes: too large for {what}"),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| Error::new(ErrorKind::InvalidData, format!("{what} must be UTF-8 text")))
}

/// The limits, each from its `VGG_MAX_*` variable when set.
fn limits_from_env() -> anyhow::Result<vgg::limits::Limits> {
    let mut limits = vgg::limits::Limits::default();
    // Counts are whole numbers of at least 1 (`0.5` is not taken as 0); the upscale factor is
    // any positive number.
    let read = |name: &str, whole: bool| -> anyhow::Result<Option<f64>> {
        let var = hints::limit_variable(name);
        let text = match std::env::var(&var) {
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("{var} is not text: expected a positive number")
            }
            Ok(text) => text,
        };
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && !whole => Ok(Some(v)),
            Ok(v) if v.is_finite() && v >= 1.0 && v.fract() == 0.0 && whole => Ok(Some(v)),
            _ if whole => anyhow::bail!("{var}={text}: expected a whole number of at least 1"),
            _ => anyhow::bail!("{var}={text}: expected a positive number"),
        }
    };
    for (name, field) in [
        ("max_image_pixels", &mut limits.max_image_pixels),
        ("max_dataset_bytes", &mut limits.max_dataset_bytes),
        ("max_params", &mut limits.max_params),
        ("max_tensor_bytes", &mut limits.max_tensor_bytes),
    ] {
        if let Some(v) = read(name, true)? {
            *field = v as u64;
        }
    }
    if let Some(v) = read("max_upscale", false)? {
        limits.max_upscale = v;
    }
    Ok(limits)
}

/// Writes `text` to standard output; a closed pipe comes back as an error that `main` ends on
/// quietly.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// The CPU device of the commands that take no `--device` (summary, convert): burn's flex.
pub fn device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

/// `--device`, on every command that computes.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArg {
    /// Where to compute: flex (this CPU with our kernels), wgpu (the best adapter: Vulkan,
    /// Metal or DX12; lavapipe when there is no GPU), wgpu:N (the N-th discrete GPU), wgpu-cpu (Mesa's lavapipe, Vulkan on
    /// the CPU), cuda or cuda:N. GPUs need a build with `--features wgpu` (or `cuda`); under
    /// mpirun, wgpu and cuda take the GPU of each rank's local index.
    #[arg(long, value_name = "DEVICE", default_value = "flex", value_parser = parse_device)]
    pub device: vgg::device::DeviceSpec,
}

impl DeviceArg {
    /// The device, opened (an adapter that is not there is an error now).
    pub fn open(&self) -> anyhow::Result<burn::tensor::Device> {
        Ok(self.device.open()?)
    }
}

fn parse_device(text: &str) -> Result<vgg::device::DeviceSpec, String> {
    text.parse().map_err(|_| {
        format!(
            "expected one of {} (N a device index)",
            vgg::device::DEVICE_NAMES
        )
    })
}
