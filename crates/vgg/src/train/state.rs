//! Where a run stands (`state.json`), a row of its log, and what a caller sees of it
//! ([`Observer`]); [`super::RunFolder`] reads and writes them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::plateau::Plateau;

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

/// A state's numbers are ones training can have written: a rate that is positive and finite,
/// accuracies and errors within [0, 1], losses and times finite and not negative, one history
/// row per completed epoch, in order. A crafted value (an accuracy of 1e308, a rate of -1)
/// would otherwise be printed, or trained with, as if true.
pub(super) fn check_values(s: &RunState) -> Result<(), String> {
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
