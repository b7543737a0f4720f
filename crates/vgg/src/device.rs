//! Where a network computes: flex (burn's CPU backend, with our [`crate::kernels`]), a GPU through
//! burn's wgpu backend (Vulkan, Metal, DX12; Mesa's lavapipe is a Vulkan device on the CPU), or
//! CUDA. Every device runs the same model code; only flex runs our own kernels
//! ([`crate::nn::ops`] chooses).
//!
//! GPU backends are cargo features of this crate: `wgpu` (no download at build time) and `cuda`
//! (cubecl downloads LLVM while building). A device whose feature is not compiled in, or whose
//! adapter is not present, is an error here, never a panic later.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::VggError;

/// A device by name: `flex`, `wgpu`, `wgpu:N`, `wgpu-cpu`, `cuda`, `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    /// burn's flex backend on this machine's cores, with our kernels (the default).
    #[default]
    Flex,
    /// wgpu's best adapter (a high-power GPU first; `CUBECL_WGPU_DEFAULT_DEVICE` overrides).
    Wgpu,
    /// The N-th discrete GPU wgpu lists (one MPI rank per GPU: N = the local rank).
    WgpuGpu(usize),
    /// wgpu's CPU adapter: Mesa's lavapipe, a Vulkan 1.3 device computing on the CPU.
    WgpuCpu,
    /// The N-th CUDA device; `None`: the first (or the local rank's, [`DeviceSpec::for_local_rank`]).
    Cuda(Option<usize>),
}

/// The names [`DeviceSpec::from_str`] accepts, for messages.
pub const DEVICE_NAMES: &str = "flex, wgpu, wgpu:N, wgpu-cpu, cuda, cuda:N";

impl FromStr for DeviceSpec {
    type Err = VggError;

    fn from_str(text: &str) -> Result<Self, VggError> {
        let bad = || VggError::BadConfig {
            what: "device".into(),
            reason: format!("`{text}`: expected one of {DEVICE_NAMES} (N a device index)"),
        };
        let index = |n: &str| n.parse::<usize>().map_err(|_| bad());
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "flex" | "cpu" => Self::Flex,
            "wgpu" => Self::Wgpu,
            "wgpu-cpu" | "lavapipe" => Self::WgpuCpu,
            "cuda" => Self::Cuda(None),
            other => match other.split_once(':') {
                Some(("wgpu", n)) => Self::WgpuGpu(index(n)?),
                Some(("cuda", n)) => Self::Cuda(Some(index(n)?)),
                _ => return Err(bad()),
            },
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flex => write!(f, "flex"),
            Self::Wgpu => write!(f, "wgpu"),
            Self::WgpuGpu(n) => write!(f, "wgpu:{n}"),
            Self::WgpuCpu => write!(f, "wgpu-cpu"),
            Self::Cuda(None) => write!(f, "cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Whether this binary was built with the backend the device needs.
    // Each arm is a constant of the build's features; `matches!` would hide which is which.
    #[allow(clippy::match_like_matches_macro)]
    pub fn compiled_in(&self) -> bool {
        match self.feature() {
            "wgpu" => cfg!(feature = "wgpu"),
            "cuda" => cfg!(feature = "cuda"),
            _ => true,
        }
    }

    /// The cargo feature the device needs (flex is always built).
    fn feature(&self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Wgpu | Self::WgpuGpu(_) | Self::WgpuCpu => "wgpu",
            Self::Cuda(_) => "cuda",
        }
    }

    /// One device per MPI rank on a host: `wgpu` and `cuda` without an index become the GPU of
    /// this rank's local index (`wgpu:LOCAL_RANK`); an explicit device stays as it is.
    pub fn for_local_rank(self, local_rank: usize) -> Self {
        match self {
            Self::Wgpu => Self::WgpuGpu(local_rank),
            Self::Cuda(None) => Self::Cuda(Some(local_rank)),
            other => other,
        }
    }

    /// The device, initialised now, so that a missing adapter is this error rather than a
    /// panic at the first tensor. Opening the same spec twice gives the same device.
    pub fn open(&self) -> Result<Device, VggError> {
        if !self.compiled_in() {
            return Err(VggError::BadConfig {
                what: "device".into(),
                reason: format!(
                    "{self}: this build has no {} backend; rebuild with the cargo feature `{}` \
                     (cargo build --release --features {})",
                    self.feature(),
                    self.feature(),
                    self.feature()
                ),
            });
        }
        match self {
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu | Self::WgpuGpu(_) | Self::WgpuCpu => wgpu::open(*self),
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => {
                // CUDA starts lazily: one small tensor now, so a missing driver or GPU is this
                // error rather than a panic at the first layer.
                let device = Device::cuda(n.unwrap_or(0));
                quietly(|| {
                    let _ = burn::tensor::Tensor::<1>::zeros([1], &device).into_data();
                })
                .map_err(|reason| VggError::BadConfig {
                    what: "device".into(),
                    reason: format!("{self} cannot be opened: {reason}"),
                })?;
                Ok(device)
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("compiled_in() said the backend is here"),
        }
    }
}

/// `f`, with a panic inside it returned as its message (and not printed: the caller reports
/// it as one error line). Backends panic on some missing-driver paths instead of erring. The
/// process-wide panic hook is swapped meanwhile, one caller at a time (a panic on another thread
/// in that window goes unprinted; devices open and probes run before the work starts).
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SWAP.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the backend panicked".into())
    })
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use burn::tensor::{Device, DeviceKind};

    use super::DeviceSpec;
    use crate::error::VggError;

    /// wgpu's runtime is initialised once per adapter and process; later opens reuse it.
    fn opened() -> &'static Mutex<HashMap<DeviceSpec, Device>> {
        static OPENED: OnceLock<Mutex<HashMap<DeviceSpec, Device>>> = OnceLock::new();
        OPENED.get_or_init(Default::default)
    }

    pub(super) fn open(spec: DeviceSpec) -> Result<Device, VggError> {
        let mut opened = opened().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(device) = opened.get(&spec) {
            return Ok(device.clone());
        }
        let kind = match spec {
            DeviceSpec::WgpuGpu(n) => DeviceKind::DiscreteGpu(n),
            DeviceSpec::WgpuCpu => DeviceKind::Cpu,
            _ => DeviceKind::DefaultDevice,
        };
        let device = match super::quietly(|| Device::wgpu_options().device_kind(kind).init()) {
            Ok(Ok(device)) => device,
            Ok(Err(e)) => return Err(unavailable(spec, &e.to_string())),
            Err(reason) => return Err(unavailable(spec, &reason)),
        };
        opened.insert(spec, device.clone());
        Ok(device)
    }

    fn unavailable(spec: DeviceSpec, reason: &str) -> VggError {
        let hint = match spec {
            DeviceSpec::WgpuCpu => {
                "lavapipe needs Mesa's Vulkan drivers (Debian: apt-get install mesa-vulkan-drivers)"
            }
            _ => "no such GPU adapter; wgpu-cpu is Mesa's lavapipe on the CPU",
        };
        VggError::BadConfig {
            what: "device".into(),
            reason: format!(
                "{spec} cannot be opened: {}; {hint}",
                reason.lines().next().unwrap_or(reason)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for spec in [
            DeviceSpec::Flex,
            DeviceSpec::Wgpu,
            DeviceSpec::WgpuGpu(3),
            DeviceSpec::WgpuCpu,
            DeviceSpec::Cuda(None),
            DeviceSpec::Cuda(Some(1)),
        ] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec);
        }
        assert_eq!(
            "CUDA".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(None)
        );
        assert_eq!(DeviceSpec::Wgpu.for_local_rank(2), DeviceSpec::WgpuGpu(2));
        assert_eq!(
            DeviceSpec::Cuda(None).for_local_rank(1),
            DeviceSpec::Cuda(Some(1))
        );
        assert_eq!(DeviceSpec::WgpuCpu.for_local_rank(1), DeviceSpec::WgpuCpu);
        assert_eq!(DeviceSpec::Flex.for_local_rank(1), DeviceSpec::Flex);
        for bad in ["gpu", "wgpu:", "wgpu:-1", "cuda:x", "", "flex:0"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("wgpu-cpu"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_backend_not_compiled_in_is_an_error_naming_the_feature() {
        if !cfg!(feature = "cuda") {
            let err = DeviceSpec::Cuda(None).open().unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
        if !cfg!(feature = "wgpu") {
            let err = DeviceSpec::WgpuCpu.open().unwrap_err().to_string();
            assert!(err.contains("--features wgpu"), "{err}");
        }
        assert!(DeviceSpec::Flex.open().is_ok());
    }
}
