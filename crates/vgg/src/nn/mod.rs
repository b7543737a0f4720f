//! The network: the [`Vgg`] module and its one forward pass ([`model`]), the operations it is
//! made of and the one place that chooses our flex kernels or burn's ([`ops`]), the dense head
//! of Section 3.2 ([`dense`]), mixed precision ([`precision`]), named activations ([`activations`]) and the per-layer table
//! ([`summary`]).

pub mod activations;
pub mod dense;
pub mod loss;
pub mod model;
pub mod ops;
pub mod precision;
pub mod summary;

pub use activations::Activation;
pub use loss::cross_entropy;
pub use model::{BN_MOMENTUM, ConvBlock, InitScheme, Seen, Vgg};
pub use ops::BatchStats;
pub use precision::{PRECISION_NAMES, Precision};
