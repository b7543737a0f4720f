//! `vgg convert IN OUT`: weights from any format `-w` reads (PyTorch, safetensors, burn, Caffe,
//! Keras, ONNX) to `.safetensors`, burn's `.bpk` or an ONNX model, checked strictly against the
//! architecture on the way.

use std::path::PathBuf;

use anyhow::Context;
use vgg::Vgg;

use super::arch_args::ArchArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Weights to read: .pth/.pt (torch.save of a state dict), .safetensors, .bpk, .caffemodel
    /// (the authors' Caffe release), Keras' .h5/.weights.h5/.keras, or .onnx; or a run folder
    /// (its best.bpk) or a run's checkpoint, which carry their own network (no --arch needed).
    pub input: PathBuf,
    /// File to write: .safetensors (torchvision layout), .bpk (burn) or .onnx (a model that
    /// onnxruntime runs: opset 13, input `input` [N, C, H, W], output `logits`).
    pub output: PathBuf,
    /// The architecture the weights belong to.
    #[arg(long, default_value = "vgg16")]
    pub arch: String,
    #[command(flatten)]
    pub net: ArchArgs,
    /// Store the floats in half precision (a .safetensors OUTPUT only): half the file, read
    /// back as float32 by every command (PyTorch's `.half()`); values round to 11 bits.
    #[arg(long)]
    pub f16: bool,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.output.exists() && !args.force {
        anyhow::bail!(
            "{} exists; pass --force to replace it",
            args.output.display()
        );
    }
    let is_safetensors = args
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    anyhow::ensure!(
        !args.f16 || is_safetensors,
        "{}: --f16 writes .safetensors only; name the output NAME.safetensors",
        args.output.display()
    );
    // A run's checkpoint is read as the network its config.json describes.
    let (config, input) = match vgg::preset::open::run_of(&args.input) {
        Some((dir, file)) => (vgg::train::read_config(&dir)?.model, file),
        None => (args.net.config(&args.arch)?, args.input.clone()),
    };
    let device = super::device();
    let model = Vgg::load(&config, &input, &device)?;
    if args.f16 {
        vgg::checkpoint::safetensors::write_f16(&model.state_dict(), &args.output)
    } else {
        model.save(&args.output)
    }
    .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "{} -> {} ({}, {} parameters)",
        input.display(),
        args.output.display(),
        config.name,
        super::summary::thousands(config.num_params() as u64)
    );
    Ok(())
}
