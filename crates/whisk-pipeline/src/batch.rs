//! Greedy decoding of several windows at once: one encoder pass over the batch, then every
//! row steps through the decoder together, each with its own history, logit rules and
//! attention rows. Rows that reach end-of-text keep feeding it until the whole batch is done
//! (rows do not yet leave early; that and continuous batching come with the batching crate).

use whisk_backend::{Backend, DecodeStep, MelBatch};
use whisk_decode::{build_prompt, greedy_pick, log_softmax_at};
use whisk_types::N_FRAMES;

use crate::window::{
    last_qk_row_of, text_logsumexp, text_probability, WindowRequest, WindowResult,
};
use crate::Result;

/// Encodes `mels` (each `[n_mels, N_FRAMES]`) in one batch.
pub fn encode_batch<B: Backend>(backend: &B, mels: &[Vec<f32>]) -> Result<B::Encoded> {
    let n_mels = backend.dims().n_mels;
    let data: Vec<f32> = mels.iter().flatten().copied().collect();
    Ok(backend.encode(MelBatch {
        data: &data,
        windows: mels.len(),
        n_mels,
        frames: N_FRAMES,
    })?)
}

/// Decodes windows `windows` of `encoded` greedily, all rows in step. Every row uses the
/// same request (no previous-text prompt); the result for row `r` equals what
/// [`crate::decode_window`] gives for that window alone at temperature 0.
pub fn decode_batch<B: Backend>(
    backend: &B,
    encoded: &B::Encoded,
    windows: &[usize],
    req: &WindowRequest<'_>,
) -> Result<Vec<WindowResult>> {
    let dims = backend.dims();
    let (vocab, rows) = (dims.n_vocab, windows.len());
    let special = req.special;
    let mut decoder = backend.start_decoder(encoded, windows)?;
    let prompt = build_prompt(special, req.previous, req.sot_sequence, dims.n_text_ctx);
    let sot_index = prompt
        .iter()
        .position(|&t| t == special.sot)
        .expect("the SOT sequence starts with <|startoftranscript|>");
    let fed: Vec<u32> = prompt
        .iter()
        .copied()
        .cycle()
        .take(prompt.len() * rows)
        .collect();
    let out = backend.decode_step(
        &mut decoder,
        DecodeStep {
            tokens: &fed,
            rows,
            logits_at: &[sot_index, prompt.len() - 1],
            cross_qk_heads: req.cross_qk_heads,
        },
    )?;
    let align = !req.cross_qk_heads.is_empty();
    let mut results: Vec<WindowResult> = (0..rows)
        .map(|r| {
            let row = &out.logits[r * 2 * vocab..(r * 2 + 1) * vocab];
            WindowResult {
                no_speech_prob: log_softmax_at(row, special.no_speech as usize).exp() as f64,
                qk_rows: if align {
                    vec![last_qk_row_of(&out.cross_qk[r])]
                } else {
                    Vec::new()
                },
                ..WindowResult::default()
            }
        })
        .collect();
    let mut logits: Vec<Vec<f32>> = (0..rows)
        .map(|r| out.logits[(r * 2 + 1) * vocab..(r * 2 + 2) * vocab].to_vec())
        .collect();
    let mut done = vec![false; rows];
    let limit = req.sample_len.min(dims.n_text_ctx - prompt.len());
    for _ in 0..limit {
        let mut next = vec![special.eot; rows];
        for r in 0..rows {
            if done[r] {
                continue;
            }
            let res = &mut results[r];
            let text_lse = align.then(|| text_logsumexp(&logits[r], special.eot));
            req.rules.apply(&res.tokens, &mut logits[r]);
            let (token, logprob) = greedy_pick(&logits[r]);
            res.sum_logprob += logprob as f64;
            if token == special.eot {
                done[r] = true;
                continue;
            }
            if let Some(lse) = text_lse {
                res.token_probs
                    .push(text_probability(&logits[r], token, special.eot, lse));
            }
            res.tokens.push(token);
            if res.tokens.len() == limit {
                done[r] = true;
            }
            next[r] = token;
        }
        if done.iter().all(|&d| d) && next.iter().all(|&t| t == special.eot) {
            break;
        }
        // Rows that just sampled their last token still feed it, so that the row predicting
        // their end exists; finished rows feed end-of-text and are ignored.
        let out = backend.decode_step(
            &mut decoder,
            DecodeStep {
                tokens: &next,
                rows,
                logits_at: &[0],
                cross_qk_heads: req.cross_qk_heads,
            },
        )?;
        for r in 0..rows {
            if next[r] == special.eot {
                continue;
            }
            if align {
                results[r].qk_rows.push(last_qk_row_of(&out.cross_qk[r]));
            }
            logits[r] = out.logits[r * vocab..(r + 1) * vocab].to_vec();
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    for res in &mut results {
        while align && res.qk_rows.len() < res.tokens.len() + 1 {
            let last = res.qk_rows.last().cloned().unwrap_or_default();
            res.qk_rows.push(last);
        }
        res.avg_logprob = res.sum_logprob / (res.tokens.len() + 1) as f64;
    }
    Ok(results)
}
