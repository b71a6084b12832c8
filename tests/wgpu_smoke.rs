//! Burn on wgpu, smoke-tested: on machines without a GPU it runs on Mesa's software Vulkan
//! driver (lavapipe), far too slowly for the whole suite, so these check that the wgpu path
//! computes the same model as candle on one short file. Needs `--features wgpu` and an
//! adapter; set `WHISK_TEST_WGPU=1` to run them (CI does, after installing Mesa). The
//! missing-adapter check needs no adapter and always runs.

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

/// With no graphics driver in reach, asking for wgpu is an error that says what is missing,
/// not a panic. The test runs itself again in a child process that sees no Vulkan driver and
/// no EGL vendor (for OpenGL), since the loaders read their lists from the environment.
#[test]
fn without_an_adapter_wgpu_is_a_clear_error() {
    if std::env::var_os("WHISK_TEST_NO_ADAPTER_CHILD").is_some() {
        let built = Model::builder(model_dir("tiny.en"))
            .backend(BackendKind::Burn)
            .device(Device::Wgpu)
            .build();
        match built {
            Err(e) => {
                assert!(e.to_string().contains("no wgpu adapter found"), "{e}");
                eprintln!("error as expected: {e}");
            }
            Ok(model) => panic!("an adapter is still in reach: {}", model.device_name()),
        }
        return;
    }
    let missing = "/nonexistent/whisk-no-driver.json";
    expect_error_in_child(
        "without_an_adapter_wgpu_is_a_clear_error",
        &[
            ("WHISK_TEST_NO_ADAPTER_CHILD", "1"),
            ("VK_ICD_FILENAMES", missing),
            ("VK_DRIVER_FILES", missing),
            ("__EGL_VENDOR_LIBRARY_FILENAMES", missing),
        ],
    );
}

/// Runs the test `name` again in a child process with `env` set, and checks that the child
/// passed after printing "error as expected".
fn expect_error_in_child(name: &str, env: &[(&str, &str)]) {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "child failed:\n{stderr}");
    assert!(stderr.contains("error as expected"), "{stderr}");
}

/// A decoder too large for the device's buffers (4096 slots: a 2.8 GB self-attention cache
/// per layer) is an error that says what failed, not a panic or an abort. It runs in a child
/// process so the failed allocation cannot disturb the other tests sharing the device.
#[test]
fn a_decoder_too_large_for_the_device_is_an_error() {
    if !enabled() {
        return;
    }
    if std::env::var_os("WHISK_TEST_TOO_LARGE_CHILD").is_some() {
        let message = decode_with_too_many_slots().unwrap_err().to_string();
        assert!(message.contains("can't allocate buffer"), "{message}");
        eprintln!("error as expected");
        return;
    }
    expect_error_in_child(
        "a_decoder_too_large_for_the_device_is_an_error",
        &[("WHISK_TEST_TOO_LARGE_CHILD", "1")],
    );
}

fn decode_with_too_many_slots() -> whisk_backend::Result<whisk_backend::StepOutput> {
    use whisk_backend::{Backend, DecodeStep, MelBatch, RowStep};
    let weights = whisk_weights::WhisperWeights::from_dir(&model_dir("tiny.en")).unwrap();
    let backend = whisk_burn::BurnBackend::new(&weights, whisk_burn::BurnDevice::Wgpu)?;
    let dims = backend.dims().clone();
    let mel = vec![0.0f32; dims.n_mels * 2 * dims.n_audio_ctx];
    let encoded = backend.encode(MelBatch {
        data: &mel,
        windows: 1,
        n_mels: dims.n_mels,
        frames: 2 * dims.n_audio_ctx,
    })?;
    let mut decoder = backend.new_decoder(4096)?;
    backend.attach(&mut decoder, &[0], &encoded, &[0])?;
    let tokens = [50257u32];
    let step = DecodeStep {
        rows: &[RowStep {
            slot: 0,
            position: 0,
            tokens: &tokens,
            logits_at: &[0],
        }],
        cross_qk_heads: &[],
        keep_cache: true,
    };
    backend.decode_step(&mut decoder, step)
}
