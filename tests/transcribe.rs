//! Real speech through real weights on the Candle CPU backend.

use std::path::{Path, PathBuf};

use whisk::{ComputeType, DecodeOptions, MelPadding, Model, TranscribeOptions};
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
fn base_detects_german_in_the_second_half_in_float32_and_int8() {
    let audio = whisk::load_audio(&shared_data(
        "whisper_test_clips/audio16k/multilingual.flac",
    ))
    .unwrap();
    for compute in [whisk::ComputeType::Float32, whisk::ComputeType::Int8] {
        let model = Model::builder(model_dir("base"))
            .compute_type(compute)
            .build()
            .unwrap();
        let english = model.detect_language(&audio[..16_000 * 20]).unwrap();
        assert_eq!(
            english[0].0,
            "en",
            "{compute}, first half: {:?}",
            &english[..3]
        );
        let german = model.detect_language(&audio[16_000 * 32..]).unwrap();
        assert_eq!(
            german[0].0,
            "de",
            "{compute}, second half: {:?}",
            &german[..3]
        );
        assert!(german[0].1 > 0.5, "{compute}");
        let total: f32 = german.iter().map(|l| l.1).sum();
        assert!((total - 1.0).abs() < 1e-3, "{compute}");
    }
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

/// Words of the transcript with their start times.
fn timed_words(t: &whisk::Transcript) -> Vec<(String, f64, f64)> {
    t.segments
        .iter()
        .flat_map(|s| s.words.iter().flatten())
        .map(|w| (w.word.trim().to_string(), w.start, w.end))
        .collect()
}

#[test]
fn clip_timestamps_transcribe_only_the_clips() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let with_clips = |clips: Vec<f64>| {
        let options = TranscribeOptions {
            word_timestamps: true,
            clip_timestamps: clips,
            ..Default::default()
        };
        let t = model.transcribe(&audio, &options).unwrap();
        check_invariants(&t);
        t
    };
    let whole = timed_words(&with_clips(Vec::new()));
    // "And so my fellow Americans" ends by 3.3 s; "ask not ..." comes after 3.4 s.
    let head = timed_words(&with_clips(vec![0.0, 3.3]));
    assert!(!head.is_empty());
    assert!(head.iter().all(|w| w.2 <= 3.3 + 0.02), "{head:?}");
    assert_eq!(head[0].0, "And");
    assert!(head.len() < whole.len());

    // A lone start runs to the end of the file.
    let tail = timed_words(&with_clips(vec![7.0]));
    assert!(tail.iter().all(|w| w.1 >= 7.0), "{tail:?}");
    assert_eq!(tail.last().unwrap().0.trim_end_matches('.'), "country");
    assert!(tail.len() < whole.len());
    assert!(!tail.iter().any(|w| w.0.starts_with("Americans")));

    // Batched mode cuts each clip into windows of its own and hears only the clips. (Its
    // first clip reads "And so my fellow Americans." where the sequential loop, whose mel is
    // the whole file's, reads "And so am I fellow Americans.".) Packed, both clips share one
    // window, 2 s apart ("Americans," then), and each keeps its words.
    for pack_short_inputs in [false, true] {
        let batched = TranscribeOptions {
            word_timestamps: true,
            clip_timestamps: vec![0.0, 3.3, 7.0],
            batch_size: 4,
            pack_short_inputs,
            ..Default::default()
        };
        let t = model.transcribe(&audio, &batched).unwrap();
        check_invariants(&t);
        let both = timed_words(&t);
        assert!(
            both.iter().all(|w| w.2 <= 3.3 + 0.02 || w.1 >= 7.0),
            "{both:?}"
        );
        let texts = |w: &[(String, f64, f64)]| w.iter().map(|w| w.0.clone()).collect::<Vec<_>>();
        let (first, second): (Vec<_>, Vec<_>) = both.into_iter().partition(|w| w.1 < 7.0);
        assert_eq!(first[0].0, "And");
        let last = &first.last().unwrap().0;
        if pack_short_inputs {
            assert!(last.starts_with("Americans"), "{first:?}");
            assert_eq!(second[0].0, tail[0].0, "{second:?}");
            assert_eq!(second.last().unwrap().0.trim_end_matches('.'), "country");
        } else {
            assert_eq!(last, "Americans.");
            assert_eq!(texts(&second), texts(&tail));
        }
    }

    let invalid = TranscribeOptions {
        clip_timestamps: vec![-1.0],
        ..Default::default()
    };
    let err = model.transcribe(&audio, &invalid).unwrap_err().to_string();
    assert!(err.contains("clip timestamp"), "{err}");
}

/// Packed files keep their last words. Four TIMIT files share a window, 2 s of digital
/// silence apart; the decoder ends the third's segment ("... and stunk his eyes.") where the
/// fourth's speech begins, and "eyes.", free to go a margin past that, was timed on the
/// fourth's first word and handed to it.
#[test]
fn a_packed_file_keeps_its_last_word() {
    let model = Model::builder(model_dir("tiny.en"))
        .compute_type(ComputeType::Float32)
        .build()
        .unwrap();
    let names = ["si1955", "si695", "sx155", "sx245"];
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| shared_data(&format!("timit_nltk_sample/audio/dr4-falr0_{n}.flac")))
        .collect();
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let options = TranscribeOptions {
        word_timestamps: true,
        batch_size: 8,
        decode: DecodeOptions {
            beam_size: Some(5),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = model
        .transcribe_files(&paths, &options, &mut |_| {})
        .unwrap();
    t.iter().for_each(check_invariants);
    assert!(t[2].text.trim_end().ends_with(" eyes."), "{}", t[2].text);
    assert!(t[3].text.trim_start().starts_with("Does"), "{}", t[3].text);
    let eyes = timed_words(&t[2]).pop().unwrap();
    // Labelled at 2.53-2.89 s of the file.
    assert!(eyes.1 > 2.3 && eyes.2 < 3.02, "{eyes:?}");
}

#[test]
fn hallucination_screening_keeps_clean_speech() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let plain = TranscribeOptions {
        word_timestamps: true,
        ..Default::default()
    };
    let screened = TranscribeOptions {
        hallucination_silence_threshold: Some(2.0),
        ..plain.clone()
    };
    for batch_size in [1, 4] {
        let a = model
            .transcribe(
                &audio,
                &TranscribeOptions {
                    batch_size,
                    ..plain.clone()
                },
            )
            .unwrap();
        let b = model
            .transcribe(
                &audio,
                &TranscribeOptions {
                    batch_size,
                    ..screened.clone()
                },
            )
            .unwrap();
        check_invariants(&b);
        assert_eq!(a.text, b.text, "batch size {batch_size}");
    }
}

/// Speech, 12 s of silence, laughter, 12 s of silence: with a beam of 5, tiny.en writes
/// "Thank you very much." into the last silence (faster-whisper hallucinates on this
/// laughter too). The screening drops the improbable text between silences and keeps the
/// speech.
#[test]
fn hallucination_screening_drops_text_between_silences() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let jfk = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let laugh = whisk::load_audio(&shared_data(
        "whisper_timestamped_clips/audio16k/laugh1.flac",
    ))
    .unwrap();
    let silence = vec![0.0f32; 16_000 * 12];
    let audio: Vec<f32> = [&jfk[..], &silence, &laugh, &silence].concat();
    let laugh_start = (jfk.len() + silence.len()) as f64 / 16_000.0;
    let plain = TranscribeOptions {
        word_timestamps: true,
        decode: whisk::DecodeOptions {
            beam_size: Some(5),
            ..Default::default()
        },
        ..Default::default()
    };
    let screened = TranscribeOptions {
        hallucination_silence_threshold: Some(2.0),
        ..plain.clone()
    };
    // Sequential (openai's loop, which seeks past the silence) and batched (fixed windows; a
    // suspect segment between silences is dropped). Batched, tiny.en writes nothing on this
    // laughter to begin with (its windows are cut differently), so there the test only shows
    // that the screening keeps the speech; the dropping itself is unit-tested in
    // `whisk-pipeline`'s `hallucination` module.
    for batch_size in [1, 4] {
        let plain = TranscribeOptions {
            batch_size,
            ..plain.clone()
        };
        let screened = TranscribeOptions {
            batch_size,
            ..screened.clone()
        };
        let a = timed_words(&model.transcribe(&audio, &plain).unwrap());
        let t = model.transcribe(&audio, &screened).unwrap();
        check_invariants(&t);
        let b = timed_words(&t);
        let after =
            |w: &[(String, f64, f64)]| w.iter().filter(|w| w.1 >= laugh_start - 1.0).count();
        if batch_size == 1 {
            assert!(after(&a) > 0, "no text on the laughter to screen: {a:?}");
        }
        assert_eq!(after(&b), 0, "batch size {batch_size}: {b:?}");
        assert!(b.iter().any(|w| w.0.starts_with("country")));
    }
}

/// Clips without speech (whisper_timestamped's hallucination tests): faster-whisper 1.2.1
/// writes nothing on them with tiny.en, greedy or beam 5, and neither may whisk.
#[test]
fn no_text_on_clips_without_speech() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    for file in ["empty.flac", "empty_mp3.flac"] {
        let audio = whisk::load_audio(&shared_data(&format!(
            "whisper_timestamped_clips/audio16k/{file}"
        )))
        .unwrap();
        for beam in [1, 5] {
            let options = TranscribeOptions {
                decode: whisk::DecodeOptions {
                    beam_size: Some(beam),
                    ..Default::default()
                },
                word_timestamps: true,
                ..Default::default()
            };
            let t = model.transcribe(&audio, &options).unwrap();
            assert_eq!(t.text.trim(), "", "{file}, beam {beam}");
            assert!(t.segments.is_empty(), "{file}, beam {beam}");
        }
    }
}
