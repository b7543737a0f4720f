//! Published weights fetched from a local HTTP server: a cut download is resumed by a range
//! request, a cached file needs no network, and a file whose SHA-256 does not match its name is
//! deleted with a clear error.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;

use vgg::fsio::sha256;
use vgg::preset::download::fetch;

use crate::common::scratch;

/// A one-file HTTP/1.1 server on 127.0.0.1 for `requests` requests: `body` at any path, ranges
/// honoured when `ranges`, the first answer cut after `cut` bytes when given. Returns its base
/// URL, and at the end the Range header of each request.
fn serve(
    body: Vec<u8>,
    ranges: bool,
    cut: Option<usize>,
    requests: usize,
) -> (String, JoinHandle<Vec<Option<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for i in 0..requests {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
                    range = Some(v.trim().to_string());
                }
            }
            seen.push(range.clone());
            let start = range.filter(|_| ranges).and_then(|r| {
                r.strip_prefix("bytes=")?
                    .strip_suffix('-')?
                    .parse::<usize>()
                    .ok()
            });
            let (status, part) = match start {
                Some(s) => ("206 Partial Content", &body[s..]),
                None => ("200 OK", &body[..]),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                part.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            let send = match cut {
                Some(n) if i == 0 => &part[..n],
                _ => part,
            };
            let _ = stream.write_all(send);
            let _ = stream.flush();
        }
        seen
    });
    (url, handle)
}

#[test]
fn published_weights_are_fetched_resumed_and_checked() {
    let body: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let prefix = sha256(&body)[..8].to_string();
    let name = format!("w-{prefix}.pth");
    let cache = scratch("download-cache");
    let quiet = &mut |_: u64, _: Option<u64>| {};

    // Cut after 500,000 bytes: an error, and the part is kept.
    let (url, server) = serve(body.clone(), true, Some(500_000), 1);
    let err = fetch(
        &format!("{url}/{name}"),
        &cache,
        &name,
        &prefix,
        1 << 30,
        quiet,
    )
    .unwrap_err();
    server.join().unwrap();
    assert!(err.to_string().contains("resumes"), "{err}");
    let part = cache.join(format!("{name}.part"));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 500_000);

    // The next try asks for the rest only, and the whole file is the server's.
    let (url, server) = serve(body.clone(), true, None, 1);
    let mut last = (0, None);
    let file = fetch(
        &format!("{url}/{name}"),
        &cache,
        &name,
        &prefix,
        1 << 30,
        &mut |d, t| last = (d, t),
    )
    .unwrap();
    assert_eq!(server.join().unwrap(), [Some("bytes=500000-".to_string())]);
    assert_eq!(std::fs::read(&file).unwrap(), body);
    assert_eq!(last, (body.len() as u64, Some(body.len() as u64)));
    assert!(!part.exists());

    // Cached: no network needed (nothing listens there).
    let again = fetch(
        "http://127.0.0.1:9/none",
        &cache,
        &name,
        &prefix,
        1 << 30,
        quiet,
    )
    .unwrap();
    assert_eq!(again, file);

    // A cached file that no longer matches its name's hash is deleted, with the reason.
    std::fs::write(&file, b"something else").unwrap();
    let err = fetch(
        "http://127.0.0.1:9/none",
        &cache,
        &name,
        &prefix,
        1 << 30,
        quiet,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("deleted") && err.to_string().contains(&prefix),
        "{err}"
    );
    assert!(!file.exists());

    // A server that ignores ranges: the part is started again, and the file is whole.
    std::fs::write(&part, &body[..1000]).unwrap();
    let (url, server) = serve(body.clone(), false, None, 1);
    let file = fetch(
        &format!("{url}/{name}"),
        &cache,
        &name,
        &prefix,
        1 << 30,
        quiet,
    )
    .unwrap();
    server.join().unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), body);

    // A server whose file is not the one named: refused, nothing left in the cache.
    let other = format!("v-{prefix}.pth");
    let (url, server) = serve(vec![7u8; 5000], true, None, 1);
    let err = fetch(
        &format!("{url}/{other}"),
        &cache,
        &other,
        &prefix,
        1 << 30,
        quiet,
    )
    .unwrap_err();
    server.join().unwrap();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(!cache.join(&other).exists());

    // A file larger than a weight file can be: refused before it is written.
    let (url, server) = serve(vec![0u8; 5000], true, None, 1);
    let err = fetch(&format!("{url}/big"), &cache, "big", "00", 4000, quiet).unwrap_err();
    server.join().unwrap();
    // Named as not a weight file, with no limit variable blamed (none changes this bound).
    assert!(
        err.to_string().contains("announces 5000 bytes") && !err.to_string().contains("VGG_MAX"),
        "{err}"
    );
}

/// A link in the cache where the download's part (or the file) goes is not followed: the file
/// it points to is neither truncated nor appended to, and the link stays.
#[cfg(unix)]
#[test]
fn a_link_in_the_cache_is_never_written_through() {
    let prefix = sha256(&[5u8; 4000])[..8].to_string();
    let name = format!("w-{prefix}.pth");
    let cache = scratch("download-links");
    let victim = cache.join("thesis.txt");
    std::fs::write(&victim, b"five years of work").unwrap();
    let quiet = &mut |_: u64, _: Option<u64>| {};
    for target in [format!("{name}.part"), name.clone()] {
        let link = cache.join(&target);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        // The part: refused before any request. The file: read (a link the user made to a copy
        // is allowed), found not to be the weights, and its link (not the victim) removed.
        let got = fetch(
            &format!("http://127.0.0.1:9/{name}"),
            &cache,
            &name,
            &prefix,
            1 << 20,
            quiet,
        );
        let err = got.unwrap_err().to_string();
        assert!(
            err.contains("not a file vgg made") || err.contains("SHA-256"),
            "{target}: {err}"
        );
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"five years of work",
            "{target}"
        );
        let _ = std::fs::remove_file(&link);
    }
}

/// A server that stops sending mid-body: the download gives up after the stall time with the
/// part kept, instead of waiting forever.
#[test]
fn a_stalled_download_gives_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            .unwrap();
        stream.flush().unwrap();
        // Holds the connection open, silent, until the client has given up.
        std::thread::sleep(std::time::Duration::from_secs(4));
    });
    let cache = scratch("download-stall");
    let started = std::time::Instant::now();
    let err = vgg::preset::download::fetch_with(
        &format!("{url}/w.pth"),
        &cache,
        "w.pth",
        "00",
        1 << 20,
        std::time::Duration::from_secs(1),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{err}"
    );
    assert!(err.to_string().contains("kept"), "{err}");
    assert_eq!(
        std::fs::read(cache.join("w.pth.part")).unwrap(),
        b"0123456789"
    );
    server.join().unwrap();
}
