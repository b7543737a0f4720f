//! # vgg
//!
//! The VGG family of very deep convolutional networks (K. Simonyan, A. Zisserman, "Very Deep
//! Convolutional Networks for Large-Scale Image Recognition", ICLR 2015) on burn 0.22.
//!
//! The modules depend one way, each on those above it:
//!
//! - [`arch`]: the paper's Table 1 as data ([`Layer`] tokens) and [`VggConfig`], from which the
//!   model, its parameter and MAC counts, its checkpoint keys and every layer name derive.
//! - [`nn`]: the [`Vgg`] module and its one forward pass (with taps for features and the
//!   summary), the dense head; `nn::ops` alone chooses our flex [`kernels`] or burn's.
//! - [`checkpoint`]: state dicts from `.pth` and `.safetensors`, Caffe/Keras layouts, strict
//!   loading, burn's records, a run folder's file names.
//! - [`preset`]: what travels with weights (preprocessing, crop, scale, class names), and
//!   opening weights from a file or a run folder.
//! - [`data`]: datasets, transforms (Section 3.1), the threaded loader, where a run's data is.
//! - [`eval`]: the paper's test protocols (Section 3.2) and honest top-k metrics.
//! - [`train`]: the recipe, the SGD step, the trainer, the run folder.
//! - [`dist`]: data-parallel training on MPI (feature `mpi`).
//!
//! Beside them: [`device`] (flex, wgpu, CUDA by name), [`error`] (the library's errors, in its own words), [`limits`] (bounds on what
//! input may allocate), [`fsio`] (atomic writes, hashes), [`fuzz`] (the parsers' fuzzing entry),
//! [`rng`] (the seedable generator of data order, augmentation and dropout masks).

pub mod arch;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
pub mod eval;
pub mod fsio;
pub mod fuzz;
pub mod kernels;
pub mod limits;
pub mod nn;
pub mod preset;
pub mod rng;
pub mod train;

pub use arch::{Layer, VggConfig};
pub use checkpoint::{StateDict, StateTensor};
pub use error::VggError;
pub use nn::{InitScheme, Vgg};
pub use preset::Weights;
