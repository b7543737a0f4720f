//! `vgg features`: activations at named layers for a batch of images, to `.safetensors` or
//! `.npy`.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};
use vgg::checkpoint::{StateDict, StateTensor, write_safetensors};
use vgg::data::folder::decode;
use vgg::fsio::write_atomic;

use super::weights::{Purpose, WeightArgs, load};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Images (JPEG, PNG, BMP, GIF, TIFF, WebP, PPM/PGM), stacked into one batch in this order.
    #[arg(required_unless_present = "list")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// Layers, comma-separated: the authors' names (conv1_1 ... conv5_3 before the ReLU,
    /// relu1_1 ... relu5_3, pool1 ... pool5, fc6, relu6, fc7, relu7, fc8), torchvision's
    /// (features.N, classifier.N) or Keras' (block3_conv3, fc1: their output in Keras, after the
    /// ReLU). Default: the perceptual-loss layers, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    /// on VGG-16 and VGG-19, each block's last ReLU where it has fewer convolutions (VGG-11:
    /// relu1_1, relu2_1, relu3_2, relu4_2, relu5_2). --list names them all.
    #[arg(long = "at", value_name = "LAYERS")]
    pub at: Option<String>,
    /// Output: FILE.safetensors (one tensor per layer) or a folder for LAYER.npy files.
    #[arg(long, short, required_unless_present = "list")]
    pub output: Option<PathBuf>,
    /// Every image is resized (shorter side) and centre-cropped to this square side; default:
    /// the weights' crop (224).
    #[arg(long, value_parser = super::arch_args::positive)]
    pub size: Option<usize>,
    /// Replace the output file (or the LAYER.npy files in the output folder) if it exists.
    #[arg(long)]
    pub force: bool,
    /// List the layer names of the network and exit.
    #[arg(long)]
    pub list: bool,
}

/// A `.npy` file (format 1.0, little-endian float32, C order).
fn npy(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let comma = if shape.len() == 1 { "," } else { "" };
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}{comma}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let classifier = load(&args.weights, &args.weights.weights[0], Purpose::Features)?;
    let model = &classifier.model;
    if args.list {
        let text: String = model
            .layer_names()
            .into_iter()
            .map(|(name, alias)| format!("{name:<10} {alias}\n"))
            .collect();
        return Ok(super::out(&text)?);
    }
    let names: Vec<String> = match &args.at {
        Some(at) => at
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => vgg::arch::names::default_taps(model.config()),
    };
    if classifier.trunk {
        // A trunk's head was drawn fresh: its outputs would mean nothing.
        let config = model.config();
        if let Some(name) = names.iter().find(|n| {
            vgg::arch::names::tap(config, n)
                .is_some_and(|p| !matches!(p.point, vgg::arch::names::Point::Features(_)))
        }) {
            anyhow::bail!(
                "{}: these weights are a trunk (convolutions only): `{name}` is part of the head they do not have; ask for layers up to pool{}",
                args.weights.weights[0].display(),
                config.num_pools()
            );
        }
    }
    let output = args
        .output
        .clone()
        .ok_or_else(|| anyhow::anyhow!("give -o FILE.safetensors or -o FOLDER"))?;
    let is_st = output.extension().is_some_and(|e| e == "safetensors");
    // Nothing is overwritten without --force, and this is known before any work is done.
    let targets: Vec<PathBuf> = if is_st {
        vec![output.clone()]
    } else {
        names
            .iter()
            .map(|k| output.join(format!("{k}.npy")))
            .collect()
    };
    if let Some(existing) = targets
        .iter()
        .find(|t| std::fs::symlink_metadata(t).is_ok())
    {
        anyhow::ensure!(
            args.force,
            "{} exists; pass --force to replace it",
            existing.display()
        );
    }
    anyhow::ensure!(
        std::fs::symlink_metadata(&output).map_or(true, |m| !m.is_symlink()) || is_st,
        "{} is a link; give the folder itself (vgg writes into folders, not through links)",
        output.display()
    );
    anyhow::ensure!(
        is_st || !output.is_file(),
        "{} is a file; give a .safetensors name or a folder for the .npy files",
        output.display()
    );
    let side = args.size.unwrap_or(classifier.preset.crop);
    let channels = model.config().in_channels;
    let mut batch = Vec::new();
    for path in &args.images {
        let img = decode(path)?;
        let x = classifier
            .center(&img, side)
            .map_err(|reason| vgg::VggError::BadImage {
                path: path.clone(),
                reason,
            })?;
        batch.extend(x);
    }
    let device = args.weights.device.open()?;
    let x = Tensor::<4>::from_data(
        TensorData::new(batch, [args.images.len(), channels, side, side]),
        &device,
    );
    let acts = model.activations(x, &names)?;
    if is_st {
        let dict: StateDict = acts
            .iter()
            .map(|(k, a)| {
                (
                    k.clone(),
                    StateTensor::f32(a.shape.clone(), a.values.clone()),
                )
            })
            .collect();
        write_safetensors(&dict, &output)?;
    } else {
        std::fs::create_dir_all(&output)
            .with_context(|| format!("creating {}", output.display()))?;
        for (k, a) in &acts {
            write_atomic(&output.join(format!("{k}.npy")), &npy(&a.shape, &a.values))?;
        }
    }
    for (k, a) in &acts {
        note!("{k:<12} {:?}", a.shape);
    }
    note!("wrote {}", output.display());
    Ok(())
}
