//! One row: a window being decoded, as a small state machine driven by decoder steps.

use rand::rngs::StdRng;
use rand::SeedableRng;
use whisk_backend::{Backend, CrossQk, DecodeStep, RowStep};
use whisk_decode::{build_prompt, greedy_pick, log_softmax_at, logsumexp, sample_pick, LogitRules};

use crate::alignment_pass::{alignment_pass_input, read_alignment_pass, Refeed};
use whisk_types::SpecialTokens;

/// What to decode in one window, borrowed from the caller (the sequential pipeline's form).
pub struct WindowRequest<'a> {
    /// Earlier text tokens to prompt with (empty for none).
    pub previous: &'a [u32],
    pub sot_sequence: &'a [u32],
    pub rules: &'a LogitRules,
    pub special: &'a SpecialTokens,
    /// Most tokens to sample.
    pub sample_len: usize,
    /// Alignment heads whose cross-attention is kept for word timing in the same pass; empty
    /// for none.
    pub cross_qk_heads: &'a [(usize, usize)],
}

/// One row's own part of a request; what all rows share is in the [`Shared`] context.
#[derive(Debug, Clone)]
pub struct RowRequest {
    /// Previous-text prompt and SOT sequence, as [`build_prompt`] makes them.
    pub prompt: Vec<u32>,
    /// Most tokens to sample.
    pub sample_len: usize,
    /// 0 is greedy; above, tokens are drawn from the softened distribution with `rng`.
    pub temperature: f64,
    pub rng: StdRng,
    /// Keep the alignment heads' attention of every sampling step (single-pass word timing).
    pub keep_qk: bool,
    /// After sampling, feed `sot_sequence + <|notimestamps|> + text + <|endoftext|>` again
    /// (openai's alignment pass) with this SOT sequence, and keep its attention.
    pub refeed_sot: Option<Vec<u32>>,
}

impl RowRequest {
    /// A greedy request for a window with no previous text.
    pub fn greedy(sot_sequence: &[u32]) -> Self {
        Self {
            prompt: sot_sequence.to_vec(),
            sample_len: usize::MAX,
            temperature: 0.0,
            rng: StdRng::seed_from_u64(0),
            keep_qk: false,
            refeed_sot: None,
        }
    }
}

/// The outcome of one window's decode.
#[derive(Debug, Clone)]
pub struct WindowResult {
    /// Sampled tokens, text and timestamps, end-of-text excluded.
    pub tokens: Vec<u32>,
    pub sum_logprob: f64,
    /// `sum_logprob / (tokens + 1)`, as openai counts the end-of-text token.
    pub avg_logprob: f64,
    /// Probability of `<|nospeech|>` at the `<|startoftranscript|>` position.
    pub no_speech_prob: f64,
    pub temperature: f64,
    /// Filled in by the caller once the text is known.
    pub compression_ratio: f64,
    /// With alignment heads kept while sampling: `qk_rows[j]` is the heads' attention
    /// (`[heads][frames]`) at the position whose output predicted `tokens[j]`; one more row
    /// follows for the position that predicted the end.
    pub qk_rows: Vec<Vec<f32>>,
    /// Probability of each sampled token among text tokens, from the unfiltered logits
    /// (openai's word probability); kept with alignment heads while sampling.
    pub token_probs: Vec<f32>,
    pub refeed: Option<Refeed>,
    /// The row's random stream where it stopped, so a caller can continue it.
    pub rng: StdRng,
}

/// What every row of a batch shares.
#[derive(Clone, Copy)]
pub(crate) struct Shared<'a> {
    pub rules: &'a LogitRules,
    pub special: &'a SpecialTokens,
    pub heads: &'a [(usize, usize)],
    pub n_vocab: usize,
    pub n_text_ctx: usize,
}

/// What a row feeds in one step: its position, tokens, and where logits are wanted.
struct Feed {
    position: usize,
    tokens: Vec<u32>,
    logits_at: Vec<usize>,
}

enum Phase {
    Prompt,
    Sample(u32),
    /// The alignment pass: its tokens and where its logits are read.
    Refeed {
        tokens: Vec<u32>,
        logits_at: Vec<usize>,
    },
    Done,
}

/// A window being decoded.
pub(crate) struct Row {
    phase: Phase,
    prompt: Vec<u32>,
    sot_index: usize,
    limit: usize,
    temperature: f64,
    keep_qk: bool,
    refeed_sot: Option<Vec<u32>>,
    logits: Vec<f32>,
    result: WindowResult,
}

impl Row {
    pub fn new(req: RowRequest, shared: &Shared) -> Self {
        let sot_index = req
            .prompt
            .iter()
            .position(|&t| t == shared.special.sot)
            .unwrap_or(0);
        let limit = req
            .sample_len
            .min(shared.n_text_ctx.saturating_sub(req.prompt.len()));
        Self {
            phase: Phase::Prompt,
            sot_index,
            limit,
            temperature: req.temperature,
            keep_qk: req.keep_qk && !shared.heads.is_empty(),
            refeed_sot: req.refeed_sot,
            logits: Vec::new(),
            result: WindowResult {
                tokens: Vec::new(),
                sum_logprob: 0.0,
                avg_logprob: 0.0,
                no_speech_prob: 0.0,
                temperature: req.temperature,
                compression_ratio: 0.0,
                qk_rows: Vec::new(),
                token_probs: Vec::new(),
                refeed: None,
                rng: req.rng,
            },
            prompt: req.prompt,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    pub fn into_result(self) -> WindowResult {
        self.result
    }

    /// What this row feeds next.
    fn feed(&self) -> Option<Feed> {
        match &self.phase {
            Phase::Prompt => Some(Feed {
                position: 0,
                tokens: self.prompt.clone(),
                logits_at: vec![self.sot_index, self.prompt.len() - 1],
            }),
            Phase::Sample(token) => Some(Feed {
                position: self.prompt.len() + self.result.tokens.len() - 1,
                tokens: vec![*token],
                logits_at: vec![0],
            }),
            Phase::Refeed { tokens, logits_at } => Some(Feed {
                position: 0,
                tokens: tokens.clone(),
                logits_at: logits_at.clone(),
            }),
            Phase::Done => None,
        }
    }

    fn wants_qk(&self) -> bool {
        match self.phase {
            Phase::Refeed { .. } => true,
            Phase::Prompt | Phase::Sample(_) => self.keep_qk,
            Phase::Done => false,
        }
    }

    /// Takes a step's output for this row and moves on.
    fn absorb(&mut self, logits: Vec<f32>, qk: Option<&CrossQk>, shared: &Shared) {
        let vocab = shared.n_vocab;
        let last_qk_row = |q: &CrossQk| -> Vec<f32> {
            (0..q.heads)
                .flat_map(|h| q.row(h, q.tokens - 1).iter().copied())
                .collect()
        };
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Prompt => {
                let no_speech = shared.special.no_speech as usize;
                self.result.no_speech_prob =
                    log_softmax_at(&logits[..vocab], no_speech).exp() as f64;
                self.logits = logits[vocab..2 * vocab].to_vec();
                if let Some(q) = qk.filter(|_| self.keep_qk) {
                    self.result.qk_rows.push(last_qk_row(q));
                }
                self.sample(shared);
            }
            Phase::Sample(_) => {
                self.logits = logits;
                if let Some(q) = qk.filter(|_| self.keep_qk) {
                    self.result.qk_rows.push(last_qk_row(q));
                }
                self.sample(shared);
            }
            Phase::Refeed { tokens, .. } => {
                let sot_len = self.refeed_sot.as_ref().map_or(0, Vec::len);
                let text = tokens[sot_len + 1..tokens.len() - 1].to_vec();
                let q = qk.expect("the alignment pass asks for attention");
                self.result.refeed = Some(read_alignment_pass(
                    sot_len,
                    text,
                    &logits,
                    q,
                    vocab,
                    shared.special,
                ));
            }
            Phase::Done => {}
        }
    }

    /// Picks the next token from `self.logits`, or ends the row.
    fn sample(&mut self, shared: &Shared) {
        let special = shared.special;
        let res = &mut self.result;
        if res.tokens.len() >= self.limit {
            return self.finish(shared);
        }
        let text_lse = self
            .keep_qk
            .then(|| logsumexp(&self.logits[..special.eot as usize]));
        shared.rules.apply(&res.tokens, &mut self.logits);
        let (token, logprob) = if self.temperature > 0.0 {
            sample_pick(&self.logits, self.temperature as f32, &mut res.rng)
        } else {
            greedy_pick(&self.logits)
        };
        res.sum_logprob += logprob as f64;
        if token == special.eot {
            return self.finish(shared);
        }
        if let Some(lse) = text_lse {
            // The rules only ever set logits to -inf, so a sampled token keeps its own.
            let p = if token < special.eot {
                (self.logits[token as usize] - lse).exp()
            } else {
                0.0
            };
            res.token_probs.push(p);
        }
        res.tokens.push(token);
        if res.tokens.len() == self.limit {
            return self.finish(shared);
        }
        self.phase = Phase::Sample(token);
    }

    fn finish(&mut self, shared: &Shared) {
        let res = &mut self.result;
        // Stopped at the length limit: the last token was never fed, so its row is missing.
        while self.keep_qk && res.qk_rows.len() < res.tokens.len() + 1 {
            let last = res.qk_rows.last().cloned().unwrap_or_default();
            res.qk_rows.push(last);
        }
        res.avg_logprob = res.sum_logprob / (res.tokens.len() + 1) as f64;
        self.logits = Vec::new();
        let special = shared.special;
        let text: Vec<u32> = res
            .tokens
            .iter()
            .copied()
            .filter(|&t| special.is_text(t))
            .collect();
        self.phase = match &self.refeed_sot {
            Some(sot) if !text.is_empty() => {
                let (tokens, logits_at) = alignment_pass_input(sot, &text, special);
                if tokens.len() <= shared.n_text_ctx {
                    Phase::Refeed { tokens, logits_at }
                } else {
                    Phase::Done
                }
            }
            _ => Phase::Done,
        };
    }
}

/// Feeds every unfinished row of `rows` (slot, row) once. Rows feeding one token share one
/// backend call, rows feeding more share another, so a long prompt does not pad every row.
pub(crate) fn step_rows<B: Backend>(
    backend: &B,
    decoder: &mut B::Decoder,
    rows: &mut [(usize, &mut Row)],
    shared: &Shared,
) -> whisk_backend::Result<()> {
    let feeds: Vec<Option<Feed>> = rows.iter().map(|(_, row)| row.feed()).collect();
    for single in [true, false] {
        let members: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                feeds[i]
                    .as_ref()
                    .is_some_and(|f| (f.tokens.len() == 1) == single)
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        let steps: Vec<RowStep> = members
            .iter()
            .map(|&i| {
                let feed = feeds[i].as_ref().expect("a member feeds");
                RowStep {
                    slot: rows[i].0,
                    position: feed.position,
                    tokens: &feed.tokens,
                    logits_at: &feed.logits_at,
                }
            })
            .collect();
        let want_qk = members.iter().any(|&i| rows[i].1.wants_qk());
        let out = backend.decode_step(
            decoder,
            DecodeStep {
                rows: &steps,
                cross_qk_heads: if want_qk { shared.heads } else { &[] },
            },
        )?;
        for (k, (&i, logits)) in members.iter().zip(out.logits).enumerate() {
            rows[i].1.absorb(logits, out.cross_qk.get(k), shared);
        }
    }
    Ok(())
}

/// Decodes one encoded window alone: a batch of one row. `temperature == 0` is greedy; above
/// it, tokens are drawn with `rng`, which continues where the row left it.
pub fn decode_window<B: Backend>(
    backend: &B,
    encoded: &B::Encoded,
    req: &WindowRequest<'_>,
    temperature: f64,
    rng: &mut StdRng,
) -> whisk_backend::Result<WindowResult> {
    let dims = backend.dims();
    let shared = Shared {
        rules: req.rules,
        special: req.special,
        heads: req.cross_qk_heads,
        n_vocab: dims.n_vocab,
        n_text_ctx: dims.n_text_ctx,
    };
    let request = RowRequest {
        prompt: build_prompt(req.special, req.previous, req.sot_sequence, dims.n_text_ctx),
        sample_len: req.sample_len,
        temperature,
        rng: std::mem::replace(rng, StdRng::seed_from_u64(0)),
        keep_qk: true,
        refeed_sot: None,
    };
    let mut decoder = backend.start_decoder(encoded, &[0])?;
    let mut row = Row::new(request, &shared);
    while !row.is_done() {
        step_rows(backend, &mut decoder, &mut [(0, &mut row)], &shared)?;
    }
    let result = row.into_result();
    *rng = result.rng.clone();
    Ok(result)
}
