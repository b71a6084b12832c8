//! A decoder step's cross-attention on the CPU, read in place from each window's cached keys
//! and values. candle's batched matmul would first gather the rows' K/V into a copy and then
//! repack every (row, head) panel for its GEMM, all for one or two query rows: a decoder step
//! spent most of its time moving those megabytes. Here each (row, head) reads its keys and
//! values once, where they lie. Each window's K/V is a tensor of its own, so that a window no
//! row reads any more frees its memory.
//!
//! Only for steps of a few tokens per row; longer ones (prompts, alignment passes) are real
//! matrix products and stay with candle's GEMM.
//!
//! The cache may be kept in f16 ([`CACHE_DTYPE`]): half the memory per window, and half the
//! bytes a step reads; the F16C kernels (`f16c.rs`) widen it as they load it, elsewhere each
//! (window, head) panel is widened into a buffer of its thread's for the f32 kernels.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};
use half::{f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;
use whisk_types::widest_lanes;

use crate::cpu_ops::with_f32;
use crate::f16c;

/// Steps feeding at most this many tokens per row use the in-place kernels.
pub const MAX_TOKENS: usize = 4;

/// The type the decoder keeps each window's cross-attention keys and values in when its
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

/// The caches a step reads, each `[1, heads, a, b]` for one window, and the one row `r`
/// reads: `caches[of_row[r]]`.
struct Reads<'a> {
    caches: &'a [&'a Tensor],
    of_row: &'a [usize],
}

impl Reads<'_> {
    /// Checks the caches against the queries `[rows, heads, n, dh]` (`dh` being a cache's `a`
    /// or `b`, as `dh_at`) and returns `(rows, heads, n, frames, dh)`.
    fn shape(&self, q: &Layout, dh_at: usize) -> Result<(usize, usize, usize, usize, usize)> {
        let [rows, heads, n, dh] = dims4(q)?;
        if rows != self.of_row.len() {
            candle_core::bail!("cross-attention: {rows} rows, {} reads", self.of_row.len());
        }
        if let Some(&c) = self.of_row.iter().find(|&&c| c >= self.caches.len()) {
            candle_core::bail!("cross-attention: cache {c} of {}", self.caches.len());
        }
        let mut frames = None;
        for cache in self.caches {
            let [one, cache_heads, a, b] = dims4(cache.layout())?;
            let (cache_frames, cache_dh) = if dh_at == 2 { (b, a) } else { (a, b) };
            if one != 1 || heads != cache_heads || dh != cache_dh {
                candle_core::bail!(
                    "cross-attention: {rows} rows × {heads} heads × {dh} against a cache of \
                     {one} × {cache_heads} heads × {cache_dh}"
                );
            }
            if *frames.get_or_insert(cache_frames) != cache_frames {
                candle_core::bail!("cross-attention: caches of different lengths");
            }
        }
        let Some(frames) = frames else {
            candle_core::bail!("cross-attention: no cache to read")
        };
        Ok((rows, heads, n, frames, dh))
    }

    /// Runs `compute` over each cache's data, read in place.
    fn with_panels<T>(&self, compute: impl FnOnce(&[Panels<'_>]) -> Result<T>) -> Result<T> {
        let guards: Vec<_> = self.caches.iter().map(|t| t.storage_and_layout()).collect();
        let panels = guards
            .iter()
            .map(|(storage, layout)| match &**storage {
                Storage::Cpu(cpu) => Panels::of(cpu, layout),
                _ => candle_core::bail!("cross-attention: a CPU cache expected"),
            })
            .collect::<Result<Vec<_>>>()?;
        compute(&panels)
    }
}

/// How a step's `[rows, heads, ..]` input, the caches its rows read and its output are cut
/// per (row, head): each task gets its input, its row's cache's panel of that head, and its
/// output.
struct PerHead<'a> {
    of_row: &'a [usize],
    heads: usize,
    in_len: usize,
    cache_len: usize,
    out_len: usize,
}

impl PerHead<'_> {
    /// Runs `task` for every (row, head). The rows reading one cache run one after another
    /// on one thread, head by head, so that the panel the first reads is still in the CPU's
    /// cache for the others (beam hypotheses and best-of candidates share their window's).
    fn run(
        &self,
        input: &[f32],
        caches: &[Panels<'_>],
        out: &mut [f32],
        task: impl Fn(&[f32], Panels<'_>, &mut [f32]) + Sync,
    ) {
        let panel =
            |cache: usize, head: usize| caches[cache].panel(head * self.cache_len, self.cache_len);
        let mut readers: Vec<(usize, Vec<usize>)> = Vec::new();
        for (r, &cache) in self.of_row.iter().enumerate() {
            match readers.iter_mut().find(|(c, _)| *c == cache) {
                Some((_, rows)) => rows.push(r),
                None => readers.push((cache, vec![r])),
            }
        }
        if readers.len() == self.of_row.len() {
            // One row per cache: each task writes its own piece of `out` in place.
            return out
                .par_chunks_mut(self.out_len)
                .enumerate()
                .for_each(|(rh, out)| {
                    let (r, head) = (rh / self.heads, rh % self.heads);
                    let panel = panel(self.of_row[r], head);
                    task(&input[rh * self.in_len..][..self.in_len], panel, out);
                });
        }
        let tasks: Vec<(usize, usize, &[usize])> = readers
            .iter()
            .flat_map(|(cache, rows)| (0..self.heads).map(move |h| (*cache, h, &rows[..])))
            .collect();
        let outputs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(cache, head, rows)| {
                let panel = panel(cache, head);
                let mut outs = vec![0f32; rows.len() * self.out_len];
                for (&r, out) in rows.iter().zip(outs.chunks_exact_mut(self.out_len)) {
                    let rh = r * self.heads + head;
                    task(&input[rh * self.in_len..][..self.in_len], panel, out);
                }
                outs
            })
            .collect();
        for (&(_, head, rows), outs) in tasks.iter().zip(outputs) {
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

/// A window's contiguous cache, in f32 or f16.
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

/// `q · K · scale` per row and head: `[rows, heads, n, dh]` × keys `[1, heads, dh, frames]`
/// → `[rows, heads, n, frames]`.
fn step_scores(q: &Tensor, keys: &Reads<'_>, scale: f32) -> Result<Tensor> {
    let (rows, heads, n, frames, dh) = keys.shape(q.layout(), 2)?;
    let mut out = vec![0f32; rows * heads * n * frames];
    let per_head = PerHead {
        of_row: keys.of_row,
        heads,
        in_len: n * dh,
        cache_len: dh * frames,
        out_len: n * frames,
    };
    let per_query = |q: &[f32], out: &mut [f32], each: &dyn Fn(&[f32], &mut [f32])| {
        for (query, out) in q.chunks_exact(dh).zip(out.chunks_exact_mut(frames)) {
            each(query, out);
        }
    };
    with_f32(q, |q| {
        keys.with_panels(|k| {
            per_head.run(q, k, &mut out, |q, k, out| match k {
                Panels::F16(k) if f16c::available() => {
                    per_query(q, out, &|query, out| f16c::scores(query, k, out, scale))
                }
                _ => k.widened(|k| {
                    per_query(q, out, &|query, out| scores_fast(query, k, out, scale))
                }),
            });
            Ok(())
        })
    })?;
    Tensor::from_vec(out, (rows, heads, n, frames), q.device())
}

/// `P · V` per row and head: `[rows, heads, n, frames]` × values `[1, heads, frames, dh]`
/// → `[rows, heads, n, dh]`.
fn step_weighted(p: &Tensor, values: &Reads<'_>) -> Result<Tensor> {
    let [rows, heads, n, frames] = dims4(p.layout())?;
    let dh = values.caches.first().map_or(Ok(0), |v| v.dim(3))?;
    let q_like = Layout::contiguous((rows, heads, n, dh));
    let (.., v_frames, _) = values.shape(&q_like, 3)?;
    if frames != v_frames {
        candle_core::bail!("cross-attention: {frames} weights for {v_frames} frames");
    }
    let mut out = vec![0f32; rows * heads * n * dh];
    let per_head = PerHead {
        of_row: values.of_row,
        heads,
        in_len: n * frames,
        cache_len: frames * dh,
        out_len: n * dh,
    };
    let per_query = |p: &[f32], out: &mut [f32], each: &dyn Fn(&[f32], &mut [f32])| {
        for (out, weights) in out.chunks_exact_mut(dh).zip(p.chunks_exact(frames)) {
            each(weights, out);
        }
    };
    with_f32(p, |p| {
        values.with_panels(|v| {
            per_head.run(p, v, &mut out, |p, v, out| match v {
                Panels::F16(v) if dh == f16c::DH && f16c::available() => {
                    per_query(p, out, &|weights, out| f16c::weighted(weights, v, out))
                }
                _ => {
                    v.widened(|v| per_query(p, out, &|weights, out| weighted_fast(weights, v, out)))
                }
            });
            Ok(())
        })
    })?;
    Tensor::from_vec(out, (rows, heads, n, dh), p.device())
}

/// Attention of `q` `[rows, heads, n, dh]` over one window's cached keys (transposed, `[1,
/// heads, dh, frames]`) and values (`[1, heads, frames, dh]`) a row: row `r` reads
/// `kv[of_row[r]]`. Returns the output `[rows, heads, n, dh]` and the scaled pre-softmax
/// scores `[rows, heads, n, frames]`.
pub fn attend_entries(
    q: &Tensor,
    kv: &[&(Tensor, Tensor)],
    of_row: &[usize],
) -> Result<(Tensor, Tensor)> {
    let dh = q.dim(3)?;
    let q = q.contiguous()?;
    let keys: Vec<&Tensor> = kv.iter().map(|(k, _)| k).collect();
    let values: Vec<&Tensor> = kv.iter().map(|(_, v)| v).collect();
    let keys = Reads {
        caches: &keys,
        of_row,
    };
    let values = Reads {
        caches: &values,
        of_row,
    };
    let scores = step_scores(&q, &keys, 1.0 / (dh as f32).sqrt())?;
    let weights = crate::cpu_ops::softmax_last_dim(&scores)?.contiguous()?;
    let out = step_weighted(&weights, &values)?;
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

    /// Checks `attend_entries` against candle's attention over the gathered windows, the
    /// caches kept in `dtype` (their values rounded to it for the reference too).
    fn check_against_candle(dh: usize, dtype: DType) {
        // Windows repeated and out of order; 4 query tokens (the most in place).
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
        let k_t = k.transpose(2, 3).unwrap();
        let window = |t: &Tensor, i| stored(&t.narrow(0, i, 1).unwrap());
        let kv: Vec<(Tensor, Tensor)> = (0..cached)
            .map(|i| (window(&k_t, i), window(&v, i)))
            .collect();
        let kv: Vec<&(Tensor, Tensor)> = kv.iter().collect();
        let (out, scores) = attend_entries(&q, &kv, &slots).unwrap();

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
    fn matches_candles_attention_over_gathered_windows() {
        // dh not a multiple of 4 or 8 (the kernels' tails), and Whisper's 64; the cache in
        // f32, and in f16 (read by the F16C kernels, or widened where there are none).
        for dh in [21, 64] {
            check_against_candle(dh, DType::F32);
            check_against_candle(dh, CACHE_DTYPE);
        }
    }

    #[test]
    fn a_missing_or_misshapen_cache_is_an_error() {
        let dev = &Device::Cpu;
        let zeros = |dims: (usize, usize, usize, usize)| Tensor::zeros(dims, DType::F32, dev);
        let kv = (zeros((1, 1, 8, 4)).unwrap(), zeros((1, 1, 4, 8)).unwrap());
        let q = zeros((1, 1, 1, 8)).unwrap();
        assert!(attend_entries(&q, &[&kv], &[0]).is_ok());
        assert!(attend_entries(&q, &[&kv, &kv], &[2]).is_err());
        assert!(attend_entries(&q, &[], &[0]).is_err());
        // Two windows in one cache, or heads that differ from the queries'.
        let two = (zeros((2, 1, 8, 4)).unwrap(), zeros((2, 1, 4, 8)).unwrap());
        assert!(attend_entries(&q, &[&two], &[0]).is_err());
        assert!(attend_entries(&zeros((1, 2, 1, 8)).unwrap(), &[&kv], &[0]).is_err());
    }
}
