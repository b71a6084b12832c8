//! A decoder step's cross-attention on the CPU, read in place from each slot's cached keys
//! and values. candle's batched matmul would first gather the stepped slots' K/V into a copy
//! (whenever they are not one contiguous range) and then repack every (slot, head) panel for
//! its GEMM, all for one or two query rows: a decoder step spent most of its time moving
//! those megabytes. Here each (row, head) reads its keys and values once, where they lie.
//!
//! Only for steps of a few tokens per row; longer ones (prompts, alignment passes) are real
//! matrix products and stay with candle's GEMM.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use wide::f32x8;

use crate::cpu_ops::{contiguous_f32, lanes};

/// Steps feeding at most this many tokens per row use the in-place kernels.
pub const MAX_TOKENS: usize = 4;

fn dims4(layout: &Layout) -> Result<[usize; 4]> {
    match *layout.shape().dims() {
        [a, b, c, d] => Ok([a, b, c, d]),
        ref other => candle_core::bail!("expected 4 dimensions, got {other:?}"),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    ca.zip(cb)
        .fold(f32x8::ZERO, |acc, (x, y)| lanes(x).mul_add(lanes(y), acc))
        .reduce_add()
        + tail
}

/// `y += a · x`.
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    let av = f32x8::splat(a);
    let mut ys = y.chunks_exact_mut(8);
    let mut xs = x.chunks_exact(8);
    for (y, x) in (&mut ys).zip(&mut xs) {
        y.copy_from_slice(&lanes(x).mul_add(av, lanes(y)).to_array());
    }
    for (y, x) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
        *y += a * x;
    }
}

/// Row `r` of the step reads slot `slots[r]` of a `[slots, heads, frames, dh]` cache.
struct Slots<'a> {
    slots: &'a [usize],
}

impl Slots<'_> {
    /// Checks the cache against the queries and returns `(rows, heads, n, frames, dh)`.
    fn shape(&self, q: &Layout, cache: &Layout) -> Result<(usize, usize, usize, usize, usize)> {
        let [rows, heads, n, dh] = dims4(q)?;
        let [cached, cache_heads, frames, cache_dh] = dims4(cache)?;
        if rows != self.slots.len() || heads != cache_heads || dh != cache_dh {
            candle_core::bail!(
                "cross-attention: {rows} rows × {heads} heads × {dh} against a cache of \
                 {cache_heads} heads × {cache_dh} for {} slots",
                self.slots.len()
            );
        }
        if let Some(&s) = self.slots.iter().find(|&&s| s >= cached) {
            candle_core::bail!("cross-attention: slot {s} of {cached}");
        }
        Ok((rows, heads, n, frames, dh))
    }
}

/// `q · Kᵀ · scale` per row and head: `[rows, heads, n, dh]` × cache → `[rows, heads, n, frames]`.
struct Scores<'a> {
    slots: Slots<'a>,
    scale: f32,
}

impl CustomOp2 for Scores<'_> {
    fn name(&self) -> &'static str {
        "whisk-cross-scores"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, heads, n, frames, dh) = self.slots.shape(q_layout, k_layout)?;
        let (q, k) = (contiguous_f32(q, q_layout)?, contiguous_f32(k, k_layout)?);
        let mut out = vec![0f32; rows * heads * n * frames];
        out.par_chunks_mut(n * frames)
            .enumerate()
            .for_each(|(rh, out)| {
                let (r, head) = (rh / heads, rh % heads);
                let keys = &k[(self.slots.slots[r] * heads + head) * frames * dh..][..frames * dh];
                let queries = &q[rh * n * dh..][..n * dh];
                for (t, query) in queries.chunks_exact(dh).enumerate() {
                    let out = &mut out[t * frames..][..frames];
                    for (o, key) in out.iter_mut().zip(keys.chunks_exact(dh)) {
                        *o = dot(query, key) * self.scale;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, heads, n, frames))))
    }
}

/// `P · V` per row and head: `[rows, heads, n, frames]` × cache → `[rows, heads, n, dh]`.
struct Weighted<'a> {
    slots: Slots<'a>,
}

impl CustomOp2 for Weighted<'_> {
    fn name(&self) -> &'static str {
        "whisk-cross-weighted"
    }

    fn cpu_fwd(
        &self,
        p: &CpuStorage,
        p_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [rows, heads, n, frames] = dims4(p_layout)?;
        let [_, _, v_frames, dh] = dims4(v_layout)?;
        let q_like = Layout::contiguous((rows, heads, n, dh));
        self.slots.shape(&q_like, v_layout)?;
        if frames != v_frames {
            candle_core::bail!("cross-attention: {frames} weights for {v_frames} frames");
        }
        let (p, v) = (contiguous_f32(p, p_layout)?, contiguous_f32(v, v_layout)?);
        let mut out = vec![0f32; rows * heads * n * dh];
        out.par_chunks_mut(n * dh)
            .enumerate()
            .for_each(|(rh, out)| {
                let (r, head) = (rh / heads, rh % heads);
                let values =
                    &v[(self.slots.slots[r] * heads + head) * frames * dh..][..frames * dh];
                let weights = &p[rh * n * frames..][..n * frames];
                for (out, weights) in out.chunks_exact_mut(dh).zip(weights.chunks_exact(frames)) {
                    for (&w, value) in weights.iter().zip(values.chunks_exact(dh)) {
                        // Softmax leaves most frames near zero; skipping exact zeros is free.
                        if w != 0.0 {
                            axpy(out, w, value);
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, heads, n, dh))))
    }
}

/// Attention of `q` `[rows, heads, n, dh]` over the cached `k`/`v` `[slots, heads, frames, dh]`,
/// row `r` reading slot `slots[r]`. Returns the output `[rows, heads, n, dh]` and the scaled
/// pre-softmax scores `[rows, heads, n, frames]`.
pub fn attend_slots(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    slots: &[usize],
) -> Result<(Tensor, Tensor)> {
    let dh = q.dim(3)?;
    let scores = q.apply_op2_no_bwd(
        k,
        &Scores {
            slots: Slots { slots },
            scale: 1.0 / (dh as f32).sqrt(),
        },
    )?;
    let weights = crate::cpu_ops::softmax_last_dim(&scores)?;
    let out = weights.apply_op2_no_bwd(
        v,
        &Weighted {
            slots: Slots { slots },
        },
    )?;
    Ok((out, scores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_ops::tests::worst_diff;
    use candle_core::Device;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i + seed) * 7_919) % 1_000) as f32 / 250.0 - 2.0)
            .collect()
    }

    #[test]
    fn matches_candles_attention_over_gathered_slots() {
        // dh not a multiple of 8 (lane tails), slots repeated and out of order.
        let (cached, heads, frames, dh, n) = (5, 3, 37, 20, 2);
        let slots = [4, 1, 1];
        let dev = &Device::Cpu;
        let cache = |seed| {
            Tensor::from_vec(
                values(cached * heads * frames * dh, seed),
                (cached, heads, frames, dh),
                dev,
            )
            .unwrap()
        };
        let (k, v) = (cache(1), cache(2));
        let q = Tensor::from_vec(
            values(slots.len() * heads * n * dh, 3),
            (slots.len(), heads, n, dh),
            dev,
        )
        .unwrap();
        let (out, scores) = attend_slots(&q, &k, &v, &slots).unwrap();

        let idx = Tensor::new(&[4u32, 1, 1], dev).unwrap();
        let (kk, vv) = (
            k.index_select(&idx, 0).unwrap(),
            v.index_select(&idx, 0).unwrap(),
        );
        let want_scores = (q * (1.0 / (dh as f64).sqrt()))
            .unwrap()
            .matmul(&kk.t().unwrap())
            .unwrap();
        let want_out = candle_nn::ops::softmax_last_dim(&want_scores)
            .unwrap()
            .matmul(&vv)
            .unwrap();
        assert_eq!(scores.dims(), want_scores.dims());
        assert_eq!(out.dims(), want_out.dims());
        assert!(worst_diff(&scores, &want_scores) < 1e-4);
        assert!(worst_diff(&out, &want_out) < 1e-4);
    }

    #[test]
    fn a_slot_outside_the_cache_is_an_error() {
        let dev = &Device::Cpu;
        let k = Tensor::zeros((2, 1, 4, 8), candle_core::DType::F32, dev).unwrap();
        let q = Tensor::zeros((1, 1, 1, 8), candle_core::DType::F32, dev).unwrap();
        assert!(attend_slots(&q, &k, &k, &[2]).is_err());
    }
}
