//! candle and Burn compute the same model: on the same input the logits and cross-attention of
//! the first decoder steps agree to 1e-3 relative error in f32, transcripts are identical and
//! word times lie within one 20 ms frame. Needs `--features burn-cpu`.

use rand::SeedableRng;
use whisk::{BackendKind, DecodeOptions, Model, TranscribeOptions};
use whisk_backend::{Backend, CrossQk, DecodeStep, RowStep};
use whisk_batch::{decode_window, WindowRequest};
use whisk_burn::{BurnBackend, BurnDevice};
use whisk_candle::{CandleBackend, CandleDevice};
use whisk_tests::{
    assert_same_transcript, check_invariants, first_mel_window, model_dir, shared_data, RawDecode,
};

/// `max |a - b| / max |a|`: one scale for a whole vector, so near-zero entries (most logits
/// of a softmax's tail, most attention scores) do not blow the measure up.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// Feeds `sot` then `tokens` one by one; returns each step's last logits and cross-QK.
fn teacher_forced<B: Backend>(
    backend: &B,
    mel: &[f32],
    sot: &[u32],
    tokens: &[u32],
    heads: &[(usize, usize)],
) -> Vec<(Vec<f32>, CrossQk)> {
    let encoded = whisk_pipeline::encode_window(backend, mel).unwrap();
    let mut decoder = backend.start_decoder(&encoded, &[0]).unwrap();
    let mut out = Vec::new();
    let mut position = 0;
    let mut feed = sot.to_vec();
    for next in tokens.iter().map(Some).chain([None]) {
        let at = [feed.len() - 1];
        let rows = [RowStep {
            slot: 0,
            position,
            tokens: &feed,
            logits_at: &at,
        }];
        let mut step = backend
            .decode_step(
                &mut decoder,
                DecodeStep {
                    rows: &rows,
                    cross_qk_heads: heads,
                    keep_cache: true,
                },
            )
            .unwrap();
        out.push((step.logits.remove(0), step.cross_qk.remove(0)));
        position += feed.len();
        match next {
            Some(&t) => feed = vec![t],
            None => break,
        }
    }
    out
}

#[test]
fn first_decoder_steps_agree() {
    let RawDecode {
        weights,
        special,
        rules,
        sot,
        heads,
    } = RawDecode::tiny_en();
    let candle = CandleBackend::new(
        &weights,
        CandleDevice::Cpu,
        whisk_types::ComputeType::Float32,
    )
    .unwrap();
    let burn = BurnBackend::new(&weights, BurnDevice::Flex).unwrap();
    for file in [
        "whisper_test_clips/audio16k/jfk.flac",
        "timit_nltk_sample/audio/dr1-fvmh0_si1466.flac",
    ] {
        let mel = first_mel_window(file);
        // The tokens candle decodes greedily, fed to both backends.
        let request = WindowRequest {
            previous: &[],
            sot_sequence: &sot,
            rules: &rules,
            special: &special,
            sample_len: 224,
            cross_qk_heads: &[],
            keep_probs: false,
            beam: None,
            repetitive: None,
        };
        let encoded = whisk_pipeline::encode_window(&candle, &mel).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let decoded = decode_window(&candle, &encoded, &request, 0.0, &mut rng).unwrap();
        assert!(decoded.tokens.len() > 10, "{file}: {:?}", decoded.tokens);

        let a = teacher_forced(&candle, &mel, &sot, &decoded.tokens, &heads);
        let b = teacher_forced(&burn, &mel, &sot, &decoded.tokens, &heads);
        assert_eq!(a.len(), b.len());
        let (mut worst_logits, mut worst_qk) = (0f32, 0f32);
        for (step, ((la, qa), (lb, qb))) in a.iter().zip(&b).enumerate() {
            let (el, eq) = (relative_error(la, lb), relative_error(&qa.data, &qb.data));
            assert!(el <= 1e-3, "{file}: step {step}: logits differ by {el}");
            assert!(eq <= 1e-3, "{file}: step {step}: cross-QK differs by {eq}");
            assert_eq!(
                argmax(la),
                argmax(lb),
                "{file}: step {step}: different best token"
            );
            worst_logits = worst_logits.max(el);
            worst_qk = worst_qk.max(eq);
        }
        println!(
            "{file}: {} steps, worst relative error: logits {worst_logits:.2e}, cross-QK {worst_qk:.2e}",
            a.len()
        );
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

#[test]
fn transcripts_identical_words_within_a_frame() {
    let load = |kind| {
        Model::builder(model_dir("tiny.en"))
            .backend(kind)
            .device(whisk::Device::Cpu)
            .build()
            .unwrap()
    };
    let (candle, burn) = (load(BackendKind::Candle), load(BackendKind::Burn));
    let files = [
        "whisper_test_clips/audio16k/jfk.flac",
        "timit_nltk_sample/audio/dr1-fvmh0_sa1.flac",
        "timit_nltk_sample/audio/dr4-falr0_sx335.flac",
        "timit_nltk_sample/audio/dr7-fblv0_si1058.flac",
    ];
    // Greedy and beam 5, each with word timestamps.
    for beam_size in [None, Some(5)] {
        let options = TranscribeOptions {
            word_timestamps: true,
            decode: DecodeOptions {
                beam_size,
                ..Default::default()
            },
            ..Default::default()
        };
        for file in files {
            let audio = whisk::load_audio(&shared_data(file)).unwrap();
            let a = candle.transcribe(&audio, &options).unwrap();
            let b = burn.transcribe(&audio, &options).unwrap();
            check_invariants(&b);
            assert_same_transcript(&a, &b, &format!("{file}, beam {beam_size:?}"));
        }
    }
}
