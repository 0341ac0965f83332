//! Runtime choice of instruction set for the element-wise loops.
//!
//! The crate is compiled for baseline x86-64 (SSE2, four lanes) so the binary runs on any x86-64
//! machine; the loops of GELU, softmax, layer norm and attention are plain arithmetic the
//! compiler vectorises, and on a CPU with AVX2 and FMA (or AVX-512) the same source compiled
//! for those features runs on eight (sixteen) lanes. [`with_avx2!`](crate::with_avx2) writes the two copies of a
//! function and picks one at each call (the CPU check is a cached load).
//!
//! Rust never fuses `a·b + c` into one FMA on its own (no fast-math); where a loop wants one it
//! says `mul_add`, which is one instruction where the CPU has FMA and the C library's `fmaf`
//! elsewhere: both round once, so the same bits (only slower on a CPU without FMA). The loops
//! keep their partial sums in explicit lanes, so every copy gives the same bits: results do
//! not depend on the machine's instruction set.

/// Whether this CPU runs AVX2 and FMA (cached by the standard library after the first call).
#[inline(always)]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs AVX-512 (foundation, VL, DQ, BW).
#[inline(always)]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && has_avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `with_avx2! { fn name(args) -> R { body } }` defines `name`, which runs `body` compiled for
/// AVX-512 or AVX2 + FMA where the CPU has them and for the baseline elsewhere. The body must
/// not capture generics (plain argument types only).
#[macro_export]
macro_rules! with_avx2 {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if $crate::core::kernels::simd::has_avx512() {
                    // SAFETY: the CPU has the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if $crate::core::kernels::simd::has_avx2() {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
