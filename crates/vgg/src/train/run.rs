//! A training run: epochs of SGD over a dataset, validation after each, the plateau schedule,
//! and checkpoints a run can be resumed from exactly.
//!
//! The run folder holds `config.json` (the whole run configuration), `state.json` (epoch,
//! schedule, history, and the names of the current checkpoint files: written last, so it
//! always points at a complete checkpoint), `epoch-N.bpk` and `epoch-N-optim.bpk` (weights and
//! momentum), `best.bpk` and `best.safetensors` (best validation accuracy, the latter in
//! torchvision's layout), and `log.csv` / `log.jsonl` (one row per epoch).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::folder::{self, CONFIG, STATE, checkpoint_names};
use super::plateau::{Decision, Plateau};
use super::step::{Sgd, SgdSettings, cross_entropy};
use crate::arch::VggConfig;
use crate::data::loader::{Loader, Prepare, epoch_order};
use crate::data::source::DataSpec;
use crate::data::transform::Transform;
use crate::data::{Dataset, Rng};
use crate::dist::{Collective, GradLayout, Single, owner, running_weight};
use crate::error::VggError;
use crate::fsio::{sha256_file, write_atomic};
use crate::metrics::topk_hits;
use crate::model::{BN_MOMENTUM, BatchStats, InitScheme, Vgg};
use crate::weights::{Values, check_finite, read_state_dict};

/// Everything that defines a run; written to `config.json`. Defaults are the paper's (Section 3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: VggConfig,
    pub init: InitScheme,
    /// The paper's trick: take the first four conv layers and the three FC layers from a
    /// trained net (A), the rest random.
    pub init_from: Option<PathBuf>,
    pub epochs: usize,
    /// Images per SGD step (256 in the paper).
    pub batch: usize,
    /// Images per forward/backward; `batch` is reached by accumulating gradients.
    pub micro_batch: usize,
    pub lr: f64,
    pub sgd: SgdSettings,
    /// Factor of each learning-rate reduction (0.1) and epochs without improvement before one.
    pub lr_factor: f64,
    pub patience: usize,
    /// Reductions in all (3 in the paper); a plateau after the last one ends the run.
    pub max_reductions: usize,
    pub seed: u64,
    /// Threads preparing batches.
    pub workers: usize,
    pub skip_bad: bool,
    pub transform: Transform,
    /// Where the data came from, for the record.
    pub train_data: String,
    pub val_data: String,
    pub classes: Vec<String>,
    /// Where the images are read from, so that a resumed run reads the same sets (`None` in
    /// runs written before it was recorded).
    #[serde(default)]
    pub data: Option<DataSpec>,
    /// Images in the training and validation sets when the run started (0: not recorded);
    /// a resumed run refuses data of another size.
    #[serde(default)]
    pub train_images: usize,
    #[serde(default)]
    pub val_images: usize,
}

impl TrainConfig {
    /// Checks every number before anything is allocated or written: a NaN learning rate must
    /// not train for an epoch and report an accuracy.
    pub fn validate(&self) -> Result<(), VggError> {
        self.model.validate()?;
        let bad = |what: &str, reason: String| Err(VggError::bad_config(what, reason));
        let finite_in = |what: &str, v: f64, lo: f64, hi: f64, text: &str| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                bad(what, format!("is {v}; it must be {text}"))
            }
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("is {}; it must be a positive number", self.lr));
        }
        finite_in("momentum", self.sgd.momentum, 0.0, 0.999_999, "in [0, 1)")?;
        finite_in("weight_decay", self.sgd.weight_decay, 0.0, 1.0, "in [0, 1]")?;
        finite_in("lr_factor", self.lr_factor, 1e-9, 1.0, "in (0, 1]")?;
        finite_in("pca_std", self.transform.pca_std as f64, 0.0, 10.0, "in [0, 10]")?;
        if self.epochs == 0 {
            return bad("epochs", "is 0; a run trains at least one epoch".into());
        }
        if self.batch == 0 || self.micro_batch == 0 || self.batch % self.micro_batch != 0 {
            return bad(
                "batch",
                format!(
                    "{} must be a positive multiple of the micro-batch {}",
                    self.batch, self.micro_batch
                ),
            );
        }
        if self.patience == 0 {
            return bad("patience", "is 0; it must be at least one epoch".into());
        }
        let t = &self.transform;
        if t.channels != self.model.in_channels {
            return bad(
                "transform.channels",
                format!("{} differs from the network's {}", t.channels, self.model.in_channels),
            );
        }
        if t.crop < self.model.min_input() {
            return bad(
                "crop",
                format!(
                    "{} is smaller than the {} pixels the network's {} pools need",
                    t.crop,
                    self.model.min_input(),
                    self.model.num_pools()
                ),
            );
        }
        if t.scale_min < t.crop || t.scale_max < t.scale_min || t.eval_scale < t.crop {
            return bad(
                "scale",
                format!(
                    "[{}, {}] (evaluation {}) must be at least the crop {} and in order",
                    t.scale_min, t.scale_max, t.eval_scale, t.crop
                ),
            );
        }
        if t.normalize.mean.is_empty()
            || t.normalize.std.is_empty()
            || t.normalize.mean.iter().chain(&t.normalize.std).any(|v| !v.is_finite())
            || t.normalize.std.iter().any(|&v| v == 0.0)
        {
            return bad("normalize", "needs finite means and non-zero standard deviations".into());
        }
        self.model.check_input(&[self.micro_batch, t.channels, t.crop, t.crop])
    }
}

/// One row of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1_err: f64,
    pub train_top5_err: f64,
    pub val_loss: f64,
    pub val_top1_err: f64,
    pub val_top5_err: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub skipped: usize,
    /// Processes that trained (data-parallel ranks).
    #[serde(default = "one")]
    pub ranks: usize,
    /// Seconds rank 0 spent in all-reduce during the epoch.
    #[serde(default)]
    pub comm_seconds: f64,
}

fn one() -> usize {
    1
}

/// Where the run stands; written to `state.json` after each epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs completed.
    pub epoch: usize,
    pub step: usize,
    pub schedule: Plateau,
    pub best_val_accuracy: Option<f64>,
    pub history: Vec<EpochRecord>,
    pub model_file: Option<String>,
    pub optim_file: Option<String>,
    pub finished: bool,
    /// SHA-256 of the checkpoint files, checked on resume: a file from another run or a
    /// damaged one is refused.
    #[serde(default)]
    pub model_sha256: Option<String>,
    #[serde(default)]
    pub optim_sha256: Option<String>,
}

/// Progress within an epoch, for a progress bar.
#[derive(Debug, Clone)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub images: usize,
    pub total_images: usize,
    pub loss: f64,
    pub top1: f64,
    pub images_per_s: f64,
    pub lr: f64,
}

/// What a caller sees of a run; the library draws nothing itself.
pub trait Observer {
    fn on_progress(&mut self, _p: &Progress) {}
    fn on_validation(&mut self, _epoch: usize) {}
    fn on_epoch(&mut self, _record: &EpochRecord, _state: &RunState, _run_dir: &Path) {}
    fn on_note(&mut self, _message: &str) {}
}

/// A training run in progress.
pub struct Trainer {
    pub config: TrainConfig,
    pub state: RunState,
    pub model: Vgg,
    sgd: Sgd,
    run_dir: PathBuf,
    train: Arc<Dataset>,
    val: Arc<Dataset>,
    device: Device,
    comm: Rc<dyn Collective>,
    layout: GradLayout,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> VggError + '_ {
    move |e| VggError::io(path, e)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), VggError> {
    write_atomic(
        path,
        serde_json::to_string_pretty(value)
            .expect("serialisable")
            .as_bytes(),
    )
}

/// A run file: at most 64 MiB (a state holds one row per epoch), read whole.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, VggError> {
    let size = std::fs::metadata(path).map_err(io(path))?.len();
    if size > 64 << 20 {
        return Err(VggError::run_file(path, format!("{size} bytes is too large for a run file")));
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text)
        .map_err(|e| VggError::run_file(path, format!("not a readable run file: {e}")))
}

/// The run's config, as written in `dir/config.json`, validated.
pub fn read_config(dir: &Path) -> Result<TrainConfig, VggError> {
    let config: TrainConfig = read_json(&dir.join(CONFIG))?;
    config
        .validate()
        .map_err(|e| VggError::run_file(dir.join(CONFIG), format!("holds a bad setting: {e}")))?;
    Ok(config)
}

/// The run's state, as written in `dir/state.json`, with checkpoint names checked to be this
/// run's own (`epoch-N.bpk` for its epoch N).
pub fn read_state(dir: &Path) -> Result<RunState, VggError> {
    let path = dir.join(STATE);
    let state: RunState = read_json(&path)?;
    let (model, optim) = checkpoint_names(state.epoch);
    let named = |f: &Option<String>, want: &str| f.as_deref().is_none_or(|f| f == want);
    if !named(&state.model_file, &model) || !named(&state.optim_file, &optim) {
        return Err(VggError::run_file(
            path,
            format!(
                "names checkpoint files {:?} / {:?}, not this run's {model} / {optim} for epoch {}",
                state.model_file, state.optim_file, state.epoch
            ),
        ));
    }
    Ok(state)
}

/// Refuses a dataset of another size than the run recorded (0 = not recorded).
fn check_size(data: &Dataset, recorded: usize, what: &str, dir: &Path) -> Result<(), VggError> {
    if recorded != 0 && data.len() != recorded {
        return Err(VggError::run_file(
            dir.join(CONFIG),
            format!(
                "the run's {what} set had {recorded} images; {} has {}: resume with the run's own data",
                data.name,
                data.len()
            ),
        ));
    }
    Ok(())
}

impl Trainer {
    /// Starts a new run in `run_dir`, which must not exist unless `force`.
    pub fn new(
        config: TrainConfig,
        train: Dataset,
        val: Dataset,
        run_dir: &Path,
        force: bool,
        device: &Device,
    ) -> Result<Self, VggError> {
        Self::new_distributed(config, train, val, run_dir, force, device, Rc::new(Single))
    }

    /// [`Trainer::new`] as one rank of `comm`: rank 0 alone creates the run folder and writes
    /// to it; every rank starts from rank 0's weights.
    pub fn new_distributed(
        config: TrainConfig,
        train: Dataset,
        val: Dataset,
        run_dir: &Path,
        force: bool,
        device: &Device,
        comm: Rc<dyn Collective>,
    ) -> Result<Self, VggError> {
        let mut config = config;
        config.validate()?;
        train.check(config.model.num_classes)?;
        val.check(config.model.num_classes)?;
        (config.train_images, config.val_images) = (train.len(), val.len());
        device.seed(config.seed);
        let mut model = Vgg::new(&config.model, config.init, device)?;
        if let Some(source) = &config.init_from {
            model = init_from(model, source, device)?;
        }
        // Every input is valid: only now is the folder touched.
        let writer = comm.rank() == 0;
        if writer {
            folder::prepare(run_dir, force)?;
            write_json(&run_dir.join(CONFIG), &config)?;
        }
        let model = broadcast_model(model, comm.as_ref(), device);
        let state = RunState {
            epoch: 0,
            step: 0,
            schedule: Plateau::new(
                config.lr,
                config.lr_factor,
                config.patience,
                config.max_reductions,
            ),
            best_val_accuracy: None,
            history: Vec::new(),
            model_file: None,
            optim_file: None,
            finished: false,
            model_sha256: None,
            optim_sha256: None,
        };
        let sgd = Sgd::new(config.sgd);
        Ok(Self::assemble(
            config, state, model, sgd, run_dir, train, val, device, comm,
        ))
    }

    /// Continues the run in `run_dir` from its last complete checkpoint.
    pub fn resume(
        run_dir: &Path,
        train: Dataset,
        val: Dataset,
        device: &Device,
    ) -> Result<Self, VggError> {
        Self::resume_distributed(run_dir, train, val, device, Rc::new(Single))
    }

    /// [`Trainer::resume`] as one rank of `comm`, whatever the number of ranks that wrote the
    /// checkpoint (it holds no per-rank state). Every rank reads `run_dir`: on several hosts it
    /// must be on a shared filesystem.
    pub fn resume_distributed(
        run_dir: &Path,
        train: Dataset,
        val: Dataset,
        device: &Device,
        comm: Rc<dyn Collective>,
    ) -> Result<Self, VggError> {
        let config = read_config(run_dir)?;
        let state = read_state(run_dir)?;
        train.check(config.model.num_classes)?;
        val.check(config.model.num_classes)?;
        check_size(&train, config.train_images, "training", run_dir)?;
        check_size(&val, config.val_images, "validation", run_dir)?;
        let (Some(model_file), Some(optim_file)) = (&state.model_file, &state.optim_file) else {
            return Err(VggError::run_file(
                run_dir.join(STATE),
                "the run has no checkpoint yet (it stopped in its first epoch); start it again",
            ));
        };
        let (model_path, optim_path) = (run_dir.join(model_file), run_dir.join(optim_file));
        for (path, want) in [(&model_path, &state.model_sha256), (&optim_path, &state.optim_sha256)] {
            if let Some(want) = want {
                let got = sha256_file(path)?;
                if &got != want {
                    return Err(VggError::run_file(
                        path,
                        format!("is not the checkpoint this run wrote (SHA-256 {got}, state.json records {want}): it was replaced or damaged"),
                    ));
                }
            }
        }
        if comm.rank() == 0 {
            folder::remove_temps(run_dir);
            // A run killed between its state and its logs: the logs follow the state again.
            write_logs(run_dir, &state.history)?;
        }
        let model = crate::record::load_burn(&config.model, &model_path, device)?;
        let bytes = std::fs::read(&optim_path).map_err(io(&optim_path))?;
        let sgd =
            Sgd::new(config.sgd)
                .with_state(bytes)
                .map_err(|reason| VggError::CorruptWeights {
                    path: optim_path.clone(),
                    format: "burn optimiser",
                    reason,
                })?;
        Ok(Self::assemble(
            config, state, model, sgd, run_dir, train, val, device, comm,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: TrainConfig,
        state: RunState,
        model: Vgg,
        sgd: Sgd,
        run_dir: &Path,
        train: Dataset,
        val: Dataset,
        device: &Device,
        comm: Rc<dyn Collective>,
    ) -> Self {
        let layout = GradLayout::of(&model);
        let (run_dir, train, val, device) = (
            run_dir.to_path_buf(),
            Arc::new(train),
            Arc::new(val),
            device.clone(),
        );
        Self {
            config,
            state,
            model,
            sgd,
            run_dir,
            train,
            val,
            device,
            comm,
            layout,
        }
    }

    /// Sets the run's epoch budget (to train a resumed run further, or stop it earlier); rank 0
    /// rewrites `config.json`.
    pub fn set_epochs(&mut self, epochs: usize) -> Result<(), VggError> {
        let done = self.state.epoch;
        if epochs <= done {
            return Err(VggError::bad_config(
                "epochs",
                format!("is {epochs}, but the run has trained {done} epoch(s) already; give a larger total"),
            ));
        }
        if self.state.finished {
            return Err(VggError::run_file(
                self.run_dir.join(STATE),
                "the run is finished: its schedule stopped it after the last learning-rate reduction (Section 3.1)",
            ));
        }
        self.config.epochs = epochs;
        if self.comm.rank() == 0 {
            write_json(&self.run_dir.join(CONFIG), &self.config)?;
        }
        Ok(())
    }

    /// This process's rank and the number of ranks.
    pub fn rank(&self) -> (usize, usize) {
        (self.comm.rank(), self.comm.size())
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Trains until `config.epochs` epochs are done or the schedule says stop.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<(), VggError> {
        while self.state.epoch < self.config.epochs && !self.state.finished {
            self.epoch(observer)?;
        }
        Ok(())
    }

    /// Trains up to `epochs` more epochs (for tests and for stopping early).
    pub fn run_epochs(
        &mut self,
        epochs: usize,
        observer: &mut dyn Observer,
    ) -> Result<(), VggError> {
        for _ in 0..epochs {
            if self.state.epoch >= self.config.epochs || self.state.finished {
                break;
            }
            self.epoch(observer)?;
        }
        Ok(())
    }

    fn epoch(&mut self, observer: &mut dyn Observer) -> Result<(), VggError> {
        let c = &self.config;
        let (rank, size) = self.rank();
        let epoch = self.state.epoch; // 0-based
        let lr = self.state.schedule.lr;
        // Dropout's generator, reseeded per epoch (and rank) so a resumed run draws the same masks.
        self.device
            .seed(c.seed.wrapping_add(1 + epoch as u64) ^ ((rank as u64) << 32));
        let total = self.train.len();
        let (mb, per_step) = (c.micro_batch, c.batch / c.micro_batch);
        let micro_batches = total.div_ceil(mb);
        // One process's order; this rank takes its micro-batches of each global batch.
        let order = epoch_order(total, c.seed, epoch, true);
        let mine: Vec<usize> = (0..micro_batches)
            .filter(|m| owner(m % per_step, size) == rank)
            .flat_map(|m| order[m * mb..((m + 1) * mb).min(total)].to_vec())
            .collect();
        let shape = [c.model.in_channels, c.transform.crop, c.transform.crop];
        let transform = Arc::new(c.transform.clone());
        let seed = c.seed;
        let prepare: Prepare =
            Arc::new(move |img, i| transform.train(img, &mut Rng::for_item(seed, epoch, i)));
        let mut loader = Loader::new(
            self.train.clone(),
            mine,
            mb,
            shape,
            prepare,
            c.workers,
            c.skip_bad,
        );
        let start = Instant::now();
        let comm_start = self.comm.seconds();
        // seen, loss sum, top-1 hits, top-5 hits, skipped: summed over ranks at the end.
        let mut totals = [0f64; 5];
        let mut model = self.model.clone();
        let running = model.running_stats().len();
        for first in (0..micro_batches).step_by(per_step) {
            let last = (first + per_step).min(micro_batches);
            let group_size = c.batch.min(total - first * mb);
            let mut bn_delta = vec![0f32; running];
            let mut bad_loss = None;
            for m in (first..last).filter(|m| owner(m - first, size) == rank) {
                let batch = loader.next().expect("the loader yields each micro-batch")?;
                totals[4] += batch.skipped.len() as f64;
                let n = batch.labels.len();
                if n == 0 {
                    continue;
                }
                let x = Tensor::<4>::from_data(
                    TensorData::new(batch.images, batch.shape),
                    &self.device,
                );
                let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
                let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &self.device);
                let share = n as f64 / group_size as f64;
                let (loss, logits, stats) = self.sgd.accumulate_train(&model, x, y, share);
                let scores = logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
                let (t1, t5) = match topk_hits(&scores, &batch.labels, "training") {
                    Ok(hits) if loss.is_finite() => hits,
                    _ => {
                        bad_loss = Some(if loss.is_finite() { f32::NAN } else { loss });
                        (0, 0)
                    }
                };
                let weight = running_weight(BN_MOMENTUM, m - first, last - first);
                add_stats(&mut bn_delta, &stats, weight);
                let hits = [n as f64, loss as f64 * n as f64, t1 as f64, t5 as f64];
                totals.iter_mut().zip(hits).for_each(|(t, h)| *t += h);
                let seen = totals[0];
                observer.on_progress(&Progress {
                    epoch: epoch + 1,
                    epochs: c.epochs,
                    images: (((seen + totals[4]) as usize) * size).min(total),
                    total_images: total,
                    loss: totals[1] / seen,
                    top1: totals[2] / seen,
                    images_per_s: seen * size as f64 / start.elapsed().as_secs_f64(),
                    lr,
                });
            }
            // Every rank reaches this point once per global batch, with or without work.
            let grads = self.sgd.take_grads();
            let (grads, bn_delta, bad) = self.reduce(grads, bn_delta, bad_loss.is_some());
            if bad {
                self.model = model;
                return Err(VggError::NonFiniteLoss {
                    value: bad_loss.unwrap_or(f32::NAN),
                    epoch: epoch + 1,
                    step: self.state.step + 1,
                    kept: self.state.model_file.is_some().then_some(self.state.epoch),
                });
            }
            let keep = (1.0 - BN_MOMENTUM).powi((last - first) as i32);
            model.fold_running_stats(&bn_delta, keep);
            model = self.sgd.apply(model, lr, grads);
            model.add_batches_tracked(per_step as i64);
            self.state.step += 1;
        }
        self.model = model;
        self.comm.all_reduce_sum_f64(&mut totals);
        let [seen, loss_sum, top1, top5, skipped] = totals;
        let train_seconds = start.elapsed().as_secs_f64();
        observer.on_validation(epoch + 1);
        let c = &self.config;
        let kept = self.state.model_file.is_some().then_some(self.state.epoch);
        let diverged = |what: String| VggError::NonFiniteOutput {
            what: format!(
                "{what} after epoch {}; training stopped{}",
                epoch + 1,
                kept.map_or(String::new(), |e| format!(", the run folder keeps epoch {e}'s checkpoint"))
            ),
        };
        let val = evaluate_shard(
            &self.model.valid(),
            &self.val,
            &c.transform,
            c.micro_batch.max(64),
            c.workers,
            c.skip_bad,
            (rank, size),
        )
        .map_err(|e| match e {
            VggError::NonFiniteOutput { what } => diverged(what),
            e => e,
        })?;
        let n = val.images as f64;
        let mut sums = [val.loss * n, val.top1 * n, val.top5 * n, n];
        self.comm.all_reduce_sum_f64(&mut sums);
        if sums[3] == 0.0 {
            return Err(VggError::Dataset {
                path: self.val.name.clone().into(),
                reason: "no validation image could be read".into(),
            });
        }
        if !sums.iter().all(|v| v.is_finite()) || !loss_sum.is_finite() {
            return Err(diverged("the loss on validation or training".into()));
        }
        let d = sums[3];
        let (val_loss, val_top1, val_top5) = (sums[0] / d, sums[1] / d, sums[2] / d);
        let skipped = skipped as usize;
        let seen = seen.max(1.0);
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen,
            train_top1_err: 1.0 - top1 / seen,
            train_top5_err: 1.0 - top5 / seen,
            val_loss,
            val_top1_err: 1.0 - val_top1,
            val_top5_err: 1.0 - val_top5,
            seconds: start.elapsed().as_secs_f64(),
            images_per_s: seen / train_seconds,
            skipped,
            ranks: size,
            comm_seconds: self.comm.seconds() - comm_start,
        };
        if skipped > 0 {
            observer.on_note(&format!(
                "epoch {}: skipped {skipped} unreadable image(s)",
                epoch + 1
            ));
        }
        let is_best = self.state.best_val_accuracy.is_none_or(|b| val_top1 > b);
        match self.state.schedule.observe(val_top1) {
            Decision::Reduced { lr } => observer.on_note(&format!(
                "validation accuracy stopped improving: learning rate now {lr:e}"
            )),
            Decision::Stop => {
                observer.on_note("validation accuracy stopped improving after the last reduction: stopping (Section 3.1)");
                self.state.finished = true;
            }
            Decision::Improved | Decision::Wait => {}
        }
        self.state.epoch = epoch + 1;
        self.state.history.push(record.clone());
        if is_best {
            self.state.best_val_accuracy = Some(val_top1);
        }
        if rank == 0 {
            self.checkpoint(is_best)?;
        }
        observer.on_epoch(&record, &self.state, &self.run_dir);
        Ok(())
    }

    /// Sums the step's gradients, BatchNorm statistics and non-finite-loss flags over the ranks
    /// (one all-reduce of one buffer); nothing to do for one process.
    fn reduce(
        &self,
        grads: GradientsParams,
        bn_delta: Vec<f32>,
        bad: bool,
    ) -> (GradientsParams, Vec<f32>, bool) {
        if self.comm.size() == 1 {
            return (grads, bn_delta, bad);
        }
        let mut flat = self.layout.flatten(&grads);
        let g = flat.len();
        flat.extend(&bn_delta);
        flat.push(bad as u8 as f32);
        self.comm.all_reduce_sum(&mut flat);
        let device = self.device.clone().inner();
        let grads = self.layout.unflatten(&flat[..g], &device);
        let bad = flat[flat.len() - 1] > 0.0;
        (grads, flat[g..flat.len() - 1].to_vec(), bad)
    }

    /// Writes the epoch's checkpoint; `state.json` last, so that it only ever names complete files.
    fn checkpoint(&mut self, is_best: bool) -> Result<(), VggError> {
        let dir = &self.run_dir;
        let (model_file, optim_file) = checkpoint_names(self.state.epoch);
        crate::record::save_burn(&self.model, &dir.join(&model_file))?;
        let optim_bytes = self
            .sgd
            .state_bytes()
            .map_err(|reason| VggError::CorruptWeights {
                path: dir.join(&optim_file),
                format: "burn optimiser",
                reason,
            })?;
        write_atomic(&dir.join(&optim_file), &optim_bytes)?;
        if is_best {
            crate::record::save_burn(&self.model, &dir.join("best.bpk"))?;
            self.model.save_safetensors(&dir.join("best.safetensors"))?;
        }
        self.state.model_sha256 = Some(sha256_file(&dir.join(&model_file))?);
        self.state.optim_sha256 = Some(sha256_file(&dir.join(&optim_file))?);
        let had_previous = self.state.model_file.is_some();
        self.state.model_file = Some(model_file);
        self.state.optim_file = Some(optim_file);
        write_json(&dir.join(STATE), &self.state)?;
        // The previous epoch's checkpoint, by the names this run gives it: never a name read
        // from a file.
        if had_previous && self.state.epoch > 1 {
            let (model, optim) = checkpoint_names(self.state.epoch - 1);
            for old in [model, optim] {
                let _ = std::fs::remove_file(dir.join(old));
            }
        }
        write_logs(dir, &self.state.history)
    }
}

/// `log.csv` and `log.jsonl`, rewritten from the history (so a resumed run's log has no
/// duplicated or orphaned rows).
fn write_logs(dir: &Path, history: &[EpochRecord]) -> Result<(), VggError> {
    let mut csv = String::from(
        "epoch,lr,train_loss,train_top1_err,train_top5_err,val_loss,val_top1_err,val_top5_err,seconds,images_per_s,skipped,ranks,comm_seconds\n",
    );
    let mut jsonl = String::new();
    for r in history {
        csv.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.2},{:.2},{},{},{:.2}\n",
            r.epoch,
            r.lr,
            r.train_loss,
            r.train_top1_err,
            r.train_top5_err,
            r.val_loss,
            r.val_top1_err,
            r.val_top5_err,
            r.seconds,
            r.images_per_s,
            r.skipped,
            r.ranks,
            r.comm_seconds
        ));
        jsonl.push_str(&serde_json::to_string(r).expect("serialisable"));
        jsonl.push('\n');
    }
    write_atomic(&dir.join("log.csv"), csv.as_bytes())?;
    write_atomic(&dir.join("log.jsonl"), jsonl.as_bytes())
}

/// Adds `weight` times each layer's batch mean and variance to `delta` (laid out as
/// [`Vgg::running_stats`]).
fn add_stats(delta: &mut [f32], stats: &[BatchStats], weight: f64) {
    let mut offset = 0;
    for s in stats {
        for t in [&s.mean, &s.var] {
            for v in t.to_data().convert::<f32>().iter::<f32>() {
                delta[offset] += (weight * v as f64) as f32;
                offset += 1;
            }
        }
    }
}

/// Copies rank 0's weights (and BatchNorm statistics) to every rank.
fn broadcast_model(model: Vgg, comm: &dyn Collective, device: &Device) -> Vgg {
    if comm.size() == 1 {
        return model;
    }
    let mut dict = model.state_dict();
    let mut flat: Vec<f32> = dict
        .values()
        .filter_map(|t| match &t.values {
            Values::F32(v) => Some(v.as_slice()),
            Values::I64(_) => None,
        })
        .flatten()
        .copied()
        .collect();
    comm.broadcast(&mut flat);
    let mut offset = 0;
    for t in dict.values_mut() {
        if let Values::F32(v) = &mut t.values {
            let n = v.len();
            v.copy_from_slice(&flat[offset..offset + n]);
            offset += n;
        }
    }
    model.load_state_dict_unchecked(&dict, device)
}

/// Loss and top-1 / top-5 accuracy on a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
}

/// Evaluates `model` (call `.valid()` first) on `data` with the transform's central crop.
pub fn evaluate(
    model: &Vgg,
    data: &Arc<Dataset>,
    transform: &Transform,
    batch: usize,
    workers: usize,
    skip_bad: bool,
) -> Result<Evaluation, VggError> {
    evaluate_shard(model, data, transform, batch, workers, skip_bad, (0, 1))
}

/// [`evaluate`] on the images `i` with `i % size == rank` (`shard = (rank, size)`), one
/// rank's share of a data-parallel evaluation.
pub fn evaluate_shard(
    model: &Vgg,
    data: &Arc<Dataset>,
    transform: &Transform,
    batch: usize,
    workers: usize,
    skip_bad: bool,
    (rank, size): (usize, usize),
) -> Result<Evaluation, VggError> {
    let device = model.fc3.weight.val().device();
    let t = Arc::new(transform.clone());
    let prepare: Prepare = Arc::new(move |img, _| t.eval(img));
    let shape = [transform.channels, transform.crop, transform.crop];
    let loader = Loader::new(
        data.clone(),
        (rank..data.len()).step_by(size).collect(),
        batch,
        shape,
        prepare,
        workers,
        skip_bad,
    );
    let (mut n, mut loss, mut top1, mut top5) = (0usize, 0f64, 0usize, 0usize);
    for b in loader {
        let b = b?;
        let x = Tensor::<4>::from_data(TensorData::new(b.images, b.shape), &device);
        let labels: Vec<i64> = b.labels.iter().map(|&l| l as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [b.labels.len()]), &device);
        let logits = model.forward(x);
        loss +=
            cross_entropy(logits.clone(), y).into_scalar::<f32>() as f64 * b.labels.len() as f64;
        let scores = logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        let (t1, t5) = topk_hits(&scores, &b.labels, "validation")?;
        top1 += t1;
        top5 += t5;
        n += b.labels.len();
    }
    let d = n.max(1) as f64;
    Ok(Evaluation {
        loss: loss / d,
        top1: top1 as f64 / d,
        top5: top5 as f64 / d,
        images: n,
    })
}

/// The paper's initialisation of deeper nets (Section 3.1): the first four conv layers and
/// the three FC layers from a trained net (a torchvision-layout `.safetensors`/`.pth`, such as a
/// run's `best.safetensors`); each conv goes to the next layer of the same shape (A's conv1_1,
/// conv2_1, conv3_1, conv3_2 to the deeper net's layers of those names); the rest stays random.
pub fn init_from(model: Vgg, source: &Path, device: &Device) -> Result<Vgg, VggError> {
    let src = read_state_dict(source)?;
    let conv_keys = |keys: Vec<String>| -> Vec<String> {
        let mut convs: Vec<(usize, String)> = keys
            .into_iter()
            .filter_map(|k| {
                let idx = k
                    .strip_prefix("features.")?
                    .strip_suffix(".weight")?
                    .parse::<usize>()
                    .ok()?;
                Some((idx, format!("features.{idx}")))
            })
            .collect();
        convs.sort();
        convs.into_iter().map(|(_, k)| k).collect()
    };
    let src_convs: Vec<String> = conv_keys(
        src.iter()
            .filter(|(_, t)| t.shape.len() == 4)
            .map(|(k, _)| k.clone())
            .collect(),
    );
    let expected = model.config().state_keys();
    let dst_convs = conv_keys(
        expected
            .iter()
            .filter(|(_, s)| s.len() == 4)
            .map(|(k, _)| k.clone())
            .collect(),
    );
    let mut picked = crate::weights::StateDict::new();
    let shape_of = |key: &str| {
        expected
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.clone())
    };
    let mut copy = |from: &str, to: &str| {
        for suffix in ["weight", "bias"] {
            if let Some(t) = src.get(&format!("{from}.{suffix}")) {
                if shape_of(&format!("{to}.{suffix}")).as_ref() == Some(&t.shape) {
                    picked.insert(format!("{to}.{suffix}"), t.clone());
                }
            }
        }
    };
    // Each of the source's first four convs goes to the next conv of the deeper net with the
    // same shape: A's conv1_1, conv2_1, conv3_1, conv3_2 land on D's layers of those names.
    let mut next = 0;
    for from in src_convs.iter().take(4) {
        let shape = src.get(&format!("{from}.weight")).map(|t| t.shape.clone());
        if let Some(offset) = dst_convs[next..]
            .iter()
            .position(|to| shape_of(&format!("{to}.weight")) == shape)
        {
            copy(from, &dst_convs[next + offset]);
            next += offset + 1;
        }
    }
    for i in [0, 3, 6] {
        copy(&format!("classifier.{i}"), &format!("classifier.{i}"));
    }
    check_finite(&picked, source)?;
    if picked.is_empty() {
        return Err(VggError::WeightMismatch {
            path: source.to_path_buf(),
            arch: model.config().name.clone(),
            missing: vec![
                "no conv or FC layer of the source has the shape of this network's".into(),
            ],
            unexpected: vec![],
            misshaped: vec![],
        });
    }
    Ok(model.load_state_dict_unchecked(&picked, device))
}
