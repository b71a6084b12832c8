//! Batched long-form mode on a long file made of TIMIT utterances: windows cut the audio at
//! fixed places, and the stitched transcript must neither lose nor double words there.

use whisk::{Model, TranscribeOptions};
use whisk_eval::timing::{match_words, normalize_word, transcript_words, TimedWord};
use whisk_pipeline::{FixedWindows, WindowPlanner};
use whisk_tests::{check_invariants, model_dir, shared_data};

/// The first `n` TIMIT utterance files, in file-name order.
fn timit_files(n: usize) -> Vec<std::path::PathBuf> {
    let dir = shared_data("timit_nltk_sample/audio");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "flac"))
        .collect();
    files.sort();
    files.truncate(n);
    files
}

/// The first `n` TIMIT utterances (in file-name order) joined into one input.
fn long_input(n: usize) -> Vec<f32> {
    timit_files(n)
        .iter()
        .flat_map(|f| whisk::load_audio(f).unwrap())
        .collect()
}

fn mid(w: &TimedWord) -> f64 {
    (w.start + w.end) / 2.0
}

#[test]
fn window_edges_lose_and_double_nothing() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let samples = long_input(45);
    let options = TranscribeOptions {
        word_timestamps: true,
        batch_size: 4,
        ..Default::default()
    };
    let batched = model.transcribe(&samples, &options).unwrap();
    check_invariants(&batched);
    let stitched = transcript_words(&batched);

    // Every window decoded on its own: the words each one hears, in file time.
    let plan = FixedWindows::default().plan(&samples);
    assert!(plan.len() >= 5, "{} windows", plan.len());
    let raw: Vec<Vec<TimedWord>> = plan
        .iter()
        .map(|w| {
            let t = model
                .transcribe(&samples[w.start..w.end], &options)
                .unwrap();
            let offset = w.start as f64 / 16_000.0;
            transcript_words(&t)
                .into_iter()
                .map(|x| TimedWord {
                    start: x.start + offset,
                    end: x.end + offset,
                    word: x.word,
                })
                .collect()
        })
        .collect();

    // Words outside the overlaps are the one window's that heard them, all of them.
    let in_overlap = |t: f64| {
        (1..plan.len())
            .any(|k| plan[k].start as f64 / 16_000.0 <= t && t < plan[k - 1].end as f64 / 16_000.0)
    };
    let mut outside = 0;
    for words in &raw {
        for x in words.iter().filter(|x| !in_overlap(mid(x))) {
            let found = stitched
                .iter()
                .filter(|y| {
                    y.word == x.word
                        && (y.start - x.start).abs() < 1e-3
                        && (y.end - x.end).abs() < 1e-3
                })
                .count();
            assert_eq!(found, 1, "{:?} at {:.2}s", x.word, x.start);
            outside += 1;
        }
    }
    let stitched_outside = stitched.iter().filter(|y| !in_overlap(mid(y))).count();
    assert_eq!(stitched_outside, outside);

    // Words heard by both windows of an overlap appear exactly once in the transcript.
    let mut agreed = 0;
    let mut disputed = 0;
    for k in 0..plan.len() - 1 {
        let (from, to) = (
            plan[k + 1].start as f64 / 16_000.0,
            plan[k].end as f64 / 16_000.0,
        );
        let left: Vec<TimedWord> = raw[k].iter().filter(|x| mid(x) >= from).cloned().collect();
        let right: Vec<TimedWord> = raw[k + 1].iter().filter(|x| mid(x) < to).cloned().collect();
        let pairs = match_words(&left, &right);
        disputed += left.len() + right.len() - 2 * pairs.len();
        for (i, j) in pairs {
            let word = normalize_word(&left[i].word);
            let copies = stitched
                .iter()
                .filter(|x| {
                    normalize_word(&x.word) == word
                        && x.start < left[i].end.max(right[j].end) + 0.2
                        && x.end > left[i].start.min(right[j].start) - 0.2
                })
                .count();
            assert_eq!(
                copies, 1,
                "{word:?} near {:.2}s appears {copies} times",
                left[i].start
            );
            agreed += 1;
        }
    }
    println!(
        "{} windows; {} words; {agreed} words heard by both sides of an overlap, each kept once; {disputed} heard by one side only",
        plan.len(),
        stitched.len()
    );
    assert!(
        agreed >= 20,
        "overlaps too quiet to test: {agreed} shared words"
    );

    // And the transcript is the sequential one's, apart from what windowing changes.
    let sequential = transcript_words(
        &model
            .transcribe(
                &samples,
                &TranscribeOptions {
                    batch_size: 1,
                    ..options.clone()
                },
            )
            .unwrap(),
    );
    let same = match_words(&sequential, &stitched).len();
    println!(
        "sequential {} words, {same} of them matched",
        sequential.len()
    );
    assert!(same as f64 >= 0.85 * sequential.len() as f64);
}

/// The first `n` TIMIT utterances in a shuffled order, joined by 0.3-2.5 s of faint noise
/// (the pause set of `cargo xtask bench`, smaller), seeded.
fn paused_input(n: usize) -> Vec<f32> {
    let mut files = timit_files(n);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in (1..files.len()).rev() {
        files.swap(i, (uniform() * (i + 1) as f64) as usize);
    }
    let mut samples = Vec::new();
    for f in &files {
        let pause = ((0.3 + 2.2 * uniform()) * 16_000.0) as usize;
        samples.extend((0..pause).map(|_| (0.006 * (uniform() - 0.5)) as f32));
        samples.extend(whisk::load_audio(f).unwrap());
    }
    samples
}

/// Asking for word times must not change what a long input's windows keep. They are cut by
/// the decode's own attention either way; cut by the character pass's times, which at a
/// window's edges can lie over speech the decode never wrote, whole sentences were lost at
/// window boundaries (pause set: 24.97% WER with words against 22.52% without).
#[test]
fn word_timestamps_keep_the_text_of_a_long_input() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let samples = paused_input(80);
    let without = TranscribeOptions {
        batch_size: 8,
        ..Default::default()
    };
    let with = TranscribeOptions {
        word_timestamps: true,
        ..without.clone()
    };
    let words = |options: &TranscribeOptions| -> Vec<String> {
        let t = model.transcribe(&samples, options).unwrap();
        check_invariants(&t);
        t.text.split_whitespace().map(normalize_word).collect()
    };
    let (plain, timed) = (words(&without), words(&with));
    let shared = lcs_len(&plain, &timed);
    let (lost, added) = (plain.len() - shared, timed.len() - shared);
    println!(
        "{} words without word times; with them {lost} missing, {added} more",
        plain.len()
    );
    // Before the windows were cut by the decode's times: 6 lost.
    assert!(lost <= 2 && added <= 2, "{lost} lost, {added} added");
}

/// Length of the longest common subsequence of `a` and `b`.
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { up.max(row[j]) };
            diagonal = up;
        }
    }
    row[b.len()]
}

/// Files read a window at a time (an 8 kHz MP3 of four windows, resampled as it streams,
/// sharing the batch with a FLAC) come out exactly as the same audio decoded whole first.
#[test]
fn streamed_files_equal_files_read_whole() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let paths = [
        shared_data("whisper_timestamped_clips/orig/apollo11.mp3"),
        shared_data("whisper_test_clips/audio16k/jfk.flac"),
    ];
    let options = TranscribeOptions {
        word_timestamps: true,
        batch_size: 4,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let path_refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let streamed = model
        .transcribe_files(&path_refs, &options, &mut |p| {
            assert!(
                p.segments.is_empty(),
                "batched mode hands segments over at the end"
            );
            seen.push((p.done_seconds, p.total_seconds))
        })
        .unwrap();
    let whole: Vec<Vec<f32>> = paths
        .iter()
        .map(|p| whisk::load_audio(p).unwrap())
        .collect();
    let inputs: Vec<&[f32]> = whole.iter().map(Vec::as_slice).collect();
    let read_first = model
        .transcribe_many(&inputs, &options, &mut |_| {})
        .unwrap();
    assert!(
        streamed[0].segments.len() > 3,
        "apollo11 spans several windows"
    );
    for (s, w) in streamed.iter().zip(&read_first) {
        check_invariants(s);
        assert_eq!(s, w);
    }
    // Progress is counted against the lengths the headers announce.
    let last = seen.last().unwrap();
    assert!((last.0 - 89.2 - 11.0).abs() < 0.5, "{last:?}");
    assert!(seen.iter().all(|(done, total)| done <= total));
}

/// The sequential loop hands each window's segments over as soon as they are final, exactly
/// as the transcript will hold them (what the Python package's lazy iterator streams).
#[test]
fn sequential_segments_are_handed_over_window_by_window() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let samples = long_input(30);
    let options = TranscribeOptions::default();
    let mut handed = Vec::new();
    let mut first_at = None;
    let transcript = model
        .transcribe_with_progress(&samples, &options, &mut |p| {
            if !p.segments.is_empty() && first_at.is_none() {
                first_at = Some((p.done_seconds, p.total_seconds));
            }
            assert_eq!(p.input, 0);
            handed.extend_from_slice(p.segments);
        })
        .unwrap();
    assert_eq!(handed, transcript.segments);
    let (done, total) = first_at.expect("segments handed over");
    assert!(
        total > 60.0 && done <= 30.0,
        "first handed over at {done} of {total} s"
    );
}

/// Inputs handed to a running batch on a script: a short file joins while a long one is in
/// flight, a third input's caller leaves mid-decode.
struct Script {
    inputs: Vec<std::sync::Arc<[f32]>>,
    /// `next_input` call on which each input arrives (the batch steps between calls).
    arrives_on: Vec<usize>,
    calls: usize,
    handed: usize,
    /// The input whose caller leaves, once this many calls have been made.
    leaves: (usize, usize),
    finished: Vec<(usize, whisk::Transcript)>,
}

impl whisk::Arrivals for Script {
    fn next_input(&mut self, idle: bool) -> Option<std::sync::Arc<[f32]>> {
        self.calls += 1;
        let next = self.handed;
        let due = self
            .arrives_on
            .get(next)
            .is_some_and(|&c| idle || c <= self.calls);
        due.then(|| {
            self.handed += 1;
            self.inputs[next].clone()
        })
    }

    fn abandoned(&mut self, input: usize) -> bool {
        input == self.leaves.0 && self.calls >= self.leaves.1
    }

    fn finished(&mut self, input: usize, transcript: whisk::Transcript) {
        self.finished.push((input, transcript));
    }
}

#[test]
fn inputs_joining_a_running_batch_get_the_transcripts_given_up_front() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    // Six windows: with two decoded at a time, most of them are admitted after the late
    // inputs' first windows.
    let long = long_input(45);
    let jfk = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let short = long_input(1);
    let options = TranscribeOptions {
        word_timestamps: true,
        batch_size: 2,
        pack_short_inputs: false,
        ..Default::default()
    };
    let up_front = model
        .transcribe_many(&[&long, &jfk, &short], &options, &mut |_| {})
        .unwrap();
    let mut script = Script {
        inputs: vec![long.into(), jfk.into(), long_input(12).into(), short.into()],
        arrives_on: vec![1, 5, 8, 12],
        calls: 0,
        handed: 0,
        leaves: (2, 30),
        finished: Vec::new(),
    };
    model.transcribe_arrivals(&mut script, &options).unwrap();
    let order: Vec<usize> = script.finished.iter().map(|(i, _)| *i).collect();
    // jfk joined while the long input, which came first, was being decoded, and is answered
    // before it; the input whose caller left is never answered.
    assert_eq!(order.len(), 3, "{order:?}");
    assert!(!order.contains(&2), "{order:?}");
    let answered = |input: usize| order.iter().position(|&i| i == input);
    assert!(answered(1) < answered(0), "{order:?}");
    for (input, transcript) in &script.finished {
        let expected = &up_front[if *input == 3 { 2 } else { *input }];
        check_invariants(transcript);
        whisk_tests::assert_same_transcript(transcript, expected, &format!("input {input}"));
    }
}
