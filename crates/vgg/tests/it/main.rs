//! The library's integration tests, in one binary.

mod common;
mod data;
mod golden;
mod train;
mod weights;
