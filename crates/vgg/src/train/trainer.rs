//! A training run: epochs of SGD over a dataset, validation after each, the plateau schedule,
//! and checkpoints a run can be resumed from exactly.
//!
//! The run folder ([`RunFolder`]) holds `config.json` (the whole run configuration),
//! `weights.json` (the network and preset of its weights), `state.json` (epoch, schedule,
//! history, and the names and hashes of the current checkpoint files: written last, so it
//! always points at a complete checkpoint), `epoch-N.bpk` and
//! `epoch-N-optim.bpk` (weights and momentum), `best.bpk` and `best.safetensors` (best validation
//! accuracy, the latter in torchvision's layout), and `log.csv` / `log.jsonl` (one row per epoch).

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::collective::{Collective, GradLayout, broadcast_model, owner};
use super::config::TrainConfig;
use super::folder::{RunFolder, STATE, checkpoint_names};
use super::lanes::Lanes;
use super::plateau::{Decision, Plateau};
use super::scaler::LossScale;
use super::sgd::{Computed, MicroBatch, Sgd, compute};
use super::spec::{RunSpec, Start};
use super::state::{EpochRecord, Observer, Progress, RunState};
use crate::arch::names::freeze_point;
use crate::checkpoint::partial::{init_from, transfer};
use crate::checkpoint::strict::module_of;
use crate::data::loader::{Batch, Loader, Prepare, epoch_order};
use crate::data::{Dataset, Rng};
use crate::error::VggError;
use crate::eval::center::{Evaluation, evaluate, evaluate_shard};
use crate::eval::metrics::topk_hits;
use crate::fsio::{sha256_file, write_atomic};
use crate::nn::Vgg;
use crate::preset::Card;

/// A training run in progress.
pub struct Trainer {
    pub config: TrainConfig,
    pub state: RunState,
    pub model: Vgg,
    sgd: Sgd,
    /// The run's folder, held by rank 0 ([`RunFolder`]): one trainer writes a run at a time.
    folder: RunFolder,
    train: Arc<Dataset>,
    val: Arc<Dataset>,
    device: Device,
    comm: Rc<dyn Collective>,
    layout: GradLayout,
    /// The cores a step's micro-batches run on side by side (flex).
    lanes: Lanes,
}

/// Sums over this rank's micro-batches of an epoch (summed over the ranks at its end).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    images: f64,
    loss: f64,
    top1: f64,
    top5: f64,
    skipped: f64,
}

impl Tally {
    /// Reads a micro-batch back (waiting for the device) and adds it with its `labels`.
    /// `Some(loss)` when the loss or a score is NaN or infinite: nothing is added then.
    fn add(&mut self, run: MicroBatch, labels: &[usize]) -> Option<f32> {
        let loss = run.loss();
        let (top1, top5) = match topk_hits(&run.scores(), labels, "training") {
            Ok(hits) if loss.is_finite() => hits,
            _ => return Some(if loss.is_finite() { f32::NAN } else { loss }),
        };
        let n = labels.len() as f64;
        self.images += n;
        self.loss += loss as f64 * n;
        self.top1 += top1 as f64;
        self.top5 += top5 as f64;
        None
    }

    fn all_reduce(self, comm: &dyn Collective) -> Self {
        let mut sums = [self.images, self.loss, self.top1, self.top5, self.skipped];
        comm.all_reduce_sum_f64(&mut sums);
        let [images, loss, top1, top5, skipped] = sums;
        Self {
            images,
            loss,
            top1,
            top5,
            skipped,
        }
    }
}

/// Validation loss and accuracies, over every rank's share.
struct Scores {
    loss: f64,
    top1: f64,
    top5: f64,
}

/// The run's network with its frozen layers frozen (fine-tuning's `freeze`).
fn freeze(model: Vgg, config: &TrainConfig) -> Result<Vgg, VggError> {
    match config.pretrained.as_ref().and_then(|p| p.freeze.as_ref()) {
        Some(name) => Ok(model.freeze_before(freeze_point(&config.model, name)?)),
        None => Ok(model),
    }
}

/// The outcome of a check each rank makes on its own device (mixed precision): an error on any
/// rank stops every rank, where a rank leaving alone would leave the others waiting in the
/// next collective.
fn on_every_rank(comm: &dyn Collective, result: Result<(), VggError>) -> Result<(), VggError> {
    let mut failed = [result.is_err() as u8 as f32];
    comm.all_reduce_sum(&mut failed);
    match result {
        Ok(()) if failed[0] > 0.0 => Err(VggError::bad_config(
            "precision",
            "another rank's device cannot compute in it; use f32",
        )),
        result => result,
    }
}

/// The run's SGD, the loaded layers of a fine-tuned run at their own learning rate.
fn optimiser(config: &TrainConfig) -> Sgd {
    let sgd = Sgd::new(config.sgd);
    match &config.pretrained {
        Some(p) => {
            let mut modules: Vec<String> = p
                .loaded
                .iter()
                .filter_map(|k| module_of(&config.model, k))
                .collect();
            modules.dedup();
            sgd.with_scaled_lr(modules, p.lr_scale)
        }
        None => sgd,
    }
}

impl Trainer {
    /// Starts the run `spec` describes, as one rank of `comm` ([`Single`] for one process):
    /// every setting and input is checked first (the data's classes against the config's, the
    /// device against the precision, the start's weights against the network), then rank 0
    /// alone makes the run folder ([`RunFolder::create`]: `force` replaces only a run's own
    /// files) and writes the config and the weights card; every rank starts from rank 0's
    /// weights, frozen where a fine-tuning start says.
    pub fn start(
        spec: RunSpec,
        device: &Device,
        comm: Rc<dyn Collective>,
    ) -> Result<Self, VggError> {
        let RunSpec {
            mut config,
            start,
            train,
            val,
            out,
            force,
        } = spec;
        // The start is the record: a config made for another start is told by it.
        (config.pretrained, config.init_from) = start.record();
        config.validate()?;
        on_every_rank(comm.as_ref(), config.precision.check(device))?;
        train.check(config.model.num_classes)?;
        val.check(config.model.num_classes)?;
        train.check_classes(&config.classes, "the run's config")?;
        val.check_classes(&train.classes, "the training set")?;
        (config.train_images, config.val_images) = (train.len(), val.len());
        device.seed(config.seed);
        let mut model = Vgg::new(&config.model, config.init, device)?;
        match &start {
            Start::Fresh => {}
            Start::FromNetA(net_a) => {
                model = init_from(model, &net_a.dict, &net_a.origin.file, device)?;
            }
            Start::FineTune { weights, .. } => {
                let (loaded, moved) = transfer(model, &weights.dict, device);
                let record = config.pretrained.as_mut().expect("recorded above");
                (model, record.loaded, record.fresh) = (loaded, moved.loaded, moved.fresh);
            }
        }
        // Every input is valid (the config's JSON too): only now is the folder touched, and
        // held until the run ends.
        let card = Card {
            model: config.model.clone(),
            preset: config.preset(),
        };
        let folder = if comm.rank() == 0 {
            RunFolder::create(&out, force, &config, &card)?
        } else {
            RunFolder::unheld(&out)
        };
        let model = freeze(broadcast_model(model, comm.as_ref(), device), &config)?;
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
            loss_scale: config.precision.scales_loss().then(LossScale::default),
        };
        let sgd = optimiser(&config);
        Ok(Self::assemble(
            config, state, model, sgd, folder, train, val, device, comm,
        ))
    }

    /// Continues the run in `dir` from its last complete checkpoint, as one rank of `comm`,
    /// whatever the number of ranks that wrote it (a checkpoint holds no per-rank state).
    /// Every rank reads `dir`: on several hosts it must be on a shared filesystem. The data
    /// must be the run's own (its sizes are checked), and the checkpoint the one `state.json`
    /// names (its hashes are checked).
    pub fn resume(
        dir: &Path,
        train: Dataset,
        val: Dataset,
        device: &Device,
        comm: Rc<dyn Collective>,
    ) -> Result<Self, VggError> {
        // A run's folder (checked before anything is made in it), then held before its state is
        // read: a run being trained is not resumed beside it.
        let mut folder = RunFolder::open(dir)?;
        if comm.rank() == 0 {
            folder.hold()?;
        }
        let config = folder.config()?;
        let state = folder.state()?;
        on_every_rank(comm.as_ref(), config.precision.check(device))?;
        train.check(config.model.num_classes)?;
        val.check(config.model.num_classes)?;
        train.check_classes(&config.classes, "the run")?;
        val.check_classes(&config.classes, "the run")?;
        folder.check_size(&train, config.train_images, "training")?;
        folder.check_size(&val, config.val_images, "validation")?;
        let (model_path, optim_path) = folder.checkpoint(&state)?;
        if comm.rank() == 0 {
            folder.remove_temps();
            // A run killed between its state and its logs: the logs follow the state again.
            folder.write_logs(&state.history)?;
        }
        let model = crate::checkpoint::burnpack::load(&config.model, &model_path, device)?;
        let model = freeze(model, &config)?;
        let bytes = std::fs::read(&optim_path).map_err(|e| VggError::io(&optim_path, e))?;
        let sgd =
            optimiser(&config)
                .with_state(bytes)
                .map_err(|reason| VggError::CorruptWeights {
                    path: optim_path.clone(),
                    format: "burn optimiser",
                    reason,
                })?;
        Ok(Self::assemble(
            config, state, model, sgd, folder, train, val, device, comm,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: TrainConfig,
        state: RunState,
        model: Vgg,
        sgd: Sgd,
        folder: RunFolder,
        train: Dataset,
        val: Dataset,
        device: &Device,
        comm: Rc<dyn Collective>,
    ) -> Self {
        let (c, crop) = (config.model.in_channels, config.transform.crop);
        let per_step = (config.batch / config.micro_batch).div_ceil(comm.size());
        let lanes = Lanes::for_device(
            device,
            &config.model,
            [c, crop, crop],
            (config.micro_batch, per_step),
        );
        Self {
            layout: GradLayout::of(&model),
            config,
            state,
            model,
            sgd,
            folder,
            train: Arc::new(train),
            val: Arc::new(val),
            device: device.clone(),
            comm,
            lanes,
        }
    }

    /// Sets the run's epoch budget (to train a resumed run further, or stop it earlier); rank 0
    /// rewrites `config.json`.
    pub fn set_epochs(&mut self, epochs: usize) -> Result<(), VggError> {
        let done = self.state.epoch;
        if epochs <= done {
            return Err(VggError::bad_config(
                "epochs",
                format!(
                    "is {epochs}, but the run has trained {done} epoch(s) already; give a larger total"
                ),
            ));
        }
        if self.state.finished {
            return Err(VggError::run_file(
                self.folder.dir().join(STATE),
                "the run is finished: its schedule stopped it after the last learning-rate reduction (Section 3.1)",
            ));
        }
        self.config.epochs = epochs;
        if self.comm.rank() == 0 {
            self.folder.write_config(&self.config)?;
        }
        Ok(())
    }

    /// Micro-batches this process computes side by side (1: one after another), [`Lanes`].
    pub fn lanes(&self) -> usize {
        self.lanes.width()
    }

    /// This process's rank and the number of ranks.
    pub fn rank(&self) -> (usize, usize) {
        (self.comm.rank(), self.comm.size())
    }

    pub fn run_dir(&self) -> &Path {
        self.folder.dir()
    }

    /// The run's folder.
    pub fn folder(&self) -> &RunFolder {
        &self.folder
    }

    /// The end of a run: the best checkpoint's score on `test` (each image's central crop at
    /// the run's test scale), on `device` (a plain one: no gradients). The test set must have
    /// the run's classes; `Err` when none of its images could be read.
    pub fn test_score(&self, test: Dataset, device: &Device) -> Result<Evaluation, VggError> {
        let c = &self.config;
        test.check_classes(&c.classes, "the run")?;
        let model = crate::checkpoint::burnpack::load(&c.model, &self.folder.best(), device)?;
        let name = test.name.clone();
        let result = evaluate(
            &model,
            &Arc::new(test),
            &c.transform,
            256,
            c.workers,
            c.skip_bad,
        )?;
        if result.images == 0 {
            return Err(VggError::Dataset {
                path: name.into(),
                reason: "none of its images could be read (all skipped): no test score".into(),
            });
        }
        Ok(result)
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

    /// One epoch: the SGD steps, the validation, the schedule, the checkpoint.
    fn epoch(&mut self, observer: &mut dyn Observer) -> Result<(), VggError> {
        let epoch = self.state.epoch; // 0-based
        let lr = self.state.schedule.lr;
        let start = Instant::now();
        let comm_start = self.comm.seconds();
        let tally = self
            .train_epoch(epoch, lr, observer)?
            .all_reduce(self.comm.as_ref());
        let train_seconds = start.elapsed().as_secs_f64();
        observer.on_validation(epoch + 1);
        let scores = self.validate(epoch)?;
        if !tally.loss.is_finite() {
            return Err(self.diverged(epoch, "the training loss".into()));
        }
        let seen = tally.images.max(1.0);
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: tally.loss / seen,
            train_top1_err: 1.0 - tally.top1 / seen,
            train_top5_err: 1.0 - tally.top5 / seen,
            val_loss: scores.loss,
            val_top1_err: 1.0 - scores.top1,
            val_top5_err: 1.0 - scores.top5,
            seconds: start.elapsed().as_secs_f64(),
            images_per_s: seen / train_seconds,
            skipped: tally.skipped as usize,
            ranks: self.comm.size(),
            comm_seconds: self.comm.seconds() - comm_start,
        };
        if record.skipped > 0 {
            observer.on_note(&format!(
                "epoch {}: skipped {} unreadable image(s)",
                epoch + 1,
                record.skipped
            ));
        }
        self.close_epoch(record, scores.top1, observer)
    }

    /// This rank's micro-batches of every batch of the epoch, in one process's order, with the
    /// augmentation of each sample a function of (seed, epoch, index).
    fn loader(&self, epoch: usize) -> Loader {
        let c = &self.config;
        let (rank, size) = self.rank();
        let total = self.train.len();
        let (mb, per_step) = (c.micro_batch, c.batch / c.micro_batch);
        let order = epoch_order(total, c.seed, epoch, true);
        let mine: Vec<usize> = (0..total.div_ceil(mb))
            .filter(|m| owner(m % per_step, size) == rank)
            .flat_map(|m| order[m * mb..((m + 1) * mb).min(total)].to_vec())
            .collect();
        let shape = [c.model.in_channels, c.transform.crop, c.transform.crop];
        let (transform, seed) = (Arc::new(c.transform.clone()), c.seed);
        let prepare: Prepare =
            Arc::new(move |img, i| transform.train(img, &mut Rng::for_item(seed, epoch, i)));
        Loader::new(
            self.train.clone(),
            mine,
            mb,
            shape,
            prepare,
            c.workers,
            c.skip_bad,
        )
    }

    /// The epoch's SGD steps; this rank's sums.
    fn train_epoch(
        &mut self,
        epoch: usize,
        lr: f64,
        observer: &mut dyn Observer,
    ) -> Result<Tally, VggError> {
        let (rank, size) = self.rank();
        let total = self.train.len();
        let (mb, per_step) = (
            self.config.micro_batch,
            self.config.batch / self.config.micro_batch,
        );
        let micro_batches = total.div_ceil(mb);
        let mut loader = self.loader(epoch);
        let start = Instant::now();
        let mut tally = Tally::default();
        let mut model = self.model.clone();
        let mut overflowed = 0;
        for first in (0..micro_batches).step_by(per_step) {
            if let Some(s) = &self.state.loss_scale {
                self.sgd.set_loss_scale(s.scale);
            }
            let last = (first + per_step).min(micro_batches);
            let batch_images = self.config.batch.min(total - first * mb);
            // Each micro-batch is uploaded and queued before the previous ones are read back,
            // so a GPU computes while the next batch crosses to it; on flex they run side by
            // side on the cores, a wave of one per core ([`Lanes`]). Either way they are added
            // to the step in order.
            let mut queued = Vec::new();
            let mine: Vec<usize> = (first..last)
                .filter(|m| owner(m - first, size) == rank)
                .collect();
            for wave in mine.chunks(self.lanes.width()) {
                let mut jobs = Vec::new();
                for &m in wave {
                    let batch = loader.next().expect("the loader yields each micro-batch")?;
                    tally.skipped += batch.skipped.len() as f64;
                    if batch.labels.is_empty() {
                        continue; // every image skipped
                    }
                    let share = batch.labels.len() as f64 / batch_images as f64;
                    let seed = dropout_seed(self.config.seed, epoch, m);
                    jobs.push(self.job(batch, share, (m - first, last - first), seed));
                }
                for (done, labels) in self.lanes.run(&model, jobs) {
                    queued.push((self.sgd.add(&model, done), labels));
                }
            }
            let mut bad_loss = None;
            for (run, labels) in queued {
                if let Some(bad) = tally.add(run, &labels) {
                    bad_loss = Some(bad);
                }
                observer.on_progress(&Progress {
                    epoch: epoch + 1,
                    epochs: self.config.epochs,
                    images: (((tally.images + tally.skipped) as usize) * size).min(total),
                    total_images: total,
                    loss: tally.loss / tally.images.max(1.0),
                    top1: tally.top1 / tally.images.max(1.0),
                    images_per_s: tally.images * size as f64 / start.elapsed().as_secs_f64(),
                    lr,
                });
            }
            // Every rank reaches this point once per global batch, with or without work.
            let (grads, running) = self.sgd.take(&model);
            let (grads, running, bad) = self.reduce(grads, running, bad_loss.is_some());
            if bad {
                self.model = model;
                return Err(VggError::NonFiniteLoss {
                    value: bad_loss.unwrap_or(f32::NAN),
                    epoch: epoch + 1,
                    step: self.state.step + 1,
                    kept: self.kept(),
                });
            }
            self.state.step += 1;
            let grads = match self.state.loss_scale.as_mut() {
                Some(scale) => {
                    let (grads, finite) = self.sgd.unscale(&self.layout, grads);
                    if let Err(at) = scale.update(finite) {
                        self.model = model;
                        return Err(self.stopped(format!(
                            "the float16 gradients overflowed at loss scale {at} in epoch {}, step {}",
                            epoch + 1,
                            self.state.step
                        )));
                    }
                    if !finite {
                        // Skipped: no update, momentum kept, and (unlike PyTorch, whose forward
                        // has already moved them) the step's BatchNorm statistics not folded.
                        overflowed += 1;
                        continue;
                    }
                    grads
                }
                None => grads,
            };
            model = self.sgd.apply(model, lr, grads, &running, last - first);
        }
        self.model = model;
        if overflowed > 0 {
            let scale = self.state.loss_scale.map_or(1.0, |s| s.scale);
            observer.on_note(&format!(
                "epoch {}: {overflowed} step(s) skipped because their float16 gradients overflowed; loss scale now {scale}",
                epoch + 1
            ));
        }
        Ok(tally)
    }

    /// The forward and backward of one micro-batch (of index `k` of the step's `count`), to
    /// run on any thread: uploads it, queues its work (read back later, from the
    /// [`MicroBatch`] that [`Sgd::add`] returns), and hands back its labels.
    fn job(
        &self,
        batch: Batch,
        share: f64,
        position: (usize, usize),
        dropout_seed: u64,
    ) -> impl FnOnce(&Vgg) -> (Computed, Vec<usize>) + Send + use<> {
        let device = self.device.clone();
        let precision = self.config.precision;
        let weight = share * self.sgd.loss_scale();
        move |model| {
            let n = batch.labels.len();
            let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &device);
            let x = precision.apply(x); // the forward computes in this dtype
            let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &device);
            let done = compute(model, x, y, weight, position, dropout_seed);
            (done, batch.labels)
        }
    }

    /// Sums the step's gradients, BatchNorm statistics and non-finite-loss flags over the ranks
    /// (one all-reduce of one buffer); nothing to do for one process.
    fn reduce(
        &self,
        grads: GradientsParams,
        running: Vec<f32>,
        bad: bool,
    ) -> (GradientsParams, Vec<f32>, bool) {
        if self.comm.size() == 1 {
            return (grads, running, bad);
        }
        let mut flat = self.layout.flatten(&grads);
        let g = flat.len();
        flat.extend(&running);
        flat.push(bad as u8 as f32);
        self.comm.all_reduce_sum(&mut flat);
        let device = self.device.clone().inner();
        let grads = self.layout.unflatten(&flat[..g], &device);
        let bad = flat[flat.len() - 1] > 0.0;
        (grads, flat[g..flat.len() - 1].to_vec(), bad)
    }

    /// The epoch whose checkpoint the run folder holds, if any.
    fn kept(&self) -> Option<usize> {
        self.state.model_file.is_some().then_some(self.state.epoch)
    }

    /// The error of a run whose `what` turned NaN or infinite after `epoch`.
    fn diverged(&self, epoch: usize, what: String) -> VggError {
        self.stopped(format!("{what} after epoch {}", epoch + 1))
    }

    /// The error of a run that cannot go on because `what` turned NaN or infinite.
    fn stopped(&self, what: String) -> VggError {
        VggError::NonFiniteOutput {
            what: format!(
                "{what}; training stopped{}",
                self.kept().map_or(String::new(), |e| format!(
                    ", the run folder keeps epoch {e}'s checkpoint"
                ))
            ),
        }
    }

    /// Validation over every rank's share of the set.
    fn validate(&self, epoch: usize) -> Result<Scores, VggError> {
        let c = &self.config;
        let val = evaluate_shard(
            &self.model.valid(),
            &self.val,
            &c.transform,
            c.micro_batch.max(64),
            c.workers,
            c.skip_bad,
            self.rank(),
        );
        // These weights will not be seen again: drop their Winograd transforms.
        crate::nn::ops::release_caches();
        let val = val.map_err(|e| match e {
            VggError::NonFiniteOutput { what } => self.diverged(epoch, what),
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
        if !sums.iter().all(|v| v.is_finite()) {
            return Err(self.diverged(epoch, "the validation loss".into()));
        }
        Ok(Scores {
            loss: sums[0] / sums[3],
            top1: sums[1] / sums[3],
            top5: sums[2] / sums[3],
        })
    }

    /// The schedule's decision, the history, the checkpoint (rank 0) and the observer.
    fn close_epoch(
        &mut self,
        record: EpochRecord,
        val_top1: f64,
        observer: &mut dyn Observer,
    ) -> Result<(), VggError> {
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
        self.state.epoch = record.epoch;
        self.state.history.push(record.clone());
        if is_best {
            self.state.best_val_accuracy = Some(val_top1);
        }
        if self.comm.rank() == 0 {
            self.checkpoint(is_best)?;
        }
        observer.on_epoch(&record, &self.state, self.folder.dir());
        Ok(())
    }

    /// Writes the epoch's checkpoint; `state.json` last, so that it only ever names complete files.
    fn checkpoint(&mut self, is_best: bool) -> Result<(), VggError> {
        let dir = &self.folder;
        let (model_file, optim_file) = checkpoint_names(self.state.epoch);
        crate::checkpoint::burnpack::save(&self.model, &dir.path(&model_file))?;
        let optim_bytes = self
            .sgd
            .state_bytes()
            .map_err(|reason| VggError::CorruptWeights {
                path: dir.path(&optim_file),
                format: "burn optimiser",
                reason,
            })?;
        write_atomic(&dir.path(&optim_file), &optim_bytes)?;
        if is_best {
            crate::checkpoint::burnpack::save(&self.model, &dir.best())?;
            // The weights with their preset, for any tool that reads safetensors.
            crate::checkpoint::safetensors::write_with_metadata(
                &self.model.state_dict(),
                &dir.path("best.safetensors"),
                false,
                &self.config.preset().to_metadata(),
            )?;
        }
        self.state.model_sha256 = Some(sha256_file(&dir.path(&model_file))?);
        self.state.optim_sha256 = Some(sha256_file(&dir.path(&optim_file))?);
        let had_previous = self.state.model_file.is_some();
        self.state.model_file = Some(model_file);
        self.state.optim_file = Some(optim_file);
        dir.write_state(&self.state)?;
        // The previous epoch's checkpoint, by the names this run gives it: never a name read
        // from a file.
        if had_previous && self.state.epoch > 1 {
            let (model, optim) = checkpoint_names(self.state.epoch - 1);
            for old in [model, optim] {
                let _ = std::fs::remove_file(dir.path(&old));
            }
        }
        dir.write_logs(&self.state.history)
    }
}

/// The seed of micro-batch `m`'s dropout masks in `epoch`: a function of the run's seed and the
/// micro-batch alone, so a resumed run, a rank or a lane draws what one process would.
fn dropout_seed(seed: u64, epoch: usize, m: usize) -> u64 {
    Rng::for_item(seed ^ 0xD50F_0D50_F0D5_0F0D, epoch, m).next_u64()
}
