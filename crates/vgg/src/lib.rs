//! # vgg
//!
//! The VGG family of very deep convolutional networks (K. Simonyan, A. Zisserman, "Very Deep
//! Convolutional Networks for Large-Scale Image Recognition", ICLR 2015) on burn 0.22.
//!
//! - [`arch`]: the paper's Table 1 as data ([`Layer`] tokens) and [`VggConfig`], from which the
//!   model, its parameter and MAC counts and its checkpoint keys derive.
//! - [`model`]: the [`Vgg`] module (torchvision's layout and head).
//! - [`weights`]: torchvision state dicts from `.pth` / `.safetensors`, strict loading.
//! - [`dist`]: synchronous data-parallel SGD over a [`dist::Collective`] (MPI with `mpi`).
//! - [`summary`]: a per-layer table of output shapes, parameters and multiply-adds.

pub mod arch;
pub mod data;
pub mod dense;
pub mod dist;
pub mod error;
pub mod eval;
pub mod features;
pub mod fsio;
pub mod fuzz;
pub mod kernels;
pub mod layouts;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod record;
pub mod summary;
pub mod train;
pub mod weights;

pub use arch::{Layer, VggConfig};
pub use error::VggError;
pub use model::{InitScheme, Vgg};
pub use weights::{StateDict, StateTensor};
