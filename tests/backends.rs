//! The integration suite, written once and run on every backend compiled into this test
//! build: candle on the CPU always; Burn's `flex` CPU backend with `--features burn-cpu`.
//! `WHISK_TEST_DEVICES` adds devices to run it on as well (`cuda:0` with `--features cuda`,
//! `wgpu` with `--features wgpu`, `metal`): CI runs it on wgpu through software Vulkan
//! (`cargo xtask test` does wherever a Vulkan driver is installed), and on a machine with a GPU
//! it runs there. Each case names the backend it failed on. The two long cases take half
//! their files on those added devices: on lavapipe (software Vulkan, 2 cores) a TIMIT file
//! takes about 20 s, against under 2 s on either CPU backend.

use whisk::{BackendKind, DecodeOptions, MelPadding, Model, TranscribeOptions};
use whisk_backend::{Backend, DecodeStep, MelBatch, RowStep};
use whisk_eval::timing::{self, match_words, transcript_words, ErrorStats};
use whisk_eval::{normalize_english, WerTotals};
use whisk_tests::{
    assert_same_transcript, check_invariants, model_dir, shared_data, shared_reference,
};
use whisk_weights::WhisperWeights;

/// A backend on a device, named for the failure messages; `added` when `WHISK_TEST_DEVICES`
/// named it.
struct Target {
    name: String,
    model: Model,
    added: bool,
}

/// The backends compiled in, each on its CPU device, then the devices `WHISK_TEST_DEVICES`
/// names (wgpu on Burn, the others on candle).
fn targets() -> Vec<Target> {
    let kinds = BackendKind::compiled();
    assert!(!kinds.is_empty());
    let mut targets: Vec<(BackendKind, whisk::Device, bool)> = kinds
        .into_iter()
        .map(|kind| (kind, whisk::Device::Cpu, false))
        .collect();
    let extra = std::env::var("WHISK_TEST_DEVICES").unwrap_or_default();
    for name in extra.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let device: whisk::Device = name
            .parse()
            .unwrap_or_else(|e| panic!("WHISK_TEST_DEVICES: {e}"));
        let kind = match device {
            whisk::Device::Wgpu => BackendKind::Burn,
            _ => BackendKind::Candle,
        };
        targets.push((kind, device, true));
    }
    targets
        .into_iter()
        .map(|(kind, device, added)| {
            let model = Model::builder(model_dir("tiny.en"))
                .backend(kind)
                .device(device)
                .build()
                .unwrap_or_else(|e| panic!("{kind} on {device:?}: {e}"));
            Target {
                name: model.device_name(),
                model,
                added,
            }
        })
        .collect()
}

fn models() -> Vec<(String, Model)> {
    targets().into_iter().map(|t| (t.name, t.model)).collect()
}

/// faster-whisper's padding, greedy decoding and word alignment (openai's): the settings of
/// the greedy reference outputs.
fn like_faster_whisper(word_timestamps: bool) -> TranscribeOptions {
    TranscribeOptions {
        mel_padding: MelPadding::ZeroFeatures,
        word_timestamps,
        word_alignment: whisk::WordAlignment::Refeed,
        decode: DecodeOptions {
            beam_size: None,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn reference_words(rel: &str) -> Vec<timing::TimedWord> {
    timing::reference_words(&shared_reference(rel)).unwrap()
}

/// Adds |Δstart| to faster-whisper for the words both produced.
fn start_delta(ours: &[timing::TimedWord], theirs: &[timing::TimedWord], into: &mut ErrorStats) {
    for (i, j) in match_words(theirs, ours) {
        into.push(ours[j].start, theirs[i].start);
    }
}

#[test]
fn jfk_transcript_and_words() {
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let theirs = reference_words("tiny.en/fw-float32-beam1/jfk/jfk.json");
    for (name, model) in models() {
        let t = model
            .transcribe(&audio, &like_faster_whisper(true))
            .unwrap();
        check_invariants(&t);
        assert_eq!(
            t.text,
            " And so my fellow Americans ask not what your country can do for you ask what you can do for your country",
            "{name}"
        );
        let ours = transcript_words(&t);
        assert_eq!(ours.len(), 22, "{name}");
        let mut delta = ErrorStats::default();
        start_delta(&ours, &theirs, &mut delta);
        assert!(delta.len() >= 21, "{name}: {} words matched", delta.len());
        assert!(
            delta.median() <= 0.020,
            "{name}: median |Δstart| {} s",
            delta.median()
        );
    }
}

/// Every 16th TIMIT utterance: ten speakers, both sexes, several dialect regions.
fn timit_subset() -> Vec<(String, String)> {
    let tsv = std::fs::read_to_string(shared_data("timit_nltk_sample/transcript.tsv")).unwrap();
    tsv.lines()
        .skip(1)
        .step_by(16)
        .map(|line| {
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            (fields[0].to_string(), normalize_english(fields[2]))
        })
        .collect()
}

/// faster-whisper's greedy WER on `utts`, from its word list as the references hold it.
fn faster_whisper_wer(utts: &[(String, String)]) -> f64 {
    let mut fw = WerTotals::default();
    for (id, text) in utts {
        let json = shared_reference(&format!("tiny.en/fw-float32-beam1/timit/{id}.json"));
        let words = timing::reference_words(&json).unwrap();
        let hyp: Vec<String> = words.iter().map(|w| w.word.clone()).collect();
        fw.add(text, &normalize_english(&hyp.join(" ")));
    }
    fw.wer()
}

#[test]
fn timit_subset_with_word_timestamps() {
    let subset = timit_subset();
    assert_eq!(subset.len(), 10);
    for Target { name, model, added } in targets() {
        let utts: Vec<_> = subset
            .iter()
            .step_by(if added { 2 } else { 1 })
            .cloned()
            .collect();
        let fw_wer = faster_whisper_wer(&utts);
        let mut wer = WerTotals::default();
        let mut delta = ErrorStats::default();
        let mut reference_count = 0;
        for (id, text) in &utts {
            let audio = shared_data(&format!("timit_nltk_sample/audio/{id}.flac"));
            let t = model
                .transcribe_file(&audio, &like_faster_whisper(true))
                .unwrap();
            check_invariants(&t);
            wer.add(text, &normalize_english(&t.text));
            let theirs = reference_words(&format!("tiny.en/fw-float32-beam1/timit/{id}.json"));
            reference_count += theirs.len();
            start_delta(&transcript_words(&t), &theirs, &mut delta);
        }
        println!(
            "{name}: {} files, WER {:.2}% (faster-whisper greedy {:.2}%), {}/{} words matched, median |Δstart| {:.1} ms",
            utts.len(),
            wer.wer() * 100.0,
            fw_wer * 100.0,
            delta.len(),
            reference_count,
            delta.median() * 1e3
        );
        assert!(
            wer.wer() <= fw_wer + 0.01,
            "{name}: WER {} vs faster-whisper {fw_wer}",
            wer.wer(),
        );
        assert!(
            delta.len() * 10 >= reference_count * 9,
            "{name}: {} of {reference_count} words matched",
            delta.len()
        );
        assert!(
            delta.median() <= 0.020,
            "{name}: median |Δstart| {} s",
            delta.median()
        );
    }
}

/// Five files share a batch of three rows (on added devices three files, two rows): rows join
/// and leave at different positions. Each file's transcript must be what it gets in a batch of
/// its own.
#[test]
fn batched_files_equal_files_decoded_alone() {
    let files = [
        "whisper_test_clips/audio16k/jfk.flac",
        "timit_nltk_sample/audio/dr1-fvmh0_sa1.flac",
        "timit_nltk_sample/audio/dr2-marc0_sx18.flac",
        "timit_nltk_sample/audio/dr8-mbcg0_sx237.flac",
        "timit_nltk_sample/audio/dr3-madc0_sx17.flac",
    ];
    let audio: Vec<Vec<f32>> = files
        .iter()
        .map(|f| whisk::load_audio(&shared_data(f)).unwrap())
        .collect();
    for Target { name, model, added } in targets() {
        let (count, batch_size) = if added { (3, 2) } else { (files.len(), 3) };
        let inputs: Vec<&[f32]> = audio[..count].iter().map(|a| a.as_slice()).collect();
        // Character alignment's passes are rows of the batch too. Unpacked: each file keeps
        // windows of its own (packing is tested in `packing.rs`).
        let options = TranscribeOptions {
            batch_size,
            pack_short_inputs: false,
            word_alignment: whisk::WordAlignment::Chars,
            ..like_faster_whisper(true)
        };
        let together = model
            .transcribe_many(&inputs, &options, &mut |_| {})
            .unwrap();
        assert_eq!(together.len(), count);
        for (i, samples) in inputs.iter().enumerate() {
            let alone = model
                .transcribe_many(&[samples], &options, &mut |_| {})
                .unwrap()
                .remove(0);
            check_invariants(&together[i]);
            assert!(!alone.text.trim().is_empty(), "{name}: {}", files[i]);
            assert_same_transcript(&together[i], &alone, &format!("{name}: {}", files[i]));
        }
    }
}

#[test]
fn bad_audio_gives_errors_or_nothing_never_a_panic() {
    for (name, model) in models() {
        let options = TranscribeOptions {
            word_timestamps: true,
            ..Default::default()
        };
        // No samples, a click, and NaN-laden input: transcripts without words, no panic.
        for (what, samples) in [
            ("empty", vec![]),
            ("one sample", vec![0.5]),
            ("silence", vec![0.0; 16_000]),
        ] {
            let t = model
                .transcribe(&samples, &options)
                .unwrap_or_else(|e| panic!("{name}: {what}: {e}"));
            check_invariants(&t);
            assert!(t.text.trim().is_empty(), "{name}: {what}: {:?}", t.text);
        }
        let nan = vec![f32::NAN; 16_000];
        match model.transcribe(&nan, &options) {
            Ok(t) => check_invariants(&t),
            Err(e) => assert!(!e.to_string().is_empty(), "{name}"),
        }
    }
}

/// Requests that would index outside a tensor come back as errors from every backend.
fn invalid_requests_are_errors<B: Backend>(backend: &B) {
    let name = backend.device_name();
    let d = backend.dims().clone();
    let bad_mel = vec![0.0f32; 10];
    let mel = MelBatch {
        data: &bad_mel,
        windows: 1,
        n_mels: d.n_mels,
        frames: 3000,
    };
    assert!(backend.encode(mel).is_err(), "{name}: short mel accepted");
    assert!(
        backend.new_decoder(0).is_err(),
        "{name}: zero slots accepted"
    );

    let silence = vec![0.0f32; d.n_mels * 3000];
    let encoded = backend
        .encode(MelBatch {
            data: &silence,
            windows: 1,
            n_mels: d.n_mels,
            frames: 3000,
        })
        .unwrap();
    let mut decoder = backend.new_decoder(2).unwrap();
    assert!(backend.attach(&mut decoder, &[0], &encoded, &[1]).is_err());
    assert!(backend.attach(&mut decoder, &[2], &encoded, &[0]).is_err());
    backend.attach(&mut decoder, &[0], &encoded, &[0]).unwrap();
    assert!(backend.copy_slots(&mut decoder, &[(1, 0)]).is_err());

    let sot = [50257u32];
    let too_long = vec![50257u32; d.n_text_ctx + 1];
    let outside = [(d.n_text_layer, 0)];
    let cases: [BadRequest<'_>; 7] = [
        ("unattached slot", row(1, 0, &sot), &[]),
        ("slot outside", row(5, 0, &sot), &[]),
        ("position past cache", row(0, 3, &sot), &[]),
        ("token outside vocabulary", row(0, 0, &[99_999]), &[]),
        ("no tokens", row(0, 0, &[]), &[]),
        ("head outside", row(0, 0, &sot), &outside),
        ("past the text context", row(0, 0, &too_long), &[]),
    ];
    for (what, row, heads) in cases {
        let rows = [row];
        let result = backend.decode_step(
            &mut decoder,
            DecodeStep {
                rows: &rows,
                cross_qk_heads: heads,
                keep_cache: true,
            },
        );
        assert!(result.is_err(), "{name}: {what} accepted");
    }
    // The decoder still works after refusing them.
    let rows = [row(0, 0, &sot)];
    let out = backend
        .decode_step(
            &mut decoder,
            DecodeStep {
                rows: &rows,
                cross_qk_heads: &[],
                keep_cache: true,
            },
        )
        .unwrap();
    assert_eq!(out.logits[0].len(), d.n_vocab, "{name}");
    // A step that keeps no cache starts every row afresh.
    let rows = [row(0, 1, &sot)];
    let uncached = DecodeStep {
        rows: &rows,
        cross_qk_heads: &[],
        keep_cache: false,
    };
    assert!(
        backend.decode_step(&mut decoder, uncached).is_err(),
        "{name}"
    );
}

/// An alignment pass run without keeping its keys and values (`keep_cache: false`) gives the
/// logits and attention of the same pass run through the cache, beside a row that goes on.
fn passes_without_cache_equal_passes_with<B: Backend>(backend: &B) {
    let d = backend.dims();
    let name = backend.device_name();
    let silence = vec![-1.5f32; d.n_mels * 3000];
    let mel = MelBatch {
        data: &silence,
        windows: 1,
        n_mels: d.n_mels,
        frames: 3000,
    };
    let encoded = backend.encode(mel).unwrap();
    let heads = [(d.n_text_layer - 1, 0), (d.n_text_layer / 2, 1)];
    let pass: Vec<u32> = [50257, 50362, 464, 2068, 7586, 373, 13, 50256].to_vec();
    let at: Vec<usize> = (0..pass.len()).collect();
    let run = |keep_cache: bool| {
        let mut decoder = backend.new_decoder(3).unwrap();
        backend
            .attach(&mut decoder, &[0, 2], &encoded, &[0, 0])
            .unwrap();
        let rows = [
            RowStep {
                slot: 0,
                position: 0,
                tokens: &pass,
                logits_at: &at,
            },
            RowStep {
                slot: 2,
                position: 0,
                tokens: &pass[..5],
                logits_at: &[4],
            },
        ];
        let out = backend
            .decode_step(
                &mut decoder,
                DecodeStep {
                    rows: &rows,
                    cross_qk_heads: &heads,
                    keep_cache,
                },
            )
            .unwrap();
        (out.logits, out.cross_qk)
    };
    let (cached, uncached) = (run(true), run(false));
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{name}: {what}");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-3, "{name}: {what} differs by {worst}");
    };
    for (a, b) in cached.0.iter().zip(&uncached.0) {
        close(a, b, "logits");
    }
    for (a, b) in cached.1.iter().zip(&uncached.1) {
        close(&a.data, &b.data, "attention");
    }
}

/// A released slot can be neither stepped nor copied from until it is attached again, and
/// releasing it leaves the slots that shared its window as they were.
fn released_slots_leave_the_others_alone<B: Backend>(backend: &B) {
    let d = backend.dims();
    let name = backend.device_name();
    let speechless = vec![-1.0f32; d.n_mels * 3000];
    let encoded = backend
        .encode(MelBatch {
            data: &speechless,
            windows: 1,
            n_mels: d.n_mels,
            frames: 3000,
        })
        .unwrap();
    let mut decoder = backend.new_decoder(3).unwrap();
    backend
        .attach(&mut decoder, &[0, 1], &encoded, &[0, 0])
        .unwrap();
    let prompt = [50257u32, 50362];
    let step = |decoder: &mut B::Decoder, rows: &[RowStep<'_>]| {
        backend.decode_step(
            decoder,
            DecodeStep {
                rows,
                cross_qk_heads: &[],
                keep_cache: true,
            },
        )
    };
    step(&mut decoder, &[row(0, 0, &prompt), row(1, 0, &prompt)]).unwrap();
    // Slot 2 shares slot 0's window; slot 1 has one of its own, the same.
    backend.copy_slots(&mut decoder, &[(0, 2)]).unwrap();
    assert!(backend.release(&mut decoder, &[0, 0]).is_err(), "{name}");
    assert!(backend.release(&mut decoder, &[3]).is_err(), "{name}");
    backend.release(&mut decoder, &[0]).unwrap();
    assert!(step(&mut decoder, &[row(0, 0, &prompt)]).is_err(), "{name}");
    assert!(
        backend.copy_slots(&mut decoder, &[(0, 1)]).is_err(),
        "{name}"
    );
    let next = [464u32];
    let out = step(&mut decoder, &[row(1, 2, &next), row(2, 2, &next)]).unwrap();
    let worst = out.logits[0]
        .iter()
        .zip(&out.logits[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-4, "{name}: the shared window changed by {worst}");
    // Released and attached again, a slot decodes as before.
    backend.release(&mut decoder, &[1, 2]).unwrap();
    backend.attach(&mut decoder, &[0], &encoded, &[0]).unwrap();
    step(&mut decoder, &[row(0, 0, &prompt)]).unwrap();
}

/// What is wrong, the row, the heads asked for.
type BadRequest<'a> = (&'a str, RowStep<'a>, &'a [(usize, usize)]);

fn row<'a>(slot: usize, position: usize, tokens: &'a [u32]) -> RowStep<'a> {
    RowStep {
        slot,
        position,
        tokens,
        logits_at: &[0],
    }
}

/// The three checks on one backend.
fn requests_and_passes<B: Backend>(backend: &B) {
    invalid_requests_are_errors(backend);
    passes_without_cache_equal_passes_with(backend);
    released_slots_leave_the_others_alone(backend);
}

#[test]
fn invalid_backend_requests_are_errors_passes_need_no_cache_and_released_slots_are_gone() {
    let weights = WhisperWeights::from_dir(&model_dir("tiny.en")).unwrap();
    requests_and_passes(
        &whisk_candle::CandleBackend::new(
            &weights,
            whisk_candle::CandleDevice::Cpu,
            whisk_types::ComputeType::Float32,
        )
        .unwrap(),
    );
    #[cfg(feature = "burn-cpu")]
    requests_and_passes(
        &whisk_burn::BurnBackend::new(&weights, whisk_burn::BurnDevice::Flex).unwrap(),
    );
}
