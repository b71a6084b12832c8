//! Real speech through real weights on the Candle CPU backend.

use whisk::{MelPadding, Model, TranscribeOptions};
use whisk_tests::{check_invariants, model_dir, shared_data, shared_reference};

fn reference_text(rel: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared_reference(rel)).unwrap()).unwrap();
    json["text"].as_str().unwrap().to_string()
}

#[test]
fn jfk_tiny_en_matches_faster_whisper_text() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let options = TranscribeOptions {
        mel_padding: MelPadding::ZeroFeatures,
        ..Default::default()
    };
    let t = model.transcribe(&audio, &options).unwrap();
    check_invariants(&t);
    let expected = reference_text("tiny.en/fw-float32-beam1/jfk/jfk.json");
    assert_eq!(
        expected,
        " And so my fellow Americans ask not what your country can do for you ask what you can do for your country"
    );
    assert_eq!(t.text, expected);
    assert_eq!(t.language, "en");
}

#[test]
fn jfk_openai_padding_has_the_same_words() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    // The 44.1 kHz stereo original exercises downmix and resampling too.
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/orig/jfk.flac")).unwrap();
    let options = TranscribeOptions {
        mel_padding: MelPadding::Silence,
        ..Default::default()
    };
    let t = model.transcribe(&audio, &options).unwrap();
    check_invariants(&t);
    let words = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .collect()
    };
    let expected = reference_text("tiny.en/fw-float32-beam1/jfk/jfk.json");
    assert_eq!(words(&t.text), words(&expected));
    let last = t.segments.last().unwrap();
    assert!(
        last.end <= 11.1,
        "last segment ends at {} in an 11 s clip",
        last.end
    );
}

#[test]
fn base_detects_german_in_the_second_half() {
    let model = Model::builder(model_dir("base")).build().unwrap();
    let audio = whisk::load_audio(&shared_data(
        "whisper_test_clips/audio16k/multilingual.flac",
    ))
    .unwrap();
    let english = model.detect_language(&audio[..16_000 * 20]).unwrap();
    assert_eq!(english[0].0, "en", "first half: {:?}", &english[..3]);
    let german = model.detect_language(&audio[16_000 * 32..]).unwrap();
    assert_eq!(german[0].0, "de", "second half: {:?}", &german[..3]);
    assert!(german[0].1 > 0.5);
    let total: f32 = german.iter().map(|l| l.1).sum();
    assert!((total - 1.0).abs() < 1e-3);
}

#[test]
fn base_transcribes_german_when_told() {
    let model = Model::builder(model_dir("base")).build().unwrap();
    let audio = whisk::load_audio(&shared_data(
        "whisper_test_clips/audio16k/multilingual.flac",
    ))
    .unwrap();
    let options = TranscribeOptions {
        decode: whisk::DecodeOptions {
            language: Some("de".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = model.transcribe(&audio[16_000 * 32..], &options).unwrap();
    check_invariants(&t);
    assert_eq!(t.language, "de");
    let text = t.text.to_lowercase();
    assert!(text.contains("software"), "{text}");
    assert!(
        text.contains("der") || text.contains("die"),
        "not German: {text}"
    );
}
