//! The cross-attention kernels over keys and values kept in f16, widened eight at a time as
//! they are loaded (x86's F16C), so that a step reads half the bytes and writes no copy.
//! Where the CPU lacks F16C (or is not x86), the caller widens each panel into a buffer
//! first.

use half::f16;

/// The width of Whisper's heads, the only one [`weighted`] takes.
pub const DH: usize = 64;

/// Whether this CPU runs the kernels (x86 with AVX2, FMA and F16C).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[f] = scale · Σ_d query[d] · keys_t[d][f]` over `[dh, frames]` keys.
///
/// Panics unless [`available`].
pub fn scores(query: &[f32], keys_t: &[f16], out: &mut [f32], scale: f32) {
    assert_eq!(
        keys_t.len(),
        query.len() * out.len(),
        "keys are [dh, frames]"
    );
    assert!(available(), "F16C kernels on a CPU without them");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX2, FMA and F16C, and the lengths agree (both checked above).
    unsafe {
        x86::scores(query, keys_t, out, scale)
    };
}

/// `out = Σ_f weights[f] · values[f]` over `[frames, DH]` values.
///
/// Panics unless [`available`] and `out` is [`DH`] wide.
pub fn weighted(weights: &[f32], values: &[f16], out: &mut [f32]) {
    assert_eq!(out.len(), DH, "heads are {DH} wide");
    assert_eq!(values.len(), weights.len() * DH, "values are [frames, dh]");
    assert!(available(), "F16C kernels on a CPU without them");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX2, FMA and F16C, and the lengths agree (all checked above).
    unsafe {
        x86::weighted(weights, values, out)
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::DH;

    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// Eight f16 from `p`, widened.
    ///
    /// # Safety
    /// `p` points at eight readable f16; the CPU has F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller's promise; unaligned loads are allowed.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `keys_t.len() == query.len() * out.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores(query: &[f32], keys_t: &[f16], out: &mut [f32], scale: f32) {
        let frames = out.len();
        let body = frames / 8 * 8;
        out.fill(0.0);
        // Four key rows a pass: one load and store of `out` per four products.
        let mut dims = query.chunks_exact(4);
        let mut rows = keys_t.chunks_exact(frames);
        for q in &mut dims {
            let k: [&[f16]; 4] = std::array::from_fn(|_| rows.next().expect("dh rows"));
            let qv: [__m256; 4] = std::array::from_fn(|i| _mm256_set1_ps(q[i]));
            for f in (0..body).step_by(8) {
                // SAFETY: f + 8 <= body <= frames, the length of `out` and of each row.
                unsafe {
                    let mut o = _mm256_loadu_ps(out.as_ptr().add(f));
                    for i in 0..4 {
                        o = _mm256_fmadd_ps(qv[i], load8(k[i].as_ptr().add(f)), o);
                    }
                    _mm256_storeu_ps(out.as_mut_ptr().add(f), o);
                }
            }
            for f in body..frames {
                out[f] += (0..4).map(|i| q[i] * k[i][f].to_f32()).sum::<f32>();
            }
        }
        for (&q, k) in dims.remainder().iter().zip(rows) {
            for (o, a) in out.iter_mut().zip(k) {
                *o += q * a.to_f32();
            }
        }
        for o in out.iter_mut() {
            *o *= scale;
        }
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `out.len() == DH`, `values.len() == weights.len() * DH`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted(weights: &[f32], values: &[f16], out: &mut [f32]) {
        // Whisper's heads are 64 wide: the eight sums stay in registers.
        let mut acc = [_mm256_setzero_ps(); DH / 8];
        for (&w, value) in weights.iter().zip(values.chunks_exact(DH)) {
            let w = _mm256_set1_ps(w);
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: 8 * j + 8 <= DH, the length of `value`.
                *a = _mm256_fmadd_ps(w, unsafe { load8(value.as_ptr().add(8 * j)) }, *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: 8 * j + 8 <= DH, the length of `out`.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), *a) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halves(len: usize, seed: usize) -> Vec<f16> {
        (0..len)
            .map(|i| f16::from_f32((((i + seed) * 7_919) % 1_000) as f32 / 250.0 - 2.0))
            .collect()
    }

    #[test]
    fn the_f16_kernels_match_plain_sums_over_the_widened_values() {
        // Frames not a multiple of 8 (the tail), dh not a multiple of 4 (the rows left over).
        for (dh, frames) in [(64, 1500), (7, 13), (64, 5)] {
            let query: Vec<f32> = halves(dh, 3).iter().map(|h| h.to_f32()).collect();
            let keys = halves(dh * frames, 1);
            let mut out = vec![0.0; frames];
            if !available() {
                return; // the caller's widening path is what runs here
            }
            scores(&query, &keys, &mut out, 0.125);
            for (f, &got) in out.iter().enumerate() {
                let want: f32 = (0..dh)
                    .map(|d| query[d] * keys[d * frames + f].to_f32())
                    .sum::<f32>()
                    * 0.125;
                assert!((got - want).abs() < 1e-4, "frame {f}: {got} against {want}");
            }
        }
        let frames = 37;
        let weights: Vec<f32> = halves(frames, 5).iter().map(|h| h.to_f32()).collect();
        let values = halves(frames * 64, 2);
        let mut out = vec![0.0; 64];
        weighted(&weights, &values, &mut out);
        for (d, &got) in out.iter().enumerate() {
            let want: f32 = (0..frames)
                .map(|f| weights[f] * values[f * 64 + d].to_f32())
                .sum();
            assert!((got - want).abs() < 1e-3, "dim {d}: {got} against {want}");
        }
    }
}
