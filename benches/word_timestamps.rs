//! What word timestamps add to a transcription: the same TIMIT utterance and jfk transcribed
//! without words, with single-pass words and with refeed words (tiny.en, Candle CPU).
//! Compare the three in one run; the ratio is the cost.

use criterion::{criterion_group, criterion_main, Criterion};
use whisk::{Model, TranscribeOptions, WordAlignment};
use whisk_benches::{model_dir, shared_data};

fn benches(c: &mut Criterion) {
    let model = Model::builder(model_dir("tiny.en"))
        .build()
        .expect("run `cargo xtask fetch-models` first");
    for (name, rel) in [
        ("jfk", "whisper_test_clips/audio16k/jfk.flac"),
        (
            "timit_si1466",
            "timit_nltk_sample/audio/dr1-fvmh0_si1466.flac",
        ),
    ] {
        let audio = whisk::load_audio(&shared_data(rel)).expect("shared data beside the checkout");
        let mut group = c.benchmark_group(format!("cpu/transcribe_{name}"));
        group.sample_size(10);
        for (label, words, mode) in [
            ("no_words", false, WordAlignment::Refeed),
            ("single_pass", true, WordAlignment::SinglePass),
            ("refeed", true, WordAlignment::Refeed),
            ("chars", true, WordAlignment::Chars),
        ] {
            let options = TranscribeOptions {
                word_timestamps: words,
                word_alignment: mode,
                ..Default::default()
            };
            group.bench_function(label, |b| {
                b.iter(|| model.transcribe(&audio, &options).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(word_timestamps, benches);
criterion_main!(word_timestamps);
