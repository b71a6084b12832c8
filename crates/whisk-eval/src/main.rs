//! `whisk-eval`: accuracy of whisk against reference transcripts, side by side with
//! faster-whisper's outputs on the same weights. Run through `cargo xtask eval`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use whisk::{MelPadding, Model, TranscribeOptions};
use whisk_eval::{normalize_english, WerTotals};

struct Args {
    model: PathBuf,
    shared: PathBuf,
    reference_setting: String,
    padding: Vec<MelPadding>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        model: PathBuf::from("target/models/tiny.en"),
        shared: PathBuf::from("../shared"),
        reference_setting: "fw-float32-beam1".into(),
        padding: vec![MelPadding::Silence, MelPadding::ZeroFeatures],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => args.model = value()?.into(),
            "--shared" => args.shared = value()?.into(),
            "--reference" => args.reference_setting = value()?,
            "--padding" => {
                args.padding = match value()?.as_str() {
                    "openai" => vec![MelPadding::Silence],
                    "faster-whisper" => vec![MelPadding::ZeroFeatures],
                    "both" => vec![MelPadding::Silence, MelPadding::ZeroFeatures],
                    other => bail!("--padding takes openai, faster-whisper or both, not {other}"),
                }
            }
            other => bail!("unknown argument {other}; see the source of whisk-eval"),
        }
    }
    Ok(args)
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

fn main() -> Result<()> {
    let args = parse_args()?;
    let utts = timit_utterances(&args.shared)?;
    let model = Model::builder(&args.model).build()?;
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

    for padding in &args.padding {
        let options = TranscribeOptions {
            mel_padding: *padding,
            ..Default::default()
        };
        let mut totals = WerTotals::default();
        let start = Instant::now();
        for (id, text) in &utts {
            let audio = args
                .shared
                .join(format!("data/timit_nltk_sample/audio/{id}.flac"));
            let t = model.transcribe_file(&audio, &options)?;
            totals.add(&normalize_english(text), &normalize_english(&t.text));
        }
        let name = match padding {
            MelPadding::Silence => "whisk greedy, openai padding (default)",
            MelPadding::ZeroFeatures => "whisk greedy, faster-whisper padding",
        };
        println!(
            "| {name} | {:.2}% | {} / {} | {:.1} |",
            100.0 * totals.wer(),
            totals.errors,
            totals.reference_words,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
