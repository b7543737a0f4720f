//! The flags that choose a network, shared by every subcommand.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use vgg::VggConfig;
use vgg::arch::parse_layers;

#[derive(Args, Debug, Clone)]
pub struct ArchArgs {
    /// Your own layer list instead of a named architecture: `64,64,M,128,M,...` (a number is a
    /// 3x3 conv of that width, M a 2x2 max-pool, C1-n a 1x1 conv, L an LRN), or a file that
    /// holds such a list.
    #[arg(long, value_name = "LIST|FILE")]
    pub layers: Option<String>,
    /// BatchNorm after every convolution (as the `_bn` names).
    #[arg(long)]
    pub bn: bool,
    /// Number of output classes.
    #[arg(long, value_name = "N")]
    pub num_classes: Option<usize>,
    /// Input channels (3 for RGB, 1 for grey).
    #[arg(long, value_name = "N")]
    pub in_channels: Option<usize>,
    /// Width of the two hidden FC layers.
    #[arg(long, value_name = "N")]
    pub hidden: Option<usize>,
    /// Dropout after FC1 and FC2, in training.
    #[arg(long, value_name = "P")]
    pub dropout: Option<f64>,
    /// Multiply every conv width by this (0.25 turns 64..512 into 16..128): a narrower VGG
    /// for small data and small machines.
    #[arg(long, value_name = "W")]
    pub width: Option<f64>,
    /// Side of the adaptive average pool before FC1 (7 as torchvision; 1 for the compact
    /// 32x32 head).
    #[arg(long, value_name = "N")]
    pub pool_size: Option<usize>,
}

impl ArchArgs {
    /// The configuration: `name` (vgg11 ... vgg19_bn, A ... E) or `--layers`, then the flags.
    pub fn config(&self, name: Option<&str>) -> anyhow::Result<VggConfig> {
        let mut config = match (&self.layers, name) {
            (Some(list), _) => {
                let text = if Path::new(list).is_file() {
                    std::fs::read_to_string(list)
                        .with_context(|| format!("reading the layer list {list}"))?
                } else {
                    list.clone()
                };
                let label = name.unwrap_or("custom");
                VggConfig::from_layers(label, parse_layers(&text)?, self.bn)
            }
            (None, Some(name)) => {
                let config = VggConfig::named(name)?;
                let bn = config.batch_norm || self.bn;
                config.with_batch_norm(bn)
            }
            (None, None) => {
                anyhow::bail!("name an architecture (vgg11 ... vgg19_bn, A ... E) or give --layers")
            }
        };
        if let Some(n) = self.num_classes {
            config = config.with_num_classes(n);
        }
        if let Some(n) = self.in_channels {
            config = config.with_in_channels(n);
        }
        if let Some(n) = self.hidden {
            config = config.with_hidden(n);
        }
        if let Some(p) = self.dropout {
            config = config.with_dropout(p);
        }
        if let Some(w) = self.width {
            anyhow::ensure!(w > 0.0 && w.is_finite(), "--width must be positive");
            config = config.with_width(w);
        }
        if let Some(n) = self.pool_size {
            config = config.with_pool_size(n);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Parses `CxHxW` (`3x224x224`).
pub fn parse_chw(text: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = text.split(['x', 'X', ',']).collect();
    let nums: Result<Vec<usize>, _> = parts.iter().map(|p| p.trim().parse::<usize>()).collect();
    match nums.as_deref() {
        Ok([c, h, w]) if *c > 0 && *h > 0 && *w > 0 => Ok([*c, *h, *w]),
        _ => Err(format!(
            "`{text}` is not CxHxW with positive numbers (e.g. 3x224x224)"
        )),
    }
}

/// A whole number of at least 1 (batch sizes, counts of runs, images, epochs).
pub fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a whole number of at least 1")),
    }
}
