//! Published weights fetched into a cache (`$XDG_CACHE_HOME/vgg`): a partial file is resumed
//! where it stopped, the SHA-256 prefix the file's name carries is checked before the file is
//! used (a mismatch deletes it and says so), and a file in the cache needs no network.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::VggError;
use crate::fsio::sha256_file;

/// The cache folder: `$XDG_CACHE_HOME/vgg`, or `~/.cache/vgg`.
pub fn default_cache() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("vgg")),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("vgg")),
    }
}

/// What a download reports while it runs: bytes on disk, and the whole size when known.
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

fn failed(url: &str, reason: impl std::fmt::Display) -> VggError {
    VggError::Download {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// `cache/name`, downloaded from `url` unless the cache holds it, its SHA-256 starting with
/// `sha256_prefix` (checked on every call: a file that no longer matches is deleted).
/// A download goes to `cache/name.part` first, resumed by an HTTP range request when a
/// previous one stopped, and is at most `max_bytes` long.
pub fn fetch(
    url: &str,
    cache: &Path,
    name: &str,
    sha256_prefix: &str,
    max_bytes: u64,
    progress: Progress<'_>,
) -> Result<PathBuf, VggError> {
    std::fs::create_dir_all(cache).map_err(|e| VggError::io(cache, e))?;
    let file = cache.join(name);
    if !file.exists() {
        let part = cache.join(format!("{name}.part"));
        download(url, &part, max_bytes, progress)?;
        std::fs::rename(&part, &file).map_err(|e| VggError::io(&file, e))?;
    }
    let hash = sha256_file(&file)?;
    if !hash.starts_with(sha256_prefix) {
        std::fs::remove_file(&file).map_err(|e| VggError::io(&file, e))?;
        return Err(failed(
            url,
            format!(
                "the file's SHA-256 is {hash}, not the {sha256_prefix}... its name promises: it was damaged or replaced, and is deleted; fetch it again"
            ),
        ));
    }
    Ok(file)
}

/// Downloads `url` into `part`, appending to what a previous attempt left there.
fn download(
    url: &str,
    part: &Path,
    max_bytes: u64,
    progress: Progress<'_>,
) -> Result<(), VggError> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| failed(url, e))?;
    let (start, append) = match response.status().as_u16() {
        206 => (have, true),
        // The server sent the whole file: start again.
        200 => (0, false),
        // Nothing after what we have: the previous attempt had it all.
        416 if have > 0 => return Ok(()),
        code => return Err(failed(url, format!("the server answered HTTP {code}"))),
    };
    let length = response.body().content_length();
    let total = length.map(|n| n + start);
    if let Some(total) = total {
        crate::limits::check(
            || format!("{url}: bytes of the file"),
            total,
            max_bytes,
            "max_params",
        )?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(|e| VggError::io(part, e))?;
    let mut reader = response.into_body().into_reader();
    let mut done = start;
    let mut buf = vec![0u8; 1 << 20];
    progress(done, total);
    loop {
        let n = reader.read(&mut buf).map_err(|e| {
            failed(
                url,
                format!("{e}; the part downloaded is kept and the next try resumes it"),
            )
        })?;
        if n == 0 {
            break;
        }
        done += n as u64;
        if done > max_bytes {
            return Err(failed(
                url,
                format!("more than {max_bytes} bytes: not a weight file"),
            ));
        }
        out.write_all(&buf[..n])
            .map_err(|e| VggError::io(part, e))?;
        progress(done, total);
    }
    out.sync_all().map_err(|e| VggError::io(part, e))?;
    if total.is_some_and(|t| done < t) {
        return Err(failed(
            url,
            "the connection closed early; the next try resumes it",
        ));
    }
    Ok(())
}
