//! Softmax and GELU for `f32` on the CPU, vectorised. candle's CPU versions call the scalar
//! `exp`/`erf` per element, and the encoder's attention alone takes 54 million exponentials
//! per window (tiny), which made them a large share of encoding. The element-wise loops are
//! plain `f32` code that the compiler vectorises, built twice on x86-64: for the baseline
//! (SSE2) and for AVX2, picked at run time (the same loop in 8 lanes instead of 4).
//! Half-precision CPU tensors go through the same `f32` code (candle's CPU softmax would sum
//! 1500 scores in `f16`); other devices use candle's own ops.

use candle_core::{
    CpuStorage, CustomOp1, DType, InplaceOp1, Layout, Result, Shape, Storage, Tensor,
};
use rayon::prelude::*;
use whisk_types::lanes::{exp, fold_lanes};
use whisk_types::widest_lanes;

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

/// The contiguous `f32` data of the CPU tensor `t`, given to `compute`.
pub(crate) fn with_f32<T>(t: &Tensor, compute: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => compute(contiguous_f32(cpu, layout)?),
        _ => candle_core::bail!("expected a CPU tensor"),
    }
}

/// [`contiguous_f32`] for an op that writes over its input.
fn contiguous_f32_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("expected f32 storage")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => candle_core::bail!("expected a contiguous tensor"),
    }
}

/// `op` written over `x` where it is a contiguous `f32` CPU tensor (no second buffer as large
/// as `x`), else `otherwise(&x)` into a new one.
fn in_place_or(
    x: Tensor,
    op: &impl InplaceOp1,
    otherwise: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
        x.inplace_op1(op)?;
        Ok(x)
    } else {
        otherwise(&x)
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
            .for_each(|(src, dst)| softmax_rows_fast(src, dst, n));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// `softmax(x)` over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    on_cpu_in_f32(x, &SoftmaxLastDim, candle_nn::ops::softmax_last_dim)
}

struct SoftmaxInPlace;

impl InplaceOp1 for SoftmaxInPlace {
    fn name(&self) -> &'static str {
        "whisk-softmax-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let dims = layout.shape().dims();
        let n = dims[dims.len() - 1].max(1);
        let rows_per_task = (TASK / n).max(1);
        contiguous_f32_mut(storage, layout)?
            .par_chunks_mut(n * rows_per_task)
            .for_each(|x| softmax_rows_in_place_fast(x, n));
        Ok(())
    }
}

/// `softmax(x)` over the last dimension, written over `x` where it is a contiguous `f32` CPU
/// tensor (no second buffer as large as the scores), else as [`softmax_last_dim`].
pub fn softmax_last_dim_in_place(x: Tensor) -> Result<Tensor> {
    in_place_or(x, &SoftmaxInPlace, softmax_last_dim)
}

widest_lanes!(softmax_rows_fast => softmax_rows(src: &[f32], dst: &mut [f32], n: usize));
widest_lanes!(softmax_rows_in_place_fast => softmax_rows_in_place(x: &mut [f32], n: usize));

/// Softmax of each `n`-long row of `x`, written over it.
pub(crate) fn softmax_rows_in_place_f32(x: &mut [f32], n: usize) {
    softmax_rows_in_place_fast(x, n)
}
widest_lanes!(gelu_fast => gelu_slice(src: &[f32], dst: &mut [f32]));
widest_lanes!(gelu_in_place_fast => gelu_slice_in_place(x: &mut [f32]));

/// Softmax of each `n`-long row of `src` into `dst` (zeros where a row is all `-inf`).
#[inline(always)]
fn softmax_rows(src: &[f32], dst: &mut [f32], n: usize) {
    for (src, dst) in src.chunks(n).zip(dst.chunks_mut(n)) {
        // `max` as a compare and select, which vectorises (`f32::max` minds NaN and does not).
        let max = fold_lanes(src, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
        if max == f32::NEG_INFINITY {
            // Everything masked (a padded position): zeros rather than 0/0.
            continue;
        }
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = exp(x - max);
        }
        let scale = 1.0 / fold_lanes(dst, 0.0, |a, b| a + b);
        for d in dst.iter_mut() {
            *d *= scale;
        }
    }
}

/// [`softmax_rows`] over `x` itself.
#[inline(always)]
fn softmax_rows_in_place(x: &mut [f32], n: usize) {
    for x in x.chunks_mut(n) {
        let max = fold_lanes(x, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
        if max == f32::NEG_INFINITY {
            x.fill(0.0);
            continue;
        }
        for v in x.iter_mut() {
            *v = exp(*v - max);
        }
        let scale = 1.0 / fold_lanes(x, 0.0, |a, b| a + b);
        for v in x.iter_mut() {
            *v *= scale;
        }
    }
}

/// `erf(x)` by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7, about `f32`'s
/// resolution near 1, where GELU reads it).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp(-(a * a))).copysign(x)
}

/// GELU, exact `erf` form.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu`] of `src` into `dst`.
#[inline(always)]
fn gelu_slice(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = gelu(x);
    }
}

/// [`gelu`] over `x` itself.
#[inline(always)]
fn gelu_slice_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu(*v);
    }
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "whisk-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout)?;
        let mut dst = vec![0f32; src.len()];
        src.par_chunks(TASK)
            .zip(dst.par_chunks_mut(TASK))
            .for_each(|(src, dst)| gelu_fast(src, dst));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// GELU with the exact `erf` form, as openai-whisper's `nn.GELU()`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    on_cpu_in_f32(x, &GeluErf, Tensor::gelu_erf)
}

struct GeluErfInPlace;

impl InplaceOp1 for GeluErfInPlace {
    fn name(&self) -> &'static str {
        "whisk-gelu-erf-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        contiguous_f32_mut(storage, layout)?
            .par_chunks_mut(TASK)
            .for_each(gelu_in_place_fast);
        Ok(())
    }
}

/// [`gelu_erf`] written over `x` where it is a contiguous `f32` CPU tensor: an MLP's hidden
/// layer (4 × the model's width) is then held once, not twice.
pub fn gelu_erf_in_place(x: Tensor) -> Result<Tensor> {
    in_place_or(x, &GeluErfInPlace, gelu_erf)
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
        // In place: the same values over a contiguous copy; a view gets a new tensor.
        let copy = x.contiguous().unwrap().copy().unwrap();
        assert!(worst_diff(&gelu_erf_in_place(copy).unwrap(), &ours) == 0.0);
        assert!(worst_diff(&gelu_erf_in_place(x).unwrap(), &ours) == 0.0);
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

        // In place: the same values, in the scores' own buffer; an all-masked row is zeros.
        let masked = Tensor::full(f32::NEG_INFINITY, (1, 1_501), &Device::Cpu).unwrap();
        let x = Tensor::cat(&[&x, &masked], 0).unwrap();
        let copy = x.copy().unwrap();
        let in_place = softmax_last_dim_in_place(x).unwrap();
        assert!(worst_diff(&in_place.narrow(0, 0, 3).unwrap(), &ours) == 0.0);
        let last: Vec<f32> = in_place.get(3).unwrap().to_vec1().unwrap();
        assert!(last.iter().all(|&p| p == 0.0));
        // A view that is not contiguous is computed into a new tensor instead.
        let view = copy.t().unwrap();
        let out = softmax_last_dim_in_place(view.clone()).unwrap();
        assert!(worst_diff(&out, &softmax_last_dim(&view).unwrap()) == 0.0);
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
