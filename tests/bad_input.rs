//! Bad input gives one clear error that names the file, never a panic.

use std::path::{Path, PathBuf};

use whisk::{Error, Model};
use whisk_tests::{model_dir, shared_data};

/// A fresh scratch directory under the target dir.
fn scratch(name: &str) -> PathBuf {
    let dir = whisk_tests::root()
        .join("target")
        .join("test-scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn audio_error(path: &Path) -> String {
    let err = whisk::load_audio(path).expect_err("bad audio must not load");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
    msg
}

#[test]
fn empty_file() {
    let path = scratch("empty").join("empty.wav");
    std::fs::write(&path, b"").unwrap();
    audio_error(&path);
}

#[test]
fn non_audio_bytes() {
    let path = scratch("text").join("notes.mp3");
    std::fs::write(&path, "this is not audio at all\n".repeat(100)).unwrap();
    let msg = audio_error(&path);
    assert!(msg.contains("not a supported audio file"), "{msg}");
}

#[test]
fn a_truncated_flac_is_read_up_to_the_cut_with_a_warning() {
    let full = std::fs::read(shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let path = scratch("truncated").join("jfk-half.flac");
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let (samples, damage) = whisk::load_audio_with_damage(&path).unwrap();
    let damage = damage.expect("a cut file is damaged");
    let seconds = samples.len() as f64 / 16_000.0;
    assert!((3.0..9.0).contains(&seconds), "{seconds} s of 11 s decoded");
    assert!((damage.seconds - seconds).abs() < 0.1, "{damage}");
    let warning = damage.to_string();
    assert!(
        warning.contains("jfk-half.flac") && warning.contains("stopped at"),
        "{warning}"
    );

    // Transcribed up to there, in both modes, with the warning on the transcript.
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    for batch_size in [1, 8] {
        let options = whisk::TranscribeOptions {
            batch_size,
            ..Default::default()
        };
        let t = model.transcribe_file(&path, &options).unwrap();
        assert!(
            t.text.contains("fellow Americans"),
            "batch {batch_size}: {}",
            t.text
        );
        assert!(
            !t.text.contains("your country."),
            "batch {batch_size}: {}",
            t.text
        );
        assert_eq!(
            t.warnings,
            std::slice::from_ref(&warning),
            "batch {batch_size}"
        );
    }
}

/// Audio held in memory (an upload, Python's bytes) decodes as the same file on disk does,
/// and its damage and errors carry the name it was given.
#[test]
fn audio_in_memory_reads_as_the_file_does_and_errors_name_it() {
    let path = shared_data("whisper_test_clips/audio16k/jfk.flac");
    let full = std::fs::read(&path).unwrap();
    let name = Path::new("upload.flac");
    let (from_memory, damage) = whisk::load_audio_bytes_with_damage(name, full.clone()).unwrap();
    assert_eq!(from_memory, whisk::load_audio(&path).unwrap());
    assert!(damage.is_none());

    let half = full[..full.len() / 2].to_vec();
    let (cut, damage) = whisk::load_audio_bytes_with_damage(name, half).unwrap();
    assert!(cut.len() < from_memory.len() && !cut.is_empty());
    assert!(damage.expect("cut").to_string().contains("upload.flac"));

    let err = whisk::load_audio_bytes_with_damage(name, b"no audio here".repeat(50)).unwrap_err();
    assert!(err.to_string().contains("upload.flac"), "{err}");
}

#[test]
fn a_file_cut_before_any_audio_is_still_an_error() {
    let full = std::fs::read(shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let path = scratch("truncated-header").join("jfk-head.flac");
    // Past the header (STREAMINFO and the seek table), short of a whole audio frame.
    std::fs::write(&path, &full[..full.len().min(8_500)]).unwrap();
    audio_error(&path);
}

#[test]
fn missing_audio_file() {
    let path = scratch("missing").join("nothing-here.flac");
    let msg = audio_error(&path);
    assert!(msg.contains("cannot open"), "{msg}");
}

fn model_error(dir: &Path) -> String {
    match Model::builder(dir).build() {
        Ok(_) => panic!("model at {} must not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_model_dir() {
    let dir = scratch("no-model").join("does-not-exist");
    let msg = model_error(&dir);
    assert!(
        msg.contains("does not exist") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );
}

#[test]
fn directory_without_model_files() {
    let dir = scratch("empty-model");
    let msg = model_error(&dir);
    assert!(msg.contains("not a Whisper model directory"), "{msg}");
}

#[test]
fn garbage_model_bin() {
    let dir = scratch("garbage-model");
    std::fs::write(
        dir.join("model.bin"),
        b"\x07\x00\x00\x00definitely not a model",
    )
    .unwrap();
    let msg = model_error(&dir);
    assert!(msg.contains("model.bin"), "{msg}");
}

#[test]
fn truncated_model_bin() {
    let src = model_dir("tiny.en");
    let dir = scratch("truncated-model");
    let bytes = std::fs::read(src.join("model.bin")).unwrap();
    std::fs::write(dir.join("model.bin"), &bytes[..bytes.len() / 3]).unwrap();
    let msg = model_error(&dir);
    assert!(
        msg.contains("model.bin") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn model_without_tokenizer() {
    let src = model_dir("tiny.en");
    let dir = scratch("no-tokenizer");
    std::fs::copy(src.join("model.bin"), dir.join("model.bin")).unwrap();
    let err = Model::builder(&dir)
        .build()
        .err()
        .expect("no tokenizer, no model");
    assert!(matches!(err, Error::MissingTokenizer(_)));
    assert!(err.to_string().contains("tokenizer.json"));
}

#[test]
fn tokenizer_of_another_model() {
    // tiny.en's weights with the multilingual tokenizer: the vocabularies disagree.
    let dir = scratch("wrong-tokenizer");
    std::fs::copy(
        model_dir("tiny.en").join("model.bin"),
        dir.join("model.bin"),
    )
    .unwrap();
    std::fs::copy(
        model_dir("base").join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let msg = model_error(&dir);
    assert!(
        msg.contains("tokenizer.json") && msg.contains("does not fit"),
        "{msg}"
    );
}
