//! int8 linear layers on the CPU, computed the way CTranslate2 computes them for faster-whisper:
//! weights quantised once, symmetrically, with one scale per output feature; activations
//! quantised on the fly into `u8` with a scale and zero point per input row (see
//! `quantize_rows` for why not symmetric); a u8×i8→i32 matrix product; the `i32` sums scaled
//! back to `f32` with the bias added.
//!
//! The product is `rten-gemm`'s, which picks its kernel when the process starts: AVX-512 VNNI
//! (`vpdpbusd`), AVX2 (`vpmaddubsw`), Arm `sdot`/`i8mm`, or a portable loop. Weights are packed
//! once into that kernel's layout and not kept in any other form.
//!
//! Backend-free: plain slices in and out, so any backend's CPU path can call it.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmUninitOptions, PackedBMatrix};
use rten_tensor::{Matrix, NdTensorView};
use whisk_types::widest_lanes;

/// Rows of activations quantised, multiplied and scaled back per task: bounds the `i32`
/// scratch, and keeps a block's activations in cache between quantising and multiplying.
const ROW_BLOCK: usize = 512;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Int8Error {
    #[error("{what} has {got} values, expected {expected}")]
    Size {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("the weight has a non-finite value in output row {0}")]
    NonFinite(usize),
    #[error("int8 matrix product failed: {0}")]
    Gemm(String),
}

pub type Result<T> = std::result::Result<T, Int8Error>;

thread_local! {
    // Not `Sync`, so one per thread; every thread picks the same kernel, so weights packed on
    // one are read correctly on all.
    static GEMM: GemmExecutor<u8, i8, i32> = GemmExecutor::default();
}

fn with_gemm<T>(f: impl FnOnce(&GemmExecutor<u8, i8, i32>) -> T) -> T {
    GEMM.with(f)
}

/// The name of the kernel the products run on (`avx512-int8`, `avx2-int8`, ...).
pub fn kernel_name() -> String {
    with_gemm(|g| g.kernel_name().to_string())
}

/// True when the products run on a kernel that is both fast and exact with full 8-bit
/// weights (AVX-512 VNNI, Arm dot product or i8mm): where int8 was measured to keep float32's
/// accuracy (`ComputeType::Auto` picks int8 there).
pub fn has_fast_exact_kernel() -> bool {
    !may_saturate() && !kernel_name().starts_with("generic")
}

fn may_saturate() -> bool {
    static MAY: OnceLock<bool> = OnceLock::new();
    *MAY.get_or_init(|| with_gemm(|g| g.may_saturate()))
}

/// The largest weight magnitude the kernel multiplies exactly. AVX2 without VNNI adds pairs of
/// u8×i8 products in `i16`, which saturates unless weights keep to 7 bits (255·63·2 < 2¹⁵).
fn weight_limit() -> f32 {
    if may_saturate() {
        63.0
    } else {
        127.0
    }
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Int8Error::Size {
            what,
            got,
            expected,
        })
    }
}

/// A matrix in int8, row-major, one scale per row: `W[r][c] ≈ values[r][c] · scales[r]`.
/// Kept plain for row lookups (the token embedding); [`Int8Linear`] packs it for products.
pub struct Int8Rows {
    values: Vec<i8>,
    scales: Vec<f32>,
    cols: usize,
}

impl Int8Rows {
    /// Quantises `rows × cols` `f32` values, each row symmetrically to its own largest value.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        check_len("the weight", w.len(), rows * cols)?;
        let limit = weight_limit();
        let mut values = vec![0i8; w.len()];
        let mut scales = vec![1f32; rows];
        if cols > 0 {
            for (r, (row, q)) in w.chunks(cols).zip(values.chunks_mut(cols)).enumerate() {
                let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
                if !max.is_finite() {
                    return Err(Int8Error::NonFinite(r));
                }
                if max > 0.0 {
                    scales[r] = max / limit;
                }
                for (q, x) in q.iter_mut().zip(row) {
                    *q = (x / scales[r]).round().clamp(-limit, limit) as i8;
                }
            }
        }
        Ok(Self {
            values,
            scales,
            cols,
        })
    }

    /// Takes values already in int8 (a CTranslate2 int8 file) as they are, unless the kernel
    /// needs 7-bit weights.
    pub fn from_quantized(mut values: Vec<i8>, mut scales: Vec<f32>, cols: usize) -> Result<Self> {
        check_len("the weight", values.len(), scales.len() * cols)?;
        let limit = weight_limit() as i8;
        if values.iter().any(|q| q.unsigned_abs() > limit as u8) {
            // Only on AVX2 without VNNI: one bit of precision for exact sums.
            values.iter_mut().for_each(|q| *q /= 2);
            scales.iter_mut().for_each(|s| *s *= 2.0);
        }
        Ok(Self {
            values,
            scales,
            cols,
        })
    }

    pub fn rows(&self) -> usize {
        self.scales.len()
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r`, dequantised into `out` (`cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let scale = self.scales[r];
        let row = &self.values[r * self.cols..(r + 1) * self.cols];
        out.iter_mut()
            .zip(row)
            .for_each(|(y, &q)| *y = q as f32 * scale);
    }
}

/// A linear layer `y = x·Wᵀ + b` with `W` in int8, packed for the kernel.
pub struct Int8Linear {
    packed: PackedBMatrix<i8>,
    /// Per output feature: `W[n][k] ≈ q[n][k] · scale[n]`.
    scales: Vec<f32>,
    /// Per output feature: `Σₖ q[n][k]`, to take the activations' zero points out of the sums.
    sums: Vec<i32>,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
}

impl Int8Linear {
    /// Quantises an `f32` weight of `out_features` rows of `in_features` (PyTorch's layout).
    pub fn quantize(
        weight: &[f32],
        out_features: usize,
        in_features: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<Self> {
        Self::new(
            &Int8Rows::quantize(weight, out_features, in_features)?,
            bias,
        )
    }

    /// The layer whose weight has `weight`'s rows as output features.
    pub fn new(weight: &Int8Rows, bias: Option<Vec<f32>>) -> Result<Self> {
        let (out_features, in_features) = (weight.rows(), weight.cols());
        if let Some(bias) = &bias {
            check_len("the bias", bias.len(), out_features)?;
        }
        // `B` of `x·B` is `Wᵀ`: `in_features` rows, read from `W` with swapped strides.
        let b = Matrix::from_data_with_strides(
            [in_features, out_features],
            weight.values.as_slice(),
            [1, in_features.max(1)],
        )
        .map_err(|e| Int8Error::Gemm(format!("{e:?}")))?;
        let sums = weight
            .values
            .chunks(in_features.max(1))
            .map(|row| row.iter().map(|&q| q as i32).sum())
            .take(out_features)
            .collect();
        Ok(Self {
            packed: with_gemm(|g| g.prepack_b(b)),
            scales: weight.scales.clone(),
            sums,
            bias,
            in_features,
            out_features,
        })
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `x·Wᵀ + b` for `x` of `rows × in_features`, row-major; returns `rows × out_features`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        check_len("the input", x.len(), rows * self.in_features)?;
        let mut out = vec![0f32; rows * self.out_features];
        if self.in_features == 0 {
            if let Some(bias) = self.bias.as_ref().filter(|b| !b.is_empty()) {
                out.chunks_mut(bias.len())
                    .for_each(|row| row.copy_from_slice(bias));
            }
            return Ok(out);
        }
        let block_in = ROW_BLOCK * self.in_features;
        let block_out = ROW_BLOCK * self.out_features.max(1);
        for (x, out) in x.chunks(block_in).zip(out.chunks_mut(block_out)) {
            self.forward_block(x, out)?;
        }
        Ok(out)
    }

    fn forward_block(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let rows = x.len() / self.in_features;
        let (q, row_scales, zero_points) = quantize_rows(x, self.in_features);
        let a = NdTensorView::from_data([rows, self.in_features], q.as_slice());
        let mut sums: Vec<MaybeUninit<i32>> = Vec::with_capacity(out.len());
        sums.resize(out.len(), MaybeUninit::uninit());
        // The zero points are applied below, not by the GEMM: rten-gemm 0.27 reads per-row
        // zero points of `A` at the wrong rows when there are more rows than one tile.
        let sums = with_gemm(|g| {
            g.gemm_uninit(
                &mut sums,
                GemmInputA::Unpacked(a),
                GemmInputB::Packed(&self.packed),
                GemmUninitOptions::default(),
            )
            .map_err(|e| Int8Error::Gemm(format!("{e:?}")))
        })?;
        let n = self.out_features;
        out.par_chunks_mut(n)
            .zip(sums.par_chunks(n))
            .zip(row_scales.par_iter().zip(&zero_points))
            .for_each(|((out, sums), (&row_scale, &zero))| {
                let bias = self.bias.as_deref().unwrap_or(&[]);
                let weights = (&self.scales[..], &self.sums[..], bias);
                scale_back_fast(out, sums, zero as i32, row_scale, weights);
            });
        Ok(())
    }
}

widest_lanes!(scale_back_fast => scale_back(
    out: &mut [f32], sums: &[i32], zero: i32, row_scale: f32, weights: (&[f32], &[i32], &[f32])
));

/// One row of output from its `i32` sums: `weights` are the weight's per-row scales, per-row
/// sums (for the activations' zero point) and the bias (empty for none).
#[inline(always)]
fn scale_back(
    out: &mut [f32],
    sums: &[i32],
    zero: i32,
    row_scale: f32,
    (scales, w_sums, bias): (&[f32], &[i32], &[f32]),
) {
    for (((y, &s), &w_scale), &w_sum) in out.iter_mut().zip(sums).zip(scales).zip(w_sums) {
        *y = (s - zero * w_sum) as f32 * (row_scale * w_scale);
    }
    out.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
}

/// Each row of `x` to `u8` with its own scale and zero point (`x ≈ (q − zero) · scale`),
/// over the row's own range with 0 in it. Asymmetric, unlike CTranslate2's: a GELU's output
/// (fc2's input) hardly goes below zero, and gets almost twice the resolution this way.
/// Non-finite values are quantised as zero rather than spoiling the row.
fn quantize_rows(x: &[f32], cols: usize) -> (Vec<u8>, Vec<f32>, Vec<u8>) {
    let rows = x.len() / cols;
    let mut q = vec![0u8; x.len()];
    let (mut scales, mut zeros) = (vec![1f32; rows], vec![0u8; rows]);
    q.par_chunks_mut(cols)
        .zip(x.par_chunks(cols))
        .zip(scales.par_iter_mut().zip(zeros.par_iter_mut()))
        .for_each(|((q, x), (scale, zero))| (*scale, *zero) = quantize_row_fast(x, q));
    (q, scales, zeros)
}

widest_lanes!(quantize_row_fast => quantize_one_row(x: &[f32], q: &mut [u8]) -> (f32, u8));

/// One row of [`quantize_rows`]: its scale and zero point.
#[inline(always)]
fn quantize_one_row(x: &[f32], q: &mut [u8]) -> (f32, u8) {
    let (min, max) = finite_range(x);
    let (mut scale, mut zero) = (1.0, 0);
    if max > min {
        scale = (max - min) / 255.0;
        zero = (-min / scale).round().clamp(0.0, 255.0) as u8;
    }
    quantize_row(x, 1.0 / scale, zero, q);
    (scale, zero)
}

/// The smallest and largest finite values of `x`, widened to include 0. Written as lanes of
/// plain comparisons so that it vectorises (`f32::min`/`max` have NaN rules that keep it
/// scalar).
#[inline(always)]
fn finite_range(x: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    let fold = |lo: &mut f32, hi: &mut f32, v: f32| {
        // NaN and infinities fail `|v| < INFINITY` and count as 0, which the range holds.
        // Selects only, no `&&`: a branch per value keeps the loop scalar.
        let v = if v.abs() < f32::INFINITY { v } else { 0.0 };
        *lo = if v < *lo { v } else { *lo };
        *hi = if v > *hi { v } else { *hi };
    };
    for c in chunks {
        for ((lo, hi), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(c) {
            fold(lo, hi, v);
        }
    }
    let (mut min, mut max) = (0f32, 0f32);
    for &v in lo.iter().chain(&hi).chain(tail) {
        fold(&mut min, &mut max, v);
    }
    (min, max)
}

#[inline(always)]
fn quantize_row(x: &[f32], inv_scale: f32, zero: u8, q: &mut [u8]) {
    let zero = zero as f32;
    for (q, v) in q.iter_mut().zip(x) {
        let v = if v.abs() < f32::INFINITY {
            *v * inv_scale
        } else {
            0.0
        };
        // Round half up, then truncate (`f32::round` is a library call on baseline x86-64,
        // and this loop must vectorise); 0.5 keeps the operand of the cast non-negative.
        let v = (v + zero + 0.5).clamp(0.0, 255.5);
        // SAFETY: `v` is finite and within [0, 255.5], so it fits an `i32`.
        let i = unsafe { v.to_int_unchecked::<i32>() };
        *q = i.min(255) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) of values in `[-1, 1)`.
    struct Values(u64);

    impl Values {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }

        fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
            (0..len).map(|_| self.next() * scale).collect()
        }
    }

    fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, k: usize) -> Vec<f32> {
        let n = w.len() / k.max(1);
        x.chunks(k.max(1))
            .flat_map(|x| {
                (0..n).map(move |j| {
                    let dot: f64 = (0..k).map(|i| x[i] as f64 * w[j * k + i] as f64).sum();
                    dot as f32 + bias.map_or(0.0, |b| b[j])
                })
            })
            .collect()
    }

    /// Error bound of the int8 product: each factor is off by at most half a step, summed over
    /// `k` terms, with room for the 7-bit weights of AVX2 kernels.
    fn bound(x: &[f32], w: &[f32], k: usize) -> f32 {
        let max = |v: &[f32]| v.iter().fold(0f32, |m, a| m.max(a.abs()));
        let (xm, wm) = (max(x), max(w));
        k as f32 * (xm * wm / 127.0 + xm * wm / 63.0) + 1e-6
    }

    fn check(m: usize, k: usize, n: usize, seed: u64, x_scale: f32) {
        let mut r = Values(seed);
        let w = r.vec(n * k, 0.2);
        let bias = r.vec(n, 1.0);
        let x = r.vec(m * k, x_scale);
        let layer = Int8Linear::quantize(&w, n, k, Some(bias.clone())).unwrap();
        let got = layer.forward(&x, m).unwrap();
        let want = reference(&x, &w, Some(&bias), k);
        assert_eq!(got.len(), m * n);
        let tol = bound(&x, &w, k);
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - e).abs() <= tol,
                "{m}x{k}x{n} at {i}: {g} vs {e} (tolerance {tol})"
            );
        }
    }

    #[test]
    fn matches_f32_on_odd_and_model_shapes() {
        for (i, &(m, k, n)) in [
            (1, 1, 1),
            (1, 384, 51_865 / 64),
            (3, 7, 5),
            (5, 384, 384),
            (17, 33, 65),
            (513, 64, 31),
            (1500, 384, 1536),
        ]
        .iter()
        .enumerate()
        {
            check(m, k, n, 7 + i as u64, 3.0);
        }
    }

    #[test]
    fn typical_error_is_far_below_the_bound() {
        let (m, k, n) = (64, 384, 384);
        let mut r = Values(99);
        let w = r.vec(n * k, 0.1);
        let x = r.vec(m * k, 2.0);
        let got = Int8Linear::quantize(&w, n, k, None)
            .unwrap()
            .forward(&x, m)
            .unwrap();
        let want = reference(&x, &w, None, k);
        let rms = |v: &[f32]| (v.iter().map(|a| a * a).sum::<f32>() / v.len() as f32).sqrt();
        let diff: Vec<f32> = got.iter().zip(&want).map(|(a, b)| a - b).collect();
        // Random rounding errors add up like a random walk, not like the worst case.
        assert!(
            rms(&diff) < 0.02 * rms(&want),
            "{} vs {}",
            rms(&diff),
            rms(&want)
        );
    }

    #[test]
    fn extreme_rows_stay_finite_and_zero_rows_give_the_bias() {
        let (k, n) = (40, 9);
        let mut r = Values(3);
        let w = r.vec(n * k, 1.0);
        let bias = r.vec(n, 1.0);
        let layer = Int8Linear::quantize(&w, n, k, Some(bias.clone())).unwrap();
        let mut x = vec![0f32; 4 * k];
        x[k..2 * k].fill(1e30);
        x[2 * k] = f32::NAN;
        x[3 * k..].iter_mut().enumerate().for_each(|(i, v)| {
            *v = if i % 2 == 0 { 1e-30 } else { -1e-30 };
        });
        let y = layer.forward(&x, 4).unwrap();
        assert_eq!(&y[..n], bias.as_slice(), "a zero row is the bias");
        assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
        let want = reference(&x[k..2 * k], &w, Some(&bias), k);
        // Within the quantisation's error bound, as every product here: 2% of each output
        // held with 8-bit weights, not with AVX2's 7-bit ones (8% off on an AMD EPYC, where
        // terms cancel).
        let tol = bound(&x[k..2 * k], &w, k);
        for (g, e) in y[n..2 * n].iter().zip(&want) {
            assert!((g - e).abs() <= tol, "{g} vs {e}");
        }
        // The NaN is read as zero: the rest of its row is zero, so the bias.
        assert_eq!(&y[2 * n..3 * n], bias.as_slice());
    }

    #[test]
    fn already_quantized_weights_are_used_as_they_are() {
        let (k, n, m) = (16, 4, 3);
        let values: Vec<i8> = (0..n * k)
            .map(|i| (i as i32 * 37 % 255 - 127) as i8)
            .collect();
        let scales = vec![0.5, 0.25, 2.0, 1.0];
        let rows = Int8Rows::from_quantized(values.clone(), scales.clone(), k).unwrap();
        let layer = Int8Linear::new(&rows, None).unwrap();
        let w: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * scales[i / k])
            .collect();
        // Integers from -128 to 127 in every row: quantised with scale 1, exactly.
        let x: Vec<f32> = (0..m * k)
            .map(|i| match i % k {
                0 => 127.0,
                1 => -128.0,
                _ => (i * 13 % 255) as f32 - 127.0,
            })
            .collect();
        let got = layer.forward(&x, m).unwrap();
        let want = reference(&x, &w, None, k);
        for (g, e) in got.iter().zip(&want) {
            let tol = if may_saturate() {
                bound(&x, &w, k)
            } else {
                1e-5 * e.abs().max(1.0)
            };
            assert!((g - e).abs() <= tol, "{g} vs {e}");
        }
    }

    #[test]
    fn rows_dequantize_to_the_weight() {
        let (rows, cols) = (5, 7);
        let mut r = Values(11);
        let w = r.vec(rows * cols, 2.0);
        let q = Int8Rows::quantize(&w, rows, cols).unwrap();
        let mut out = vec![0f32; cols];
        for i in 0..rows {
            q.dequantize_row(i, &mut out);
            let max = w[i * cols..(i + 1) * cols]
                .iter()
                .fold(0f32, |m, x| m.max(x.abs()));
            for (a, b) in out.iter().zip(&w[i * cols..]) {
                assert!((a - b).abs() <= max / 63.0 / 2.0 + 1e-7, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn wrong_sizes_and_non_finite_weights_are_errors() {
        assert!(matches!(
            Int8Linear::quantize(&[0.0; 5], 2, 3, None),
            Err(Int8Error::Size { .. })
        ));
        assert_eq!(
            Int8Linear::quantize(&[0.0, 1.0, f32::INFINITY, 0.0], 2, 2, None).err(),
            Some(Int8Error::NonFinite(1))
        );
        let layer = Int8Linear::quantize(&[1.0; 6], 2, 3, None).unwrap();
        assert!(matches!(
            layer.forward(&[0.0; 7], 2),
            Err(Int8Error::Size { .. })
        ));
        assert!(matches!(
            Int8Linear::quantize(&[1.0; 6], 2, 3, Some(vec![0.0; 3])),
            Err(Int8Error::Size { .. })
        ));
    }

    #[test]
    fn reports_its_kernel() {
        assert!(!kernel_name().is_empty());
    }
}
