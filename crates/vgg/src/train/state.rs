//! Where a run stands (`state.json`), its log (`log.csv`, `log.jsonl`), what a caller sees of it
//! ([`Observer`]), and reading a run's files back, checked.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::folder::{CONFIG, STATE, checkpoint_names};
use super::plateau::Plateau;
use crate::data::Dataset;
use crate::error::VggError;
use crate::fsio::write_atomic;

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
    /// float16 training's loss scale ([`super::LossScale`]); none in float32 and bfloat16.
    #[serde(default)]
    pub loss_scale: Option<super::LossScale>,
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

pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), VggError> {
    write_atomic(path, &to_json(path, value)?)
}

/// `value` as the JSON of the run file `path`; `Err` for what JSON cannot hold (a path that is
/// not UTF-8).
pub(super) fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, VggError> {
    serde_json::to_vec_pretty(value).map_err(|e| {
        VggError::run_file(
            path,
            format!("cannot be written: {e} (a path that is not UTF-8?)"),
        )
    })
}

/// A run file: at most 64 MiB (a state holds one row per epoch), read whole.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, VggError> {
    let size = std::fs::metadata(path)
        .map_err(|e| VggError::io(path, e))?
        .len();
    if size > 64 << 20 {
        return Err(VggError::run_file(
            path,
            format!("{size} bytes is too large for a run file"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| VggError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| VggError::run_file(path, format!("not a readable run file: {e}")))
}

/// The run's config, as written in `dir/config.json`, validated.
pub fn read_config(dir: &Path) -> Result<TrainConfig, VggError> {
    let config: TrainConfig = read_json(&dir.join(CONFIG))?;
    config
        .validate()
        .map_err(|e| VggError::bad_run_setting(dir.join(CONFIG), e))?;
    Ok(config)
}

/// Refuses a dataset of another size than the run recorded (0 = not recorded): the data is not
/// the run's, or it changed since.
pub(crate) fn check_size(
    data: &Dataset,
    recorded: usize,
    what: &str,
    dir: &Path,
) -> Result<(), VggError> {
    if recorded != 0 && data.len() != recorded {
        return Err(VggError::run_file(
            dir.join(CONFIG),
            format!(
                "the run's {what} set had {recorded} images; {} has {}: the data is not the run's (or it changed since)",
                data.name,
                data.len()
            ),
        ));
    }
    Ok(())
}

/// The images the run in `dir` validated on, for evaluating its checkpoints on them (choosing
/// test scales or a method before the test set is touched): its held-out share of the training
/// data, drawn again from its config's data and seed, or its separate validation set.
/// Refuses data whose size differs from what the run recorded (its split would differ).
pub fn validation_set(dir: &Path) -> Result<Dataset, VggError> {
    let config = read_config(dir)?;
    let Some(spec) = &config.data else {
        return Err(VggError::run_file(
            dir.join(CONFIG),
            "does not record its data (written by an older vgg), so its validation images cannot be drawn again",
        ));
    };
    let sets = spec.open(config.seed)?;
    check_size(&sets.train, config.train_images, "training", dir)?;
    check_size(&sets.val, config.val_images, "validation", dir)?;
    sets.val.check_classes(&config.classes, "the run")?;
    Ok(sets.val)
}

/// The run's state, as written in `dir/state.json`, with checkpoint names checked to be this
/// run's own (`epoch-N.bpk` for its epoch N).
pub fn read_state(dir: &Path) -> Result<RunState, VggError> {
    let path = dir.join(STATE);
    let state: RunState = read_json(&path)?;
    check_values(&state).map_err(|reason| VggError::run_file(&path, reason))?;
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

/// A state's numbers are ones training can have written: a rate that is positive and finite,
/// accuracies and errors within [0, 1], losses and times finite and not negative, one history
/// row per completed epoch, in order. A crafted value (an accuracy of 1e308, a rate of -1)
/// would otherwise be printed, or trained with, as if true.
fn check_values(s: &RunState) -> Result<(), String> {
    let share = |what: &str, v: f64| {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(format!(
                "holds {what} {v:?}, not within [0, 1]: not written by vgg"
            ))
        }
    };
    let plain = |what: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(format!("holds {what} {v:?}: not written by vgg"))
        }
    };
    let p = &s.schedule;
    if !(p.lr.is_finite() && p.lr > 0.0) {
        return Err(format!(
            "holds a learning rate of {:?}: not written by vgg",
            p.lr
        ));
    }
    if !(p.factor.is_finite() && p.factor > 0.0 && p.factor <= 1.0) {
        return Err(format!(
            "holds a reduction factor of {:?}: not written by vgg",
            p.factor
        ));
    }
    plain("min_delta", p.min_delta)?;
    for v in p.best.iter().chain(&s.best_val_accuracy) {
        share("an accuracy of", *v)?;
    }
    if s.history.len() != s.epoch {
        return Err(format!(
            "records {} epochs of history for {} epochs done: not written by vgg",
            s.history.len(),
            s.epoch
        ));
    }
    for (i, r) in s.history.iter().enumerate() {
        if r.epoch != i + 1 {
            return Err(format!(
                "holds epoch {} in row {}: not written by vgg",
                r.epoch,
                i + 1
            ));
        }
        if !(r.lr.is_finite() && r.lr > 0.0) {
            return Err(format!(
                "holds a learning rate of {:?} at epoch {}",
                r.lr, r.epoch
            ));
        }
        for (what, v) in [
            ("a top-1 error of", r.train_top1_err),
            ("a top-5 error of", r.train_top5_err),
            ("a top-1 error of", r.val_top1_err),
            ("a top-5 error of", r.val_top5_err),
        ] {
            share(what, v)?;
        }
        for (what, v) in [
            ("a loss of", r.train_loss),
            ("a loss of", r.val_loss),
            ("a time of", r.seconds),
            ("a rate of", r.images_per_s),
            ("a time of", r.comm_seconds),
        ] {
            plain(what, v)?;
        }
    }
    Ok(())
}

/// `log.csv` and `log.jsonl`, rewritten from the history (so a resumed run's log has no
/// duplicated or orphaned rows).
pub(super) fn write_logs(dir: &Path, history: &[EpochRecord]) -> Result<(), VggError> {
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
