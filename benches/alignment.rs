//! The alignment kernels at a realistic size: 6 heads x 200 tokens x 1500 frames (a full
//! 30 s window of dense speech with tiny.en's head count).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use whisk_align::{alignment_matrix, dtw, median_filter, HeadScores};

const HEADS: usize = 6;
const TOKENS: usize = 200;
const FRAMES: usize = 1500;

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f32 / 1000.0 - 5.0
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let scores = HeadScores {
        heads: HEADS,
        rows: TOKENS,
        frames: FRAMES,
        data: pseudo_random(HEADS * TOKENS * FRAMES, 1),
    };
    c.bench_function("cpu/median_filter_w7_6x200x1500", |b| {
        b.iter_batched_ref(
            || scores.data.clone(),
            |data| {
                for row in data.chunks_mut(FRAMES) {
                    median_filter(row, 7);
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let cost = pseudo_random(TOKENS * FRAMES, 2);
    c.bench_function("cpu/dtw_200x1500", |b| {
        b.iter(|| dtw(black_box(&cost), TOKENS, FRAMES))
    });
    c.bench_function("cpu/alignment_matrix_6x200x1500", |b| {
        b.iter(|| alignment_matrix(black_box(&scores), FRAMES, 1.0, 7))
    });
}

criterion_group! {
    name = alignment;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(alignment);
