//! Published weights fetched into a cache (`$XDG_CACHE_HOME/vgg`): a partial file is resumed
//! where it stopped, the SHA-256 prefix the file's name carries is checked before the file is
//! used (a mismatch deletes it and says so), and a file in the cache needs no network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::VggError;
use crate::fsio::sha256_file;

/// The cache folder: `$XDG_CACHE_HOME/vgg`, or `~/.cache/vgg`. As the XDG Base Directory
/// rules say, a relative or empty `XDG_CACHE_HOME` is ignored (so is such a `HOME`): never a
/// cache in whatever folder the command runs in.
pub fn default_cache() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .map(|dir| dir.join("vgg"))
        .or_else(|| absolute("HOME").map(|home| home.join(".cache").join("vgg")))
}

/// How long a download may wait for its next bytes before it stops (the part is kept).
pub const STALL: Duration = Duration::from_secs(60);

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
    fetch_with(url, cache, name, sha256_prefix, max_bytes, STALL, progress)
}

/// [`fetch`], giving up on a server that sends nothing for `stall`.
pub fn fetch_with(
    url: &str,
    cache: &Path,
    name: &str,
    sha256_prefix: &str,
    max_bytes: u64,
    stall: Duration,
    progress: Progress<'_>,
) -> Result<PathBuf, VggError> {
    if std::fs::symlink_metadata(cache).is_ok() && !cache.is_dir() {
        return Err(VggError::io(
            cache,
            std::io::Error::other(
                "is not a folder, so it cannot be the cache of published weights",
            ),
        ));
    }
    std::fs::create_dir_all(cache).map_err(|e| VggError::io(cache, e))?;
    let file = cache.join(name);
    let present = match std::fs::symlink_metadata(&file) {
        Ok(m) => m,
        Err(_) => {
            let part = cache.join(format!("{name}.part"));
            download(url, &part, max_bytes, stall, progress)?;
            // Never over something another program put there since (a link, say).
            if std::fs::symlink_metadata(&file).is_ok() {
                return Err(foreign(&file));
            }
            std::fs::rename(&part, &file).map_err(|e| VggError::io(&file, e))?;
            std::fs::symlink_metadata(&file).map_err(|e| VggError::io(&file, e))?
        }
    };
    // A link the user made to a copy elsewhere is read (and checked), never written.
    let readable = present.is_file() || (present.is_symlink() && file.is_file());
    if !readable {
        return Err(foreign(&file));
    }
    let hash = sha256_file(&file)?;
    if !hash.starts_with(sha256_prefix) {
        // Removes the cache's entry (a link, not what it points to).
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

/// An entry of the cache that `vgg` did not make (a link, a folder): left as it is.
fn foreign(path: &Path) -> VggError {
    VggError::io(
        path,
        std::io::Error::other(
            "is not a file vgg made (a link, a folder?); it is left as it is: remove it, or use another --cache-dir",
        ),
    )
}

/// Without the library's `download` feature nothing is fetched: a file already in the cache
/// is used, any other is an error saying so.
#[cfg(not(feature = "download"))]
fn download(
    url: &str,
    _part: &Path,
    _max_bytes: u64,
    _stall: Duration,
    _progress: Progress<'_>,
) -> Result<(), VggError> {
    Err(VggError::bad_config(
        "download",
        format!(
            "of {url}: this build of vgg fetches nothing (the library's `download` feature is off); put the file in the cache, or give a weight file"
        ),
    ))
}

/// Downloads `url` into `part`, appending to what a previous attempt left there. `part` must be
/// a plain file (a previous attempt's) or absent: a link is never followed.
#[cfg(feature = "download")]
fn download(
    url: &str,
    part: &Path,
    max_bytes: u64,
    stall: Duration,
    progress: Progress<'_>,
) -> Result<(), VggError> {
    use std::io::{Read, Write};
    let previous = match std::fs::symlink_metadata(part) {
        Ok(m) if m.is_file() => Some(m),
        Ok(_) => return Err(foreign(part)),
        Err(_) => None,
    };
    let have = previous.as_ref().map_or(0, |m| m.len());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(stall))
        .timeout_per_read(Some(stall))
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
    // A length that overflows with what we have is no weight file either.
    let total = length.map(|n| n.saturating_add(start));
    if let Some(total) = total
        && total > max_bytes
    {
        return Err(failed(
            url,
            format!(
                "the server announces {total} bytes, more than the {max_bytes} these weights can take: not their weight file"
            ),
        ));
    }
    let mut out = if append {
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(|e| VggError::io(part, e))?;
        // The file opened must be the one measured (not a link put there since).
        if !same_file(&out, previous.as_ref()) {
            return Err(foreign(part));
        }
        out
    } else {
        if previous.is_some() {
            std::fs::remove_file(part).map_err(|e| VggError::io(part, e))?;
        }
        // Created here or not at all: an entry that appeared since is refused, not followed.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(part)
            .map_err(|e| VggError::io(part, e))?
    };
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

/// Whether `file` is the plain file `measured` describes (its device and inode, on Unix).
#[cfg(feature = "download")]
fn same_file(file: &std::fs::File, measured: Option<&std::fs::Metadata>) -> bool {
    let (Ok(now), Some(then)) = (file.metadata(), measured) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        now.dev() == then.dev() && now.ino() == then.ino()
    }
    #[cfg(not(unix))]
    {
        now.is_file() && then.is_file() && now.len() == then.len()
    }
}
