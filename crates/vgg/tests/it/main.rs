//! The library's integration tests, in one binary.

mod common;
mod golden;
mod weights;
