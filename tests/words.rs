//! Word timestamps on real speech: invariants, agreement with faster-whisper's word times on
//! the same weights, and accuracy against TIMIT's hand labels.

use whisk::{Model, TranscribeOptions, WordAlignment};
use whisk_eval::timing::{
    self, match_words, read_labels, transcript_words, ErrorStats, TimedWord, TimingReport,
};
use whisk_tests::{check_invariants, model_dir, shared_data, shared_reference};

fn reference_words(rel: &str) -> Vec<TimedWord> {
    timing::reference_words(&shared_reference(rel)).unwrap()
}

fn options(mode: WordAlignment) -> TranscribeOptions {
    TranscribeOptions {
        word_timestamps: true,
        word_alignment: mode,
        ..Default::default()
    }
}

/// Start differences from faster-whisper on the words both systems produced.
fn delta_to_reference(ours: &[TimedWord], theirs: &[TimedWord], into: &mut ErrorStats) {
    for (i, j) in match_words(theirs, ours) {
        into.push(ours[j].start, theirs[i].start);
    }
}

#[test]
fn jfk_words_agree_with_faster_whisper_in_both_modes() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let audio = whisk::load_audio(&shared_data("whisper_test_clips/audio16k/jfk.flac")).unwrap();
    let theirs = reference_words("tiny.en/fw-float32-beam1/jfk/jfk.json");
    for mode in [WordAlignment::Refeed, WordAlignment::SinglePass] {
        let t = model.transcribe(&audio, &options(mode)).unwrap();
        check_invariants(&t);
        let ours = transcript_words(&t);
        assert_eq!(ours.len(), 22, "{mode:?}: {ours:?}");
        let mut delta = ErrorStats::default();
        delta_to_reference(&ours, &theirs, &mut delta);
        assert!(
            delta.len() >= 21,
            "{mode:?}: only {} words matched",
            delta.len()
        );
        assert!(
            delta.median() <= 0.020,
            "{mode:?}: median |Δstart| {} s",
            delta.median()
        );
        assert!(ours.iter().all(|w| w.end <= 11.0));
    }
    // Character alignment (the default): the same 22 words, valid, inside the audio.
    let t = model
        .transcribe(&audio, &options(WordAlignment::Chars))
        .unwrap();
    check_invariants(&t);
    let ours = transcript_words(&t);
    assert_eq!(ours.len(), 22, "{ours:?}");
    assert!(ours.iter().all(|w| w.end <= 11.0));
    // "ask not what" is spoken with long pauses: the audio is silent from 2.11 to 3.29 s
    // and from 4.29 to 5.42 s (20 ms frames within 15 dB of the clip's floor). faster-whisper
    // starts "ask" and "what" at the silences' beginnings (2.26 s, 4.52 s); onset anchoring
    // starts them where the sound comes back.
    let start_of = |word: &str, nth: usize| {
        ours.iter()
            .filter(|w| w.word.trim().trim_matches(',') == word)
            .nth(nth)
            .map(|w| w.start)
            .unwrap()
    };
    let ask = start_of("ask", 0);
    let what = start_of("what", 0);
    assert!((3.2..=3.4).contains(&ask), "ask at {ask}");
    assert!((5.3..=5.5).contains(&what), "what at {what}");
    // Against faster-whisper, words start earlier by about its lateness on TIMIT's labels.
    let mut signed: Vec<f64> = match_words(&theirs, &ours)
        .into_iter()
        .map(|(i, j)| ours[j].start - theirs[i].start)
        .collect();
    signed.sort_by(f64::total_cmp);
    let median = signed[signed.len() / 2];
    println!("jfk, chars - faster-whisper start: median {median:.3} s");
    assert!((-0.2..=0.0).contains(&median), "median Δstart {median} s");
}

/// Speakers of the even dialect regions: character alignment was tuned on the odd ones.
fn is_held_out(id: &str) -> bool {
    id.as_bytes()
        .get(2)
        .is_some_and(|r| (r - b'0').is_multiple_of(2))
}

#[test]
fn timit_refeed_matches_faster_whisper_and_chars_beats_it_on_labels() {
    let model = Model::builder(model_dir("tiny.en")).build().unwrap();
    let transcript =
        std::fs::read_to_string(shared_data("timit_nltk_sample/transcript.tsv")).unwrap();
    let ids: Vec<&str> = transcript
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids.len(), 160);
    let default = TranscribeOptions::default();
    assert_eq!(default.word_alignment, WordAlignment::Chars);
    let chars = options(default.word_alignment);
    let (mut ours_report, mut fw_report) = (TimingReport::default(), TimingReport::default());
    let mut held_out = TimingReport::default();
    let mut delta = ErrorStats::default();
    for (i, id) in ids.iter().enumerate() {
        let labels =
            read_labels(&shared_data(&format!("timit_nltk_sample/words/{id}.tsv"))).unwrap();
        let audio = shared_data(&format!("timit_nltk_sample/audio/{id}.flac"));
        let theirs = reference_words(&format!("tiny.en/fw-float32-beam1/timit/{id}.json"));
        // openai's method: the same times as faster-whisper. Every 4th file (about 300 words)
        // shows it and saves CI a pass over the other 120.
        if i % 4 == 0 {
            let t = model
                .transcribe_file(&audio, &options(WordAlignment::Refeed))
                .unwrap();
            check_invariants(&t);
            delta_to_reference(&transcript_words(&t), &theirs, &mut delta);
        }
        // Character alignment, against the hand labels.
        let t = model.transcribe_file(&audio, &chars).unwrap();
        check_invariants(&t);
        let ours = transcript_words(&t);
        ours_report.add(&labels, &ours);
        fw_report.add(&labels, &theirs);
        if is_held_out(id) {
            held_out.add(&labels, &ours);
        }
    }
    println!(
        "{}\n{}\n{}",
        TimingReport::HEADER,
        fw_report.row("faster-whisper"),
        ours_report.row("whisk")
    );
    for (name, r) in [("faster-whisper", &fw_report), ("whisk", &ours_report)] {
        println!(
            "{name}: starts median {:.1} mean {:.1} ms, within 50/100/200 {:.1}/{:.1}/{:.1}%; \
             ends median {:.1} mean {:.1} ms, within {:.1}/{:.1}/{:.1}%",
            r.starts.median() * 1e3,
            r.starts.mean() * 1e3,
            r.starts.within(0.05) * 100.0,
            r.starts.within(0.1) * 100.0,
            r.starts.within(0.2) * 100.0,
            r.ends.median() * 1e3,
            r.ends.mean() * 1e3,
            r.ends.within(0.05) * 100.0,
            r.ends.within(0.1) * 100.0,
            r.ends.within(0.2) * 100.0,
        );
    }
    println!(
        "median |Δstart| to faster-whisper: {:.1} ms over {} words",
        delta.median() * 1000.0,
        delta.len()
    );
    assert!(delta.len() >= 250, "{} words matched", delta.len());
    assert!(
        delta.median() <= 0.020,
        "median |Δstart| {} s",
        delta.median()
    );
    // Character alignment against the hand labels, metric by metric, with no tolerance: as
    // good as faster-whisper or better.
    let (o, f) = (&ours_report, &fw_report);
    let mut worse = Vec::new();
    let mut check = |name: &str, ours: f64, theirs: f64, lower_is_better: bool| {
        let ok = if lower_is_better {
            ours <= theirs
        } else {
            ours >= theirs
        };
        println!(
            "{name}: whisk {ours:.4}, faster-whisper {theirs:.4}{}",
            if ok { "" } else { "  <- worse" }
        );
        if !ok {
            worse.push(name.to_string());
        }
    };
    check("start median", o.starts.median(), f.starts.median(), true);
    check("start mean", o.starts.mean(), f.starts.mean(), true);
    check("end median", o.ends.median(), f.ends.median(), true);
    check("end mean", o.ends.mean(), f.ends.mean(), true);
    for limit in [0.05, 0.1, 0.2] {
        check(
            &format!("starts within {limit}"),
            o.starts.within(limit),
            f.starts.within(limit),
            false,
        );
        check(
            &format!("ends within {limit}"),
            o.ends.within(limit),
            f.ends.within(limit),
            false,
        );
    }
    assert!(worse.is_empty(), "worse than faster-whisper on {worse:?}");
    // Issue 7's goal, on speakers nothing was tuned on: median start error at most 30 ms,
    // at least 75% of starts within 50 ms (measured: 23 ms, 80%).
    println!("{}", held_out.row("whisk held-out speakers"));
    assert!(
        held_out.starts.median() <= 0.030 && held_out.starts.within(0.05) >= 0.75,
        "held-out starts: median {} s, {} within 50 ms",
        held_out.starts.median(),
        held_out.starts.within(0.05)
    );
}

#[test]
fn text_is_spelled_one_letter_per_token_with_a_space_before_each_word() {
    let dir = model_dir("tiny.en");
    let weights = whisk_weights::WhisperWeights::from_dir(&dir).unwrap();
    let tokenizer =
        whisk_text::Tokenizer::from_file(&dir.join("tokenizer.json"), &weights.dims).unwrap();
    let seq = tokenizer
        .char_sequence(&[" Hello", ",", " wörld", " 42"], "en")
        .unwrap();
    let space = tokenizer.encode(" ").unwrap();
    let spelled: Vec<String> = seq
        .tokens
        .iter()
        .map(|&t| tokenizer.decode(&[t]).unwrap())
        .collect();
    // Punctuation is dropped, a non-ASCII letter survives whatever its byte tokens.
    assert_eq!(tokenizer.decode(&seq.tokens).unwrap(), " Hello wörld 42");
    let n = seq.tokens.len();
    assert_eq!(seq.words[..2], [Some(1..6), None]);
    assert_eq!(seq.words[2].as_ref().unwrap().start, 7);
    assert_eq!(seq.words[3], Some(n - 2..n));
    assert_eq!(seq.tokens[0..1], space[..]);
    assert_eq!(spelled[1..6], ["H", "e", "l", "l", "o"]);
    // Unspaced languages get no space tokens.
    let zh = tokenizer.char_sequence(&["你", "好"], "zh").unwrap();
    assert!(zh.tokens.iter().all(|t| !space.contains(t)));
    assert_eq!(zh.words.len(), 2);
}
