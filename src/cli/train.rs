//! `vgg train`: the paper's recipe (Section 3.1) on real data, with a progress bar, a log, a
//! plot and resumable checkpoints.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::ArgMatches;
use clap::parser::ValueSource;
use indicatif::{ProgressBar, ProgressStyle};
use vgg::InitScheme;
use vgg::data::Dataset;
use vgg::data::source::{DataSpec, Sets, Source, Validation};
use vgg::nn::Precision;
use vgg::train::{
    EpochRecord, Observer, Progress, Recipe, RunFolder, RunSpec, RunState, SgdSettings, Start,
    TrainConfig, Trainer,
};

use super::arch_args::{ArchArgs, positive};
use super::ranks::Ranks;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training data: a folder of class folders (JPEG/PNG), MNIST/Fashion-MNIST IDX files (or
    /// their folder), CIFAR-10 .bin batches (or their folder). Default: the embedded demo subset
    /// of Fashion-MNIST (5,000 images).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Validation data in the same formats; default: a held-out --val-fraction of the training data.
    #[arg(long, value_name = "PATH")]
    pub val: Option<PathBuf>,
    /// Share of the training data held out for validation when --val is not given.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Architecture (vgg11 ... vgg19_bn, A ... E).
    #[arg(long, default_value = "vgg11_bn")]
    pub arch: String,
    #[command(flatten)]
    pub net: ArchArgs,
    /// Epochs at most (the schedule may stop earlier). With --resume: a new, larger total.
    #[arg(long, default_value_t = paper().epochs, value_parser = positive)]
    pub epochs: usize,
    /// Images per SGD step (the paper's 256), reached by gradient accumulation.
    #[arg(long, default_value_t = paper().batch, value_parser = positive)]
    pub batch: usize,
    /// Images per forward/backward pass; --batch must be a multiple of it. Default: the largest
    /// divisor of --batch up to 64 (64 for the paper's 256).
    #[arg(long, value_parser = positive)]
    pub micro_batch: Option<usize>,
    /// Initial learning rate.
    #[arg(long, default_value_t = paper().lr)]
    pub lr: f64,
    #[arg(long, default_value_t = paper().sgd.momentum)]
    pub momentum: f64,
    /// L2 penalty.
    #[arg(long, default_value_t = paper().sgd.weight_decay)]
    pub weight_decay: f64,
    /// The learning rate is multiplied by this when validation accuracy stops improving.
    #[arg(long, default_value_t = paper().lr_factor)]
    pub lr_factor: f64,
    /// Epochs without improvement before a reduction.
    #[arg(long, default_value_t = paper().patience)]
    pub patience: usize,
    /// Reductions in all (the paper's 3); a plateau after the last one ends the run.
    #[arg(long, default_value_t = paper().max_reductions)]
    pub max_reductions: usize,
    /// Weight initialisation: glorot (which the authors note trains without pre-training),
    /// paper (N(0, 0.01), with which the paper needed net A to start its deeper nets), or
    /// kaiming (torchvision's).
    #[arg(long, value_enum, default_value_t = Init::Glorot)]
    pub init: Init,
    /// Take the first four conv layers and the three FC layers from this trained net
    /// (.safetensors/.pth in torchvision's layout, e.g. a run's best.safetensors), as the paper
    /// initialised its deeper nets from net A.
    #[arg(long, value_name = "CHECKPOINT", conflicts_with = "pretrained")]
    pub init_from: Option<PathBuf>,
    /// Fine-tune pretrained weights: a run folder, a run's checkpoint, or a weight file
    /// (.pth/.safetensors, its network given by --arch and the network flags, its preprocessing
    /// by --preset). The run keeps their network and preprocessing; every tensor that fits is
    /// loaded and the last layer is new, sized by this data's classes.
    #[arg(long, value_name = "RUN_DIR|FILE")]
    pub pretrained: Option<PathBuf>,
    /// Freeze every layer before this one (a convolution such as conv5_1, an FC layer such as
    /// fc7, or `features`: every convolution); only what follows trains, and frozen BatchNorm
    /// layers keep their running statistics.
    #[arg(long, value_name = "LAYER", requires = "pretrained")]
    pub freeze: Option<String>,
    /// The loaded layers train at --lr times this (0.1 is common; 0 keeps them as they are).
    #[arg(long, value_name = "F", requires = "pretrained")]
    pub lr_pretrained: Option<f64>,
    /// How --pretrained weights are read (a file's preprocessing, its head, the cache).
    #[command(flatten)]
    pub source: super::weights::SourceArgs,
    /// Side of the square training crop. Default: 32 for images up to 64 pixels, else 224.
    #[arg(long)]
    pub crop: Option<usize>,
    /// Training scale S: one value, or MIN,MAX for scale jittering (the paper's 256,512).
    /// Default: 32,36 for small images, 256 otherwise.
    #[arg(long, value_name = "S|MIN,MAX")]
    pub scale: Option<String>,
    /// No random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    /// Standard deviation of the PCA colour shift (Krizhevsky's 0.1; 0 turns it off).
    #[arg(long, default_value_t = paper().pca_std)]
    pub pca_std: f32,
    /// Mixed precision: the dtype the convolutions and FC layers compute in while training
    /// (f32, f16 or bf16). Weights, BatchNorm and the loss stay float32; f16 scales the loss
    /// (skipped steps are reported). It pays on GPUs with fast half-precision units; flex runs
    /// it on burn's generic operations, slower than its own f32 kernels. Validation is float32.
    #[arg(long, default_value = "f32", value_parser = Precision::from_str)]
    pub precision: Precision,
    #[arg(long, default_value_t = paper().seed)]
    pub seed: u64,
    /// Threads preparing batches.
    #[arg(long, default_value_t = paper().workers, value_parser = super::arch_args::threads)]
    pub workers: usize,
    /// Skip unreadable images (and count them) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Run folder (config, log, plot, checkpoints). Default: runs/ARCH-UNIXTIME.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Overwrite the run folder if it exists.
    #[arg(long)]
    pub force: bool,
    /// Continue the run in this folder from its last checkpoint: its config.json decides the
    /// data, split, seed, network and schedule (flags that contradict it are refused); only
    /// --epochs may raise the total, and --workers, --threads, --device and --quiet apply
    /// (checkpoints move between devices).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out", "force"])]
    pub resume: Option<PathBuf>,
    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
    /// Leave the test split unscored when training ends (by default the best checkpoint's
    /// centre crop is scored then, at the end of every call, resumes included). For choosing how
    /// to evaluate on the validation images first (`vgg eval -w RUN --split val --method ...`)
    /// and then scoring the test set once, with `vgg eval`, by the method chosen. The run keeps
    /// it: a resumed run does not score the test split either.
    #[arg(long)]
    pub no_test: bool,
    /// Compute threads. Default: this machine's cores, shared between the MPI ranks on it.
    #[arg(long, value_parser = super::arch_args::threads)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

/// The recipe's defaults, which `--help` shows: [`Recipe::paper`] is the one place they are set.
fn paper() -> Recipe {
    Recipe::paper(vgg::VggConfig::from_layers("default", Vec::new(), false))
}

/// Weight initialisation (`--init`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    Paper,
    Glorot,
    Kaiming,
}

impl From<Init> for InitScheme {
    fn from(init: Init) -> Self {
        match init {
            Init::Paper => InitScheme::Paper,
            Init::Glorot => InitScheme::Glorot,
            Init::Kaiming => InitScheme::Kaiming,
        }
    }
}

/// Where a new run's images come from: `--data` (or the demo), `--val` or `--val-fraction`.
fn data_spec(args: &Args) -> DataSpec {
    let source = |p: &Option<PathBuf>| match p {
        None => Source::Demo,
        Some(p) if p.as_os_str() == "demo" => Source::Demo,
        Some(p) => Source::path(p),
    };
    DataSpec {
        train: source(&args.data),
        validation: match &args.val {
            Some(_) => Validation::Set(source(&args.val)),
            None => Validation::HeldOut {
                fraction: args.val_fraction,
            },
        },
    }
}

/// The flags that apply to a resumed run, by clap id; every other flag defines the run, which
/// its config.json decides instead (a flag added later is refused on resume until it is put
/// here).
const APPLY_ON_RESUME: [&str; 8] = [
    "resume",
    "epochs",
    "workers",
    "threads",
    "device",
    "quiet",
    "no_test",
    "cache_dir",
];

/// Refuses every run-defining flag typed with `--resume` whose value differs from the run's
/// (typing the run's own value is harmless).
fn check_resume_flags(
    args: &Args,
    matches: &ArgMatches,
    config: &TrainConfig,
) -> anyhow::Result<()> {
    use clap::Args as _;
    let typed = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let spec = config.data.clone();
    let given = data_spec(args);
    let command = Args::augment_args(clap::Command::new("train"));
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if APPLY_ON_RESUME.contains(&id) || !typed(id) {
            continue;
        }
        let same = match id {
            "data" => spec.as_ref().is_some_and(|s| s.train == given.train),
            "val" | "val_fraction" => spec
                .as_ref()
                .is_some_and(|s| s.validation == given.validation),
            "seed" => args.seed == config.seed,
            "lr" => args.lr == config.lr,
            "batch" => args.batch == config.batch,
            "micro_batch" => args.micro_batch == Some(config.micro_batch),
            "precision" => args.precision == config.precision,
            _ => false,
        };
        anyhow::ensure!(
            same,
            "--{} cannot change a resumed run: {}/config.json decides its data, split, seed, network and schedule; start a new run (--out) to change it",
            arg.get_long().unwrap_or(id),
            args.resume
                .as_deref()
                .unwrap_or(std::path::Path::new("."))
                .display()
        );
    }
    Ok(())
}

fn parse_scale(text: &str) -> anyhow::Result<(usize, usize)> {
    let parts: Vec<usize> = text
        .split(',')
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--scale {text}: expected S or MIN,MAX"))?;
    match parts[..] {
        [s] => Ok((s, s)),
        [a, b] if a <= b => Ok((a, b)),
        _ => anyhow::bail!("--scale {text}: expected S or MIN,MAX with MIN <= MAX"),
    }
}

/// What a fine-tuned run took from its pretrained weights, in a line.
fn fine_tune_note(p: &vgg::train::config::Pretrained) -> String {
    let tensors = |keys: &[String]| {
        let mut layers: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.rsplit_once('.').map(|(l, _)| l))
            .collect();
        layers.dedup();
        layers.join(", ")
    };
    format!(
        "fine-tuning {}: loaded {} tensors; new: {}{}{}",
        p.source,
        p.loaded.len(),
        tensors(&p.fresh),
        p.freeze
            .as_ref()
            .map_or(String::new(), |f| format!("; frozen before {f}")),
        if p.lr_scale != 1.0 {
            format!("; loaded layers at {} x the learning rate", p.lr_scale)
        } else {
            String::new()
        }
    )
}

/// The run's recipe from the flags.
fn recipe(args: &Args) -> anyhow::Result<Recipe> {
    let mut r = Recipe::paper(args.net.base(&args.arch)?);
    r.overrides = args.net.overrides();
    r.crop = args.crop;
    r.scale = args.scale.as_deref().map(parse_scale).transpose()?;
    r.flip = !args.no_flip;
    r.pca_std = args.pca_std;
    r.init = args.init.into();
    r.epochs = args.epochs;
    r.batch = args.batch;
    r.micro_batch = args.micro_batch.unwrap_or_else(|| {
        (1..=args.batch.min(64))
            .rev()
            .find(|m| args.batch.is_multiple_of(*m))
            .unwrap_or(1)
    });
    r.lr = args.lr;
    r.sgd = SgdSettings {
        momentum: args.momentum,
        weight_decay: args.weight_decay,
    };
    r.lr_factor = args.lr_factor;
    r.patience = args.patience;
    r.max_reductions = args.max_reductions;
    r.seed = args.seed;
    r.workers = args.workers;
    r.skip_bad = args.skip_bad;
    r.precision = args.precision;
    Ok(r)
}

/// The progress bar, the per-epoch line and the plot.
struct Console {
    bar: Option<ProgressBar>,
    epoch: usize,
}

impl Console {
    fn bar(&mut self, p: &Progress) -> &ProgressBar {
        if self.epoch != p.epoch || self.bar.is_none() {
            if let Some(old) = self.bar.take() {
                old.finish_and_clear();
            }
            let bar = ProgressBar::new(p.total_images as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{}/{}", p.epoch, p.epochs));
            bar.enable_steady_tick(Duration::from_millis(500));
            self.bar = Some(bar);
            self.epoch = p.epoch;
        }
        self.bar.as_ref().expect("just set")
    }
}

impl Observer for Console {
    fn on_progress(&mut self, p: &Progress) {
        let bar = self.bar(p);
        bar.set_position(p.images as u64);
        bar.set_message(format!(
            "loss {:.4} top-1 {:5.1}% {:.0} img/s lr {:.0e}",
            p.loss,
            100.0 * p.top1,
            p.images_per_s,
            p.lr
        ));
    }

    fn on_validation(&mut self, _epoch: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message("validating ...");
        }
    }

    fn on_epoch(&mut self, r: &EpochRecord, state: &RunState, run_dir: &std::path::Path) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let ranks = if r.ranks > 1 {
            format!(
                " on {} ranks, {:.1} s in all-reduce",
                r.ranks, r.comm_seconds
            )
        } else {
            String::new()
        };
        note!(
            "epoch {:>3}  lr {:.0e}  train loss {:.4} top-1 err {:5.2}%  |  val loss {:.4} top-1 err {:5.2}% top-5 err {:5.2}%  |  {:.0} s, {:.0} img/s{ranks}",
            r.epoch,
            r.lr,
            r.train_loss,
            100.0 * r.train_top1_err,
            r.val_loss,
            100.0 * r.val_top1_err,
            100.0 * r.val_top5_err,
            r.seconds,
            r.images_per_s
        );
        if let Err(e) = super::plot::write(&state.history, &run_dir.join("curves.png")) {
            note!("warning: could not draw curves.png: {e}");
        }
    }

    fn on_note(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => note!("{message}"),
        }
    }
}

/// Trains in this process, or as one rank of `mpirun -np N vgg train ...` (feature `mpi`).
pub fn run(args: Args, matches: &ArgMatches) -> anyhow::Result<()> {
    let ranks = Ranks::start()?;
    let threads = ranks.threads(args.threads);
    // Before any tensor work: flex's kernels run on rayon's global pool (and on lanes that
    // share out its threads, `vgg::train::lanes`).
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("could not start the compute threads")?;
    train(args, matches, &ranks).map_err(|e| ranks.fail(e))
}

/// The weights a new run starts from: `--pretrained` (fine-tuning), `--init-from` (the
/// paper's net A, its network told by its keys where the file does not carry it), or none.
fn start(args: &Args, leader: bool) -> anyhow::Result<Start> {
    let mut bar = super::weights::download_bar();
    if let Some(source) = &args.pretrained {
        let weights = vgg::Weights::open(
            source,
            || args.net.config(&args.arch),
            &args.source.options(),
            &mut bar,
        )?;
        if leader {
            super::weights::note_dropped(&weights);
        }
        return Ok(Start::FineTune {
            weights,
            freeze: args.freeze.clone(),
            lr_scale: args.lr_pretrained.unwrap_or(1.0),
        });
    }
    match &args.init_from {
        Some(path) => Ok(Start::FromNetA(vgg::Weights::open(
            path,
            || vgg::preset::open::infer_config(path),
            &Default::default(),
            &mut bar,
        )?)),
        None => Ok(Start::Fresh),
    }
}

/// A resumed run's trainer: its own config's data, checked against the flags typed.
fn resume(
    args: &Args,
    matches: &ArgMatches,
    dir: &std::path::Path,
    ranks: &Ranks,
    device: &burn::tensor::Device,
) -> anyhow::Result<(Trainer, Option<Dataset>)> {
    let config = RunFolder::open(dir)?.config()?;
    check_resume_flags(args, matches, &config)?;
    let spec = match &config.data {
        Some(spec) => spec.clone(),
        None => {
            // Runs written before the data was recorded: the flags say where it is.
            if ranks.leader() {
                note!(
                    "note: {} does not record its data; using --data/--val as given",
                    dir.display()
                );
            }
            data_spec(args)
        }
    };
    let Sets { train, val, test } = spec.open(config.seed)?;
    let mut trainer = Trainer::resume(dir, train, val, device, ranks.comm())?;
    if matches.value_source("epochs") == Some(ValueSource::CommandLine) {
        trainer.set_epochs(args.epochs)?;
    }
    Ok((trainer, test))
}

fn train(args: Args, matches: &ArgMatches, ranks: &Ranks) -> anyhow::Result<()> {
    let plain = ranks.device(args.device.device)?;
    let device = plain.clone().autodiff();
    let leader = ranks.leader();
    let (mut trainer, test) = match &args.resume {
        Some(dir) => {
            if leader {
                note!("resuming {}", dir.display());
            }
            resume(&args, matches, dir, ranks, &device)?
        }
        None => {
            // The run records these paths in its config.json, which is UTF-8 text.
            for (flag, path) in [
                ("--data", &args.data),
                ("--val", &args.val),
                ("--init-from", &args.init_from),
            ] {
                if let Some(p) = path.as_ref().filter(|p| p.to_str().is_none()) {
                    anyhow::bail!(
                        "{flag} {}: the path is not UTF-8, and a run records it in its config.json (UTF-8 text); rename it or link to it under a UTF-8 name",
                        p.display()
                    );
                }
            }
            let spec = data_spec(&args);
            let Sets { train, val, test } = spec.open(args.seed)?;
            if let Some(test) = &test {
                // Checked now, not after the training it would end.
                test.check_classes(&train.classes, "the training set")?;
            }
            let start = start(&args, leader)?;
            let mut config = recipe(&args)?.config(spec, &train, &val, &start, || {
                if leader {
                    note!("measuring the training set's mean and colour covariance ...");
                }
            })?;
            config.no_test = args.no_test;
            let out = args.out.clone().unwrap_or_else(|| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PathBuf::from(format!("runs/{}-{secs}", config.model.name))
            });
            let spec = RunSpec {
                config,
                start,
                train,
                val,
                out,
                force: args.force,
            };
            let trainer = Trainer::start(spec, &device, ranks.comm())?;
            if let (true, Some(p)) = (leader, &trainer.config.pretrained) {
                note!("{}", fine_tune_note(p));
                let model = &trainer.config.model;
                // ImageNet's head on small images: almost all of the network, to little use.
                let compact = model.clone().with_pool_size(1).with_hidden(512);
                if model.pool_size > 1
                    && trainer.config.transform.crop <= 64
                    && compact.num_params() < model.num_params()
                {
                    note!(
                        "note: the head is ImageNet's ({}x{} map -> {} -> {}: {} of the {} parameters) on {}x{} crops; --pool-size 1 --hidden 512 (the compact head) makes the network {} parameters",
                        model.pool_size,
                        model.pool_size,
                        model.hidden,
                        model.hidden,
                        super::summary::thousands(
                            model
                                .state_keys()
                                .iter()
                                .filter(|(k, _)| vgg::arch::names::is_head(k))
                                .map(|(_, shape)| shape.iter().product::<usize>() as u64)
                                .sum()
                        ),
                        super::summary::thousands(model.num_params() as u64),
                        trainer.config.transform.crop,
                        trainer.config.transform.crop,
                        super::summary::thousands(compact.num_params() as u64)
                    );
                }
            }
            (trainer, test)
        }
    };
    if !leader {
        return trainer.run(&mut Silent).map_err(Into::into);
    }
    let c = &trainer.config;
    note!(
        "training {} ({} parameters) on {} ({} classes), validating on {}; {} epochs, batch {} (micro {}), lr {:e}{}; run folder {}",
        c.model.name,
        super::summary::thousands(c.model.num_params() as u64),
        c.train_data,
        c.model.num_classes,
        c.val_data,
        c.epochs,
        c.batch,
        c.micro_batch,
        c.lr,
        match c.precision {
            Precision::F32 => String::new(),
            Precision::F16 => ", float16 mixed precision with loss scaling".into(),
            Precision::Bf16 => ", bfloat16 mixed precision".into(),
        },
        trainer.run_dir().display()
    );
    if args.device.device != vgg::device::DeviceSpec::Flex {
        note!(
            "computing on {} (burn's operations; our CPU kernels are flex's)",
            args.device.device
        );
    }
    if trainer.lanes() > 1 {
        note!(
            "{} micro-batches at a time side by side, the threads shared among them",
            trainer.lanes()
        );
    }
    if ranks.size() > 1 {
        let n = ranks.size();
        note!(
            "data-parallel on {n} MPI ranks: rank r computes micro-batches r, r+{n}, ... of each batch; gradients all-reduced"
        );
    }
    let console = Console {
        bar: None,
        epoch: 0,
    };
    let mut observer: Box<dyn Observer> = if args.quiet {
        Box::new(QuietConsole(console))
    } else {
        Box::new(console)
    };
    trainer.run(observer.as_mut())?;
    let Some(best) = trainer.state.best_val_accuracy else {
        anyhow::bail!("{}: the run trained no epoch", trainer.run_dir().display());
    };
    note!(
        "best validation top-1 accuracy {:.2}%; checkpoints, log.csv and curves.png in {}",
        100.0 * best,
        trainer.run_dir().display()
    );
    match (test, args.no_test || trainer.config.no_test) {
        (Some(_), true) => {
            note!("test set not scored (--no-test): score it once with `vgg eval`");
            Ok(())
        }
        (Some(test), false) => score_test(&trainer, &plain, test),
        (None, _) => Ok(()),
    }
}

/// The end of a run: the best checkpoint's centre-crop score on the test split.
fn score_test(
    trainer: &Trainer,
    plain: &burn::tensor::Device,
    test: Dataset,
) -> anyhow::Result<()> {
    let result = trainer.test_score(test, plain)?;
    note!(
        "test set ({} images), best checkpoint: top-1 accuracy {:.2}% (error {:.2}%), top-5 error {:.2}%",
        result.images,
        100.0 * result.top1,
        100.0 * (1.0 - result.top1),
        100.0 * (1.0 - result.top5)
    );
    Ok(())
}

/// Ranks other than 0 show nothing.
struct Silent;

impl Observer for Silent {}

/// `--quiet`: the epoch lines, no bar.
struct QuietConsole(Console);

impl Observer for QuietConsole {
    fn on_epoch(&mut self, r: &EpochRecord, state: &RunState, dir: &std::path::Path) {
        self.0.on_epoch(r, state, dir)
    }
    fn on_note(&mut self, message: &str) {
        self.0.on_note(message)
    }
}
