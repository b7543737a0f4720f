//! `vgg eval`: top-1 / top-5 error on a dataset by the paper's test protocols (Section 3.2),
//! printed like its Tables 3-5.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use vgg::eval::{Method, average_probs, hits};

use super::weights::{WeightArgs, load_all};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Dataset (image folder, IDX, CIFAR-10; its test split where it has one), or `demo`.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// Methods, comma-separated: center, dense, multicrop, dense+multicrop.
    #[arg(long, default_value = "center")]
    pub method: String,
    /// Test scales Q (shorter side), comma-separated; several are averaged (multi-scale).
    /// Default: the scale the weights were trained at.
    #[arg(long, value_name = "Q,...")]
    pub scales: Option<String>,
    /// Evaluate only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print a JSON list of rows instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    method: String,
    scales: Vec<usize>,
    models: usize,
    images: usize,
    top1_err: f64,
    top5_err: f64,
    top1_acc: f64,
    top5_acc: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = load_all(&args.weights)?;
    let default_scale = loaded[0].default_scale;
    let classes = loaded[0].classes.clone();
    let models: Vec<_> = loaded.into_iter().map(|l| l.classifier).collect();
    let data = if args.data.as_os_str() == "demo" {
        vgg::data::demo::load("test")?
    } else {
        vgg::data::open(&args.data, "test")?
    };
    data.check(classes.len())?;
    let scales: Vec<usize> = match &args.scales {
        Some(s) => s
            .split(',')
            .map(|q| q.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("--scales {s}: expected numbers like 256,384,512"))?,
        None => vec![default_scale],
    };
    let methods: Vec<Method> = args
        .method
        .split(',')
        .map(|m| {
            Method::parse(m).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown method `{m}`; use center, dense, multicrop or dense+multicrop"
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let n = args.limit.unwrap_or(data.len()).min(data.len());
    let mut rows = Vec::new();
    for method in methods {
        let bar = ProgressBar::new(n as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_prefix(method.name());
        if args.json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let (mut t1, mut t5) = (0usize, 0usize);
        for i in 0..n {
            let probs = average_probs(&models, &data.image(i)?, method, &scales)?;
            let (a, b) = hits(&probs, data.labels[i]);
            t1 += a as usize;
            t5 += b as usize;
            bar.inc(1);
            bar.set_message(format!(
                "top-1 err {:.2}%",
                100.0 * (1.0 - t1 as f64 / (i + 1) as f64)
            ));
        }
        bar.finish_and_clear();
        let d = n.max(1) as f64;
        rows.push(Row {
            method: method.name().into(),
            scales: scales.clone(),
            models: models.len(),
            images: n,
            top1_err: 1.0 - t1 as f64 / d,
            top5_err: 1.0 - t5 as f64 / d,
            top1_acc: t1 as f64 / d,
            top5_acc: t5 as f64 / d,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} images), {} model(s)",
        args.weights
            .weights
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        data.name,
        n,
        models.len()
    );
    println!(
        "{:<18} {:<16} {:>12} {:>12}",
        "method", "test scale Q", "top-1 err %", "top-5 err %"
    );
    for r in &rows {
        let q = r
            .scales
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<18} {:<16} {:>12.2} {:>12.2}",
            r.method,
            q,
            100.0 * r.top1_err,
            100.0 * r.top5_err
        );
    }
    Ok(())
}
