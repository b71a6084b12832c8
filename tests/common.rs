//! Paths shared by the end-to-end tests.
//!
//! Speech comes from `../shared/data` beside the checkout (override with `WHISK_SHARED_DIR`);
//! models from `target/models`, filled by `cargo xtask fetch-models`.

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// `../shared/data/<rel>`; panics with instructions when the data set is absent.
pub fn shared_data(rel: &str) -> PathBuf {
    let base = std::env::var_os("WHISK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("..").join("shared"));
    let path = base.join("data").join(rel);
    assert!(
        path.exists(),
        "test data {} not found: the shared data sets must sit beside the checkout (or set WHISK_SHARED_DIR)",
        path.display()
    );
    path
}

/// `../shared/reference/<rel>`.
pub fn shared_reference(rel: &str) -> PathBuf {
    let data = shared_data(".");
    data.parent()
        .expect("data has a parent")
        .join("reference")
        .join(rel)
}

/// A test model fetched by `cargo xtask fetch-models` (`tiny.en`, `base`).
pub fn model_dir(name: &str) -> PathBuf {
    let dir = root().join("target").join("models").join(name);
    assert!(
        dir.join(".complete").is_file(),
        "test model {name} missing in {}: run `cargo xtask fetch-models` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

/// Checks what every transcript must satisfy: segments in order, non-negative, non-empty,
/// and the transcript text is the segments' texts joined; with word timestamps, words are
/// ordered, non-negative, inside their segment, and join to the segment's text.
pub fn check_invariants(t: &whisk::Transcript) {
    let mut last_start = 0.0;
    for s in &t.segments {
        assert!(
            s.start >= 0.0 && s.end > s.start,
            "segment {} has times {}..{}",
            s.id,
            s.start,
            s.end
        );
        assert!(
            s.start >= last_start,
            "segment {} starts before its predecessor",
            s.id
        );
        last_start = s.start;
        assert!(!s.text.trim().is_empty(), "segment {} is empty", s.id);
        if let Some(words) = &s.words {
            let mut last = s.start;
            for w in words {
                assert!(
                    w.start >= 0.0 && w.end >= w.start,
                    "word {:?} has bad times",
                    w.word
                );
                assert!(
                    w.start >= last - 1e-9,
                    "word {:?} starts before its predecessor",
                    w.word
                );
                assert!(
                    w.start >= s.start - 1e-9 && w.end <= s.end + 1e-9,
                    "word {:?} {}..{} outside segment {}..{}",
                    w.word,
                    w.start,
                    w.end,
                    s.start,
                    s.end
                );
                assert!(
                    (0.0..=1.0).contains(&w.probability),
                    "word {:?} probability {}",
                    w.word,
                    w.probability
                );
                last = w.start;
            }
            let joined: String = words.iter().map(|w| w.word.as_str()).collect();
            assert_eq!(
                joined, s.text,
                "segment {} text is not its joined words",
                s.id
            );
        }
    }
    let joined: String = t.segments.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(
        joined, t.text,
        "transcript text is not the joined segment texts"
    );
}

/// One frame of Whisper's encoder: 20 ms.
pub const FRAME_SECONDS: f64 = 0.020;

/// Asserts that two transcripts of the same audio agree: the same text, the same words, each
/// word's start and end within one frame.
pub fn assert_same_transcript(a: &whisk::Transcript, b: &whisk::Transcript, what: &str) {
    assert_eq!(a.text, b.text, "{what}");
    let (wa, wb) = (
        whisk_eval::timing::transcript_words(a),
        whisk_eval::timing::transcript_words(b),
    );
    assert_eq!(wa.len(), wb.len(), "{what}");
    for (x, y) in wa.iter().zip(&wb) {
        assert!(
            (x.start - y.start).abs() <= FRAME_SECONDS && (x.end - y.end).abs() <= FRAME_SECONDS,
            "{what}: {x:?} vs {y:?}"
        );
    }
}

/// What a raw decode of tiny.en needs beside a backend: its weights, the default decoding
/// rules, the English transcribe start sequence and the alignment heads.
pub struct RawDecode {
    pub weights: whisk_weights::WhisperWeights,
    pub special: whisk_types::SpecialTokens,
    pub rules: whisk_decode::LogitRules,
    pub sot: Vec<u32>,
    pub heads: Vec<(usize, usize)>,
}

impl RawDecode {
    pub fn tiny_en() -> Self {
        let dir = model_dir("tiny.en");
        let weights = whisk_weights::WhisperWeights::from_dir(&dir).unwrap();
        let tokenizer =
            whisk_text::Tokenizer::from_file(&dir.join("tokenizer.json"), &weights.dims).unwrap();
        let special = tokenizer.special().clone();
        let rules = whisk_decode::LogitRules::new(
            &special,
            &whisk_types::DecodeOptions::default(),
            &tokenizer.non_speech_tokens().unwrap(),
            &tokenizer.encode(" ").unwrap(),
        );
        let sot =
            whisk_decode::sot_sequence(&special, false, None, whisk_types::Task::Transcribe, false);
        let heads = weights.alignment_heads.clone().unwrap();
        Self {
            weights,
            special,
            rules,
            sot,
            heads,
        }
    }
}

/// The first 30 s mel window of a shared audio file (zero-padded like openai).
pub fn first_mel_window(rel: &str) -> Vec<f32> {
    let audio = whisk_audio::load_audio(&shared_data(rel)).unwrap();
    whisk_audio::log_mel_spectrogram(&audio, 80, whisk_types::HOP_LENGTH)
        .window(0, whisk_types::N_FRAMES)
}
