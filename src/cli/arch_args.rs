//! The flags that choose a network, shared by every subcommand.

use std::path::Path;

use clap::Args;
use vgg::arch::{Overrides, parse_layers};
use vgg::{VggConfig, VggError};

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
    /// The layer table: `name` (vgg11 ... vgg19_bn, A ... E) or `--layers` (a list, or a file
    /// holding one), with BatchNorm when `--bn` or a `_bn` name asks for it.
    pub fn base(&self, name: &str) -> Result<VggConfig, VggError> {
        let config = match &self.layers {
            Some(list) => {
                let text = if Path::new(list).is_file() {
                    // A layer list is a few hundred bytes; 1 MiB is far beyond any.
                    super::read_text_file(Path::new(list), 1 << 20, "a layer list").map_err(
                        |error| VggError::Io {
                            path: list.into(),
                            error,
                        },
                    )?
                } else {
                    list.clone()
                };
                VggConfig::from_layers(name, parse_layers(&text)?, self.bn)
            }
            None => VggConfig::named(name)?,
        };
        let bn = config.batch_norm || self.bn;
        Ok(config.with_batch_norm(bn))
    }

    /// The flags that change a network's numbers.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            num_classes: self.num_classes,
            in_channels: self.in_channels,
            hidden: self.hidden,
            dropout: self.dropout,
            width: self.width,
            pool_size: self.pool_size,
        }
    }

    /// The network: [`ArchArgs::base`] with the flags applied, checked.
    pub fn config(&self, name: &str) -> Result<VggConfig, VggError> {
        let config = self.base(name)?.with_overrides(&self.overrides())?;
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
/// The most threads `vgg` starts for one purpose (compute, loading): far beyond any core
/// count, and short of what hangs a machine spawning them.
pub const MAX_THREADS: usize = 1024;

/// A thread count: a whole number from 1 to [`MAX_THREADS`].
pub fn threads(text: &str) -> Result<usize, String> {
    match positive(text)? {
        n if n <= MAX_THREADS => Ok(n),
        n => Err(format!(
            "{n} threads is more than vgg starts (at most {MAX_THREADS})"
        )),
    }
}

pub fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a whole number of at least 1")),
    }
}
