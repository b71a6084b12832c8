//! A decoder step's cross-attention on the CPU, read in place from each slot's cached keys
//! and values. candle's batched matmul would first gather the stepped slots' K/V into a copy
//! (whenever they are not one contiguous range) and then repack every (slot, head) panel for
//! its GEMM, all for one or two query rows: a decoder step spent most of its time moving
//! those megabytes. Here each (row, head) reads its keys and values once, where they lie.
//!
//! Only for steps of a few tokens per row; longer ones (prompts, alignment passes) are real
//! matrix products and stay with candle's GEMM.
//!
//! The cache may be kept in f16 ([`CACHE_DTYPE`]): half the memory per slot, and half the
//! bytes a step reads; the F16C kernels (`f16c.rs`) widen it as they load it, elsewhere each
//! (slot, head) panel is widened into a buffer of its thread's for the f32 kernels.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;
use whisk_types::widest_lanes;

use crate::cpu_ops::contiguous_f32;
use crate::f16c;

/// Steps feeding at most this many tokens per row use the in-place kernels.
pub const MAX_TOKENS: usize = 4;

/// The type the decoder keeps each slot's cross-attention keys and values in when its
/// linear layers are int8.
pub const CACHE_DTYPE: DType = DType::F16;

fn dims4(layout: &Layout) -> Result<[usize; 4]> {
    match *layout.shape().dims() {
        [a, b, c, d] => Ok([a, b, c, d]),
        ref other => candle_core::bail!("expected 4 dimensions, got {other:?}"),
    }
}

widest_lanes!(scores_fast => scores(query: &[f32], keys_t: &[f32], out: &mut [f32], scale: f32));
widest_lanes!(weighted_fast => weighted(weights: &[f32], values: &[f32], out: &mut [f32]));

/// `out[f] = scale · Σ_d query[d] · keys_t[d][f]`. Keys are stored transposed (`[dh, frames]`)
/// so that the sum runs down the frames in lanes: no horizontal sums, no chain of dependent
/// additions per key (a dot product per key was the decoder step's largest cost).
#[inline(always)]
fn scores(query: &[f32], keys_t: &[f32], out: &mut [f32], scale: f32) {
    let frames = out.len();
    out.fill(0.0);
    let mut rows = keys_t.chunks_exact(frames);
    let mut dims = query.chunks_exact(4);
    // Four key rows a pass: one load and store of `out` per four products.
    for q in &mut dims {
        let (k0, k1, k2, k3) = (
            rows.next().expect("dh rows"),
            rows.next().expect("dh rows"),
            rows.next().expect("dh rows"),
            rows.next().expect("dh rows"),
        );
        for ((((o, a), b), c), d) in out.iter_mut().zip(k0).zip(k1).zip(k2).zip(k3) {
            *o += q[0] * a + q[1] * b + q[2] * c + q[3] * d;
        }
    }
    for (&q, k) in dims.remainder().iter().zip(rows) {
        for (o, a) in out.iter_mut().zip(k) {
            *o += q * a;
        }
    }
    for o in out.iter_mut() {
        *o *= scale;
    }
}

/// `out = Σ_f weights[f] · values[f]` over `[frames, dh]` values, eight frames' worth of
/// independent sums at a time.
#[inline(always)]
fn weighted(weights: &[f32], values: &[f32], out: &mut [f32]) {
    const DH: usize = 64;
    let dh = out.len();
    if dh == DH {
        // Whisper's heads are all 64 wide: the sums then stay in registers.
        let mut acc = [0f32; DH];
        for (&w, value) in weights.iter().zip(values.chunks_exact(DH)) {
            for (a, &v) in acc.iter_mut().zip(value) {
                *a += w * v;
            }
        }
        out.copy_from_slice(&acc);
        return;
    }
    out.fill(0.0);
    for (&w, value) in weights.iter().zip(values.chunks_exact(dh)) {
        for (o, &v) in out.iter_mut().zip(value) {
            *o += w * v;
        }
    }
}

/// Row `r` of the step reads slot `slots[r]` of a cache of `[slots, heads, ..]`.
struct Slots<'a> {
    slots: &'a [usize],
}

impl Slots<'_> {
    /// Checks the `[slots, heads, a, b]` cache against the queries (`dh` being `a` or `b`,
    /// as `dh_at`) and returns `(rows, heads, n, frames, dh)`.
    fn shape(
        &self,
        q: &Layout,
        cache: &Layout,
        dh_at: usize,
    ) -> Result<(usize, usize, usize, usize, usize)> {
        let [rows, heads, n, dh] = dims4(q)?;
        let [cached, cache_heads, a, b] = dims4(cache)?;
        let (frames, cache_dh) = if dh_at == 2 { (b, a) } else { (a, b) };
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

/// How a step's `[rows, heads, ..]` input, its slots' cache and its output are cut per (row,
/// head): each task gets its input, the cache of its row's slot and head, and its output.
struct PerHead<'a> {
    slots: &'a [usize],
    heads: usize,
    in_len: usize,
    cache_len: usize,
    out_len: usize,
}

impl PerHead<'_> {
    /// Runs `task` for every (row, head). The rows reading one slot run one after another
    /// on one thread, head by head, so that the panel the first reads is still in cache for
    /// the others (beam hypotheses and best-of candidates share their window's slot).
    fn run(
        &self,
        input: &[f32],
        cache: Panels<'_>,
        out: &mut [f32],
        task: impl Fn(&[f32], Panels<'_>, &mut [f32]) + Sync,
    ) {
        let mut readers: Vec<(usize, Vec<usize>)> = Vec::new();
        for (r, &slot) in self.slots.iter().enumerate() {
            match readers.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, rows)) => rows.push(r),
                None => readers.push((slot, vec![r])),
            }
        }
        if readers.len() == self.slots.len() {
            // One row per slot: each task writes its own piece of `out` in place.
            return out
                .par_chunks_mut(self.out_len)
                .enumerate()
                .for_each(|(rh, out)| {
                    let (r, head) = (rh / self.heads, rh % self.heads);
                    let offset = (self.slots[r] * self.heads + head) * self.cache_len;
                    let panel = cache.panel(offset, self.cache_len);
                    task(&input[rh * self.in_len..][..self.in_len], panel, out);
                });
        }
        let tasks: Vec<(usize, &[usize])> = readers
            .iter()
            .flat_map(|(slot, rows)| {
                (0..self.heads).map(move |h| (slot * self.heads + h, &rows[..]))
            })
            .collect();
        let outputs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(slot_head, rows)| {
                let head = slot_head % self.heads;
                let panel = cache.panel(slot_head * self.cache_len, self.cache_len);
                let mut outs = vec![0f32; rows.len() * self.out_len];
                for (&r, out) in rows.iter().zip(outs.chunks_exact_mut(self.out_len)) {
                    let rh = r * self.heads + head;
                    task(&input[rh * self.in_len..][..self.in_len], panel, out);
                }
                outs
            })
            .collect();
        for (&(slot_head, rows), outs) in tasks.iter().zip(outputs) {
            let head = slot_head % self.heads;
            for (&r, piece) in rows.iter().zip(outs.chunks_exact(self.out_len)) {
                let rh = r * self.heads + head;
                out[rh * self.out_len..][..self.out_len].copy_from_slice(piece);
            }
        }
    }
}

thread_local! {
    /// One f16 panel widened to f32.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A contiguous slot cache, in f32 or f16.
#[derive(Clone, Copy)]
enum Panels<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl<'a> Panels<'a> {
    fn of(storage: &'a CpuStorage, layout: &Layout) -> Result<Self> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("cross-attention: expected a contiguous cache")
        };
        match storage {
            CpuStorage::F32(data) => Ok(Self::F32(&data[start..end])),
            CpuStorage::F16(data) => Ok(Self::F16(&data[start..end])),
            _ => candle_core::bail!("cross-attention: an f32 or f16 cache expected"),
        }
    }

    fn panel(self, offset: usize, len: usize) -> Panels<'a> {
        match self {
            Self::F32(data) => Self::F32(&data[offset..][..len]),
            Self::F16(data) => Self::F16(&data[offset..][..len]),
        }
    }

    /// Calls `f` with the values as f32: as they are, or widened into this thread's buffer.
    fn widened(self, f: impl FnOnce(&[f32])) {
        match self {
            Self::F32(data) => f(data),
            Self::F16(data) => PANEL.with_borrow_mut(|panel| {
                panel.resize(data.len(), 0.0);
                data.convert_to_f32_slice(panel);
                f(panel)
            }),
        }
    }
}

/// `q · K · scale` per row and head: `[rows, heads, n, dh]` × keys `[slots, heads, dh, frames]`
/// → `[rows, heads, n, frames]`.
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
        let (rows, heads, n, frames, dh) = self.slots.shape(q_layout, k_layout, 2)?;
        let q = contiguous_f32(q, q_layout)?;
        let mut out = vec![0f32; rows * heads * n * frames];
        let per_head = PerHead {
            slots: self.slots.slots,
            heads,
            in_len: n * dh,
            cache_len: dh * frames,
            out_len: n * frames,
        };
        let k = Panels::of(k, k_layout)?;
        let per_query = |q: &[f32], out: &mut [f32], each: &dyn Fn(&[f32], &mut [f32])| {
            for (query, out) in q.chunks_exact(dh).zip(out.chunks_exact_mut(frames)) {
                each(query, out);
            }
        };
        per_head.run(q, k, &mut out, |q, k, out| match k {
            Panels::F16(k) if f16c::available() => per_query(q, out, &|query, out| {
                f16c::scores(query, k, out, self.scale)
            }),
            _ => k.widened(|k| {
                per_query(q, out, &|query, out| scores_fast(query, k, out, self.scale))
            }),
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, heads, n, frames))))
    }
}

/// `P · V` per row and head: `[rows, heads, n, frames]` × values `[slots, heads, frames, dh]`
/// → `[rows, heads, n, dh]`.
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
        self.slots.shape(&q_like, v_layout, 3)?;
        if frames != v_frames {
            candle_core::bail!("cross-attention: {frames} weights for {v_frames} frames");
        }
        let p = contiguous_f32(p, p_layout)?;
        let mut out = vec![0f32; rows * heads * n * dh];
        let per_head = PerHead {
            slots: self.slots.slots,
            heads,
            in_len: n * frames,
            cache_len: frames * dh,
            out_len: n * dh,
        };
        let v = Panels::of(v, v_layout)?;
        let per_query = |p: &[f32], out: &mut [f32], each: &dyn Fn(&[f32], &mut [f32])| {
            for (out, weights) in out.chunks_exact_mut(dh).zip(p.chunks_exact(frames)) {
                each(weights, out);
            }
        };
        per_head.run(p, v, &mut out, |p, v, out| match v {
            Panels::F16(v) if dh == f16c::DH && f16c::available() => {
                per_query(p, out, &|weights, out| f16c::weighted(weights, v, out))
            }
            _ => v.widened(|v| per_query(p, out, &|weights, out| weighted_fast(weights, v, out))),
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, heads, n, dh))))
    }
}

/// Attention of `q` `[rows, heads, n, dh]` over the cached keys `k_t` `[slots, heads, dh,
/// frames]` (transposed) and values `v` `[slots, heads, frames, dh]`, row `r` reading slot
/// `slots[r]`. Returns the output `[rows, heads, n, dh]` and the scaled pre-softmax scores
/// `[rows, heads, n, frames]`.
pub fn attend_slots(
    q: &Tensor,
    k_t: &Tensor,
    v: &Tensor,
    slots: &[usize],
) -> Result<(Tensor, Tensor)> {
    let dh = q.dim(3)?;
    let scores = q.apply_op2_no_bwd(
        k_t,
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
    use candle_core::{DType, Device};

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i + seed) * 7_919) % 1_000) as f32 / 250.0 - 2.0)
            .collect()
    }

    /// Checks `attend_slots` against candle's attention over the gathered slots, the cache
    /// kept in `dtype` (its values rounded to it for the reference too).
    fn check_against_candle(dh: usize, dtype: DType) {
        // Slots repeated and out of order; 4 query tokens (the most in place).
        let (cached, heads, frames, n) = (5, 3, 37, MAX_TOKENS);
        let slots = [4, 1, 1];
        let dev = &Device::Cpu;
        let cache = |seed| {
            Tensor::from_vec(
                values(cached * heads * frames * dh, seed),
                (cached, heads, frames, dh),
                dev,
            )
            .and_then(|t| t.to_dtype(dtype)?.to_dtype(DType::F32))
            .unwrap()
        };
        let (k, v) = (cache(1), cache(2));
        let q = Tensor::from_vec(
            values(slots.len() * heads * n * dh, 3),
            (slots.len(), heads, n, dh),
            dev,
        )
        .unwrap();
        let stored = |t: &Tensor| t.to_dtype(dtype).unwrap().contiguous().unwrap();
        let k_t = stored(&k.transpose(2, 3).unwrap());
        let (out, scores) = attend_slots(&q, &k_t, &stored(&v), &slots).unwrap();

        let idx = Tensor::new(&[4u32, 1, 1], dev).unwrap();
        let gather = |t: &Tensor| t.index_select(&idx, 0).unwrap();
        let (kk, vv) = (gather(&k), gather(&v));
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
    fn matches_candles_attention_over_gathered_slots() {
        // dh not a multiple of 4 or 8 (the kernels' tails), and Whisper's 64; the cache in
        // f32, and in f16 (read by the F16C kernels, or widened where there are none).
        for dh in [21, 64] {
            check_against_candle(dh, DType::F32);
            check_against_candle(dh, CACHE_DTYPE);
        }
    }

    #[test]
    fn a_slot_outside_the_cache_is_an_error() {
        let dev = &Device::Cpu;
        let k = Tensor::zeros((2, 1, 4, 8), DType::F32, dev).unwrap();
        let k_t = Tensor::zeros((2, 1, 8, 4), DType::F32, dev).unwrap();
        let q = Tensor::zeros((1, 1, 1, 8), DType::F32, dev).unwrap();
        assert!(attend_slots(&q, &k_t, &k, &[2]).is_err());
    }
}
