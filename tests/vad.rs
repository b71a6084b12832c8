//! whisk-vad against faster-whisper 1.2.1's Silero VAD run through onnxruntime
//! (`tests/data/vad_reference.json`, made by `tests/data/make_vad_reference.py`): the same
//! speech probability for every frame within 1e-4, and the same segments to the sample.

use std::time::Instant;

use serde_json::Value;
use whisk_tests::{root, shared_data};
use whisk_vad::{speech_segments, SileroVad, SpeechSegment, VadError, VadOptions};

fn reference() -> Value {
    let path = root().join("tests/data/vad_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn vad() -> SileroVad {
    let path = root().join("target/models/silero-vad-v6/silero_vad_v6.onnx");
    assert!(
        path.is_file(),
        "run `cargo xtask fetch-models` for {}",
        path.display()
    );
    SileroVad::from_file(&path).unwrap()
}

fn options(set: &Value) -> VadOptions {
    let mut o = VadOptions::default();
    for (key, value) in set.as_object().unwrap() {
        let x = value.as_f64().unwrap();
        match key.as_str() {
            "threshold" => o.threshold = x,
            "neg_threshold" => o.neg_threshold = Some(x),
            "min_speech_duration_ms" => o.min_speech_duration_ms = x as u32,
            "max_speech_duration_s" => o.max_speech_duration_s = x,
            "min_silence_duration_ms" => o.min_silence_duration_ms = x as u32,
            "speech_pad_ms" => o.speech_pad_ms = x as u32,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn probabilities(entry: &Value) -> Vec<f32> {
    entry["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as f32)
        .collect()
}

/// The reference's inputs, rebuilt from the same files.
fn input(name: &str, reference: &Value) -> Vec<f32> {
    let load = |rel: &str| whisk::load_audio(&shared_data(rel)).unwrap();
    match name {
        "jfk" => load("whisper_test_clips/audio16k/jfk.flac"),
        "long" => {
            let gap = vec![0.0; (reference["gap_seconds"].as_f64().unwrap() * 16e3) as usize];
            let mut out = Vec::new();
            for (i, part) in reference["long_parts"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
            {
                if i > 0 {
                    out.extend_from_slice(&gap);
                }
                out.extend(load(part.as_str().unwrap()));
            }
            out
        }
        "silence" => {
            vec![0.0; reference["inputs"]["silence"]["samples"].as_u64().unwrap() as usize]
        }
        other => panic!("unknown input {other}"),
    }
}

#[test]
fn segments_match_faster_whisper_to_the_sample() {
    let reference = reference();
    let mut compared = 0;
    for (name, entry) in reference["inputs"].as_object().unwrap() {
        let samples = entry["samples"].as_u64().unwrap() as usize;
        let probs = probabilities(entry);
        for (set, expected) in entry["timestamps"].as_object().unwrap() {
            let got = speech_segments(&probs, samples, &options(&reference["option_sets"][set]));
            let expected: Vec<SpeechSegment> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| SpeechSegment {
                    start: pair[0].as_u64().unwrap() as usize,
                    end: pair[1].as_u64().unwrap() as usize,
                })
                .collect();
            assert_eq!(got, expected, "{name}, options {set}");
            compared += 1;
        }
    }
    assert_eq!(compared, 15);
}

#[test]
fn probabilities_match_onnxruntime_within_1e_4() {
    let reference = reference();
    let vad = vad();
    for (name, entry) in reference["inputs"].as_object().unwrap() {
        let audio = input(name, &reference);
        assert_eq!(
            audio.len() as u64,
            entry["samples"].as_u64().unwrap(),
            "{name}"
        );
        let started = Instant::now();
        let ours = vad.speech_probabilities(&audio);
        let spent = started.elapsed();
        let theirs = probabilities(entry);
        assert_eq!(ours.len(), theirs.len(), "{name}");
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{name}: {} frames, worst difference {worst:.2e}, {:.1} ms for {:.1} s of audio",
            ours.len(),
            spent.as_secs_f64() * 1e3,
            audio.len() as f64 / 16e3
        );
        assert!(worst <= 1e-4, "{name}: worst difference {worst}");
    }
}

#[test]
fn a_missing_or_foreign_model_file_is_an_error_naming_it() {
    let missing = root().join("target/models/no-such-vad.onnx");
    let err = SileroVad::from_file(&missing).err().unwrap();
    assert!(matches!(err, VadError::Io { .. }));
    assert!(err.to_string().contains("no-such-vad.onnx"), "{err}");
    let flac = shared_data("whisper_test_clips/audio16k/jfk.flac");
    let err = SileroVad::from_file(&flac).err().unwrap();
    assert!(matches!(err, VadError::Format { .. }), "{err}");
    assert!(err.to_string().contains("jfk.flac"), "{err}");
    // A Whisper model is ONNX-shaped nowhere: also refused, not misread.
    let not_vad = root().join("target/models/tiny.en/config.json");
    assert!(SileroVad::from_file(&not_vad).is_err());
}

fn model() -> whisk::Model {
    whisk::Model::builder(whisk_tests::model_dir("tiny.en"))
        .vad_model(root().join("target/models/silero-vad-v6/silero_vad_v6.onnx"))
        .build()
        .unwrap()
}

fn with_vad(batch_size: usize) -> whisk::TranscribeOptions {
    whisk::TranscribeOptions {
        word_timestamps: true,
        batch_size,
        vad: Some(if batch_size > 1 {
            VadOptions::batched()
        } else {
            VadOptions::default()
        }),
        ..Default::default()
    }
}

/// Three TIMIT utterances with 3 s of digital silence before, between and after them, and
/// where each utterance lies (seconds).
fn spaced_utterances() -> (Vec<f32>, Vec<(f64, f64)>) {
    let gap = vec![0.0f32; 3 * 16_000];
    let mut audio = gap.clone();
    let mut spans = Vec::new();
    // Utterances tiny.en (and faster-whisper) transcribe word for word on their own.
    for name in ["dr1-mcpm0_sx114", "dr2-faem0_si1392", "dr2-faem0_sx312"] {
        let path = shared_data(&format!("timit_nltk_sample/audio/{name}.flac"));
        let utterance = whisk::load_audio(&path).unwrap();
        let start = audio.len() as f64 / 16e3;
        audio.extend(&utterance);
        spans.push((start, audio.len() as f64 / 16e3));
        audio.extend(&gap);
    }
    (audio, spans)
}

#[test]
fn silence_gives_an_empty_transcript_in_both_modes() {
    let model = model();
    let silence = vec![0.0f32; 40 * 16_000];
    for batch_size in [1, 8] {
        let t = model.transcribe(&silence, &with_vad(batch_size)).unwrap();
        assert!(t.segments.is_empty(), "batch {batch_size}: {:?}", t.text);
        assert_eq!(t.text, "");
    }
}

#[test]
fn speech_only_windows_keep_every_word_on_the_inputs_timeline() {
    let model = model();
    let (audio, spans) = spaced_utterances();
    // Speech segments are padded by 400 ms; nothing may come from the silence beyond.
    let heard = |t: f64| spans.iter().any(|&(a, b)| a - 0.4 <= t && t <= b + 0.4);
    for batch_size in [1, 8] {
        let t = model.transcribe(&audio, &with_vad(batch_size)).unwrap();
        whisk_tests::check_invariants(&t);
        let words: Vec<whisk::Word> = t
            .segments
            .iter()
            .flat_map(|s| s.words.clone().unwrap_or_default())
            .collect();
        assert!(words.len() >= 20, "batch {batch_size}: {}", t.text);
        for w in &words {
            assert!(
                heard(w.start) && heard(w.end),
                "batch {batch_size}: {w:?} lies in audio VAD cut away ({spans:?})"
            );
        }
        // Every utterance is transcribed: each has words inside it.
        for &(a, b) in &spans {
            assert!(
                words
                    .iter()
                    .filter(|w| a - 0.4 <= w.start && w.end <= b + 0.4)
                    .count()
                    >= 5,
                "batch {batch_size}: utterance {a:.1}-{b:.1} s lost: {}",
                t.text
            );
        }
    }
}

#[test]
fn a_file_without_speech_among_others_is_empty_and_the_others_are_whole() {
    let model = model();
    // Two different speakers: the same audio twice in one window would draw each copy's
    // attention to the other.
    let jfk = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let timit = whisk::load_audio(&shared_data(
        "timit_nltk_sample/audio/dr2-faem0_si1392.flac",
    ))
    .unwrap();
    let silence = vec![0.0f32; 10 * 16_000];
    let plain = |audio: &[f32]| {
        let options = whisk::TranscribeOptions {
            batch_size: 8,
            ..Default::default()
        };
        model.transcribe(audio, &options).unwrap().text
    };
    // Packed: the two speakers share one window; the silent file adds nothing to it.
    let all = model
        .transcribe_many(&[&jfk, &silence, &timit], &with_vad(8), &mut |_| {})
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[1].segments.is_empty(), "{:?}", all[1].text);
    // Whole: the same words (the punctuation may follow the neighbour's context).
    let words = |text: &str| whisk_eval::normalize_english(text);
    assert_eq!(words(&all[0].text), words(&plain(&jfk)));
    assert_eq!(words(&all[2].text), words(&plain(&timit)));
}
