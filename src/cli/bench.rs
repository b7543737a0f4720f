//! `vgg bench`: inference and full training steps (forward, loss, backward, SGD update) timed
//! after a warm-up, with images/s, GFLOP/s from the exact MAC count, the share of this
//! machine's FP32 peak, and peak memory. Each workload runs in a child process of its own, so
//! its peak RSS is its own.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};
use vgg::summary::estimate;
use vgg::train::{Sgd, SgdSettings};
use vgg::{InitScheme, Vgg, VggConfig};

use super::arch_args::parse_chw;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture; without it, the standard set runs: VGG-16 inference at batch 1 and 8 on
    /// 224x224, VGG-16-BN compact training at batch 64 on 32x32, VGG-11 training at batch 16 on
    /// 224x224.
    #[arg(long)]
    pub arch: Option<String>,
    /// inference or train.
    #[arg(long, default_value = "inference", value_parser = ["inference", "train"])]
    pub mode: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, value_name = "CxHxW", value_parser = parse_chw, default_value = "3x224x224")]
    pub input: [usize; 3],
    /// The compact head for 32x32 work: pool 1x1, hidden 512, 10 classes.
    #[arg(long)]
    pub compact: bool,
    /// Timed runs (the median is reported) after --warmup untimed ones.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Print a JSON list of rows.
    #[arg(long)]
    pub json: bool,
    /// Internal: run one workload (JSON) in this process and print its row.
    #[arg(long, hide = true)]
    pub one: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub variant: String,
    pub mode: String,
    pub batch: usize,
    pub input: [usize; 3],
    pub compact: bool,
    pub runs: usize,
    pub warmup: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub variant: String,
    pub mode: String,
    pub batch: usize,
    pub input: [usize; 3],
    pub compact: bool,
    pub median_ms: f64,
    pub images_per_s: f64,
    pub gflops: f64,
    pub peak_fraction: f64,
    pub peak_rss_bytes: u64,
    pub threads: usize,
}

pub fn standard() -> Vec<Workload> {
    let w = |variant: &str, mode: &str, batch, input, compact| Workload {
        variant: variant.into(),
        mode: mode.into(),
        batch,
        input,
        compact,
        runs: 5,
        warmup: 1,
    };
    vec![
        w("vgg16", "inference", 1, [3, 224, 224], false),
        w("vgg16", "inference", 8, [3, 224, 224], false),
        w("vgg16_bn", "train", 64, [3, 32, 32], true),
        w("vgg11", "train", 16, [3, 224, 224], false),
    ]
}

/// FP32 FLOP per second this machine can do at most: cores x clock x FLOP per cycle (two FMA
/// units of the widest vector the CPU reports: 16 lanes with AVX-512, 8 with AVX2, 4 else).
pub fn peak_flops() -> (f64, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mhz = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .unwrap_or(2000.0);
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let lanes = if flags.contains("avx512f") {
        16.0
    } else if flags.contains("avx2") {
        8.0
    } else {
        4.0
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let per_cycle = 2.0 * lanes * 2.0; // 2 FMA units x lanes x (multiply + add)
    let peak = cores * mhz * 1e6 * per_cycle;
    (
        peak,
        format!(
            "{cores} cores x {:.2} GHz x {per_cycle} FP32 FLOP/cycle ({} lanes, 2 FMA units) = {:.0} GFLOP/s",
            mhz / 1e3,
            lanes,
            peak / 1e9
        ),
    )
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn config_of(w: &Workload) -> anyhow::Result<VggConfig> {
    let c = VggConfig::named(&w.variant)?.with_in_channels(w.input[0]);
    Ok(if w.compact {
        c.with_pool_size(1).with_hidden(512).with_num_classes(10)
    } else {
        c
    })
}

fn run_one(w: &Workload) -> anyhow::Result<Row> {
    let config = config_of(w)?;
    let train = w.mode == "train";
    let device = if train {
        super::device().autodiff()
    } else {
        super::device()
    };
    let [c, h, wd] = w.input;
    let mut model = Vgg::new(&config, InitScheme::Kaiming, &device)?;
    if !train {
        model = model.valid();
    }
    let x = Tensor::<4>::random([w.batch, c, h, wd], Distribution::Default, &device);
    let y = Tensor::<1, Int>::zeros([w.batch], &device);
    let mut sgd = Sgd::new(SgdSettings::default());
    let mut times = Vec::new();
    for i in 0..w.warmup + w.runs {
        let start = Instant::now();
        if train {
            sgd.accumulate(&model, x.clone(), y.clone(), 1.0);
            model = sgd.step(model, 1e-3);
            let _ = model.fc3.weight.val().into_data();
        } else {
            let _ = model.forward(x.clone()).into_data();
        }
        if i >= w.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let macs = estimate(&config, w.input)?.macs as f64 * w.batch as f64;
    // A training step is counted as 3 passes: forward, and backward's input and weight gradients.
    let flops = 2.0 * macs * if train { 3.0 } else { 1.0 };
    let (peak, _) = peak_flops();
    Ok(Row {
        variant: w.variant.clone(),
        mode: w.mode.clone(),
        batch: w.batch,
        input: w.input,
        compact: w.compact,
        median_ms: median * 1e3,
        images_per_s: w.batch as f64 / median,
        gflops: flops / median / 1e9,
        peak_fraction: flops / median / peak,
        peak_rss_bytes: peak_rss(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(spec) = &args.one {
        let row = run_one(&serde_json::from_str(spec)?)?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    let workloads = match &args.arch {
        None => standard()
            .into_iter()
            .map(|mut w| {
                w.runs = args.runs;
                w.warmup = args.warmup;
                w
            })
            .collect(),
        Some(arch) => vec![Workload {
            variant: arch.clone(),
            mode: args.mode.clone(),
            batch: args.batch,
            input: args.input,
            compact: args.compact,
            runs: args.runs,
            warmup: args.warmup,
        }],
    };
    let exe = std::env::current_exe()?;
    let (_, peak_text) = peak_flops();
    if !args.json {
        println!("peak: {peak_text}");
        println!(
            "{:<10} {:<9} {:>5} {:<13} {:>10} {:>9} {:>9} {:>7} {:>10}",
            "variant",
            "mode",
            "batch",
            "input",
            "median ms",
            "img/s",
            "GFLOP/s",
            "% peak",
            "peak RSS"
        );
    }
    let mut rows = Vec::new();
    for w in &workloads {
        let out = std::process::Command::new(&exe)
            .args(["bench", "--one", &serde_json::to_string(w)?])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "workload {} {} failed: {}",
            w.variant,
            w.mode,
            String::from_utf8_lossy(&out.stderr)
        );
        let row: Row = serde_json::from_slice(&out.stdout)?;
        if !args.json {
            let variant = if row.compact {
                format!("{}*", row.variant)
            } else {
                row.variant.clone()
            };
            println!(
                "{:<10} {:<9} {:>5} {:<13} {:>10.1} {:>9.2} {:>9.1} {:>6.1}% {:>7.0} MB",
                variant,
                row.mode,
                row.batch,
                format!("{}x{}x{}", row.input[0], row.input[1], row.input[2]),
                row.median_ms,
                row.images_per_s,
                row.gflops,
                100.0 * row.peak_fraction,
                row.peak_rss_bytes as f64 / 1e6
            );
        }
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "* compact head: pool 1x1, hidden 512, 10 classes. Training GFLOP/s count 3 passes (6 FLOP per MAC)."
        );
    }
    Ok(())
}
