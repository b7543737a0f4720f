//! `vgg eval`: top-1 / top-5 error on a dataset by the paper's test protocols (Section 3.2),
//! printed like its Tables 3-5.

use std::path::{Path, PathBuf};
use vgg::train::RunFolder;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use vgg::data::Split;
use vgg::eval::Method;
use vgg::eval::classes::map_classes;
use vgg::eval::dataset::{Protocol, Tick, score};

use super::arch_args::positive;
use super::weights::{WeightArgs, load_all};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Dataset (image folder, IDX, CIFAR-10; its test split where it has one), or `demo`.
    /// Not with --split val, which takes the run's own images.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Which images: `test` (those of --data) or `val`, the validation images of the run that
    /// -w names (its held-out share of the training data, drawn again from its config.json's data
    /// and seed, or its --val set): choose the method and scales on these, then score the test
    /// set once.
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    pub split: EvalSplit,
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
    #[arg(long, value_parser = positive)]
    pub limit: Option<usize>,
    /// Skip unreadable or unusable images (and count them) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Print a JSON list of rows instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `--split`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalSplit {
    Test,
    Val,
}

#[derive(Serialize)]
struct Row {
    /// `test` (the images of --data) or `val` (the run's validation images).
    split: &'static str,
    method: String,
    scales: Vec<usize>,
    models: usize,
    images: usize,
    skipped: usize,
    top1_err: f64,
    top5_err: f64,
    top1_acc: f64,
    top5_acc: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let data = match (args.split, &args.data) {
        (EvalSplit::Val, None) => run_validation(&args.weights.weights)?,
        (EvalSplit::Val, Some(_)) => anyhow::bail!(
            "--split val evaluates the validation images of the run that -w names; drop --data"
        ),
        (EvalSplit::Test, None) => anyhow::bail!(
            "give --data (the dataset to evaluate), or --split val for the run's own validation images"
        ),
        (EvalSplit::Test, Some(d)) if d.as_os_str() == "demo" => {
            vgg::data::demo::load(Split::Test)?
        }
        (EvalSplit::Test, Some(d)) => vgg::data::open(d, Split::Test)?,
    };
    let models = load_all(&args.weights)?;
    let default_scale = models[0].preset.scale;
    let classes = models[0].preset.classes.clone();
    data.check(data.classes.len().max(1))?;
    // Folders are matched to outputs by name where both name their classes.
    let map = map_classes(&data.name, &data.classes, &models[0].preset)?;
    if !map.by_name && data.classes.len() != classes.len() {
        note!(
            "note: the weights name no classes: {}'s {} classes are taken as outputs 0-{} by sorted position; give --labels to match them by name",
            data.name,
            data.classes.len(),
            data.classes.len().saturating_sub(1)
        );
    }
    let scales: Vec<usize> = match &args.scales {
        Some(s) => s
            .split(',')
            .map(positive)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--scales {s}: {e}; expected sides like 256,384,512"))?,
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
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(
        methods
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(","),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let protocol = Protocol {
        methods,
        scales: scales.clone(),
        limit: args.limit,
        skip_bad: args.skip_bad,
    };
    let scores = score(&models, &data, &map, &protocol, &mut |tick| {
        match tick {
            Tick::Scored(s) => bar.set_message(format!(
                "top-1 err {:.2}% ({})",
                100.0 * s.top1_err(),
                s.method.name()
            )),
            Tick::Skipped(e) => bar.println(format!("skipped: {e}")),
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let rows: Vec<Row> = scores?
        .iter()
        .map(|s| Row {
            split: match args.split {
                EvalSplit::Test => "test",
                EvalSplit::Val => "val",
            },
            method: s.method.name().into(),
            scales: scales.clone(),
            models: models.len(),
            images: s.images,
            skipped: s.skipped,
            top1_err: s.top1_err(),
            top5_err: s.top5_err(),
            top1_acc: s.top1 as f64 / s.images as f64,
            top5_acc: s.top5 as f64 / s.images as f64,
        })
        .collect();
    if args.json {
        return Ok(super::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&rows)?
        ))?);
    }
    let skipped = rows.iter().map(|r| r.skipped).max().unwrap_or(0);
    let mut text = format!(
        "{} on {} ({} images{}), {} model(s)\n",
        args.weights
            .weights
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        data.name,
        n - skipped,
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        },
        models.len()
    );
    text.push_str(&format!(
        "{:<18} {:<16} {:>12} {:>12}\n",
        "method", "test scale Q", "top-1 err %", "top-5 err %"
    ));
    for r in &rows {
        let q = r
            .scales
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",");
        text.push_str(&format!(
            "{:<18} {:<16} {:>12.2} {:>12.2}\n",
            r.method,
            q,
            100.0 * r.top1_err,
            100.0 * r.top5_err
        ));
    }
    Ok(super::out(&text)?)
}

/// The validation images of the runs in `weights`, which must all be runs that validated on
/// the same images (an ensemble of runs with different splits has no common held-out set).
fn run_validation(weights: &[PathBuf]) -> anyhow::Result<vgg::data::Dataset> {
    let run = |w: &Path| {
        vgg::preset::open::run_of(w).map(|(dir, _)| dir).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: --split val needs a run folder or a run's checkpoint (a weight file has no validation images); give --data for a test set",
                w.display()
            )
        })
    };
    let first = RunFolder::open(&run(&weights[0])?)?;
    let config = first.config()?;
    for w in &weights[1..] {
        let other = RunFolder::open(&run(w)?)?.config()?;
        // A held-out split is drawn with the seed; a separate --val set is the same whatever it.
        let held_out = |c: &vgg::train::TrainConfig| {
            c.data.as_ref().is_some_and(|d| {
                matches!(d.validation, vgg::data::source::Validation::HeldOut { .. })
            })
        };
        anyhow::ensure!(
            other.data == config.data && (!held_out(&config) || other.seed == config.seed),
            "{} and {} validated on different images (their data or seed differ): --split val cannot score them as one ensemble",
            weights[0].display(),
            w.display()
        );
    }
    Ok(first.validation_set()?)
}
