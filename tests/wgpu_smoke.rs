//! Burn on wgpu, smoke-tested: on machines without a GPU it runs on Mesa's software Vulkan
//! driver (lavapipe), far too slowly for the whole suite, so these check that the wgpu path
//! computes the same model as candle on one short file. Needs `--features wgpu` and an
//! adapter; set `WHISK_TEST_WGPU=1` to run them (CI does, after installing Mesa).

use whisk::{BackendKind, DecodeOptions, Device, Model, TranscribeOptions};
use whisk_tests::{assert_same_transcript, check_invariants, model_dir, shared_data};

fn enabled() -> bool {
    let on = std::env::var("WHISK_TEST_WGPU").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("wgpu smoke tests skipped: set WHISK_TEST_WGPU=1 where a wgpu adapter exists");
    }
    on
}

#[test]
fn jfk_on_wgpu_matches_candle() {
    if !enabled() {
        return;
    }
    let load = |kind, device| {
        Model::builder(model_dir("tiny.en"))
            .backend(kind)
            .device(device)
            .build()
            .unwrap()
    };
    let wgpu = load(BackendKind::Burn, Device::Wgpu);
    let candle = load(BackendKind::Candle, Device::Cpu);
    assert_eq!(wgpu.device_name(), "burn wgpu");
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    for beam_size in [None, Some(2)] {
        let options = TranscribeOptions {
            word_timestamps: true,
            batch_size: 2,
            decode: DecodeOptions {
                beam_size,
                ..Default::default()
            },
            ..Default::default()
        };
        let a = candle.transcribe(&audio, &options).unwrap();
        let b = wgpu.transcribe(&audio, &options).unwrap();
        check_invariants(&b);
        assert_same_transcript(&a, &b, &format!("beam {beam_size:?}"));
    }
}
