//! Word error rate on the 160 TIMIT utterances, against faster-whisper on the same weights.

use whisk::{Model, TranscribeOptions};
use whisk_eval::{normalize_english, WerTotals};
use whisk_tests::{model_dir, shared_data, shared_reference};

#[test]
fn timit_wer_within_one_point_of_faster_whisper() {
    let transcript =
        std::fs::read_to_string(shared_data("timit_nltk_sample/transcript.tsv")).unwrap();
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let options = TranscribeOptions::default();
    let (mut ours, mut theirs) = (WerTotals::default(), WerTotals::default());
    let mut utterances = 0;
    for line in transcript.lines().skip(1) {
        let fields: Vec<&str> = line.splitn(3, '\t').collect();
        let (id, text) = (fields[0], normalize_english(fields[2]));
        let audio = shared_data(&format!("timit_nltk_sample/audio/{id}.flac"));
        ours.add(
            &text,
            &normalize_english(&model.transcribe_file(&audio, &options).unwrap().text),
        );
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(shared_reference(&format!(
                "tiny.en/fw-float32-beam1/timit/{id}.json"
            )))
            .unwrap(),
        )
        .unwrap();
        theirs.add(
            &text,
            &normalize_english(reference["text"].as_str().unwrap()),
        );
        utterances += 1;
    }
    assert_eq!(utterances, 160);
    println!(
        "TIMIT WER: whisk {:.2}%, faster-whisper {:.2}%",
        100.0 * ours.wer(),
        100.0 * theirs.wer()
    );
    assert!(
        ours.wer() <= theirs.wer() + 0.01,
        "whisk WER {:.2}% is more than 1 point above faster-whisper's {:.2}%",
        100.0 * ours.wer(),
        100.0 * theirs.wer()
    );
}
