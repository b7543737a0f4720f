//! Files written so that nothing is ever half-written: a temporary file beside the target, synced,
//! then renamed over it. A process killed mid-write leaves only its temporary file, which the next
//! write of the same target removes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::VggError;

/// `dir/.name.tmp-PID`: beside the target, so the rename stays on one file system.
pub fn temp_path(path: &Path) -> PathBuf {
    path.with_file_name(format!(".{}.tmp-{}", file_name(path), std::process::id()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename. The
/// temporary file is created, never opened: a link or file already at its name is refused,
/// not followed or truncated; the rename replaces `path` itself, never what a link there
/// points to.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VggError> {
    remove_stale_temps(path);
    let tmp = temp_path(path);
    // A plain file at our own temporary name is a write of ours that died (in a container this
    // process may well be PID 1 every time): removed. Anything else there (a link) is not ours.
    if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(&tmp);
    }
    let mut created = false;
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        created = true;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        if created {
            let _ = std::fs::remove_file(&tmp);
        } else if e.kind() == std::io::ErrorKind::AlreadyExists {
            // Something this write did not make sits at its temporary name (a link?).
            return Err(VggError::io(
                &tmp,
                std::io::Error::other(
                    "exists and was not made by vgg; it is left as it is: remove it",
                ),
            ));
        }
        return Err(VggError::io(path, e));
    }
    Ok(())
}

/// Removes the temporary files of earlier writes of `path` whose process is gone (killed
/// mid-write): `.name.tmp-PID` with no process `PID`. Only names of this exact form are touched.
pub fn remove_stale_temps(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(".{}.tmp-", file_name(path));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether a process `pid` exists (Linux's /proc; elsewhere assume it does, and keep the file).
fn process_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// The SHA-256 of a file, as 64 hex digits (streamed: the file is not held in memory).
pub fn sha256_file(path: &Path) -> Result<String, VggError> {
    let mut file = std::fs::File::open(path).map_err(|e| VggError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| VggError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The SHA-256 of bytes, as 64 hex digits.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A run's JSON file (`config.json`, `state.json`, `weights.json`) as `T`: at most 64 MiB (a
/// state holds one row per epoch), read whole; `what` names it in the error ("run file").
pub(crate) fn read_run_json<T: for<'de> serde::Deserialize<'de>>(
    path: &Path,
    what: &str,
) -> Result<T, VggError> {
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
        .map_err(|e| VggError::run_file(path, format!("not a readable {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_of_dead_processes_go_others_stay() {
        let dir = std::env::temp_dir().join(format!("vgg-fsio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("w.safetensors");
        // PID 4194305 is above Linux's pid_max: never alive.
        let stale = dir.join(".w.safetensors.tmp-4194305");
        let foreign = dir.join(".w.safetensors.tmp-notapid");
        let other = dir.join(".x.safetensors.tmp-4194305");
        for f in [&stale, &foreign, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        write_atomic(&target, b"data").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        assert!(!stale.exists() && foreign.exists() && other.exists());
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_file(&target).unwrap(), sha256(b"data"));
        // A write of ours killed under this same PID (PID 1 in every container) left its
        // temporary file: it is replaced. A link there is not ours: refused, left as it is.
        let own = temp_path(&target);
        std::fs::write(&own, b"half a write").unwrap();
        write_atomic(&target, b"again").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"again");
        assert!(!own.exists());
        #[cfg(unix)]
        {
            let victim = dir.join("victim");
            std::fs::write(&victim, b"keep").unwrap();
            std::os::unix::fs::symlink(&victim, &own).unwrap();
            let err = write_atomic(&target, b"third").unwrap_err().to_string();
            assert!(err.contains("not made by vgg"), "{err}");
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
            assert!(std::fs::symlink_metadata(&own).unwrap().is_symlink());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
