//! Word error rate on the 160 TIMIT utterances, against faster-whisper on the same weights:
//! greedy against its greedy outputs, beam search (on every other utterance) against its
//! beam-5 outputs; and packed into shared windows against each file decoded alone.

use std::path::{Path, PathBuf};

use whisk::{DecodeOptions, Model, TranscribeOptions};
use whisk_eval::{normalize_english, WerTotals};
use whisk_tests::{check_invariants, model_dir, shared_data, shared_reference};

/// (utterance id, normalised reference text) of the TIMIT sample.
fn utterances() -> Vec<(String, String)> {
    let transcript =
        std::fs::read_to_string(shared_data("timit_nltk_sample/transcript.tsv")).unwrap();
    transcript
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            (fields[0].to_string(), normalize_english(fields[2]))
        })
        .collect()
}

/// whisk's normalised text for each utterance, decoded alone with `beam_size`.
fn whisk_texts(model: &Model, utts: &[(String, String)], beam_size: usize) -> Vec<String> {
    let options = TranscribeOptions {
        decode: DecodeOptions {
            beam_size: Some(beam_size),
            ..Default::default()
        },
        ..Default::default()
    };
    utts.iter()
        .map(|(id, _)| {
            let audio = shared_data(&format!("timit_nltk_sample/audio/{id}.flac"));
            normalize_english(&model.transcribe_file(&audio, &options).unwrap().text)
        })
        .collect()
}

fn wer_of(utts: &[(String, String)], texts: &[String]) -> f64 {
    let mut totals = WerTotals::default();
    for ((_, reference), text) in utts.iter().zip(texts) {
        totals.add(reference, text);
    }
    totals.wer()
}

fn reference_wer(utts: &[(String, String)], setting: &str) -> WerTotals {
    let mut totals = WerTotals::default();
    for (id, text) in utts {
        let path = shared_reference(&format!("tiny.en/{setting}/timit/{id}.json"));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        totals.add(text, &normalize_english(json["text"].as_str().unwrap()));
    }
    totals
}

#[test]
fn timit_wer_within_one_point_of_faster_whisper() {
    let utts = utterances();
    assert_eq!(utts.len(), 160);
    let model = Model::builder(model_dir("tiny.en"))
        .time_backend(true)
        .build()
        .unwrap();
    let greedy_texts = whisk_texts(&model, &utts, 1);
    let greedy = wer_of(&utts, &greedy_texts);
    packed_files_lose_nothing(&model, &utts, greedy);
    let fw_greedy = reference_wer(&utts, "fw-float32-beam1").wer();
    // Beam search on every other utterance (80): CI's minutes are counted, and a beam-5 pass
    // costs about twice a greedy one. Greedy and faster-whisper are compared on the same 80.
    let half: Vec<(String, String)> = utts.iter().step_by(2).cloned().collect();
    let greedy_half: Vec<String> = greedy_texts.iter().step_by(2).cloned().collect();
    let greedy_on_half = wer_of(&half, &greedy_half);
    let beam = wer_of(&half, &whisk_texts(&model, &half, 5));
    let fw_beam = reference_wer(&half, "fw-float32-beam5").wer();
    println!(
        "TIMIT WER: whisk greedy {:.2}%, faster-whisper greedy {:.2}%; on every other file, \
         whisk greedy {:.2}%, beam 5 {:.2}%, faster-whisper beam 5 {:.2}%",
        100.0 * greedy,
        100.0 * fw_greedy,
        100.0 * greedy_on_half,
        100.0 * beam,
        100.0 * fw_beam
    );
    assert!(
        greedy <= fw_greedy + 0.01,
        "greedy WER {:.2}% is more than 1 point above faster-whisper's {:.2}%",
        100.0 * greedy,
        100.0 * fw_greedy
    );
    assert!(
        beam <= fw_beam + 0.01,
        "beam-5 WER {:.2}% is more than 1 point above faster-whisper's {:.2}%",
        100.0 * beam,
        100.0 * fw_beam
    );
    assert!(
        beam <= greedy_on_half,
        "beam-5 WER {:.2}% is worse than greedy {:.2}% on the same files",
        100.0 * beam,
        100.0 * greedy_on_half
    );
}

/// The 160 files packed into shared windows (batched, greedy, words on): WER at most 0.3
/// points above each file decoded alone (`alone_wer`, greedy), every word inside its own
/// file, and under a third of the encoder passes.
fn packed_files_lose_nothing(model: &Model, utts: &[(String, String)], alone_wer: f64) {
    let paths: Vec<PathBuf> = utts
        .iter()
        .map(|(id, _)| shared_data(&format!("timit_nltk_sample/audio/{id}.flac")))
        .collect();
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let options = TranscribeOptions {
        batch_size: 8,
        word_timestamps: true,
        ..Default::default()
    };
    assert!(options.pack_short_inputs, "packing is on by default");
    let encoded = || model.backend_times().unwrap().windows_encoded;
    let before = encoded();
    let packed = model
        .transcribe_files(&paths, &options, &mut |_| {})
        .unwrap();
    let windows = encoded() - before;
    let mut totals = WerTotals::default();
    for ((t, path), (id, text)) in packed.iter().zip(&paths).zip(utts) {
        check_invariants(t);
        totals.add(text, &normalize_english(&t.text));
        let seconds = whisk::probe_audio(path).unwrap().unwrap();
        for w in t.segments.iter().flat_map(|s| s.words.iter().flatten()) {
            assert!(
                w.start >= 0.0 && w.end <= seconds + 1e-6,
                "{id}: {w:?} outside its file (0-{seconds} s)"
            );
        }
    }
    let wer = totals.wer();
    println!(
        "packed: WER {:.2}% (alone {:.2}%), {windows} windows for {} files",
        100.0 * wer,
        100.0 * alone_wer,
        utts.len()
    );
    assert!(
        wer <= alone_wer + 0.003,
        "packed WER {:.2}% is more than 0.3 points above {:.2}% alone",
        100.0 * wer,
        100.0 * alone_wer
    );
    assert!(3 * windows < utts.len(), "{windows} windows: little packed");
}
