//! One encoder window and one decoder step of tiny.en on the CPU in each compute type
//! (float32, int8, bfloat16), on jfk's mel. Compare the types in one run: the ratios are what
//! each type buys. `cargo xtask bench --cases encoder` times faster-whisper's int8 encoder on
//! the same mel beside these.

use criterion::{criterion_group, criterion_main, Criterion};
use whisk::{Backend, ComputeType, WhisperWeights};
use whisk_backend::{DecodeStep, MelBatch, RowStep};
use whisk_benches::{model_dir, shared_data};
use whisk_candle::{CandleBackend, CandleDevice};

/// A beam of 5 hypotheses after 24 tokens, fed one token each: a typical step of the CLI's
/// default beam search.
const BEAM: usize = 5;
const CONTEXT: usize = 24;

fn benches(c: &mut Criterion) {
    // As the CLI runs.
    whisk::keep_freed_memory_for_reuse();
    let weights =
        WhisperWeights::from_dir(&model_dir("tiny.en")).expect("run `cargo xtask fetch-models`");
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac"))
        .expect("shared data beside the checkout");
    let n_mels = weights.dims.n_mels;
    let window = whisk::log_mel_spectrogram(&audio, n_mels, 0).window(0, 3000);
    let mel = MelBatch {
        data: &window,
        windows: 1,
        n_mels,
        frames: 3000,
    };
    let heads: Vec<(usize, usize)> = weights.alignment_heads.clone().unwrap_or_default();

    let mut encoder = c.benchmark_group("cpu/encoder_window");
    encoder.sample_size(10);
    let mut decoder_inputs = Vec::new();
    for compute in [
        ComputeType::Float32,
        ComputeType::Int8,
        ComputeType::BFloat16,
    ] {
        let backend = CandleBackend::new(&weights, CandleDevice::Cpu, compute).unwrap();
        encoder.bench_function(compute.name(), |b| b.iter(|| backend.encode(mel).unwrap()));
        decoder_inputs.push((compute, backend));
    }
    encoder.finish();

    let mut step = c.benchmark_group("cpu/decoder_step_beam5");
    for (compute, backend) in &decoder_inputs {
        let encoded = backend.encode(mel).unwrap();
        let mut decoder = backend.start_decoder(&encoded, &[0; BEAM]).unwrap();
        // The hypotheses share their window, as a beam search forks them from its first slot.
        let forks: Vec<(usize, usize)> = (1..BEAM).map(|slot| (0, slot)).collect();
        backend.copy_slots(&mut decoder, &forks).unwrap();
        let prompt: Vec<u32> = (0..CONTEXT as u32).map(|i| 50_257 + i % 4).collect();
        let rows: Vec<RowStep> = (0..BEAM)
            .map(|slot| RowStep {
                slot,
                position: 0,
                tokens: &prompt,
                logits_at: &[],
            })
            .collect();
        backend
            .decode_step(
                &mut decoder,
                DecodeStep {
                    rows: &rows,
                    cross_qk_heads: &[],
                    keep_cache: true,
                },
            )
            .unwrap();
        let next = [440u32];
        let rows: Vec<RowStep> = (0..BEAM)
            .map(|slot| RowStep {
                slot,
                position: CONTEXT,
                tokens: &next,
                logits_at: &[0],
            })
            .collect();
        step.bench_function(compute.name(), |b| {
            b.iter(|| {
                // The same position every time: the step overwrites its own cache entry.
                backend
                    .decode_step(
                        &mut decoder,
                        DecodeStep {
                            rows: &rows,
                            cross_qk_heads: &heads,
                            keep_cache: true,
                        },
                    )
                    .unwrap()
            })
        });
    }
    step.finish();
}

criterion_group!(compute, benches);
criterion_main!(compute);
