//! Fuzz target: `onnx` input (see `vgg::fuzz::run`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vgg::fuzz::small_limits();
    vgg::fuzz::run("onnx", data).expect("a known parser");
});
