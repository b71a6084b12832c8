//! `whisk-eval`: accuracy of whisk against reference transcripts, side by side with
//! faster-whisper's outputs on the same weights. Run through `cargo xtask eval`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use whisk::{ComputeType, MelPadding, Model, TranscribeOptions, VadOptions, WordAlignment};
use whisk_eval::pauses::{insert_pauses, join_utterances};
use whisk_eval::timing::{
    match_words, read_labels, reference_words, transcript_words, ErrorStats, TimedWord,
    TimingReport, PAUSE_SECONDS,
};
use whisk_eval::{normalize_english, WerTotals};

struct Args {
    command: String,
    model: PathBuf,
    shared: PathBuf,
    reference_setting: String,
    padding: Vec<MelPadding>,
    /// Beam widths to measure WER with (1 = greedy).
    beams: Vec<usize>,
    /// Word alignment modes `words` measures.
    modes: Vec<WordAlignment>,
    compute: ComputeType,
    /// Where `wer` writes each setting's transcripts (`id<TAB>text` per utterance).
    hypotheses: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        command: "wer".into(),
        model: PathBuf::from("target/models/tiny.en"),
        shared: PathBuf::from("../shared"),
        reference_setting: "fw-float32-beam1".into(),
        padding: vec![MelPadding::Silence, MelPadding::ZeroFeatures],
        beams: vec![1, 5],
        modes: vec![
            WordAlignment::SinglePass,
            WordAlignment::Refeed,
            WordAlignment::Chars,
        ],
        compute: ComputeType::Default,
        hypotheses: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => args.model = value()?.into(),
            "--shared" => args.shared = value()?.into(),
            "--reference" => args.reference_setting = value()?,
            "--hypotheses" => args.hypotheses = Some(value()?.into()),
            "--compute-type" => args.compute = value()?.parse().map_err(anyhow::Error::msg)?,
            "--padding" => {
                args.padding = match value()?.as_str() {
                    "openai" => vec![MelPadding::Silence],
                    "faster-whisper" => vec![MelPadding::ZeroFeatures],
                    "both" => vec![MelPadding::Silence, MelPadding::ZeroFeatures],
                    other => bail!("--padding takes openai, faster-whisper or both, not {other}"),
                }
            }
            "--beam-size" => {
                args.beams = value()?
                    .split(',')
                    .map(|b| match b.trim().parse::<usize>() {
                        Ok(b) if b >= 1 => Ok(b),
                        _ => bail!("--beam-size takes widths from 1 up, like 1,5; not {b}"),
                    })
                    .collect::<Result<_>>()?
            }
            "--modes" => {
                args.modes = value()?
                    .split(',')
                    .map(|m| match m.trim() {
                        "single-pass" => Ok(WordAlignment::SinglePass),
                        "refeed" => Ok(WordAlignment::Refeed),
                        "chars" => Ok(WordAlignment::Chars),
                        other => bail!("--modes takes single-pass, refeed, chars; not {other}"),
                    })
                    .collect::<Result<_>>()?
            }
            "wer" | "words" => args.command = a.clone(),
            other => bail!("unknown argument {other}; see the source of whisk-eval"),
        }
    }
    Ok(args)
}

/// Speakers of the even TIMIT dialect regions (`dr2`, `dr4`, ...): nothing was tuned on them.
fn is_held_out(utterance: &str) -> bool {
    utterance
        .strip_prefix("dr")
        .and_then(|r| r.chars().next())
        .and_then(|c| c.to_digit(10))
        .is_some_and(|r| r % 2 == 0)
}

/// `(utterance id, reference text)` from TIMIT's `transcript.tsv`.
fn timit_utterances(shared: &Path) -> Result<Vec<(String, String)>> {
    let path = shared.join("data/timit_nltk_sample/transcript.tsv");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let id = f.next()?.to_string();
            let _duration = f.next()?;
            Some((id, f.next()?.to_string()))
        })
        .collect())
}

/// `whisk-eval score REF HYP`: WER (percent) of the hypothesis lines against the reference
/// lines, after the English normaliser. Used by `cargo xtask bench` for every system alike.
fn score(reference: &Path, hypothesis: &Path) -> Result<()> {
    let read = |p: &Path| -> Result<Vec<String>> {
        Ok(std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .lines()
            .map(str::to_string)
            .collect())
    };
    let (r, h) = (read(reference)?, read(hypothesis)?);
    if r.len() != h.len() {
        bail!(
            "{} reference lines but {} hypothesis lines",
            r.len(),
            h.len()
        );
    }
    let mut totals = WerTotals::default();
    for (r, h) in r.iter().zip(&h) {
        totals.add(&normalize_english(r), &normalize_english(h));
    }
    println!("{:.2}", totals.wer() * 100.0);
    Ok(())
}

fn main() -> Result<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("score") {
        let [_, reference, hypothesis] = raw.as_slice() else {
            bail!("usage: whisk-eval score REFERENCE HYPOTHESIS");
        };
        return score(Path::new(reference), Path::new(hypothesis));
    }
    let args = parse_args()?;
    match args.command.as_str() {
        "words" => eval_words(&args),
        _ => eval_wer(&args),
    }
}

/// Transcription with word timestamps in one alignment mode, padding and beam width.
fn word_options(padding: MelPadding, mode: WordAlignment, beam: usize) -> TranscribeOptions {
    TranscribeOptions {
        decode: whisk::DecodeOptions {
            beam_size: Some(beam),
            ..Default::default()
        },
        mel_padding: padding,
        word_timestamps: true,
        word_alignment: mode,
        ..Default::default()
    }
}

/// One hand-labelled utterance: its id, audio and word labels.
struct Labelled {
    id: String,
    samples: Vec<f32>,
    labels: Vec<TimedWord>,
}

/// The TIMIT sample as it is, and the same utterances with pauses put between words
/// (`whisk_eval::pauses`; seeded by the utterance's place, so the set never changes).
fn timit_sets(shared: &Path) -> Result<(Vec<Labelled>, Vec<Labelled>)> {
    let timit = shared.join("data/timit_nltk_sample");
    let mut plain = Vec::new();
    for (id, _) in timit_utterances(shared)? {
        plain.push(Labelled {
            samples: whisk::load_audio(&timit.join(format!("audio/{id}.flac")))?,
            labels: read_labels(&timit.join(format!("words/{id}.tsv")))?,
            id,
        });
    }
    let paused = plain
        .iter()
        .enumerate()
        .map(|(k, u)| {
            let p = insert_pauses(&u.samples, &u.labels, k as u64);
            Labelled {
                id: u.id.clone(),
                samples: p.samples,
                labels: p.labels,
            }
        })
        .collect();
    Ok((plain, paused))
}

/// Timing on a whole set and on its held-out speakers.
#[derive(Default)]
struct SetReport {
    all: TimingReport,
    held_out: TimingReport,
}

impl SetReport {
    fn add(&mut self, utterance: &Labelled, words: &[TimedWord]) {
        self.all.add(&utterance.labels, words);
        if is_held_out(&utterance.id) {
            self.held_out.add(&utterance.labels, words);
        }
    }

    /// The set's tables: every speaker, held-out speakers, and errors by the word's place.
    fn print(reports: &[(String, SetReport)]) {
        println!("{}", TimingReport::HEADER);
        for (name, r) in reports {
            println!("{}", r.all.row(name));
        }
        println!(
            "\nHeld-out speakers (even dialect regions; character alignment was tuned on the odd):\n"
        );
        println!("{}", TimingReport::HEADER);
        for (name, r) in reports {
            println!("{}", r.held_out.row(name));
        }
        println!(
            "\nStart errors by the word's place (after a pause: at least {} ms after the previous label), and end errors before a pause:\n",
            whisk_eval::timing::PAUSE_SECONDS * 1000.0
        );
        println!("{}", TimingReport::PLACES_HEADER);
        for (name, r) in reports {
            println!("{}", r.all.places_row(name));
        }
    }
}

/// The utterances transcribed in one batched call (batch size 8), packed into shared windows
/// or each in a window of its own: packing must not time words worse.
fn transcribe_together(
    model: &Model,
    utterances: &[Labelled],
    options: &TranscribeOptions,
    pack: bool,
) -> Result<SetReport> {
    let inputs: Vec<&[f32]> = utterances.iter().map(|u| u.samples.as_slice()).collect();
    let options = TranscribeOptions {
        batch_size: 8,
        pack_short_inputs: pack,
        ..options.clone()
    };
    let transcripts = model.transcribe_many(&inputs, &options, &mut |_| {})?;
    let mut report = SetReport::default();
    for (u, t) in utterances.iter().zip(&transcripts) {
        report.add(u, &transcript_words(t));
    }
    Ok(report)
}

/// Word timing against the hand labels on the TIMIT sample and on the same utterances with
/// pauses put in, for whisk's alignment modes and (plain TIMIT) faster-whisper's reference
/// timings; the sample batched, packed and not; the utterances joined into one recording;
/// plus whisk's distance from faster-whisper's word times.
fn eval_words(args: &Args) -> Result<()> {
    let (plain, paused) = timit_sets(&args.shared)?;
    let model = Model::builder(&args.model)
        .compute_type(args.compute)
        .build()?;
    let ref_dir = args
        .shared
        .join("reference/tiny.en")
        .join(&args.reference_setting);
    let reference = |id: &str| reference_words(&ref_dir.join(format!("timit/{id}.json")));

    let mut fw = SetReport::default();
    for u in &plain {
        fw.add(u, &reference(&u.id)?);
    }
    let mut on_plain = vec![(
        format!("faster-whisper 1.2.1 {}", args.reference_setting),
        fw,
    )];
    let mut on_paused = Vec::new();
    let mut on_joined = Vec::new();
    let mut on_together = Vec::new();
    let parts: Vec<(&[f32], &[TimedWord])> = plain
        .iter()
        .map(|u| (u.samples.as_slice(), u.labels.as_slice()))
        .collect();
    let joined = join_utterances(&parts, 7);
    let mut deltas = Vec::new();
    for (&beam, padding) in args
        .beams
        .iter()
        .flat_map(|b| args.padding.iter().map(move |p| (b, p)))
    {
        for &mode in &args.modes {
            let options = word_options(*padding, mode, beam);
            let (mut report, mut report_paused) = (SetReport::default(), SetReport::default());
            let (mut d_start, mut d_end) = (ErrorStats::default(), ErrorStats::default());
            let started = Instant::now();
            for u in &plain {
                let ours = transcript_words(&model.transcribe(&u.samples, &options)?);
                report.add(u, &ours);
                let theirs = reference(&u.id)?;
                for (i, j) in match_words(&theirs, &ours) {
                    d_start.push(ours[j].start, theirs[i].start);
                    d_end.push(ours[j].end, theirs[i].end);
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            for u in &paused {
                report_paused.add(
                    u,
                    &transcript_words(&model.transcribe(&u.samples, &options)?),
                );
            }
            let name = format!("whisk {mode:?}, {padding:?} padding, beam {beam}");
            // Speech only (VAD's clips packed into shared windows) as well as whole windows.
            for (batch_size, vad) in [(1, None), (8, None), (8, Some(VadOptions::batched()))] {
                let options = TranscribeOptions {
                    batch_size,
                    vad: vad.clone(),
                    ..options.clone()
                };
                let mut report = TimingReport::default();
                report.add(
                    &joined.labels,
                    &transcript_words(&model.transcribe(&joined.samples, &options)?),
                );
                let vad = if vad.is_some() { ", VAD" } else { "" };
                on_joined.push((format!("{name}, batch size {batch_size}{vad}"), report));
            }
            for pack in [true, false] {
                let report = transcribe_together(&model, &plain, &options, pack)?;
                let how = if pack { "packed" } else { "a window each" };
                on_together.push((format!("{name}, batch size 8, {how}"), report));
            }
            eprintln!("whisk-eval: {name} timed");
            deltas.push((name.clone(), d_start, d_end));
            on_plain.push((format!("{name} ({seconds:.0} s)"), report));
            on_paused.push((name, report_paused));
        }
    }
    println!(
        "TIMIT sample: {} utterances, model {}\n",
        plain.len(),
        args.model.display()
    );
    SetReport::print(&on_plain);
    let (labels, pauses) = paused.iter().fold((0, 0), |(l, p), u| {
        let gaps = u.labels.windows(2);
        let grown = gaps
            .filter(|w| w[1].start - w[0].end >= PAUSE_SECONDS)
            .count();
        (l + u.labels.len(), p + grown)
    });
    println!(
        "\nThe same utterances with pauses put in (cut at labelled word boundaries; {pauses} gaps of at least {} ms among {labels} words; silence or faint noise):\n",
        PAUSE_SECONDS * 1000.0
    );
    SetReport::print(&on_paused);
    println!(
        "\nThe TIMIT utterances transcribed together, batch size 8: packed into shared windows, and a window each:\n"
    );
    SetReport::print(&on_together);
    println!(
        "\nThe TIMIT utterances joined into one recording of {:.0} s (gaps of 0.3-2.5 s, silence or faint noise), transcribed whole:\n",
        joined.samples.len() as f64 / 16_000.0
    );
    println!("{}", TimingReport::HEADER);
    for (name, r) in &on_joined {
        println!("{}", r.row(name));
    }
    println!(
        "\nStart errors by the word's place (after a pause: at least {} ms after the previous label), and end errors before a pause:\n",
        PAUSE_SECONDS * 1000.0
    );
    println!("{}", TimingReport::PLACES_HEADER);
    for (name, r) in &on_joined {
        println!("{}", r.places_row(name));
    }
    println!("\nwhisk against faster-whisper's word times on the same words (TIMIT):\n");
    println!("| system | words | median abs Δstart ms | median abs Δend ms | Δstart ≤20 ms |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, s, e) in &deltas {
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0}% |",
            s.len(),
            s.median() * 1000.0,
            e.median() * 1000.0,
            s.within(0.02) * 100.0
        );
    }

    // jfk: no hand labels; distance from faster-whisper only.
    let jfk = args
        .shared
        .join("data/whisper_test_clips/audio16k/jfk.flac");
    let theirs = reference_words(&ref_dir.join("jfk/jfk.json"))?;
    println!("\njfk against faster-whisper's word times:\n");
    println!("| system | words | median abs Δstart ms | median abs Δend ms |");
    println!("| --- | --- | --- | --- |");
    for (&beam, padding) in args
        .beams
        .iter()
        .flat_map(|b| args.padding.iter().map(move |p| (b, p)))
    {
        for &mode in &args.modes {
            let options = word_options(*padding, mode, beam);
            let ours = transcript_words(&model.transcribe_file(&jfk, &options)?);
            let (mut s, mut e) = (ErrorStats::default(), ErrorStats::default());
            for (i, j) in match_words(&theirs, &ours) {
                s.push(ours[j].start, theirs[i].start);
                e.push(ours[j].end, theirs[i].end);
            }
            println!(
                "| whisk {mode:?}, {padding:?} padding, beam {beam} | {} | {:.0} | {:.0} |",
                s.len(),
                s.median() * 1000.0,
                e.median() * 1000.0
            );
        }
    }
    Ok(())
}

fn eval_wer(args: &Args) -> Result<()> {
    let utts = timit_utterances(&args.shared)?;
    let model = Model::builder(&args.model)
        .compute_type(args.compute)
        .build()?;
    println!(
        "TIMIT sample: {} utterances, model {}",
        utts.len(),
        args.model.display()
    );
    println!("WER after openai-style English normalisation (whisk-eval's port)\n");
    println!("| system | WER | errors / words | seconds |");
    println!("| --- | --- | --- | --- |");

    let mut reference = WerTotals::default();
    let ref_dir = args
        .shared
        .join("reference/tiny.en")
        .join(&args.reference_setting)
        .join("timit");
    let mut have_reference = ref_dir.is_dir();
    for (id, text) in &utts {
        let path = ref_dir.join(format!("{id}.json"));
        let Ok(raw) = std::fs::read_to_string(&path) else {
            have_reference = false;
            break;
        };
        let json: serde_json::Value = serde_json::from_str(&raw)?;
        let hyp = json["text"].as_str().unwrap_or_default();
        reference.add(&normalize_english(text), &normalize_english(hyp));
    }
    if have_reference {
        println!(
            "| faster-whisper 1.2.1 {} (reference outputs) | {:.2}% | {} / {} | |",
            args.reference_setting,
            100.0 * reference.wer(),
            reference.errors,
            reference.reference_words
        );
    }

    for &beam in &args.beams {
        for padding in &args.padding {
            let options = TranscribeOptions {
                mel_padding: *padding,
                decode: whisk::DecodeOptions {
                    beam_size: Some(beam),
                    ..Default::default()
                },
                ..Default::default()
            };
            let mut totals = WerTotals::default();
            let mut lines = String::new();
            let start = Instant::now();
            for (id, text) in &utts {
                let audio = args
                    .shared
                    .join(format!("data/timit_nltk_sample/audio/{id}.flac"));
                let t = model.transcribe_file(&audio, &options)?;
                totals.add(&normalize_english(text), &normalize_english(&t.text));
                lines += &format!("{id}\t{}\n", t.text.trim());
            }
            let search = match beam {
                1 => "greedy".to_string(),
                b => format!("beam {b}"),
            };
            if let Some(dir) = &args.hypotheses {
                std::fs::create_dir_all(dir)?;
                let name = format!("{}-beam{beam}-{padding:?}.tsv", args.compute.resolved());
                std::fs::write(dir.join(name), lines)?;
            }
            let padding = match padding {
                MelPadding::Silence => "openai padding",
                MelPadding::ZeroFeatures => "faster-whisper padding (default)",
            };
            println!(
                "| whisk {search}, {padding} | {:.2}% | {} / {} | {:.1} |",
                100.0 * totals.wer(),
                totals.errors,
                totals.reference_words,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
