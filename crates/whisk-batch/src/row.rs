//! One row: a window being decoded, as a small state machine driven by decoder steps.

use std::rc::Rc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use whisk_backend::{Backend, CrossQk, DecodeStep, RowStep};
use whisk_decode::{
    beam_step, best_hypothesis, build_prompt, greedy_pick, log_softmax_at, logsumexp, sample_pick,
    trailing_repetition, BeamOptions, LogitRules,
};

use crate::alignment_pass::{alignment_pass_for, read_alignment_pass, Refeed};
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
    /// Keep each text token's probability (word probabilities) even without attention.
    pub keep_probs: bool,
    /// Beam search at temperature 0; `None` decodes greedily.
    pub beam: Option<BeamOptions>,
    /// Stops the decode once its text is this; `None` stops at loops only.
    pub repetitive: Option<&'a Repetitive<'a>>,
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
    /// Keep each text token's probability (implied by `keep_qk`).
    pub keep_probs: bool,
    /// After sampling, run the alignment pass ([`crate::alignment_pass_for`]) with this SOT
    /// sequence and keep its attention: openai's, or the text spelled by the scheduler's
    /// [`Spell`] between the decode's timestamps, if it has one.
    pub refeed_sot: Option<Vec<u32>>,
    /// Beam search when `temperature` is 0; `None` decodes greedily.
    pub beam: Option<BeamOptions>,
    /// Tokens already decoded elsewhere: the row skips sampling and only runs the alignment
    /// pass over them (see [`RowRequest::alignment_pass`]).
    pub decoded: Option<Vec<u32>>,
}

impl RowRequest {
    /// Only the alignment pass over `tokens`, decoded before (for a candidate chosen among
    /// several, so that the others need no pass): its result carries `refeed` alone.
    pub fn alignment_pass(sot_sequence: Vec<u32>, tokens: Vec<u32>) -> Self {
        Self {
            refeed_sot: Some(sot_sequence),
            decoded: Some(tokens),
            ..Self::greedy(&[])
        }
    }

    /// A greedy request for a window with no previous text.
    pub fn greedy(sot_sequence: &[u32]) -> Self {
        Self {
            prompt: sot_sequence.to_vec(),
            sample_len: usize::MAX,
            temperature: 0.0,
            rng: StdRng::seed_from_u64(0),
            keep_qk: false,
            keep_probs: false,
            refeed_sot: None,
            beam: None,
            decoded: None,
        }
    }

    /// The beam search this request runs, if any: only at temperature 0, as openai.
    fn beam_search(&self) -> Option<BeamOptions> {
        self.beam
            .filter(|b| b.beam_size > 1 && self.temperature == 0.0)
    }

    /// Decoder slots the row needs: one per beam hypothesis.
    pub fn lanes(&self) -> usize {
        self.beam_search().map_or(1, |b| b.beam_size)
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
    /// The text repeats itself: it ends in a loop ([`trailing_repetition`]), or it was
    /// already [`Repetitive`] as it grew. Decoding stopped there.
    pub looped: bool,
}

/// What every row of a batch shares.
#[derive(Clone, Copy)]
pub(crate) struct Shared<'a> {
    pub rules: &'a LogitRules,
    pub special: &'a SpecialTokens,
    pub heads: &'a [(usize, usize)],
    /// The heads of `heads` whose attention sampling rows keep (single-pass word timing);
    /// an alignment pass keeps them all.
    pub sampled_heads: &'a [(usize, usize)],
    pub spell: Option<&'a Spell<'a>>,
    pub repetitive: Option<&'a Repetitive<'a>>,
    pub n_vocab: usize,
    pub n_text_ctx: usize,
}

/// Whether a row's text (its text tokens so far) already repeats itself too much to pass the
/// fallback's compression-ratio test: decoding it further would only make it longer.
pub type Repetitive<'a> = dyn Fn(&[u32]) -> bool + 'a;

/// A row's text is tested for [`Repetitive`] every this many text tokens (it takes a decode
/// and a compression), from twice this many on.
const REPETITION_CHECK_EVERY: usize = 16;

/// How an alignment pass writes a row's text: `(sot_sequence, text tokens)` to the tokens it
/// feeds in their place (character alignment spells words out letter by letter); `None`
/// where there is nothing to spell (no letters) or it would overrun the text context.
pub type Spell<'a> = dyn Fn(&[u32], &[u32]) -> Option<Vec<u32>> + 'a;

/// What a row feeds in one step: its position, tokens, and where logits are wanted.
struct Feed {
    position: usize,
    tokens: Vec<u32>,
    logits_at: Vec<usize>,
}

/// A step's output for one feed: its logits, and the attention when asked.
type FeedOutput = (Vec<f32>, Option<CrossQk>);

/// Attention rows of one hypothesis, newest last, shared with the hypotheses it forked from:
/// a beam reorder then costs a pointer copy, not a copy of every row.
#[derive(Clone, Default)]
struct Trail(Option<Rc<(Vec<f32>, Trail)>>);

impl Trail {
    fn push(&self, row: Vec<f32>) -> Trail {
        Trail(Some(Rc::new((row, self.clone()))))
    }

    fn rows(&self) -> Vec<Vec<f32>> {
        let mut rows = Vec::new();
        let mut at = &self.0;
        while let Some(node) = at {
            rows.push(node.0.clone());
            at = &node.1 .0;
        }
        rows.reverse();
        rows
    }
}

/// One beam-search hypothesis.
#[derive(Clone)]
struct Hypothesis {
    tokens: Vec<u32>,
    sum_logprob: f64,
    token_probs: Vec<f32>,
    qk: Trail,
    /// Which of the row's slots holds its cache.
    lane: usize,
}

struct Beams {
    options: BeamOptions,
    live: Vec<Hypothesis>,
    finished: Vec<Hypothesis>,
}

enum Phase {
    Prompt,
    Sample(u32),
    Beam(Beams),
    /// The alignment pass: its tokens and where its logits are read.
    Refeed {
        tokens: Vec<u32>,
        logits_at: Vec<usize>,
    },
    Done,
}

/// A window being decoded, in one decoder slot, or one per hypothesis for a beam search.
pub(crate) struct Row {
    phase: Phase,
    slots: Vec<usize>,
    prompt: Vec<u32>,
    sot_index: usize,
    limit: usize,
    temperature: f64,
    beam: Option<BeamOptions>,
    keep_qk: bool,
    keep_probs: bool,
    refeed_sot: Option<Vec<u32>>,
    logits: Vec<f32>,
    result: WindowResult,
}

impl Row {
    /// A row in `slots` (`req.lanes()` of them; the first has the window attached).
    pub fn new(req: RowRequest, slots: Vec<usize>, shared: &Shared) -> Self {
        debug_assert_eq!(slots.len(), req.lanes());
        let sot_index = req
            .prompt
            .iter()
            .position(|&t| t == shared.special.sot)
            .unwrap_or(0);
        let limit = req
            .sample_len
            .min(shared.n_text_ctx.saturating_sub(req.prompt.len()));
        let beam = req.beam_search();
        let mut row = Self {
            phase: Phase::Prompt,
            slots,
            sot_index,
            limit,
            temperature: req.temperature,
            beam,
            keep_qk: req.keep_qk && !shared.sampled_heads.is_empty(),
            keep_probs: req.keep_probs || req.keep_qk && !shared.sampled_heads.is_empty(),
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
                looped: false,
            },
            prompt: req.prompt,
        };
        if let Some(tokens) = req.decoded {
            row.result.tokens = tokens;
            row.phase = row.alignment_phase(shared);
        }
        row
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The decoder slots this row holds.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }

    pub fn into_result(self) -> WindowResult {
        self.result
    }

    /// What this row feeds next, and into which slot.
    fn feeds(&self) -> Vec<(usize, Feed)> {
        let first = self.slots[0];
        match &self.phase {
            Phase::Prompt => vec![(
                first,
                Feed {
                    position: 0,
                    tokens: self.prompt.clone(),
                    logits_at: vec![self.sot_index, self.prompt.len() - 1],
                },
            )],
            Phase::Sample(token) => vec![(
                first,
                Feed {
                    position: self.prompt.len() + self.result.tokens.len() - 1,
                    tokens: vec![*token],
                    logits_at: vec![0],
                },
            )],
            Phase::Beam(beams) => beams
                .live
                .iter()
                .map(|h| {
                    (
                        self.slots[h.lane],
                        Feed {
                            position: self.prompt.len() + h.tokens.len() - 1,
                            tokens: vec![*h.tokens.last().expect("live hypotheses have a token")],
                            logits_at: vec![0],
                        },
                    )
                })
                .collect(),
            Phase::Refeed { tokens, logits_at } => vec![(
                first,
                Feed {
                    position: 0,
                    tokens: tokens.clone(),
                    logits_at: logits_at.clone(),
                },
            )],
            Phase::Done => Vec::new(),
        }
    }

    fn refeeds(&self) -> bool {
        matches!(self.phase, Phase::Refeed { .. })
    }

    fn wants_qk(&self) -> bool {
        match self.phase {
            Phase::Refeed { .. } => true,
            Phase::Prompt | Phase::Sample(_) | Phase::Beam(_) => self.keep_qk,
            Phase::Done => false,
        }
    }

    /// Takes a step's output for each of this row's feeds and moves on. Returns the slot
    /// copies (from, to) a beam search needs before the next step.
    fn absorb(&mut self, outputs: Vec<FeedOutput>, shared: &Shared) -> Vec<(usize, usize)> {
        let vocab = shared.n_vocab;
        let keep_qk = self.keep_qk;
        // The sampled heads' attention at the last fed position, `[heads][frames]`; the step
        // computed either those or, beside an alignment pass, all of `shared.heads`.
        let last_qk_row = |q: Option<&CrossQk>| -> Option<Vec<f32>> {
            q.filter(|_| keep_qk).map(|q| {
                let sampled = shared.sampled_heads;
                let index = |k: usize| match q.heads == sampled.len() {
                    true => k,
                    false => shared
                        .heads
                        .iter()
                        .position(|h| *h == sampled[k])
                        .unwrap_or(k),
                };
                (0..sampled.len().min(q.heads))
                    .flat_map(|k| q.row(index(k), q.tokens - 1).iter().copied())
                    .collect()
            })
        };
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Prompt => {
                let (logits, qk) = outputs.into_iter().next().expect("one prompt feed");
                let no_speech = shared.special.no_speech as usize;
                self.result.no_speech_prob =
                    log_softmax_at(&logits[..vocab], no_speech).exp() as f64;
                let next = logits[vocab..2 * vocab].to_vec();
                let qk_row = last_qk_row(qk.as_ref());
                if let Some(options) = self.beam {
                    let start = Hypothesis {
                        tokens: Vec::new(),
                        sum_logprob: 0.0,
                        token_probs: Vec::new(),
                        qk: Trail::default(),
                        lane: 0,
                    };
                    let beams = Beams {
                        options,
                        live: vec![start],
                        finished: Vec::new(),
                    };
                    return self.advance_beams(beams, vec![(next, qk_row)], shared);
                }
                self.logits = next;
                self.result.qk_rows.extend(qk_row);
                self.sample(shared);
            }
            Phase::Sample(_) => {
                let (logits, qk) = outputs.into_iter().next().expect("one sample feed");
                self.result.qk_rows.extend(last_qk_row(qk.as_ref()));
                self.logits = logits;
                self.sample(shared);
            }
            Phase::Beam(beams) => {
                let steps = outputs
                    .into_iter()
                    .map(|(logits, qk)| {
                        let row = last_qk_row(qk.as_ref());
                        (logits, row)
                    })
                    .collect();
                return self.advance_beams(beams, steps, shared);
            }
            Phase::Refeed { tokens, .. } => {
                let (logits, qk) = outputs.into_iter().next().expect("one refeed feed");
                let sot_len = self.refeed_sot.as_ref().map_or(0, Vec::len);
                let q = qk.expect("the alignment pass asks for attention");
                self.result.refeed = Some(read_alignment_pass(
                    sot_len,
                    &tokens,
                    &logits,
                    q,
                    vocab,
                    shared.special,
                ));
            }
            Phase::Done => {}
        }
        Vec::new()
    }

    /// Picks the next token from `self.logits`, or ends the row.
    fn sample(&mut self, shared: &Shared) {
        let special = shared.special;
        let res = &mut self.result;
        if res.tokens.len() >= self.limit {
            return self.finish(shared);
        }
        let text_lse = self
            .keep_probs
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
            res.token_probs
                .push(text_probability(&self.logits, token, lse, special.eot));
        }
        res.tokens.push(token);
        if res.tokens.len() == self.limit || special.is_text(token) && repeats(&res.tokens, shared)
        {
            return self.finish(shared);
        }
        self.phase = Phase::Sample(token);
    }

    /// One beam-search step from each live hypothesis's logits (and attention row); returns
    /// the slot copies that put every surviving hypothesis's cache in its lane.
    fn advance_beams(
        &mut self,
        mut beams: Beams,
        steps: Vec<(Vec<f32>, Option<Vec<f32>>)>,
        shared: &Shared,
    ) -> Vec<(usize, usize)> {
        let eot = shared.special.eot;
        if beams
            .live
            .first()
            .is_some_and(|h| h.tokens.len() >= self.limit)
        {
            self.finish_beams(beams, shared);
            return Vec::new();
        }
        let mut rows = Vec::with_capacity(steps.len());
        let mut trails = Vec::with_capacity(steps.len());
        let mut text_lse = Vec::with_capacity(steps.len());
        for (h, (mut logits, qk_row)) in beams.live.iter().zip(steps) {
            text_lse.push(logsumexp(&logits[..eot as usize]));
            shared.rules.apply(&h.tokens, &mut logits);
            rows.push(logits);
            trails.push(match qk_row {
                Some(row) => h.qk.push(row),
                None => h.qk.clone(),
            });
        }
        let sums: Vec<f64> = beams.live.iter().map(|h| h.sum_logprob).collect();
        let row_refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let step = beam_step(&sums, &row_refs, beams.options.beam_size, eot);

        let max_candidates = beams.options.max_candidates();
        for c in &step.finished {
            if beams.finished.len() >= max_candidates {
                break;
            }
            let source = &beams.live[c.source];
            beams.finished.push(Hypothesis {
                sum_logprob: c.sum_logprob,
                qk: trails[c.source].clone(),
                ..source.clone()
            });
        }

        // A hypothesis's first continuation stays in its lane; others take lanes freed by
        // hypotheses that died, copying the cache there.
        let mut claimed = vec![false; self.slots.len()];
        let mut lanes: Vec<Option<usize>> = vec![None; step.live.len()];
        for (j, c) in step.live.iter().enumerate() {
            let lane = beams.live[c.source].lane;
            if !claimed[lane] {
                claimed[lane] = true;
                lanes[j] = Some(lane);
            }
        }
        let mut moves = Vec::new();
        for (j, c) in step.live.iter().enumerate() {
            if lanes[j].is_none() {
                let lane = (0..claimed.len())
                    .find(|&l| !claimed[l])
                    .expect("no more hypotheses than lanes");
                claimed[lane] = true;
                lanes[j] = Some(lane);
                moves.push((self.slots[beams.live[c.source].lane], self.slots[lane]));
            }
        }
        let live: Vec<Hypothesis> = step
            .live
            .iter()
            .zip(lanes)
            .map(|(c, lane)| {
                let source = &beams.live[c.source];
                let mut tokens = source.tokens.clone();
                tokens.push(c.token);
                let mut token_probs = source.token_probs.clone();
                if self.keep_probs {
                    let lse = text_lse[c.source];
                    token_probs.push(text_probability(&rows[c.source], c.token, lse, eot));
                }
                Hypothesis {
                    tokens,
                    sum_logprob: c.sum_logprob,
                    token_probs,
                    qk: trails[c.source].clone(),
                    lane: lane.expect("every continuation got a lane"),
                }
            })
            .collect();
        beams.live = live;
        let done = beams.finished.len() >= max_candidates
            || beams.live.is_empty()
            || beams.live[0].tokens.len() >= self.limit
            || repeats(&beams.live[0].tokens, shared);
        if done {
            self.finish_beams(beams, shared);
            return Vec::new();
        }
        self.phase = Phase::Beam(beams);
        moves
    }

    /// Ends a beam search: tops the finished hypotheses up with the likeliest live ones (as
    /// openai's `finalize`) and keeps the best by the length-normalised score.
    fn finish_beams(&mut self, mut beams: Beams, shared: &Shared) {
        let room = beams.options.beam_size.saturating_sub(beams.finished.len());
        beams.finished.extend(beams.live.drain(..).take(room));
        let scored: Vec<(f64, usize)> = beams
            .finished
            .iter()
            .map(|h| (h.sum_logprob, h.tokens.len()))
            .collect();
        if let Some(best) = best_hypothesis(&beams.options, &scored) {
            let h = beams.finished.swap_remove(best);
            self.result.qk_rows = h.qk.rows();
            self.result.tokens = h.tokens;
            self.result.sum_logprob = h.sum_logprob;
            self.result.token_probs = h.token_probs;
        }
        self.finish(shared);
    }

    fn finish(&mut self, shared: &Shared) {
        let res = &mut self.result;
        // Stopped at the length limit: the last token was never fed, so its row is missing.
        while self.keep_qk && res.qk_rows.len() < res.tokens.len() + 1 {
            let last = res.qk_rows.last().cloned().unwrap_or_default();
            res.qk_rows.push(last);
        }
        res.avg_logprob = res.sum_logprob / (res.tokens.len() + 1) as f64;
        res.looped = repeats(&res.tokens, shared);
        self.logits = Vec::new();
        // A loop fails the thresholds; the caller cuts it before aligning, if it keeps it.
        self.phase = match res.looped {
            true => Phase::Done,
            false => self.alignment_phase(shared),
        };
    }

    /// The alignment pass over the decoded text, if one is asked for and fits the context.
    fn alignment_phase(&self, shared: &Shared) -> Phase {
        let Some(sot) = &self.refeed_sot else {
            return Phase::Done;
        };
        let input = alignment_pass_for(
            sot,
            &self.result.tokens,
            shared.special,
            shared.spell,
            shared.n_text_ctx,
        );
        match input {
            Some((tokens, logits_at)) => Phase::Refeed { tokens, logits_at },
            None => Phase::Done,
        }
    }
}

/// Whether the text of `tokens` ends in a repetition loop, or (tested every
/// [`REPETITION_CHECK_EVERY`] text tokens) is already [`Repetitive`].
fn repeats(tokens: &[u32], shared: &Shared) -> bool {
    let text: Vec<u32> = tokens
        .iter()
        .copied()
        .filter(|&t| shared.special.is_text(t))
        .collect();
    let checked = text.len() >= 2 * REPETITION_CHECK_EVERY
        && text.len().is_multiple_of(REPETITION_CHECK_EVERY);
    trailing_repetition(&text).is_some()
        || checked
            && shared
                .repetitive
                .is_some_and(|repetitive| repetitive(&text))
}

/// Probability of `token` among text tokens, from logits whose text part is untouched where
/// the rules allow a token (they only ever set logits to -inf), given the text log-sum-exp
/// taken before the rules: openai's word probability.
fn text_probability(logits: &[f32], token: u32, text_lse: f32, eot: u32) -> f32 {
    if token < eot {
        (logits[token as usize] - text_lse).exp()
    } else {
        0.0
    }
}

/// Feeds of `feeds` (row, feed) grouped into backend calls, each padded to its longest: feeds
/// of one token together, longer ones with others at least half as long, so that a short
/// prompt does not pad to an alignment pass's few hundred letters (nor a pass every row).
fn feed_groups(feeds: &[Vec<(usize, Feed)>]) -> Vec<Vec<(usize, usize)>> {
    let len = |&(i, k): &(usize, usize)| feeds[i][k].1.tokens.len();
    let mut all: Vec<(usize, usize)> = feeds
        .iter()
        .enumerate()
        .flat_map(|(i, f)| (0..f.len()).map(move |k| (i, k)))
        .collect();
    all.sort_by_key(|m| (len(m) > 1, std::cmp::Reverse(len(m))));
    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
    for member in all {
        match groups.last_mut() {
            Some(group) if len(&group[0]) == 1 && len(&member) == 1 => group.push(member),
            Some(group) if len(&group[0]) > 1 && 2 * len(&member) >= len(&group[0]) => {
                group.push(member)
            }
            _ => groups.push(vec![member]),
        }
    }
    groups
}

/// Feeds every unfinished row once, in as few backend calls as [`feed_groups`] allows. Beam
/// searches then move their hypotheses' caches between their slots.
pub(crate) fn step_rows<B: Backend>(
    backend: &B,
    decoder: &mut B::Decoder,
    rows: &mut [&mut Row],
    shared: &Shared,
) -> whisk_backend::Result<()> {
    let feeds: Vec<Vec<(usize, Feed)>> = rows.iter().map(|row| row.feeds()).collect();
    let mut outputs: Vec<Vec<Option<FeedOutput>>> = feeds
        .iter()
        .map(|f| f.iter().map(|_| None).collect())
        .collect();
    for members in feed_groups(&feeds) {
        let steps: Vec<RowStep> = members
            .iter()
            .map(|&(i, k)| {
                let (slot, feed) = &feeds[i][k];
                RowStep {
                    slot: *slot,
                    position: feed.position,
                    tokens: &feed.tokens,
                    logits_at: &feed.logits_at,
                }
            })
            .collect();
        let cross_qk_heads = if members.iter().any(|&(i, _)| rows[i].refeeds()) {
            shared.heads
        } else if members.iter().any(|&(i, _)| rows[i].wants_qk()) {
            shared.sampled_heads
        } else {
            &[]
        };
        let out = backend.decode_step(
            decoder,
            DecodeStep {
                rows: &steps,
                cross_qk_heads,
                // Alignment passes are fed once, from position 0; their slots are done after.
                keep_cache: !members.iter().all(|&(i, _)| rows[i].refeeds()),
            },
        )?;
        let mut qk = out.cross_qk.into_iter();
        for (&(i, k), logits) in members.iter().zip(out.logits) {
            outputs[i][k] = Some((logits, qk.next()));
        }
    }
    let mut moves = Vec::new();
    for (row, outs) in rows.iter_mut().zip(outputs) {
        if outs.is_empty() {
            continue;
        }
        let outs = outs
            .into_iter()
            .map(|o| o.expect("every feed was stepped"))
            .collect();
        moves.extend(row.absorb(outs, shared));
    }
    if !moves.is_empty() {
        backend.copy_slots(decoder, &moves)?;
    }
    Ok(())
}

/// Decodes one encoded window alone: a batch of one row (in one slot per beam hypothesis).
/// `temperature == 0` is greedy or, with `req.beam`, a beam search; above it, tokens are
/// drawn with `rng`, which continues where the row left it.
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
        sampled_heads: req.cross_qk_heads,
        spell: None,
        repetitive: req.repetitive,
        n_vocab: dims.n_vocab,
        n_text_ctx: dims.n_text_ctx,
    };
    let request = RowRequest {
        prompt: build_prompt(req.special, req.previous, req.sot_sequence, dims.n_text_ctx),
        sample_len: req.sample_len,
        temperature,
        rng: std::mem::replace(rng, StdRng::seed_from_u64(0)),
        keep_qk: true,
        keep_probs: req.keep_probs,
        refeed_sot: None,
        beam: req.beam,
        decoded: None,
    };
    let lanes = request.lanes();
    let mut decoder = backend.new_decoder(lanes)?;
    backend.attach(&mut decoder, &[0], encoded, &[0])?;
    let mut row = Row::new(request, (0..lanes).collect(), &shared);
    while !row.is_done() {
        step_rows(backend, &mut decoder, &mut [&mut row], &shared)?;
    }
    let result = row.into_result();
    *rng = result.rng.clone();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feeds(lengths: &[&[usize]]) -> Vec<Vec<(usize, Feed)>> {
        let feed = |n| Feed {
            position: 0,
            tokens: vec![0; n],
            logits_at: Vec::new(),
        };
        lengths
            .iter()
            .map(|row| row.iter().map(|&n| (0, feed(n))).collect())
            .collect()
    }

    #[test]
    fn short_feeds_are_not_padded_to_long_ones() {
        // A sampling step, a prompt of three tokens (a multilingual SOT sequence), an
        // alignment pass of 270 letters, two beam hypotheses' steps, a shorter pass, a prompt
        // of two tokens.
        let feeds = feeds(&[&[1], &[3], &[270], &[1, 1], &[140], &[2]]);
        let groups = feed_groups(&feeds);
        let lengths: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| g.iter().map(|&(i, k)| feeds[i][k].1.tokens.len()).collect())
            .collect();
        assert_eq!(lengths, vec![vec![1, 1, 1], vec![270, 140], vec![3, 2]]);
        assert_eq!(groups[0], vec![(0, 0), (3, 0), (3, 1)]);
        assert_eq!(groups[1], vec![(2, 0), (4, 0)]);
    }
}
