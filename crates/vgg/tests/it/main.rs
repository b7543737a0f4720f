//! The library's integration tests, in one binary.

mod common;
mod data;
mod download;
mod eval;
mod formats;
mod golden;
#[cfg(feature = "wgpu")]
mod gpu;
mod hostile;
mod kernels;
mod train;
mod weights;
