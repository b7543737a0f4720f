//! One fuzz target for every parser (`vgg::fuzz::PARSERS`), named by the `VGG_FUZZ_PARSER`
//! environment variable, read once (`fuzz/run.sh` sets it). One instrumented binary rather than
//! one per parser: a twelfth of the link time and of the disk (each links all of burn,
//! instrumented).
#![no_main]

use std::sync::OnceLock;

fn parser() -> &'static str {
    static PARSER: OnceLock<&'static str> = OnceLock::new();
    PARSER.get_or_init(|| {
        let name = std::env::var("VGG_FUZZ_PARSER").unwrap_or_default();
        match vgg::fuzz::PARSERS.iter().find(|p| **p == name) {
            Some(p) => p,
            None => {
                eprintln!(
                    "fuzz: set VGG_FUZZ_PARSER to one of: {}",
                    vgg::fuzz::PARSERS.join(", ")
                );
                std::process::exit(2)
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let parser = parser();
    vgg::fuzz::small_limits();
    vgg::fuzz::run(parser, data).expect("a known parser");
});
