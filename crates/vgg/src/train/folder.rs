//! The run folder and the only files a run ever writes or removes there.
//!
//! A run owns `config.json`, `state.json`, `epoch-N.bpk`, `epoch-N-optim.bpk`, `best.bpk`,
//! `best.safetensors`, `log.csv`, `log.jsonl`, `curves.png`, the temporary files of their
//! atomic writes, and `.lock`, on which the trainer writing the run holds a lock (kept when the
//! run is replaced). Replacing a run (`force`) removes the others and nothing else, and only in
//! a folder that holds a run's `config.json` (or nothing at all); names read back from
//! `state.json` must be of the `epoch-N` form, so a crafted file cannot point outside the
//! folder.

use std::path::Path;

use super::config::TrainConfig;
use crate::checkpoint::run_files::FIXED;
use crate::error::VggError;

pub use crate::checkpoint::run_files::{CONFIG, STATE, checkpoint_names, is_run_file};

/// Whether `dir` holds a run: a `config.json` that reads as a [`TrainConfig`].
pub fn is_run(dir: &Path) -> bool {
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
pub fn lock(dir: &Path) -> Result<std::fs::File, VggError> {
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
pub fn prepare(dir: &Path, force: bool) -> Result<std::fs::File, VggError> {
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
