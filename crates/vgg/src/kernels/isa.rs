//! Run-time dispatch on the CPU's instruction sets: one binary, fast where AVX2 or AVX-512 is
//! present, correct everywhere.

/// The instruction sets our own loops run on, chosen at run time. The binary is built for the
/// baseline of its target: SSE2 on x86-64, and NEON on aarch64, where NEON is part of the
/// baseline (so aarch64 CPUs run the portable loops vectorised with NEON). On x86-64 CPUs with
/// AVX2 the Winograd transforms, the pooling and the few-rows FC layers run compiled for AVX2
/// (8 float32 lanes); CPUs with AVX-512 (AVX512F) have a third copy compiled for it, used when
/// `VGG_ISA=avx512` asks: on an AMD Zen 4 (AVX-512 on 256-bit units) VGG-16's forward at batch
/// 8 took 817-923 ms on it against 756-783 ms on AVX2 (`vgg bench --profile --arch vgg16
/// --batch 8`, alternating, four runs each), so AVX2 stays the default where both exist. The
/// arithmetic is the same on every set (no fused multiply-adds: Rust never contracts
/// `a * b + c`), so all give the same bits: tests run every set this CPU has against the
/// portable one (`isa_paths_agree_exactly` in [`super::winograd`], `isa_paths_agree` in
/// [`super::pool`] and [`super::few_rows`]).
///
/// The GEMMs come from the `gemm` crate, built for AVX2 + FMA at most: its AVX-512 kernels (its
/// `x86-v4` feature) ran the standard workloads 0.75-1.08x as fast as its AVX2 ones on the same
/// Zen 4 (alternating binaries), so that feature stays off.
///
/// The kernel policy picks the set (to compare the paths, or to step around one): the tool takes
/// it from `VGG_ISA=portable|avx2|avx512` ([`super::policy::Policy::from_env`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Portable,
    /// Only [`Isa::available`] makes one (its token cannot be built elsewhere): code compiled
    /// for AVX2 runs on CPUs that have it.
    #[cfg(target_arch = "x86_64")]
    Avx2(Detected),
    /// As [`Isa::Avx2`], for CPUs with AVX512F and AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx512(Detected),
}

/// Proof that the CPU was checked for the set (a private field: only this module builds one).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Detected(());

impl Isa {
    /// Every set this CPU runs, the portable one first and the widest last.
    pub(crate) fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut sets = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                sets.push(Isa::Avx2(Detected(())));
                if std::arch::is_x86_feature_detected!("avx512f") {
                    sets.push(Isa::Avx512(Detected(())));
                }
            }
        }
        sets
    }

    /// The name `VGG_ISA` takes and the CLI prints.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => "avx512",
        }
    }

    /// The set our loops run on: the one the kernel policy names
    /// ([`super::policy::Policy::isa`]), else AVX2 where the CPU has it (see [`Isa`] for why not
    /// AVX-512), else the portable one.
    pub(crate) fn detected() -> Self {
        super::policy::isa()
    }
}

/// The instruction set our loops run on, by name (`portable`, `avx2`, `avx512`).
pub fn active() -> &'static str {
    Isa::detected().name()
}

/// `fn NAME(isa, args)`: runs `BODY(args)` compiled for `isa` (the body is `inline(always)`, so
/// each copy, a function inside NAME, is compiled with its instruction set).
macro_rules! on_isa_impl {
    ($(#[$m:meta])* fn $name:ident => $body:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$m])*
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            $(#[$m])*
            fn avx2($($arg: $ty),*) {
                $body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            $(#[$m])*
            fn avx512($($arg: $ty),*) {
                $body($($arg),*)
            }

            match isa {
                Isa::Portable => $body($($arg),*),
                // SAFETY: Avx2 is only made on CPUs with AVX2.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2(_) => unsafe { avx2($($arg),*) },
                // SAFETY: Avx512 is only made on CPUs with AVX512F.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512(_) => unsafe { avx512($($arg),*) },
            }
        }
    };
}

pub(crate) use on_isa_impl as on_isa;
