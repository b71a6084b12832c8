//! Plain `f32` loops that the compiler vectorises, and the macro that builds them for AVX2
//! where the CPU has it.

/// Defines `fn $name(args) -> ret` that calls the `#[inline(always)]` function `$body`
/// compiled for AVX2 where the CPU has it (x86-64), else as built for the target. Plain `f32`
/// loops in `$body` then run in 8 vector lanes instead of the SSE2 baseline's 4.
#[macro_export]
macro_rules! widest_lanes {
    ($name:ident => $body:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { avx2($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

/// Folds `x` with `op` in 8 independent lanes, then the lanes and the tail. Plain `f32`
/// code, so that inlined into an AVX2 build it becomes vector instructions.
#[inline(always)]
pub fn fold_lanes(x: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 8;
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = op(*a, v);
        }
    }
    acc.into_iter().chain(rest.iter().copied()).fold(init, op)
}

/// `exp(x)` for `x <= 88`, within 2 ulp, 0 below -87.3 (where it would be subnormal), in
/// operations that vectorise (no branch, no float-to-int conversion): Cody-Waite reduction by
/// ln 2, Cephes' degree-6 polynomial, and the power of two written into the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer, kept in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.336_55, 88.0);
    let k = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let r = clamped - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // The low bits of `k` hold n (two's complement); 2^n is (n + 127) << 23.
    let two_n = f32::from_bits(k.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23);
    if x < -87.336_55 {
        0.0
    } else {
        y * two_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_and_flushes_below_the_normal_range() {
        let mut worst_ulp = 0f64;
        for i in 0..=400_000 {
            let x = -87.3 + i as f32 * (175.3 / 400_000.0);
            let exact = (x as f64).exp();
            let ulp = f32::EPSILON as f64 * exact;
            worst_ulp = worst_ulp.max((exp(x) as f64 - exact).abs() / ulp);
        }
        assert!(worst_ulp <= 2.0, "{worst_ulp}");
        assert_eq!(exp(0.0), 1.0);
        for x in [-87.4, -1000.0, f32::NEG_INFINITY] {
            assert_eq!(exp(x), 0.0);
        }
        assert!(exp(f32::NAN).is_nan());
    }
}
