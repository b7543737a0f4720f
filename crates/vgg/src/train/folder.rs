//! The run folder and the only files a run ever writes or removes there.
//!
//! A run owns `config.json`, `state.json`, `epoch-N.bpk`, `epoch-N-optim.bpk`, `best.bpk`,
//! `best.safetensors`, `log.csv`, `log.jsonl`, `curves.png` and the temporary files of their
//! atomic writes. Replacing a run (`force`) removes those and nothing else, and only in a folder
//! that holds a run's `config.json` (or nothing at all); names read back from `state.json` must
//! be of the `epoch-N` form, so a crafted file cannot point outside the folder.

use std::path::Path;

use super::config::TrainConfig;
use crate::checkpoint::run_files::FIXED;
use crate::error::VggError;

pub use crate::checkpoint::run_files::{CONFIG, STATE, checkpoint_names, is_run_file};

/// Whether `dir` holds a run: a `config.json` that reads as a [`TrainConfig`].
pub fn is_run(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(CONFIG))
        .ok()
        .is_some_and(|text| serde_json::from_str::<TrainConfig>(&text).is_ok())
}

/// Makes `dir` ready for a new run. A missing folder is created; an existing one is refused
/// unless `force`, and then only a run's folder (or an empty one, or one holding only a run's
/// temporary files) is accepted, and only the run's own files are removed from it: anything
/// else a user put there stays.
pub fn prepare(dir: &Path, force: bool) -> Result<(), VggError> {
    let io = |e| VggError::io(dir, e);
    if !dir.exists() {
        return std::fs::create_dir_all(dir).map_err(io);
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
            name.starts_with('.') && name.contains(".tmp-") && is_run_file(&name)
        });
    if !dir.is_dir() || !(fresh || is_run(dir)) {
        return Err(VggError::NotARun {
            path: dir.to_path_buf(),
        });
    }
    for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_run_file(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).map_err(|e| VggError::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Removes the temporary files that writes killed mid-way left in `dir` (a resumed run's folder).
pub fn remove_temps(dir: &Path) {
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
