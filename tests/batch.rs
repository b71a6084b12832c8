//! Continuous batching gives every window exactly what it gets decoded alone: five files share
//! a scheduler of three slots, so rows finish at different steps, leave, and waiting windows
//! join at position 0 beside rows deep in their sequences.

use std::sync::Arc;

use rand::SeedableRng;
use whisk_backend::{Backend, DecodeStep, RowStep, StepOutput};
use whisk_batch::{
    decode_window, Job, RowRequest, Scheduler, SchedulerConfig, WindowRequest, WindowResult,
};
use whisk_candle::{CandleBackend, CandleDevice};
use whisk_decode::LogitRules;
use whisk_decode::{log_softmax_at, BeamOptions};
use whisk_tests::{first_mel_window, RawDecode};
use whisk_types::SpecialTokens;

const FILES: [&str; 5] = [
    "whisper_test_clips/audio16k/jfk.flac",
    "timit_nltk_sample/audio/dr1-fvmh0_sa1.flac",
    "timit_nltk_sample/audio/dr1-fvmh0_si1466.flac",
    "timit_nltk_sample/audio/dr2-marc0_sx18.flac",
    "timit_nltk_sample/audio/dr8-mbcg0_sx237.flac",
];

fn worst_diff<'a>(a: impl Iterator<Item = &'a f32>, b: impl Iterator<Item = &'a f32>) -> f32 {
    a.zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// What a scheduler handed back, by job key.
struct Drained {
    results: Vec<Option<WindowResult>>,
    finish_order: Vec<usize>,
    /// Most rows in flight in one step.
    max_in_flight: usize,
}

/// Steps `scheduler` until every job (keys `0..FILES.len()`) is done.
fn drain(scheduler: &mut Scheduler<'_, CandleBackend, usize>) -> Drained {
    let mut drained = Drained {
        results: vec![None; FILES.len()],
        finish_order: Vec::new(),
        max_in_flight: 0,
    };
    while !scheduler.is_idle() {
        let done = scheduler.step().unwrap();
        drained.max_in_flight = drained
            .max_in_flight
            .max(scheduler.in_flight() + done.len());
        for (key, result) in done {
            drained.finish_order.push(key);
            drained.results[key] = Some(result);
        }
    }
    drained
}

/// One forward pass over `tokens` on a fresh decoder for window 0 of `encoded`.
fn forward_alone(
    backend: &CandleBackend,
    encoded: &<CandleBackend as Backend>::Encoded,
    tokens: &[u32],
    logits_at: &[usize],
    heads: &[(usize, usize)],
) -> StepOutput {
    let mut decoder = backend.start_decoder(encoded, &[0]).unwrap();
    backend
        .decode_step(
            &mut decoder,
            DecodeStep {
                rows: &[RowStep {
                    slot: 0,
                    position: 0,
                    tokens,
                    logits_at,
                }],
                cross_qk_heads: heads,
                keep_cache: true,
            },
        )
        .unwrap()
}

struct Setup {
    backend: CandleBackend,
    special: SpecialTokens,
    rules: LogitRules,
    sot: Vec<u32>,
    heads: Vec<(usize, usize)>,
    /// The first window of each of [`FILES`].
    mels: Vec<Arc<[f32]>>,
}

impl Setup {
    fn new() -> Self {
        let RawDecode {
            weights,
            special,
            rules,
            sot,
            heads,
        } = RawDecode::tiny_en();
        let backend = CandleBackend::new(
            &weights,
            CandleDevice::Cpu,
            whisk_types::ComputeType::Float32,
        )
        .unwrap();
        let mels: Vec<Arc<[f32]>> = FILES.iter().map(|f| first_mel_window(f).into()).collect();
        Self {
            backend,
            special,
            rules,
            sot,
            heads,
            mels,
        }
    }

    /// A scheduler over this setup's model with `capacity` decoder slots.
    fn scheduler(&self, capacity: usize) -> Scheduler<'_, CandleBackend, usize> {
        Scheduler::new(
            &self.backend,
            SchedulerConfig {
                capacity,
                encoder_batch: 2,
                rules: &self.rules,
                special: &self.special,
                heads: &self.heads,
                sampled_heads: &self.heads,
                spell: None,
                repetitive: None,
            },
        )
        .unwrap()
    }
}

#[test]
fn batched_rows_equal_single_decodes() {
    let setup = Setup::new();
    let Setup {
        backend,
        special,
        rules,
        sot,
        heads,
        mels,
    } = &setup;
    let mut scheduler = setup.scheduler(3);
    for (i, mel) in mels.iter().enumerate() {
        scheduler.submit(Job {
            key: i,
            mel: mel.clone(),
            request: RowRequest {
                refeed_sot: Some(sot.clone()),
                keep_qk: true,
                sample_len: 224,
                ..RowRequest::greedy(sot)
            },
        });
    }
    let Drained {
        results: batched,
        finish_order,
        max_in_flight,
    } = drain(&mut scheduler);
    assert_eq!(max_in_flight, 3);

    let request = WindowRequest {
        previous: &[],
        sot_sequence: sot,
        rules,
        special,
        sample_len: 224,
        cross_qk_heads: heads,
        keep_probs: false,
        beam: None,
        repetitive: None,
    };
    let mut lengths = Vec::new();
    for (r, mel) in mels.iter().enumerate() {
        let batched = batched[r].as_ref().expect("every job finished");
        let encoded = whisk_pipeline::encode_window(backend, mel).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let single = decode_window(backend, &encoded, &request, 0.0, &mut rng).unwrap();
        assert_eq!(batched.tokens, single.tokens, "{}", FILES[r]);
        assert!((batched.sum_logprob - single.sum_logprob).abs() < 1e-2);
        assert!((batched.no_speech_prob - single.no_speech_prob).abs() < 1e-3);
        assert_eq!(batched.qk_rows.len(), single.qk_rows.len());
        let worst = worst_diff(
            batched.qk_rows.iter().flatten(),
            single.qk_rows.iter().flatten(),
        );
        assert!(worst < 1e-2, "{}: qk differs by {worst}", FILES[r]);

        // The alignment pass done in the batch equals one done alone on a fresh decoder.
        let refeed = batched.refeed.as_ref().expect("refeed asked for");
        let text: Vec<u32> = single
            .tokens
            .iter()
            .copied()
            .filter(|&t| special.is_text(t))
            .collect();
        assert_eq!(refeed.text, text);
        let mut fed = sot.clone();
        fed.push(special.no_timestamps);
        fed.extend_from_slice(&text);
        fed.push(special.eot);
        let out = forward_alone(backend, &encoded, &fed, &[], heads);
        let alone = &out.cross_qk[0];
        let first = sot.len();
        for h in 0..alone.heads {
            for t in 0..=text.len() {
                let worst = worst_diff(refeed.qk.row(h, t).iter(), alone.row(h, first + t).iter());
                assert!(worst < 1e-2, "{}: refeed qk differs by {worst}", FILES[r]);
            }
        }
        assert!(refeed.probs.iter().all(|p| (0.0..=1.0).contains(p)));
        lengths.push(single.tokens.len());
    }
    // A pass asked for on its own, after the decode (as for a candidate chosen among several),
    // gives what the pass at the end of the decode gave.
    let mut passes = setup.scheduler(3);
    for (i, mel) in mels.iter().enumerate() {
        let decoded = batched[i].as_ref().expect("every job finished");
        passes.submit(Job {
            key: i,
            mel: mel.clone(),
            request: RowRequest::alignment_pass(sot.clone(), decoded.tokens.clone()),
        });
    }
    let Drained { results, .. } = drain(&mut passes);
    for (r, result) in results.iter().enumerate() {
        let inline = batched[r].as_ref().unwrap().refeed.as_ref().unwrap();
        let alone = result
            .as_ref()
            .unwrap()
            .refeed
            .as_ref()
            .expect("a pass ran");
        assert_eq!(alone.text, inline.text);
        assert_eq!(alone.qk.tokens, inline.qk.tokens);
        let worst = worst_diff(alone.qk.data.iter(), inline.qk.data.iter());
        assert!(worst < 1e-2, "{}: pass alone differs by {worst}", FILES[r]);
        assert!(worst_diff(alone.probs.iter(), inline.probs.iter()) < 1e-3);
    }

    // The rows really were ragged and the slots reused: finishing order is not submission
    // order, and the rows had different lengths.
    assert_ne!(finish_order, (0..FILES.len()).collect::<Vec<_>>());
    lengths.sort();
    lengths.dedup();
    assert!(lengths.len() >= 3, "{lengths:?}");
}

/// Beam searches share the batch with each other and with a greedy row: every hypothesis
/// stays in its own row's slots (a batched beam search elsewhere once read row 0's
/// distribution for every beam), so each window gets what its search gives alone, attention
/// rows included (they follow the hypotheses through every reorder).
#[test]
fn batched_beam_searches_equal_single_searches() {
    let setup = Setup::new();
    let Setup {
        backend,
        special,
        rules,
        sot,
        heads,
        mels,
    } = &setup;
    let beam = BeamOptions {
        beam_size: 5,
        patience: 1.0,
        length_penalty: None,
    };
    // Room for two searches and one greedy row: the fourth window waits for a search to end.
    let mut scheduler = setup.scheduler(11);
    let searched = [true, true, false, true, true];
    for (i, mel) in mels.iter().enumerate() {
        scheduler.submit(Job {
            key: i,
            mel: mel.clone(),
            request: RowRequest {
                keep_qk: true,
                sample_len: 224,
                beam: searched[i].then_some(beam),
                ..RowRequest::greedy(sot)
            },
        });
    }
    let Drained {
        results: batched,
        max_in_flight,
        ..
    } = drain(&mut scheduler);
    assert_eq!(max_in_flight, 3);

    let mut differs_from_greedy = 0;
    for (r, mel) in mels.iter().enumerate() {
        let batched = batched[r].as_ref().expect("every job finished");
        let encoded = whisk_pipeline::encode_window(backend, mel).unwrap();
        let request = |beam| WindowRequest {
            previous: &[],
            sot_sequence: sot,
            rules,
            special,
            sample_len: 224,
            cross_qk_heads: heads,
            keep_probs: false,
            beam,
            repetitive: None,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let alone = decode_window(
            backend,
            &encoded,
            &request(searched[r].then_some(beam)),
            0.0,
            &mut rng,
        )
        .unwrap();
        assert_eq!(batched.tokens, alone.tokens, "{}", FILES[r]);
        assert!((batched.sum_logprob - alone.sum_logprob).abs() < 1e-2);
        assert_eq!(batched.qk_rows.len(), alone.tokens.len() + 1);
        assert_eq!(batched.token_probs.len(), alone.tokens.len());
        let worst = worst_diff(
            batched.qk_rows.iter().flatten(),
            alone.qk_rows.iter().flatten(),
        );
        assert!(worst < 1e-2, "{}: qk differs by {worst}", FILES[r]);
        let worst = worst_diff(batched.token_probs.iter(), alone.token_probs.iter());
        assert!(
            worst < 1e-3,
            "{}: word probabilities differ by {worst}",
            FILES[r]
        );
        if searched[r] {
            // Rescored by one plain forward pass over its tokens, the chosen hypothesis has
            // the log-probability the search reported: every step read its own history
            // from the slot it was moved to.
            let mut fed = sot.clone();
            fed.extend_from_slice(&alone.tokens);
            let logits_at: Vec<usize> = (sot.len() - 1..fed.len()).collect();
            let out = forward_alone(backend, &encoded, &fed, &logits_at, &[]);
            let vocab = backend.dims().n_vocab;
            let mut rescored = 0.0f64;
            for (k, row) in out.logits[0].chunks(vocab).enumerate() {
                let mut row = row.to_vec();
                rules.apply(&alone.tokens[..k], &mut row);
                let next = alone.tokens.get(k).copied().unwrap_or(special.eot);
                rescored += log_softmax_at(&row, next as usize) as f64;
            }
            assert!(
                (rescored - alone.sum_logprob).abs() < 1e-2,
                "{}: search says {}, rescoring {rescored}",
                FILES[r],
                alone.sum_logprob
            );
            let greedy = decode_window(backend, &encoded, &request(None), 0.0, &mut rng).unwrap();
            differs_from_greedy += usize::from(greedy.tokens != alone.tokens);
        }
    }
    // The search is not greedy decoding in disguise: it changes some windows' tokens.
    assert!(differs_from_greedy >= 1);
}

/// A decode whose text already reads as repetitive stops at the check that finds it (every
/// 16 text tokens, from 32 on) and is marked as looped, instead of running to its limit.
#[test]
fn a_text_found_repetitive_stops_the_decode_at_that_check() {
    let setup = Setup::new();
    let Setup {
        backend,
        special,
        rules,
        sot,
        heads,
        ..
    } = &setup;
    // All five clips in one window: some 60 text tokens.
    let audio: Vec<f32> = FILES
        .iter()
        .flat_map(|f| whisk_audio::load_audio(&whisk_tests::shared_data(f)).unwrap())
        .collect();
    let mel = whisk_audio::log_mel_spectrogram(&audio, 80, whisk_types::HOP_LENGTH)
        .window(0, whisk_types::N_FRAMES);
    let encoded = whisk_pipeline::encode_window(backend, &mel).unwrap();
    let decode = |repetitive: Option<&whisk_batch::Repetitive>| {
        let request = WindowRequest {
            previous: &[],
            sot_sequence: sot,
            rules,
            special,
            sample_len: 224,
            cross_qk_heads: heads,
            keep_probs: false,
            beam: None,
            repetitive,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let r = decode_window(backend, &encoded, &request, 0.0, &mut rng).unwrap();
        let text = r.tokens.iter().filter(|&&t| special.is_text(t)).count();
        (text, r.looped)
    };
    let (full, looped) = decode(None);
    assert!(full > 32 && !looped, "{full} text tokens");
    // Asked at 32 tokens only (then every 16), until it says yes.
    let asked = std::cell::RefCell::new(Vec::new());
    let never = |text: &[u32]| {
        asked.borrow_mut().push(text.len());
        false
    };
    assert_eq!(decode(Some(&never)), (full, false));
    assert_eq!(*asked.borrow(), (32..=full).step_by(16).collect::<Vec<_>>());
    assert_eq!(decode(Some(&|_: &[u32]| true)), (32, true));
}
