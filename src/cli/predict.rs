//! `vgg predict IMAGE...`: the top-k classes of each image.

use std::path::PathBuf;

use serde::Serialize;
use vgg::data::folder::decode;
use vgg::eval::{Method, average_probs, top_k};

use super::weights::{WeightArgs, load_all};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JPEG or PNG images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// How many classes to show.
    #[arg(long, short = 'k', default_value_t = 5)]
    pub top: usize,
    /// Method (center, dense, multicrop, dense+multicrop) and scale Q; an image already at the
    /// network's input size is used as is with `center`.
    #[arg(long, default_value = "center")]
    pub method: String,
    #[arg(long)]
    pub scale: Option<usize>,
    /// One JSON object per image: path and top-k (index, label, probability).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Guess {
    index: usize,
    label: String,
    probability: f32,
}

#[derive(Serialize)]
struct Prediction {
    path: String,
    top: Vec<Guess>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = load_all(&args.weights)?;
    let method = Method::parse(&args.method)
        .ok_or_else(|| anyhow::anyhow!("unknown method `{}`", args.method))?;
    let scale = args.scale.unwrap_or(loaded[0].default_scale);
    let classes = loaded[0].classes.clone();
    let channels = loaded[0].classifier.model.config().in_channels;
    // Images are rescaled to the network's scale; more than 8x upscaling is refused as a
    // sign of a wrong file (a thumbnail, an icon).
    let min = loaded[0].classifier.crop.div_ceil(8);
    let crop = loaded[0].classifier.crop;
    let models: Vec<_> = loaded.into_iter().map(|l| l.classifier).collect();
    let mut out = Vec::new();
    for path in &args.images {
        let img = decode(path)?;
        anyhow::ensure!(
            img.height.min(img.width) >= min,
            "{}: {}x{} is too small: this network reads {crop}x{crop} images and upscales at most 8x (at least {min}x{min} pixels)",
            path.display(),
            img.width,
            img.height
        );
        if img.channels != channels {
            eprintln!(
                "note: {} has {} channel(s); converted to the network's {channels}",
                path.display(),
                img.channels
            );
        }
        let probs = average_probs(&models, &img, method, &[scale])?;
        let top = top_k(&probs, args.top.min(probs.len()))
            .into_iter()
            .map(|(index, probability)| Guess {
                index,
                label: classes[index].clone(),
                probability,
            })
            .collect();
        out.push(Prediction {
            path: path.display().to_string(),
            top,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for p in &out {
        println!("{}", p.path);
        for g in &p.top {
            println!(
                "  {:6.2}%  {:>4}  {}",
                100.0 * g.probability,
                g.index,
                g.label
            );
        }
    }
    Ok(())
}
