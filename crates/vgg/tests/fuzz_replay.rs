//! Its own test binary (it lowers the process-wide limits as the fuzzers do): every input under
//! `tests/hostile/<parser>/` (the fuzzers' seeds, `seed-*`, and the inputs that once crashed them,
//! `crash-*`) goes through its parser again and must give a value or an error, never a panic.

use std::path::PathBuf;

#[test]
fn fuzz_findings_stay_fixed() {
    vgg::fuzz::small_limits();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut seen = 0;
    for parser in vgg::fuzz::PARSERS {
        let Ok(files) = std::fs::read_dir(root.join(parser)) else {
            continue;
        };
        for file in files.flatten() {
            let bytes = std::fs::read(file.path()).unwrap();
            vgg::fuzz::run(parser, &bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", file.path().display()));
            seen += 1;
        }
    }
    assert!(seen > 0, "no regression case under {}", root.display());
}
