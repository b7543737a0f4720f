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
    assert!(err.to_string().contains("over the limit"), "{err}");
}
