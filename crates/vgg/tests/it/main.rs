//! The library's integration tests, in one binary.

mod common;
mod golden;
mod train;
mod weights;
