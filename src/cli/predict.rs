//! `vgg predict IMAGE...`: the top-k classes of each image.

use std::path::PathBuf;

use serde::Serialize;
use vgg::data::folder::decode;
use vgg::eval::metrics::top_k;
use vgg::eval::{Method, average_probs};

use super::weights::{WeightArgs, load_all};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Images: JPEG, PNG, BMP, GIF (its first frame), TIFF, WebP, PPM/PGM.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// How many classes to show.
    #[arg(long, short = 'k', default_value_t = 5, value_parser = super::arch_args::positive)]
    pub top: usize,
    /// Method (center, dense, multicrop, dense+multicrop) and scale Q; an image already at the
    /// network's input size is used as is with `center`.
    #[arg(long, default_value = "center")]
    pub method: String,
    /// Test scale Q: images are rescaled so their shorter side is Q (default: the weights'
    /// own, 256 for ImageNet weights, a run's evaluation scale).
    #[arg(long, value_parser = super::arch_args::positive)]
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
    let models = load_all(&args.weights)?;
    let method = Method::parse(&args.method)
        .ok_or_else(|| anyhow::anyhow!("unknown method `{}`", args.method))?;
    let scale = args.scale.unwrap_or(models[0].preset.scale);
    let classes = models[0].preset.classes.clone();
    let channels = models[0].model.config().in_channels;
    let mut out = Vec::new();
    for path in &args.images {
        let img = decode(path)?;
        if img.channels != channels {
            note!(
                "note: {} has {} channel(s); converted to the network's {channels}",
                path.display(),
                img.channels
            );
        }
        // Images are rescaled to the network's scale; an image that would be enlarged more
        // than 8x (a thumbnail, an icon) is refused by the library's limits.
        let probs = average_probs(&models, &img, path, method, &[scale])?;
        let top = top_k(&probs, args.top.min(probs.len()))
            .expect("average_probs refuses non-finite scores")
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
        return Ok(super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&out)?
        ))?);
    }
    let mut text = String::new();
    for p in &out {
        text.push_str(&format!("{}\n", p.path));
        for g in &p.top {
            text.push_str(&format!(
                "  {:6.2}%  {:>4}  {}\n",
                100.0 * g.probability,
                g.index,
                g.label
            ));
        }
    }
    Ok(super::out(&text)?)
}
