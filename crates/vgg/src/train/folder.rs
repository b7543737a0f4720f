//! The run folder ([`RunFolder`]): the one owner of a run's files, their names, its lock and
//! its reading and writing, for training, evaluation, conversion and the CLI alike.
//!
//! A run owns `config.json`, `state.json`, `weights.json` (its weights card,
//! [`crate::preset::Card`]), `epoch-N.bpk`, `epoch-N-optim.bpk`, `best.bpk`,
//! `best.safetensors`, `log.csv`, `log.jsonl`, `curves.png`, the temporary files of their
//! atomic writes, and `.lock`, on which the trainer writing the run holds a lock (kept when the
//! run is replaced). Replacing a run (`force`) removes the others and nothing else, and only in
//! a folder that holds a run's `config.json` (or nothing at all); names read back from
//! `state.json` must be of the `epoch-N` form, so a crafted file cannot point outside the
//! folder.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::TrainConfig;
use super::state::{EpochRecord, RunState, check_values};
use crate::checkpoint::run_files::{BEST, FIXED};
use crate::data::Dataset;
use crate::error::VggError;
use crate::fsio::{read_run_json, sha256_file, write_atomic};
use crate::preset::Card;

pub use crate::checkpoint::run_files::{CARD, CONFIG, STATE, checkpoint_names, is_run_file};

fn is_run(dir: &Path) -> bool {
    let path = dir.join(CONFIG);
    std::fs::metadata(&path).is_ok_and(|m| m.len() <= 64 << 20)
        && std::fs::read_to_string(path)
            .ok()
            .is_some_and(|text| serde_json::from_str::<TrainConfig>(&text).is_ok())
}

/// The lock file of a run folder: held (an advisory lock) by the one trainer writing the run.
pub const LOCK: &str = ".lock";

/// Takes `dir`'s lock ([`LOCK`]), or refuses: another trainer (this run started twice, or a
/// resume beside it) holds it. The lock lasts as long as the file returned is open. The lock
/// file is created where missing, never truncated, and never through a link.
fn lock(dir: &Path) -> Result<std::fs::File, VggError> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_symlink()) {
        return Err(VggError::run_file(
            dir,
            "is a link; a run is written into a folder, not through a link: give the folder itself",
        ));
    }
    let path = dir.join(LOCK);
    let mut open = std::fs::OpenOptions::new();
    open.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.custom_flags(libc::O_NOFOLLOW);
    }
    let file = open.open(&path).map_err(|e| match e.raw_os_error() {
        #[cfg(unix)]
        Some(libc::ELOOP) => {
            VggError::run_file(&path, "is a link, not the lock file vgg makes; remove it")
        }
        _ => VggError::io(&path, e),
    })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(VggError::run_file(
            &path,
            "is not the lock file vgg makes; remove it",
        ));
    }
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(VggError::run_file(
            dir,
            "is in use by another `vgg train` (its lock is held); wait for it, or give another --out",
        )),
        // A file system without locks (some network mounts): the run goes on unguarded.
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            Ok(file)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(VggError::io(&path, e)),
    }
}

/// Makes `dir` ready for a new run and returns its [`lock`]. A missing folder is created (by
/// this process: one that appears meanwhile is refused); an existing one is refused unless
/// `force`, and then only a run's folder (or an empty one, or one holding only a run's
/// temporary files) is accepted, and only the run's own files are removed from it: anything
/// else a user put there stays. A link is never followed: the run's files go into a folder.
fn prepare(dir: &Path, force: bool) -> Result<std::fs::File, VggError> {
    let io = |e| VggError::io(dir, e);
    match std::fs::symlink_metadata(dir) {
        Err(_) => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| VggError::io(parent, e))?;
            }
            return match std::fs::create_dir(dir) {
                Ok(()) => lock(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(VggError::RunExists {
                        path: dir.to_path_buf(),
                    })
                }
                Err(e) => Err(io(e)),
            };
        }
        Ok(m) if m.is_symlink() => {
            return Err(VggError::run_file(
                dir,
                "is a link; a run is written into a folder, not through a link: give the folder itself",
            ));
        }
        Ok(_) => {}
    }
    if !force {
        return Err(VggError::RunExists {
            path: dir.to_path_buf(),
        });
    }
    // Empty, or holding only the temporary files of a run killed while writing its config.
    let fresh = dir.is_dir()
        && std::fs::read_dir(dir).map_err(io)?.flatten().all(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name == LOCK || (name.starts_with('.') && name.contains(".tmp-") && is_run_file(&name))
        });
    if !dir.is_dir() || !(fresh || is_run(dir)) {
        return Err(VggError::NotARun {
            path: dir.to_path_buf(),
        });
    }
    // Held before anything is removed: a run still training keeps its files.
    let held = lock(dir)?;
    for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_run_file(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).map_err(|e| VggError::io(entry.path(), e))?;
        }
    }
    Ok(held)
}

/// Removes the temporary files that writes killed mid-way left in `dir` (a resumed run's folder).
fn remove_temps(dir: &Path) {
    for name in FIXED {
        crate::fsio::remove_stale_temps(&dir.join(name));
    }
    // The epoch checkpoints' temporary files: `.epoch-N.bpk.tmp-PID`.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".epoch-")
            && is_run_file(&name)
            && let Some((target, _)) = name[1..].rsplit_once(".tmp-")
        {
            crate::fsio::remove_stale_temps(&dir.join(target));
        }
    }
}

/// A training run's folder: where its files are, what they hold, and (while a trainer writes
/// it) its lock. Every read is checked: sizes before reading, values a run can have written,
/// checkpoint names of this run's own form and hashes of the files it wrote.
#[derive(Debug)]
pub struct RunFolder {
    dir: PathBuf,
    /// Held while this process writes the run ([`lock`]); `None` for reading, and on ranks
    /// other than 0.
    held: Option<std::fs::File>,
}

impl RunFolder {
    /// A new run's folder, held: created, or (with `force`) a run's folder whose own files are
    /// removed ([`prepare`]), with `config` and `card` written into it. The config's JSON is
    /// made before anything on disk is touched (a path that is not UTF-8 is refused first).
    pub fn create(
        dir: &Path,
        force: bool,
        config: &TrainConfig,
        card: &Card,
    ) -> Result<Self, VggError> {
        let json = to_json(&dir.join(CONFIG), config)?;
        let held = prepare(dir, force)?;
        write_atomic(&dir.join(CONFIG), &json)?;
        card.write(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            held: Some(held),
        })
    }

    /// The run in `dir`, for reading: its `config.json` must read as a run's.
    pub fn open(dir: &Path) -> Result<Self, VggError> {
        let folder = Self {
            dir: dir.to_path_buf(),
            held: None,
        };
        folder.config()?;
        Ok(folder)
    }

    /// The folder of a run another rank writes: this one only reads it.
    pub(crate) fn unheld(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            held: None,
        }
    }

    /// Takes the run's lock, for writing it (a resumed run): refused while another trainer
    /// holds it.
    pub fn hold(&mut self) -> Result<(), VggError> {
        if self.held.is_none() {
            self.held = Some(lock(&self.dir)?);
        }
        Ok(())
    }

    /// Whether `dir` holds a run: a `config.json` that reads as a [`TrainConfig`].
    pub fn is_run(dir: &Path) -> bool {
        is_run(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The best checkpoint (burn's record), which the run folder stands for as weights.
    pub fn best(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// The run's config, validated.
    pub fn config(&self) -> Result<TrainConfig, VggError> {
        let path = self.dir.join(CONFIG);
        let config: TrainConfig = read_run_json(&path, "run file")?;
        config
            .validate()
            .map_err(|e| VggError::bad_run_setting(&path, e))?;
        Ok(config)
    }

    /// Where the run stands, with its values checked and its checkpoint names this run's own
    /// (`epoch-N.bpk` for its epoch N), so a crafted file cannot point outside the folder.
    pub fn state(&self) -> Result<RunState, VggError> {
        let path = self.dir.join(STATE);
        let state: RunState = read_run_json(&path, "run file")?;
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

    /// The files of the checkpoint `state` names, `(weights, optimiser)`, each checked against
    /// the SHA-256 the run recorded.
    pub fn checkpoint(&self, state: &RunState) -> Result<(PathBuf, PathBuf), VggError> {
        let (Some(model_file), Some(optim_file)) = (&state.model_file, &state.optim_file) else {
            return Err(VggError::run_file(
                self.dir.join(STATE),
                "the run has no checkpoint yet (it stopped in its first epoch); start it again",
            ));
        };
        let (model, optim) = (self.dir.join(model_file), self.dir.join(optim_file));
        for (path, want) in [(&model, &state.model_sha256), (&optim, &state.optim_sha256)] {
            if let Some(want) = want {
                let got = sha256_file(path)?;
                if &got != want {
                    return Err(VggError::run_file(
                        path,
                        format!(
                            "is not the checkpoint this run wrote (SHA-256 {got}, state.json records {want}): it was replaced or damaged"
                        ),
                    ));
                }
            }
        }
        Ok((model, optim))
    }

    /// Refuses a dataset of another size than the run recorded (0 = not recorded): the data
    /// is not the run's, or it changed since.
    pub fn check_size(&self, data: &Dataset, recorded: usize, what: &str) -> Result<(), VggError> {
        if recorded != 0 && data.len() != recorded {
            return Err(VggError::run_file(
                self.dir.join(CONFIG),
                format!(
                    "the run's {what} set had {recorded} images; {} has {}: the data is not the run's (or it changed since)",
                    data.name,
                    data.len()
                ),
            ));
        }
        Ok(())
    }

    /// The images the run validated on, for evaluating its checkpoints on them (choosing test
    /// scales or a method before the test set is touched): its held-out share of the training
    /// data, drawn again from its config's data and seed, or its separate validation set.
    /// Refuses data whose size differs from what the run recorded (its split would differ).
    pub fn validation_set(&self) -> Result<Dataset, VggError> {
        let config = self.config()?;
        let Some(spec) = &config.data else {
            return Err(VggError::run_file(
                self.dir.join(CONFIG),
                "does not record its data (written by an older vgg), so its validation images cannot be drawn again",
            ));
        };
        let sets = spec.open(config.seed)?;
        self.check_size(&sets.train, config.train_images, "training")?;
        self.check_size(&sets.val, config.val_images, "validation")?;
        sets.val.check_classes(&config.classes, "the run")?;
        Ok(sets.val)
    }

    /// Rewrites `config.json` (a new epoch budget).
    pub(super) fn write_config(&self, config: &TrainConfig) -> Result<(), VggError> {
        let path = self.dir.join(CONFIG);
        write_atomic(&path, &to_json(&path, config)?)
    }

    /// Writes `state.json`: last after each epoch, so it only ever names complete files.
    pub(super) fn write_state(&self, state: &RunState) -> Result<(), VggError> {
        let path = self.dir.join(STATE);
        write_atomic(&path, &to_json(&path, state)?)
    }

    /// The path of a file of the run by its name ([`checkpoint_names`], `best.safetensors`).
    pub(super) fn path(&self, name: &str) -> PathBuf {
        debug_assert!(is_run_file(name), "{name} is not a run file");
        self.dir.join(name)
    }

    /// Removes the temporary files that writes killed mid-way left (a resumed run's folder).
    pub(super) fn remove_temps(&self) {
        remove_temps(&self.dir)
    }

    /// `log.csv` and `log.jsonl`, rewritten from the history (so a resumed run's log has no
    /// duplicated or orphaned rows).
    pub(super) fn write_logs(&self, history: &[EpochRecord]) -> Result<(), VggError> {
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
        write_atomic(&self.dir.join("log.csv"), csv.as_bytes())?;
        write_atomic(&self.dir.join("log.jsonl"), jsonl.as_bytes())
    }
}

/// `value` as the JSON of the run file `path`; `Err` for what JSON cannot hold (a path that is
/// not UTF-8).
fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, VggError> {
    serde_json::to_vec_pretty(value).map_err(|e| {
        VggError::run_file(
            path,
            format!("cannot be written: {e} (a path that is not UTF-8?)"),
        )
    })
}
