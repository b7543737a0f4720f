//! A training run: epochs of SGD over a dataset, validation after each, the plateau schedule,
//! and checkpoints a run can be resumed from exactly.
//!
//! The run folder holds `config.json` (the whole run configuration), `state.json` (epoch,
//! schedule, history, and the names of the current checkpoint files: written last, so it
//! always points at a complete checkpoint), `epoch-N.bpk` and `epoch-N-optim.bpk` (weights and
//! momentum), `best.bpk` and `best.safetensors` (best validation accuracy, the latter in
//! torchvision's layout), and `log.csv` / `log.jsonl` (one row per epoch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::plateau::{Decision, Plateau};
use super::step::{Sgd, SgdSettings, cross_entropy};
use crate::arch::VggConfig;
use crate::data::loader::{Loader, Prepare, epoch_order};
use crate::data::transform::Transform;
use crate::data::{Dataset, Rng};
use crate::error::VggError;
use crate::model::{InitScheme, Vgg};
use crate::weights::{read_state_dict, write_atomic};

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

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, VggError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| VggError::Dataset {
        path: path.to_path_buf(),
        reason: format!("not a run file: {e}"),
    })
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
        train.check(config.model.num_classes)?;
        val.check(config.model.num_classes)?;
        if config.batch == 0 || config.micro_batch == 0 || config.batch % config.micro_batch != 0 {
            return Err(VggError::BadConfig {
                what: "batch".into(),
                reason: format!(
                    "{} must be a positive multiple of the micro-batch {}",
                    config.batch, config.micro_batch
                ),
            });
        }
        if run_dir.exists() {
            if !force {
                return Err(VggError::RunExists {
                    path: run_dir.to_path_buf(),
                });
            }
            std::fs::remove_dir_all(run_dir).map_err(io(run_dir))?;
        }
        std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        device.seed(config.seed);
        let mut model = Vgg::new(&config.model, config.init, device)?;
        if let Some(source) = &config.init_from {
            model = init_from(model, source, device)?;
        }
        write_json(&run_dir.join("config.json"), &config)?;
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
        };
        let sgd = Sgd::new(config.sgd);
        Ok(Self::assemble(
            config, state, model, sgd, run_dir, train, val, device,
        ))
    }

    /// Continues the run in `run_dir` from its last complete checkpoint.
    pub fn resume(
        run_dir: &Path,
        train: Dataset,
        val: Dataset,
        device: &Device,
    ) -> Result<Self, VggError> {
        let config: TrainConfig = read_json(&run_dir.join("config.json"))?;
        let state: RunState = read_json(&run_dir.join("state.json"))?;
        train.check(config.model.num_classes)?;
        val.check(config.model.num_classes)?;
        let (Some(model_file), Some(optim_file)) = (&state.model_file, &state.optim_file) else {
            return Err(VggError::Dataset {
                path: run_dir.to_path_buf(),
                reason: "the run has no checkpoint yet; start it again".into(),
            });
        };
        let model = crate::record::load_burn(&config.model, &run_dir.join(model_file), device)?;
        let optim_path = run_dir.join(optim_file);
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
            config, state, model, sgd, run_dir, train, val, device,
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
    ) -> Self {
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
        }
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
        let epoch = self.state.epoch; // 0-based
        let lr = self.state.schedule.lr;
        // Dropout's generator, reseeded per epoch so a resumed run draws the same masks.
        self.device.seed(c.seed.wrapping_add(1 + epoch as u64));
        let order = epoch_order(self.train.len(), c.seed, epoch, true);
        let shape = [c.model.in_channels, c.transform.crop, c.transform.crop];
        let transform = Arc::new(c.transform.clone());
        let seed = c.seed;
        let prepare: Prepare =
            Arc::new(move |img, i| transform.train(img, &mut Rng::for_item(seed, epoch, i)));
        let loader = Loader::new(
            self.train.clone(),
            order,
            c.micro_batch,
            shape,
            prepare,
            c.workers,
            c.skip_bad,
        );
        let per_step = c.batch / c.micro_batch;
        let total = self.train.len();
        let micro_batches = total.div_ceil(c.micro_batch);
        let start = Instant::now();
        let (mut seen, mut loss_sum, mut top1, mut top5, mut skipped) =
            (0usize, 0f64, 0usize, 0usize, 0usize);
        let mut model = self.model.clone();
        for (m, batch) in loader.enumerate() {
            let batch = batch?;
            skipped += batch.skipped.len();
            let n = batch.labels.len();
            if n == 0 {
                continue;
            }
            let group_start = (m / per_step) * c.batch;
            let group_size = c.batch.min(total - group_start);
            let x =
                Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
            let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &self.device);
            let (loss, logits) = self
                .sgd
                .accumulate(&model, x, y, n as f64 / group_size as f64);
            if !loss.is_finite() {
                self.model = model;
                return Err(VggError::NonFiniteLoss {
                    value: loss,
                    epoch: epoch + 1,
                    step: self.state.step + 1,
                });
            }
            let (t1, t5) = topk_hits(logits, &batch.labels);
            seen += n;
            loss_sum += loss as f64 * n as f64;
            top1 += t1;
            top5 += t5;
            // The last micro-batch of a batch (or of the epoch) takes the SGD step.
            if (m + 1) % per_step == 0 || m + 1 == micro_batches {
                model = self.sgd.step(model, lr);
                model.add_batches_tracked(per_step as i64);
                self.state.step += 1;
            }
            observer.on_progress(&Progress {
                epoch: epoch + 1,
                epochs: c.epochs,
                images: seen + skipped,
                total_images: total,
                loss: loss_sum / seen as f64,
                top1: top1 as f64 / seen as f64,
                images_per_s: seen as f64 / start.elapsed().as_secs_f64(),
                lr,
            });
        }
        self.model = model;
        let train_seconds = start.elapsed().as_secs_f64();
        observer.on_validation(epoch + 1);
        let c = &self.config;
        let val = evaluate(
            &self.model.valid(),
            &self.val,
            &c.transform,
            c.micro_batch.max(64),
            c.workers,
            c.skip_bad,
        )?;
        let seen = seen.max(1) as f64;
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen,
            train_top1_err: 1.0 - top1 as f64 / seen,
            train_top5_err: 1.0 - top5 as f64 / seen,
            val_loss: val.loss,
            val_top1_err: 1.0 - val.top1,
            val_top5_err: 1.0 - val.top5,
            seconds: start.elapsed().as_secs_f64(),
            images_per_s: seen / train_seconds,
            skipped,
        };
        if skipped > 0 {
            observer.on_note(&format!(
                "epoch {}: skipped {skipped} unreadable image(s)",
                epoch + 1
            ));
        }
        let is_best = self.state.best_val_accuracy.is_none_or(|b| val.top1 > b);
        match self.state.schedule.observe(val.top1) {
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
            self.state.best_val_accuracy = Some(val.top1);
        }
        self.checkpoint(is_best)?;
        observer.on_epoch(&record, &self.state, &self.run_dir);
        Ok(())
    }

    /// Writes the epoch's checkpoint; `state.json` last, so that it only ever names complete files.
    fn checkpoint(&mut self, is_best: bool) -> Result<(), VggError> {
        let dir = &self.run_dir;
        let model_file = format!("epoch-{}.bpk", self.state.epoch);
        let optim_file = format!("epoch-{}-optim.bpk", self.state.epoch);
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
        let previous = (
            self.state.model_file.replace(model_file),
            self.state.optim_file.replace(optim_file),
        );
        write_json(&dir.join("state.json"), &self.state)?;
        for old in [previous.0, previous.1].into_iter().flatten() {
            let _ = std::fs::remove_file(dir.join(old));
        }
        write_logs(dir, &self.state.history)
    }
}

/// `log.csv` and `log.jsonl`, rewritten from the history (so a resumed run's log has no
/// duplicated or orphaned rows).
fn write_logs(dir: &Path, history: &[EpochRecord]) -> Result<(), VggError> {
    let mut csv = String::from(
        "epoch,lr,train_loss,train_top1_err,train_top5_err,val_loss,val_top1_err,val_top5_err,seconds,images_per_s,skipped\n",
    );
    let mut jsonl = String::new();
    for r in history {
        csv.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.2},{:.2},{}\n",
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
            r.skipped
        ));
        jsonl.push_str(&serde_json::to_string(r).expect("serialisable"));
        jsonl.push('\n');
    }
    write_atomic(&dir.join("log.csv"), csv.as_bytes())?;
    write_atomic(&dir.join("log.jsonl"), jsonl.as_bytes())
}

/// Counts of correct top-1 and top-5 predictions in a batch of logits.
pub fn topk_hits(logits: Tensor<2>, labels: &[usize]) -> (usize, usize) {
    let [n, k] = logits.dims();
    let values = logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 logits");
    let (mut top1, mut top5) = (0, 0);
    for i in 0..n {
        let row = &values[i * k..(i + 1) * k];
        let target = row[labels[i]];
        // Rank of the true class: how many classes score strictly higher.
        let rank = row.iter().filter(|&&v| v > target).count();
        top1 += (rank == 0) as usize;
        top5 += (rank < 5) as usize;
    }
    (top1, top5)
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
    let device = model.fc3.weight.val().device();
    let t = Arc::new(transform.clone());
    let prepare: Prepare = Arc::new(move |img, _| t.eval(img));
    let shape = [transform.channels, transform.crop, transform.crop];
    let loader = Loader::new(
        data.clone(),
        (0..data.len()).collect(),
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
        let (t1, t5) = topk_hits(logits, &b.labels);
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
