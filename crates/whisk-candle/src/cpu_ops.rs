//! Softmax and GELU for `f32` on the CPU, eight lanes at a time. candle's CPU versions call
//! the scalar `exp`/`erf` per element, and the encoder's attention alone takes 54 million
//! exponentials per window (tiny), which made them a large share of encoding. Half-precision
//! CPU tensors go through the same `f32` code (candle's CPU softmax would sum 1500 scores in
//! `f16`); other devices use candle's own ops.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use wide::f32x8;

/// Elements per parallel task for element-wise ops.
const TASK: usize = 1 << 14;

/// Runs `op` on `x` in `f32` where `x` is on the CPU (widening and narrowing half-precision
/// tensors around it), else `other`.
fn on_cpu_in_f32(
    x: &Tensor,
    op: &impl CustomOp1,
    other: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return other(x);
    }
    let dtype = x.dtype();
    x.to_dtype(DType::F32)?
        .contiguous()?
        .apply_op1_no_bwd(op)?
        .to_dtype(dtype)
}

pub(crate) fn lanes(c: &[f32]) -> f32x8 {
    let c: [f32; 8] = c.try_into().expect("chunks of 8");
    f32x8::from(c)
}

/// Applies `f` to `src` eight at a time (the tail padded), writing `dst`.
fn map8(src: &[f32], dst: &mut [f32], f: impl Fn(f32x8) -> f32x8) {
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(8);
    for (s, d) in (&mut s).zip(&mut d) {
        d.copy_from_slice(&f(lanes(s)).to_array());
    }
    let (s, d) = (s.remainder(), d.into_remainder());
    if !s.is_empty() {
        let mut tail = [0f32; 8];
        tail[..s.len()].copy_from_slice(s);
        d.copy_from_slice(&f(f32x8::from(tail)).to_array()[..s.len()]);
    }
}

/// Folds `x` with `op` eight lanes at a time, then the lanes and the tail with `op1`.
fn reduce8(
    x: &[f32],
    init: f32,
    op: impl Fn(f32x8, f32x8) -> f32x8,
    op1: impl Fn(f32, f32) -> f32,
) -> f32 {
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    let acc = chunks.fold(f32x8::splat(init), |acc, c| op(acc, lanes(c)));
    acc.to_array()
        .into_iter()
        .chain(rest.iter().copied())
        .fold(init, op1)
}

/// The contiguous `f32` data of a CPU tensor's storage.
pub(crate) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("expected f32 storage")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("expected a contiguous tensor"),
    }
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "whisk-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout)?;
        let dims = layout.shape().dims();
        let n = dims[dims.len() - 1].max(1);
        let mut dst = vec![0f32; src.len()];
        let rows_per_task = (TASK / n).max(1);
        src.par_chunks(n * rows_per_task)
            .zip(dst.par_chunks_mut(n * rows_per_task))
            .for_each(|(src, dst)| {
                for (src, dst) in src.chunks(n).zip(dst.chunks_mut(n)) {
                    let max = reduce8(src, f32::NEG_INFINITY, f32x8::max, f32::max);
                    if max == f32::NEG_INFINITY {
                        // Everything masked (a padded position): zeros rather than 0/0.
                        continue;
                    }
                    let shift = f32x8::splat(max);
                    map8(src, dst, |v| (v - shift).exp());
                    let sum = reduce8(dst, 0.0, |a, b| a + b, |a, b| a + b);
                    let scale = f32x8::splat(1.0 / sum);
                    dst.chunks_exact_mut(8)
                        .for_each(|d| d.copy_from_slice(&(lanes(d) * scale).to_array()));
                    let tail = n - n % 8;
                    dst[tail..].iter_mut().for_each(|d| *d /= sum);
                }
            });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// `softmax(x)` over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    on_cpu_in_f32(x, &SoftmaxLastDim, candle_nn::ops::softmax_last_dim)
}

/// `erf(x)` by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7, about `f32`'s
/// resolution near 1, where GELU reads it).
fn erf8(x: f32x8) -> f32x8 {
    let a = x.abs();
    // A true division: `recip` is a 12-bit estimate.
    let t = f32x8::ONE / (f32x8::ONE + f32x8::splat(0.327_591_1) * a);
    let poly = ((((f32x8::splat(1.061_405_4) * t - f32x8::splat(1.453_152)) * t
        + f32x8::splat(1.421_413_8))
        * t
        - f32x8::splat(0.284_496_74))
        * t
        + f32x8::splat(0.254_829_6))
        * t;
    let y = f32x8::ONE - poly * (-(a * a)).exp();
    x.simd_lt(f32x8::ZERO).select(-y, y)
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "whisk-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout)?;
        let mut dst = vec![0f32; src.len()];
        let half = f32x8::splat(0.5);
        let inv_sqrt2 = f32x8::splat(std::f32::consts::FRAC_1_SQRT_2);
        src.par_chunks(TASK)
            .zip(dst.par_chunks_mut(TASK))
            .for_each(|(src, dst)| {
                map8(src, dst, |x| half * x * (f32x8::ONE + erf8(x * inv_sqrt2)))
            });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// GELU with the exact `erf` form, as openai-whisper's `nn.GELU()`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    on_cpu_in_f32(x, &GeluErf, Tensor::gelu_erf)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// Largest absolute difference of two tensors (shared by this crate's tests).
    pub(crate) fn worst_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn gelu_matches_candles_erf_gelu() {
        let x: Vec<f32> = (0..7 * 2_858)
            .map(|i| (i as f32 - 10_000.0) / 1000.0)
            .collect();
        // A view, not contiguous: the op has to make it so.
        let x = Tensor::from_vec(x, (7, 2_858), &Device::Cpu)
            .unwrap()
            .narrow(1, 1, 2_857)
            .unwrap();
        let ours = gelu_erf(&x).unwrap();
        let candle = x.gelu_erf().unwrap();
        assert_eq!(ours.dims(), candle.dims());
        let worst = worst_diff(&ours, &candle);
        assert!(worst < 2e-6, "{worst:e}");
    }

    #[test]
    fn softmax_matches_candles_and_keeps_masked_entries_zero() {
        let x: Vec<f32> = (0..3 * 1_501)
            .map(|i| ((i * 7_919) % 1_000) as f32 / 50.0 - 10.0)
            .collect();
        let mut x = Tensor::from_vec(x, (3, 1_501), &Device::Cpu).unwrap();
        let mask: Vec<f32> = (0..3 * 1_501)
            .map(|i| {
                if i % 1_501 > 1_400 {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        x = (x + Tensor::from_vec(mask, (3, 1_501), &Device::Cpu).unwrap()).unwrap();
        let ours = softmax_last_dim(&x).unwrap();
        let candle = candle_nn::ops::softmax_last_dim(&x).unwrap();
        assert!(worst_diff(&ours, &candle) < 1e-6);
        let row: Vec<f32> = ours.get(1).unwrap().to_vec1().unwrap();
        assert!(row[1_401..].iter().all(|&p| p == 0.0));
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn half_precision_is_computed_in_f32_and_keeps_its_type() {
        let x: Vec<f32> = (0..1_500).map(|i| (i % 97) as f32 / 10.0 - 4.0).collect();
        let x = Tensor::from_vec(x, (1, 1_500), &Device::Cpu).unwrap();
        for (dtype, relative) in [(DType::F16, 1e-3), (DType::BF16, 8e-3)] {
            let half = x.to_dtype(dtype).unwrap();
            let wide = half.to_dtype(DType::F32).unwrap();
            for (ours, exact) in [
                (softmax_last_dim(&half), softmax_last_dim(&wide)),
                (gelu_erf(&half), gelu_erf(&wide)),
            ] {
                let ours = ours.unwrap();
                assert_eq!(ours.dtype(), dtype);
                let ours: Vec<f32> = ours
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let exact: Vec<f32> = exact.unwrap().flatten_all().unwrap().to_vec1().unwrap();
                for (a, b) in ours.iter().zip(&exact) {
                    assert!(
                        (a - b).abs() <= relative * b.abs() + 1e-6,
                        "{dtype:?}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
