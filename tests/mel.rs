//! The log-mel spectrogram against openai-whisper's (`tests/data/gen_mel_reference.py`).

use whisk_tests::{root, shared_data};

#[test]
fn jfk_mel_matches_openai_within_1e_3() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/jfk_mel_reference.json")).unwrap(),
    )
    .unwrap();
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let mel = whisk::log_mel_spectrogram(&audio, 80, 0);
    assert_eq!(mel.frames as u64, reference["frames"].as_u64().unwrap());
    let stride = reference["frame_stride"].as_u64().unwrap() as usize;
    let mut max_diff = 0.0f64;
    let mut compared = 0;
    for (i, column) in reference["values"].as_array().unwrap().iter().enumerate() {
        let frame = i * stride;
        for (m, v) in column.as_array().unwrap().iter().enumerate() {
            let ours = mel.data[m * mel.frames + frame] as f64;
            max_diff = max_diff.max((ours - v.as_f64().unwrap()).abs());
            compared += 1;
        }
    }
    assert!(compared > 4000);
    assert!(max_diff <= 1e-3, "max |diff| = {max_diff}");
}
