//! The encoder's self-attention on the CPU, a block of query rows at a time: a block's scores
//! for one head (256 rows × 1500 frames, 1.5 MB) are computed, turned into probabilities and
//! multiplied by the values while they are still in the CPU's caches, and the result is
//! written straight into its head's columns of the output. candle's matrix products held two
//! heads' whole 1500² scores (18 MB), zeroed before each product, and the heads were copied
//! apart and back together around them. On 2 AVX2 cores the encoder's attention is nearly a
//! third of a long recording's transcription time (perf), most of it the products themselves.

use std::cell::RefCell;

use candle_core::{DType, Result, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::cpu_ops::{softmax_rows_in_place_f32, with_f32};

/// Query rows whose scores one task holds (128 took 4% longer on the bench's pause set).
const ROWS: usize = 256;

thread_local! {
    /// One block's scores for one head.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether [`attend`] takes tensors like `q`.
pub fn applies(q: &Tensor) -> bool {
    q.device().is_cpu() && q.dtype() == DType::F32
}

/// Scaled dot-product attention of the queries `q` over the keys `k` and values `v`, all
/// `[windows, frames, n_head · dh]` in `f32` on the CPU, heads side by side as the linear
/// layers give them; returns the heads' outputs side by side, `[windows, frames, n_head · dh]`.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, n_head: usize) -> Result<Tensor> {
    let (windows, frames, width) = q.dims3()?;
    if k.dims3()? != (windows, frames, width) || v.dims3()? != (windows, frames, width) {
        candle_core::bail!(
            "encoder attention: queries {:?}, keys {:?}, values {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if n_head == 0 || width == 0 || width % n_head != 0 {
        candle_core::bail!("encoder attention: {width} columns for {n_head} heads");
    }
    let dh = width / n_head;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let mut out = vec![0f32; windows * frames * width];
    let sizes = Sizes {
        frames,
        width,
        dh,
        scale: 1.0 / (dh as f32).sqrt(),
    };
    let window_len = frames * width;
    with_f32(&q, |q| {
        with_f32(&k, |k| {
            with_f32(&v, |v| {
                out.par_chunks_mut(window_len.max(1))
                    .enumerate()
                    .for_each(|(w, out)| {
                        let at = w * window_len..(w + 1) * window_len;
                        attend_window(&q[at.clone()], &k[at.clone()], &v[at], out, sizes)
                    });
                Ok(())
            })
        })
    })?;
    Tensor::from_vec(out, (windows, frames, width), q.device())
}

/// One window's sizes (`frames` rows of `width` columns, heads `dh` wide) and the scores' scale.
#[derive(Clone, Copy)]
struct Sizes {
    frames: usize,
    width: usize,
    dh: usize,
    scale: f32,
}

/// One window's attention, its query rows [`ROWS`] at a time.
fn attend_window(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], s: Sizes) {
    out.par_chunks_mut(ROWS * s.width)
        .enumerate()
        .for_each(|(block, out)| {
            let q = &q[block * ROWS * s.width..][..out.len()];
            attend_block(q, k, v, out, s);
        });
}

/// Every head's attention for the query rows `q` (`rows × width`) over one window's keys and
/// values (`frames × width`), written into `out` (`rows × width`).
fn attend_block(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], s: Sizes) {
    let rows = q.len() / s.width;
    assert!(k.len() == s.frames * s.width && v.len() == k.len());
    assert!(out.len() == rows * s.width && q.len() == out.len());
    SCORES.with_borrow_mut(|scores| {
        scores.resize(rows * s.frames, 0.0);
        for head in 0..s.width / s.dh {
            let col = head * s.dh;
            // SAFETY: the products read rows < `rows` of `q` and < `frames` of `k` and `v`,
            // columns `col..col + dh` < `width`, and write `rows × frames` of `scores` and rows
            // < `rows`, columns `col..col + dh` of `out`: all within the lengths asserted above.
            // `scores` and `out` are this task's own and overlap nothing they are read with.
            unsafe {
                // scores = scale · q_h · k_hᵀ
                gemm(
                    rows,
                    s.frames,
                    s.dh,
                    scores.as_mut_ptr(),
                    1,
                    s.frames as isize,
                    false,
                    q.as_ptr().add(col),
                    1,
                    s.width as isize,
                    k.as_ptr().add(col),
                    s.width as isize,
                    1,
                    0.0,
                    s.scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            softmax_rows_in_place_f32(scores, s.frames);
            // SAFETY: as above.
            unsafe {
                // out_h = softmax(scores) · v_h
                gemm(
                    rows,
                    s.dh,
                    s.frames,
                    out.as_mut_ptr().add(col),
                    1,
                    s.width as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    s.frames as isize,
                    v.as_ptr().add(col),
                    1,
                    s.width as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_ops::tests::worst_diff;
    use candle_core::{Device, D};

    fn values(len: usize, seed: usize, spread: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((((i + seed) * 7_919) % 1_000) as f32 / 500.0 - 1.0) * spread)
            .collect()
    }

    /// candle's attention over the heads split apart.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, n_head: usize) -> Tensor {
        let split = |x: &Tensor| {
            let (b, t, d) = x.dims3().unwrap();
            x.reshape((b, t, n_head, d / n_head))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(q), split(k), split(v));
        let dh = q.dim(D::Minus1).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap();
        let out = candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&v)
            .unwrap();
        let (b, h, t, dh) = out.dims4().unwrap();
        out.transpose(1, 2)
            .unwrap()
            .reshape((b, t, h * dh))
            .unwrap()
    }

    #[test]
    fn matches_candles_attention_with_the_heads_split() {
        let dev = &Device::Cpu;
        // Two windows; frames not a multiple of the row block, heads not a multiple of 8
        // wide; large scores (a sharp softmax) and small ones.
        for (windows, frames, n_head, dh, spread) in [
            (2, ROWS * 2 + 37, 3, 21, 1.0),
            (1, 300, 6, 64, 4.0),
            (1, 5, 2, 8, 0.1),
        ] {
            let len = windows * frames * n_head * dh;
            let t = |seed| {
                Tensor::from_vec(
                    values(len, seed, spread),
                    (windows, frames, n_head * dh),
                    dev,
                )
                .unwrap()
            };
            let (q, k, v) = (t(1), t(2), t(3));
            let ours = attend(&q, &k, &v, n_head).unwrap();
            let want = reference(&q, &k, &v, n_head);
            assert_eq!(ours.dims(), want.dims());
            assert!(
                worst_diff(&ours, &want) < 1e-5,
                "{windows} × {frames}, {n_head} heads"
            );
        }
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let dev = &Device::Cpu;
        let zeros = |dims: (usize, usize, usize)| Tensor::zeros(dims, DType::F32, dev).unwrap();
        let (q, k) = (zeros((1, 10, 12)), zeros((1, 9, 12)));
        assert!(attend(&q, &k, &q, 2).is_err());
        assert!(attend(&q, &q, &q, 5).is_err());
        assert!(attend(&q, &q, &q, 0).is_err());
        assert!(attend(&q, &q, &q, 3).is_ok());
        let empty = zeros((1, 10, 0));
        assert!(attend(&empty, &empty, &empty, 2).is_err());
    }
}
