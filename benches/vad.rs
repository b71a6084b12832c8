//! Silero VAD's speech probabilities over one minute of speech (jfk, repeated), the cost a
//! `--vad true` run adds per minute of audio before any window is decoded.

use criterion::{criterion_group, criterion_main, Criterion};
use whisk_benches::{model_dir, shared_data};
use whisk_vad::SileroVad;

fn benches(c: &mut Criterion) {
    let vad = SileroVad::from_file(&model_dir("silero-vad-v6").join("silero_vad_v6.onnx"))
        .expect("run `cargo xtask fetch-models`");
    let jfk = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac"))
        .expect("shared data beside the checkout");
    let minute: Vec<f32> = jfk.iter().copied().cycle().take(60 * 16_000).collect();
    let mut group = c.benchmark_group("vad");
    group.sample_size(10);
    group.bench_function("silero_one_minute", |b| {
        b.iter(|| vad.speech_probabilities(&minute))
    });
    group.finish();
}

criterion_group!(vad, benches);
criterion_main!(vad);
