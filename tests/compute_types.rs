//! Half-precision compute, the type GPUs run in, checked on the CPU where candle supports it,
//! and int8 linear layers: jfk keeps its text and word times, and a backend that cannot compute
//! in a type says so.

use whisk::{ComputeType, Model, TranscribeOptions, Transcript};
use whisk_tests::{check_invariants, model_dir, shared_data};

fn jfk(compute: ComputeType) -> Transcript {
    let model = Model::builder(model_dir("tiny.en"))
        .compute_type(compute)
        .build()
        .unwrap();
    let options = TranscribeOptions {
        word_timestamps: true,
        ..Default::default()
    };
    model
        .transcribe_file(
            &shared_data("whisper_test_clips/audio16k/jfk.flac"),
            &options,
        )
        .unwrap()
}

#[test]
fn half_precision_and_int8_keep_the_text_and_the_word_times() {
    let reference = jfk(ComputeType::Float32);
    let words = |t: &Transcript| -> Vec<whisk::Word> {
        t.segments
            .iter()
            .flat_map(|s| s.words.clone().unwrap_or_default())
            .collect()
    };
    for compute in [
        ComputeType::Float16,
        ComputeType::BFloat16,
        ComputeType::Int8,
        ComputeType::Auto,
    ] {
        let t = jfk(compute);
        check_invariants(&t);
        assert_eq!(t.text, reference.text, "{compute}");
        let (ours, theirs) = (words(&t), words(&reference));
        assert_eq!(ours.len(), theirs.len(), "{compute}");
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.word, b.word);
            // One encoder frame (20 ms): what the GPU check allows against the CPU. Times
            // are frames × 0.02, so a frame apart can read 0.0200000001.
            let frame = 0.02 + 1e-9;
            assert!(
                (a.start - b.start).abs() <= frame && (a.end - b.end).abs() <= frame,
                "{compute}: {a:?} against float32's {b:?}"
            );
        }
    }
}

#[cfg(feature = "burn-cpu")]
#[test]
fn burn_refuses_half_precision_with_a_clear_error() {
    let error = Model::builder(model_dir("tiny.en"))
        .backend(whisk::BackendKind::Burn)
        .compute_type(ComputeType::Float16)
        .build()
        .err()
        .expect("Burn computes in float32 only");
    assert!(error.to_string().contains("float32 only"), "{error}");
}
