//! Subcommands, one file each, and the flags they share.

mod arch_args;
mod bench;
mod convert;
mod eval;
mod features;
mod plot;
mod predict;
mod ranks;
mod summary;
mod train;
mod weights;

use clap::{Parser, Subcommand};

/// VGG very deep convolutional networks (Simonyan & Zisserman, ICLR 2015) on burn.
#[derive(Parser, Debug)]
#[command(name = "vgg", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

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
    /// Convert weights between .pth, .safetensors (torchvision layout) and .bpk (burn).
    Convert(convert::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Summary(args) => summary::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Bench(args) => bench::run(*args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(*args),
        Command::Predict(args) => predict::run(*args),
        Command::Features(args) => features::run(*args),
    }
}

/// The CPU device the tool runs on (burn's flex backend).
pub fn device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
