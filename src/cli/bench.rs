//! `vgg bench`: inference and full training steps (forward, loss, backward, SGD update) timed
//! after a warm-up, with images/s, GFLOP/s from the exact MAC count, the share of this
//! machine's FP32 peak, and peak memory. Each workload runs in a child process of its own, so
//! its peak RSS is its own.

use std::str::FromStr;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};
use vgg::nn::Precision;
use vgg::nn::summary::estimate;
use vgg::train::{GradLayout, Sgd, SgdSettings};
use vgg::{InitScheme, Vgg, VggConfig};

use super::arch_args::{parse_chw, positive};

/// `println!` that returns a closed pipe as an error instead of panicking.
macro_rules! say {
    ($($t:tt)*) => {
        super::out(&format!("{}\n", format_args!($($t)*)))?
    };
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture; without it, the standard set runs: VGG-16 inference at batch 1 and 8 on
    /// 224x224, VGG-16-BN compact training at batch 64 on 32x32, VGG-11 training at batch 16 on
    /// 224x224.
    #[arg(long)]
    pub arch: Option<String>,
    /// What is timed: inference (a forward pass) or train (forward, loss, backward, SGD step).
    #[arg(long, value_enum, default_value_t = Mode::Inference)]
    pub mode: Mode,
    #[arg(long, default_value_t = 8, value_parser = positive)]
    pub batch: usize,
    #[arg(long, value_name = "CxHxW", value_parser = parse_chw, default_value = "3x224x224")]
    pub input: [usize; 3],
    /// The compact head for 32x32 work: pool 1x1, hidden 512, 10 classes.
    #[arg(long)]
    pub compact: bool,
    /// Timed runs (the median is reported) after --warmup untimed ones.
    #[arg(long, default_value_t = 5, value_parser = positive)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Print a JSON list of rows.
    #[arg(long)]
    pub json: bool,
    /// Where the time goes: per layer, the forward time and (in train mode) the forward +
    /// backward time of that layer alone, for the chosen (or first standard) workload.
    #[arg(long)]
    pub profile: bool,
    /// burn's generic BatchNorm and convolution instead of our flex kernels (as
    /// VGG_GENERIC_KERNELS=1), to measure what the kernels bring.
    #[arg(long)]
    pub generic: bool,
    /// Internal: run one workload (JSON) in this process and print its row.
    #[arg(long, hide = true)]
    pub one: Option<String>,
    /// The dtype the network computes in (mixed precision, as `train --precision`): f32, f16
    /// (training steps scale the loss by 1024) or bf16.
    #[arg(long, default_value = "f32", value_parser = Precision::from_str)]
    pub precision: Precision,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

/// What a workload times.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Inference,
    Train,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that table widths apply.
        f.pad(match self {
            Mode::Inference => "inference",
            Mode::Train => "train",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub variant: String,
    pub mode: Mode,
    pub batch: usize,
    pub input: [usize; 3],
    pub compact: bool,
    pub runs: usize,
    pub warmup: usize,
    /// `flex`, `wgpu-cpu`, `cuda:0`, ... ([`vgg::device::DeviceSpec`]).
    pub device: String,
    #[serde(default)]
    pub precision: Precision,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub device: String,
    #[serde(default)]
    pub precision: Precision,
    pub variant: String,
    pub mode: Mode,
    pub batch: usize,
    pub input: [usize; 3],
    pub compact: bool,
    pub median_ms: f64,
    pub images_per_s: f64,
    pub gflops: f64,
    /// Of this CPU's FP32 peak; none for other devices (their peak is not known here).
    pub peak_fraction: Option<f64>,
    pub peak_rss_bytes: u64,
    pub threads: usize,
}

pub fn standard() -> Vec<Workload> {
    let w = |variant: &str, mode: Mode, batch, input, compact| Workload {
        variant: variant.into(),
        mode,
        batch,
        input,
        compact,
        runs: 5,
        warmup: 1,
        device: "flex".into(),
        precision: Precision::F32,
    };
    vec![
        w("vgg16", Mode::Inference, 1, [3, 224, 224], false),
        w("vgg16", Mode::Inference, 8, [3, 224, 224], false),
        w("vgg16_bn", Mode::Train, 64, [3, 32, 32], true),
        w("vgg11", Mode::Train, 16, [3, 224, 224], false),
    ]
}

/// FP32 FLOP per second this machine can do at most: cores x clock x FLOP per cycle (two FMA
/// units of the widest vector the CPU executes at full width: 16 lanes with AVX-512, 8 with
/// AVX2, 4 else). AMD's Zen 4 (family 25 with AVX-512) runs each AVX-512 instruction on its
/// 256-bit units in two halves, so it counts as 8 lanes. The clock is the one /proc/cpuinfo
/// reports (in a VM, often the nominal one): a CPU that boosts above it can exceed this "peak"
/// (on the Zen 4 of docs/results/2026-12-06-performance.md our direct convolutions ran at
/// 91-110% of it).
pub fn peak_flops() -> (f64, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(str::trim)
    };
    let reported = field("cpu MHz").and_then(|v| v.parse::<f64>().ok());
    let mhz = reported.unwrap_or(2000.0);
    let clock = match reported {
        Some(_) => "at the clock /proc/cpuinfo reports (boost clocks run above it)",
        None => "at an assumed 2 GHz (/proc/cpuinfo gives no clock)",
    };
    let flags = field("flags").unwrap_or("");
    let zen4 = field("vendor_id") == Some("AuthenticAMD") && field("cpu family") == Some("25");
    let (lanes, how) = if flags.contains("avx512f") && zen4 {
        (8.0, "AVX-512 on 256-bit units")
    } else if flags.contains("avx512f") {
        (16.0, "AVX-512")
    } else if flags.contains("avx2") {
        (8.0, "AVX2")
    } else {
        (4.0, "128-bit vectors")
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let per_cycle = 2.0 * lanes * 2.0; // 2 FMA units x lanes x (multiply + add)
    let peak = cores * mhz * 1e6 * per_cycle;
    (
        peak,
        format!(
            "{cores} cores x {:.2} GHz x {per_cycle} FP32 FLOP/cycle ({how}: {lanes} lanes, 2 FMA \
             units) = {:.0} GFLOP/s {clock}; our loops on {}",
            mhz / 1e3,
            peak / 1e9,
            vgg::kernels::instruction_set()
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
    let c = if w.compact {
        c.with_pool_size(1).with_hidden(512).with_num_classes(10)
    } else {
        c
    };
    c.validate()?;
    c.check_input(&[w.batch, w.input[0], w.input[1], w.input[2]])?;
    Ok(c)
}

/// The workload's network on its device: autodiff and training behaviour for `train`, plain
/// inference otherwise.
fn build(w: &Workload) -> anyhow::Result<(VggConfig, bool, burn::tensor::Device, Vgg)> {
    let config = config_of(w)?;
    let train = w.mode == Mode::Train;
    let spec: vgg::device::DeviceSpec = w.device.parse()?;
    let plain = spec.open()?;
    let device = if train { plain.autodiff() } else { plain };
    w.precision.check(&device)?;
    let model = Vgg::new(&config, InitScheme::Kaiming, &device)?;
    let model = if train { model } else { model.valid() };
    Ok((config, train, device, model))
}

fn run_one(w: &Workload) -> anyhow::Result<Row> {
    let (config, train, device, mut model) = build(w)?;
    let [c, h, wd] = w.input;
    let x = Tensor::<4>::random([w.batch, c, h, wd], Distribution::Default, &device);
    let x = w.precision.apply(x);
    let y = Tensor::<1, Int>::zeros([w.batch], &device);
    let mut sgd = Sgd::new(SgdSettings::default());
    // float16's loss scaling, as the trainer's (a fixed scale: nothing here can overflow).
    let scale = if w.precision.scales_loss() {
        1024.0
    } else {
        1.0
    };
    sgd.set_loss_scale(scale);
    let layout = GradLayout::of(&model);
    let mut times = Vec::new();
    for i in 0..w.warmup + w.runs {
        let start = Instant::now();
        if train {
            sgd.micro_batch(&model, x.clone(), y.clone(), 1.0, (0, 1), 0);
            let (grads, running) = sgd.take(&model);
            let (grads, _) = sgd.unscale(&layout, grads);
            model = sgd.apply(model, 1e-3, grads, &running, 1);
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
        device: w.device.clone(),
        precision: w.precision,
        variant: w.variant.clone(),
        mode: w.mode,
        batch: w.batch,
        input: w.input,
        compact: w.compact,
        median_ms: median * 1e3,
        images_per_s: w.batch as f64 / median,
        gflops: flops / median / 1e9,
        peak_fraction: on_cpu(w).then(|| flops / median / peak),
        peak_rss_bytes: peak_rss(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    })
}

/// Whether the workload computes on this CPU (flex), whose FP32 peak [`peak_flops`] knows.
fn on_cpu(w: &Workload) -> bool {
    w.device == "flex"
}

/// Median seconds of `f` over `runs` after one warm-up.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Per-layer times: each layer of the network runs alone on an input of the shape it sees in
/// the full forward pass.
fn profile(w: &Workload) -> anyhow::Result<()> {
    let (config, train, device, model) = build(w)?;
    let rows = estimate(&config, w.input)?.layers;
    let [c, h, wd] = w.input;
    let mut x = Tensor::<4>::random([w.batch, c, h, wd], Distribution::Default, &device);
    say!(
        "{} {} batch {} input {:?}: per layer, alone (median of {} runs)",
        w.variant,
        w.mode,
        w.batch,
        w.input,
        w.runs
    );
    let (peak, _) = peak_flops();
    say!(
        "{:<9} {:<20} {:<20} {:>11} {:>15} {:>14} {:>15}",
        "layer",
        "kind",
        "algorithm",
        "forward ms",
        "GFLOP/s (peak)",
        if train { "fwd+bwd ms" } else { "" },
        if train { "GFLOP/s (peak)" } else { "" }
    );
    let (mut total_f, mut total_b) = (0.0, 0.0);
    let report = |name: &str,
                  kind: &str,
                  algorithm: &str,
                  macs: u64,
                  f: f64,
                  b: Option<f64>|
     -> anyhow::Result<()> {
        let gf = |s: f64, passes: f64| {
            if macs > 0 {
                let flops = passes * 2.0 * macs as f64 * w.batch as f64 / s;
                if on_cpu(w) {
                    format!("{:.1} ({:.0}%)", flops / 1e9, 100.0 * flops / peak)
                } else {
                    format!("{:.1}", flops / 1e9)
                }
            } else {
                "-".into()
            }
        };
        let bwd = b
            .map(|b| (format!("{:.2}", b * 1e3), gf(b, 3.0)))
            .unwrap_or_default();
        say!(
            "{name:<9} {kind:<20} {algorithm:<20} {:>11.2} {:>15} {:>14} {:>15}",
            f * 1e3,
            gf(f, 1.0),
            bwd.0,
            bwd.1
        );
        Ok(())
    };
    let grad = |t: Tensor<4>| if train { t.require_grad() } else { t };
    for (i, row) in rows
        .iter()
        .filter(|r| r.kind != "BatchNorm")
        .take(config.layers.len())
        .enumerate()
    {
        // The network's input needs no gradient (a training step computes none for it).
        let input = if i == 0 {
            x.clone()
        } else {
            grad(x.clone().detach())
        };
        let f = time(w.runs, || {
            let _ = model.layer(i, input.clone()).into_data();
        });
        let b = train.then(|| {
            time(w.runs, || {
                let _ = model.layer(i, input.clone()).sum().backward();
                let _ = device.sync(); // a GPU queues the backward: wait for it
            })
        });
        total_f += f;
        total_b += b.unwrap_or(0.0);
        let algorithm = match (&config.layers[i], &row.output_shape[..]) {
            (vgg::Layer::Conv3(_) | vgg::Layer::Conv1(_), &[_, co, h, wd]) => {
                let k = if matches!(config.layers[i], vgg::Layer::Conv1(_)) {
                    1
                } else {
                    3
                };
                vgg::nn::ops::conv_algorithm(&device, [x.dims()[0], x.dims()[1], co, h, wd, k])
            }
            _ => "",
        };
        report(&row.name, &row.kind, algorithm, row.macs, f, b)?;
        x = model.layer(i, x.detach());
    }
    let head_in = grad(x.detach());
    let f = time(w.runs, || {
        let _ = model.head(head_in.clone()).into_data();
    });
    let b = train.then(|| {
        time(w.runs, || {
            drop(model.head(head_in.clone()).sum().backward());
            let _ = device.sync();
        })
    });
    let fc_macs: u64 = rows
        .iter()
        .filter(|r| r.name.starts_with("fc"))
        .map(|r| r.macs)
        .sum();
    let algorithm = vgg::nn::ops::linear_algorithm(&device, w.batch);
    report("head", "avgpool+FC x3", algorithm, fc_macs, f, b)?;
    total_f += f;
    total_b += b.unwrap_or(0.0);
    say!("GFLOP/s count the direct algorithm's FLOPs: for Winograd layers an effective rate.");
    say!(
        "sum of layers: forward {:.1} ms{}",
        total_f * 1e3,
        if train {
            format!(", forward+backward {:.1} ms", total_b * 1e3)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The workloads the flags ask for: one, or the standard set, with the flags' run counts.
fn workloads(args: &Args) -> Vec<Workload> {
    let chosen = match &args.arch {
        None => standard(),
        Some(arch) => vec![Workload {
            variant: arch.clone(),
            mode: args.mode,
            batch: args.batch,
            input: args.input,
            compact: args.compact,
            runs: args.runs,
            warmup: args.warmup,
            device: String::new(),
            precision: Precision::F32,
        }],
    };
    chosen
        .into_iter()
        .map(|w| Workload {
            runs: args.runs,
            warmup: args.warmup,
            device: args.device.device.to_string(),
            precision: args.precision,
            ..w
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.generic {
        vgg::kernels::policy::set(vgg::kernels::Policy {
            ours: false,
            ..vgg::kernels::policy::get()
        })?;
    }
    if args.profile {
        anyhow::ensure!(
            args.precision == Precision::F32,
            "bench --profile times float32 layers; drop --precision {}",
            args.precision
        );
        // The one workload asked for, or VGG-16 inference at batch 8.
        let all = workloads(&args);
        return profile(&all[if args.arch.is_none() { 1 } else { 0 }]);
    }
    if let Some(spec) = &args.one {
        let row = run_one(&serde_json::from_str(spec)?)?;
        say!("{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    let workloads = workloads(&args);
    for w in &workloads {
        config_of(w)?; // every workload is checked before the first child starts
    }
    // A device that is not there is refused here, before the first child starts.
    args.device.open()?;
    let exe = std::env::current_exe()?;
    let (_, peak_text) = peak_flops();
    if !args.json {
        say!("device: {}", args.device.device);
        say!("CPU peak: {peak_text}");
        say!(
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
            .env("VGG_GENERIC_KERNELS", if args.generic { "1" } else { "0" })
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
            say!(
                "{:<10} {:<9} {:>5} {:<13} {:>10.1} {:>9.2} {:>9.1} {:>7} {:>7.0} MB",
                variant,
                row.mode,
                row.batch,
                format!("{}x{}x{}", row.input[0], row.input[1], row.input[2]),
                row.median_ms,
                row.images_per_s,
                row.gflops,
                row.peak_fraction
                    .map_or("-".to_string(), |p| format!("{:.1}%", 100.0 * p)),
                row.peak_rss_bytes as f64 / 1e6
            );
        }
        rows.push(row);
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        say!(
            "* compact head: pool 1x1, hidden 512, 10 classes. Training GFLOP/s count 3 passes (6 FLOP per MAC)."
        );
    }
    Ok(())
}
