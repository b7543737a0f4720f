//! `vgg summary ARCH`: the per-layer table, computed by running the network.

use vgg::nn::summary::{Summary, summarize};
use vgg::{InitScheme, Vgg};

use super::arch_args::{ArchArgs, parse_chw};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// vgg11, vgg11_lrn, vgg13, vgg16_c, vgg16, vgg19 (each also _bn), or a letter A ... E.
    #[arg(value_name = "ARCH", required_unless_present = "layers")]
    pub arch: Option<String>,
    #[command(flatten)]
    pub net: ArchArgs,
    /// Input shape of one image, CxHxW; the channels default to --in-channels.
    #[arg(long, value_name = "CxHxW", value_parser = parse_chw)]
    pub input: Option<[usize; 3]>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.net.config(args.arch.as_deref().unwrap_or("custom"))?;
    let input = args.input.unwrap_or([config.in_channels, 224, 224]);
    let device = super::device();
    let model = Vgg::new(&config, InitScheme::Kaiming, &device)?;
    let summary = summarize(&model, input, &device)?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&summary)?)
    } else {
        table(&summary)
    };
    Ok(super::out(&text)?)
}

fn table(s: &Summary) -> String {
    let mut out = format!("{} with input {:?}\n", s.arch, s.input_shape);
    let header = format!(
        "{:<9} {:<14} {:<20} {:<20} {:>13} {:>15}\n",
        "layer", "module", "kind", "output shape", "params", "MACs"
    );
    out.push_str(&header);
    out.push_str(&"-".repeat(header.len() - 1));
    out.push('\n');
    for r in &s.layers {
        out.push_str(&format!(
            "{:<9} {:<14} {:<20} {:<20} {:>13} {:>15}\n",
            r.name,
            r.key,
            r.kind,
            format!("{:?}", r.output_shape),
            thousands(r.params as u64),
            thousands(r.macs)
        ));
    }
    out.push_str(&"-".repeat(header.len() - 1));
    out.push('\n');
    out.push_str(&format!("parameters:    {}\n", thousands(s.params as u64)));
    out.push_str(&format!(
        "multiply-adds: {} ({:.2} G per image)\n",
        thousands(s.macs),
        s.macs as f64 / 1e9
    ));
    out.push_str(&format!("output shape:  {:?}\n", s.output_shape));
    out
}

/// `138357544` -> `138,357,544`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
