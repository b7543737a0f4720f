//! Which kernels run, as a value ([`Policy`]): our flex kernels or burn's generic operations,
//! Winograd or the direct convolution, and the instruction set of our loops. The library never
//! reads the environment for it: the tool reads its variables once, at the edge
//! ([`Policy::from_env`] in `main`), and a test or a benchmark sets another ([`set`]) for the
//! work that follows.

use std::sync::RwLock;

use super::isa::Isa;
use crate::error::VggError;

/// How the kernels are chosen; [`Policy::DEFAULT`] is what a library user gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Our flex kernels (else burn's generic operations, to measure what ours bring).
    pub ours: bool,
    /// Winograd F(4x4, 3x3) where it applies ([`super::winograd::applies`]); else im2col + GEMM.
    pub winograd: bool,
    /// Winograd for the weight gradient too ([`super::winograd::applies_to_weight_grad`]).
    pub winograd_weight_grad: bool,
    /// The instruction set of our loops by name (`portable`, `avx2`, `avx512`); `None` takes
    /// this CPU's default (AVX2 where it has it: see [`Isa`]).
    pub isa: Option<&'static str>,
}

impl Policy {
    pub const DEFAULT: Self = Self {
        ours: true,
        winograd: true,
        winograd_weight_grad: true,
        isa: None,
    };

    /// The policy the environment asks for: `VGG_GENERIC_KERNELS=1` (burn's operations),
    /// `VGG_NO_WINOGRAD=1`, `VGG_NO_WINOGRAD_WGRAD=1`, `VGG_ISA=portable|avx2|avx512` (a set
    /// this CPU lacks is refused, naming the sets it has). For the tool's `main`, once.
    pub fn from_env() -> Result<Self, VggError> {
        let on = |name: &str| std::env::var_os(name).is_some_and(|v| v != "0");
        let isa = match std::env::var("VGG_ISA") {
            Ok(name) => Some(isa_named(&name).map_err(|reason| VggError::BadConfig {
                what: "VGG_ISA".into(),
                reason,
            })?),
            Err(_) => None,
        };
        Ok(Self {
            ours: !on("VGG_GENERIC_KERNELS"),
            winograd: !on("VGG_NO_WINOGRAD"),
            winograd_weight_grad: !on("VGG_NO_WINOGRAD_WGRAD"),
            isa,
        })
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The name of the set `name` asks for, when this CPU runs it; else the reason.
fn isa_named(name: &str) -> Result<&'static str, String> {
    let sets = Isa::available();
    sets.iter()
        .find(|s| s.name() == name)
        .map(|s| s.name())
        .ok_or_else(|| {
            let names: Vec<_> = sets.iter().map(|s| s.name()).collect();
            format!(
                "{name:?} is not an instruction set this CPU runs: one of {}",
                names.join(", ")
            )
        })
}

/// The policy in force, and the instruction set it resolves to (`None` until first asked).
static POLICY: RwLock<(Policy, Option<Isa>)> = RwLock::new((Policy::DEFAULT, None));

/// The policy in force.
pub fn get() -> Policy {
    POLICY.read().unwrap_or_else(|e| e.into_inner()).0
}

/// Puts `policy` in force for the work that follows (not for work already running on other
/// threads). `Err` for an instruction set this CPU does not run.
pub fn set(policy: Policy) -> Result<(), VggError> {
    let isa = match policy.isa {
        Some(name) => {
            isa_named(name).map_err(|reason| VggError::bad_config("isa", reason))?;
            Isa::available().into_iter().find(|s| s.name() == name)
        }
        None => None,
    };
    *POLICY.write().unwrap_or_else(|e| e.into_inner()) = (policy, isa);
    Ok(())
}

/// The instruction set our loops run on now.
pub(crate) fn isa() -> Isa {
    if let Some(isa) = POLICY.read().unwrap_or_else(|e| e.into_inner()).1 {
        return isa;
    }
    let default = Isa::available()
        .into_iter()
        .rfind(|s| s.name() != "avx512")
        .unwrap_or(Isa::Portable);
    POLICY.write().unwrap_or_else(|e| e.into_inner()).1 = Some(default);
    default
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_this_cpu_lacks_is_refused_and_the_policy_stays() {
        let before = get();
        let err = set(Policy {
            isa: Some("avx9"),
            ..Policy::DEFAULT
        })
        .unwrap_err();
        assert!(err.to_string().contains("portable"), "{err}");
        assert_eq!(get(), before);
        assert_eq!(isa_named("portable"), Ok("portable"));
    }
}
