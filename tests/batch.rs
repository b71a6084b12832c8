//! Batched greedy decoding gives every window exactly the tokens it gets decoded alone, with
//! rows of different lengths finishing at different steps (five files share one batch).

use rand::SeedableRng;
use whisk_backend::Backend;
use whisk_candle::{CandleBackend, CandleDevice};
use whisk_decode::{sot_sequence, LogitRules};
use whisk_pipeline::{decode_batch, decode_window, encode_batch, encode_window, WindowRequest};
use whisk_tests::{model_dir, shared_data};
use whisk_types::{DecodeOptions, Task, HOP_LENGTH, N_FRAMES};

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
    let request = WindowRequest {
        previous: &[],
        sot_sequence: &sot,
        rules: &rules,
        special: &special,
        sample_len: 224,
        cross_qk_heads: &heads,
    };

    let files = [
        "whisper_test_clips/audio16k/jfk.flac",
        "timit_nltk_sample/audio/dr1-fvmh0_sa1.flac",
        "timit_nltk_sample/audio/dr1-fvmh0_si1466.flac",
        "timit_nltk_sample/audio/dr2-marc0_sx18.flac",
        "timit_nltk_sample/audio/dr8-mbcg0_sx237.flac",
    ];
    let mels: Vec<Vec<f32>> = files
        .iter()
        .map(|f| {
            let audio = whisk_audio::load_audio(&shared_data(f)).unwrap();
            whisk_audio::log_mel_spectrogram(&audio, 80, HOP_LENGTH).window(0, N_FRAMES)
        })
        .collect();
    let encoded = encode_batch(&backend, &mels).unwrap();
    let rows: Vec<usize> = (0..files.len()).collect();
    let batched = decode_batch(&backend, &encoded, &rows, &request).unwrap();

    let mut lengths = Vec::new();
    for (r, mel) in mels.iter().enumerate() {
        let single_encoded = encode_window(&backend, mel).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let single = decode_window(&backend, &single_encoded, &request, 0.0, &mut rng).unwrap();
        assert_eq!(batched[r].tokens, single.tokens, "{}", files[r]);
        assert!(
            (batched[r].sum_logprob - single.sum_logprob).abs() < 1e-2,
            "{}",
            files[r]
        );
        assert!((batched[r].no_speech_prob - single.no_speech_prob).abs() < 1e-3);
        assert_eq!(batched[r].qk_rows.len(), single.qk_rows.len());
        // Attention rows of the batch match the single decode's within float noise.
        let worst = batched[r]
            .qk_rows
            .iter()
            .flatten()
            .zip(single.qk_rows.iter().flatten())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-2, "{}: qk differs by {worst}", files[r]);
        lengths.push(single.tokens.len());
    }
    // The rows really were ragged: they finished at different steps.
    lengths.sort();
    lengths.dedup();
    assert!(lengths.len() >= 3, "{lengths:?}");
    assert_eq!(backend.dims().n_vocab, 51864);
}
