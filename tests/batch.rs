//! Continuous batching gives every window exactly what it gets decoded alone: five files share
//! a scheduler of three slots, so rows finish at different steps, leave, and waiting windows
//! join at position 0 beside rows deep in their sequences.

use std::sync::Arc;

use rand::SeedableRng;
use whisk_backend::{Backend, DecodeStep, RowStep};
use whisk_batch::{decode_window, Job, RowRequest, Scheduler, SchedulerConfig, WindowRequest};
use whisk_candle::{CandleBackend, CandleDevice};
use whisk_decode::{sot_sequence, LogitRules};
use whisk_tests::{model_dir, shared_data};
use whisk_types::{DecodeOptions, Task, HOP_LENGTH, N_FRAMES};

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

#[test]
fn batched_rows_equal_single_decodes() {
    let dir = model_dir("tiny.en");
    let weights = whisk_weights::WhisperWeights::from_dir(&dir).unwrap();
    let backend = CandleBackend::new(&weights, CandleDevice::Cpu).unwrap();
    let tokenizer =
        whisk_text::Tokenizer::from_file(&dir.join("tokenizer.json"), &weights.dims).unwrap();
    let special = tokenizer.special().clone();
    let rules = LogitRules::new(
        &special,
        &DecodeOptions::default(),
        &tokenizer.non_speech_tokens().unwrap(),
        &tokenizer.encode(" ").unwrap(),
    );
    let sot = sot_sequence(&special, false, None, Task::Transcribe, false);
    let heads = weights.alignment_heads.clone().unwrap();

    let mels: Vec<Arc<[f32]>> = FILES
        .iter()
        .map(|f| {
            let audio = whisk_audio::load_audio(&shared_data(f)).unwrap();
            whisk_audio::log_mel_spectrogram(&audio, 80, HOP_LENGTH)
                .window(0, N_FRAMES)
                .into()
        })
        .collect();
    let mut scheduler = Scheduler::new(
        &backend,
        SchedulerConfig {
            capacity: 3,
            encoder_batch: 2,
            rules: &rules,
            special: &special,
            heads: &heads,
        },
    )
    .unwrap();
    for (i, mel) in mels.iter().enumerate() {
        scheduler.submit(Job {
            key: i,
            mel: mel.clone(),
            request: RowRequest {
                refeed_sot: Some(sot.clone()),
                keep_qk: true,
                sample_len: 224,
                ..RowRequest::greedy(&sot)
            },
        });
    }
    let mut batched = vec![None; FILES.len()];
    let mut finish_order = Vec::new();
    let mut max_in_flight = 0;
    while !scheduler.is_idle() {
        let done = scheduler.step().unwrap();
        max_in_flight = max_in_flight.max(scheduler.in_flight() + done.len());
        for (key, result) in done {
            finish_order.push(key);
            batched[key] = Some(result);
        }
    }
    assert_eq!(max_in_flight, 3);

    let request = WindowRequest {
        previous: &[],
        sot_sequence: &sot,
        rules: &rules,
        special: &special,
        sample_len: 224,
        cross_qk_heads: &heads,
    };
    let mut lengths = Vec::new();
    for (r, mel) in mels.iter().enumerate() {
        let batched = batched[r].as_ref().expect("every job finished");
        let encoded = whisk_pipeline::encode_window(&backend, mel).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let single = decode_window(&backend, &encoded, &request, 0.0, &mut rng).unwrap();
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
        let mut decoder = backend.start_decoder(&encoded, &[0]).unwrap();
        let out = backend
            .decode_step(
                &mut decoder,
                DecodeStep {
                    rows: &[RowStep {
                        slot: 0,
                        position: 0,
                        tokens: &fed,
                        logits_at: &[],
                    }],
                    cross_qk_heads: &heads,
                },
            )
            .unwrap();
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
    // The rows really were ragged and the slots reused: finishing order is not submission
    // order, and the rows had different lengths.
    assert_ne!(finish_order, (0..FILES.len()).collect::<Vec<_>>());
    lengths.sort();
    lengths.dedup();
    assert!(lengths.len() >= 3, "{lengths:?}");
}
