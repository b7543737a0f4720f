//! Run-time dispatch on the CPU's instruction sets: one binary, fast where AVX2 is present,
//! correct everywhere.

/// The instruction sets our loops run on, chosen at run time: the binary is built for the
/// baseline of its target (SSE2 on x86-64, NEON on aarch64), and on x86-64 CPUs with AVX2 the
/// Winograd transforms, the pooling and the few-rows FC layers run compiled for AVX2 (8 float32
/// lanes, 4 float64 in the weight gradient's untransform). The arithmetic is the same (no fused
/// multiply-adds), so both give the same bits (`isa_paths_agree_exactly` in [`super::winograd`],
/// `isa_paths_agree` in [`super::pool`] and [`super::few_rows`]). The GEMMs choose their own
/// (the `gemm` crate dispatches on AVX-512, AVX2 + FMA or scalar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Portable,
    /// Only [`Isa::detected`] makes one (its token cannot be built elsewhere): code compiled for
    /// AVX2 runs on CPUs that have it.
    #[cfg(target_arch = "x86_64")]
    Avx2(Detected),
}

/// Proof that the CPU was checked for AVX2 (a private field: only this module builds one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Detected(());

impl Isa {
    /// The best this CPU runs (detected once).
    pub(crate) fn detected() -> Self {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2(Detected(()));
            }
            Isa::Portable
        })
    }
}

/// `fn NAME(isa, args)`: runs `BODY(args)` compiled for `isa` (the body is `inline(always)`, so
/// each copy is compiled with its instruction set).
macro_rules! on_isa_impl {
    ($(#[$m:meta])* fn $name:ident, $avx2:ident => $body:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$m])*
        fn $name(isa: Isa, $($arg: $ty),*) {
            match isa {
                Isa::Portable => $body($($arg),*),
                // SAFETY: Avx2 is only detected on CPUs with AVX2.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2(_) => unsafe { $avx2($($arg),*) },
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        $(#[$m])*
        unsafe fn $avx2($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

pub(crate) use on_isa_impl as on_isa;
