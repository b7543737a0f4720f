//! `vgg convert IN OUT`: weights from any format `-w` reads (PyTorch, safetensors, burn, Caffe,
//! Keras, ONNX) to `.safetensors`, burn's `.bpk` or an ONNX model, checked strictly against the
//! architecture on the way.

use std::path::PathBuf;

use anyhow::Context;

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
    // A dangling link exists too: nothing is replaced without --force.
    if std::fs::symlink_metadata(&args.output).is_ok() && !args.force {
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
    // A run's checkpoint is read as the network its config.json describes; any file with the
    // preset it carries or its layout implies, which a .safetensors output carries on.
    let weights = vgg::Weights::open(
        &args.input,
        || args.net.config(&args.arch),
        &vgg::preset::Options::default(),
        &mut super::weights::download_bar(),
    )?;
    anyhow::ensure!(
        is_safetensors || !weights.trunk,
        "{}: these weights are a trunk (convolutions only); a .bpk or .onnx holds a whole network, whose head would be random: write .safetensors",
        args.input.display()
    );
    let (config, input) = (&weights.config, &weights.origin.file);
    if is_safetensors {
        vgg::checkpoint::safetensors::write_with_metadata(
            &weights.dict,
            &args.output,
            args.f16,
            &weights.preset.to_metadata(),
        )
    } else {
        let is_bpk = !args
            .output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        if is_bpk && weights.preset.normalize != vgg::preset::Normalize::torchvision() {
            note!(
                "note: {} will not carry these weights' preprocessing ({}); load it with --preset caffe, or --mean/--std/--pixel-scale/--bgr, or write .safetensors or .onnx, which carry it",
                args.output.display(),
                weights.preset.normalize.describe()
            );
        }
        // An ONNX model carries the preset in its metadata_props.
        vgg::Vgg::from_weights(&weights, &super::device())?
            .save_with(&args.output, &weights.preset.to_onnx_metadata())
    }
    .with_context(|| format!("writing {}", args.output.display()))?;
    note!(
        "{} -> {} ({}, {} parameters)",
        input.display(),
        args.output.display(),
        config.name,
        super::summary::thousands(config.num_params() as u64)
    );
    Ok(())
}
