//! `whisk`: transcribe audio files with Whisper.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use whisk::output::{format_timestamp, Format};
use whisk::{BackendKind, ComputeType, Device, Model, Task, TranscribeOptions};

mod serve;
mod synthetic;

#[derive(Parser)]
#[command(
    name = "whisk",
    version,
    about = "Whisper speech-to-text with word-level timestamps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transcribe audio files (WAV, FLAC, MP3, OGG/Vorbis, M4A/AAC).
    Transcribe(Box<TranscribeArgs>),
    /// Serve OpenAI's audio transcription API (`/v1/audio/transcriptions`) over one model.
    Serve(Box<serve::Args>),
    /// Throughput of a device on random weights of an official model's shape (no text).
    #[command(hide = true)]
    BenchSynthetic(synthetic::Args),
    /// Joins audio files into one 16 kHz mono WAV with silence between them (test inputs).
    #[command(hide = true)]
    JoinAudio(JoinArgs),
}

#[derive(clap::Args)]
struct JoinArgs {
    /// The WAV file to write.
    output: PathBuf,
    /// Files to join, in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Silence between two files, in seconds.
    #[arg(long, default_value_t = 0.5, value_parser = non_negative)]
    gap_seconds: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum PaddingArg {
    FasterWhisper,
    Openai,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlignmentArg {
    SinglePass,
    #[value(alias = "openai")]
    Refeed,
    #[value(alias = "char")]
    Chars,
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    Transcribe,
    Translate,
}

#[derive(clap::Args)]
struct TranscribeArgs {
    /// Audio files to transcribe.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model directory (CTranslate2 or Hugging Face layout), or a Hugging Face model
    /// (`tiny.en`, `openai/whisper-base`) fetched into the hub cache.
    #[arg(long, short)]
    model: String,
    /// txt, vtt, srt, tsv, json or all.
    #[arg(long, short = 'f', default_value = "all")]
    output_format: String,
    /// Where to write `<input stem>.<ext>`.
    #[arg(long, short, default_value = ".")]
    output_dir: PathBuf,
    /// Spoken language code (en, de, ...); detected when omitted on multilingual models.
    #[arg(long)]
    language: Option<String>,
    #[arg(long, value_enum, default_value = "transcribe")]
    task: TaskArg,
    /// Tensor library: candle or burn (each must be compiled in; see the cargo features).
    #[arg(long)]
    backend: Option<String>,
    /// cpu, cuda, cuda:N, metal (candle) or wgpu (burn). Default: the backend's CPU device.
    #[arg(long)]
    device: Option<String>,
    /// Number type of the computation: auto (int8 where this CPU multiplies int8 exactly and
    /// fast, with AVX-512 VNNI or Arm's dot product, where TIMIT's WER and word times match
    /// float32's; else float32, as on GPUs and Burn), float32 (alias default, the library's
    /// default), float16, bfloat16 (half precision is meant for GPUs) or int8 (alias
    /// int8_float32: int8 linear layers, CPU only). Candle only
    #[arg(long, default_value = "auto", value_parser = compute_type)]
    compute_type: ComputeType,
    /// Profiling: time every backend call (waiting for the device after each) and print the
    /// totals as one JSON line on stderr.
    #[arg(long, hide = true)]
    backend_timing: bool,
    /// Text to prompt the first window with.
    #[arg(long)]
    initial_prompt: Option<String>,
    /// Prompt each window with the previous one's text.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    condition_on_previous_text: bool,
    /// How the last window is filled: faster-whisper (zero features; better word times) or
    /// openai (silent audio; slightly lower WER on TIMIT).
    #[arg(long, value_enum, default_value = "faster-whisper")]
    padding: PaddingArg,
    /// Time every word. Defaults to on when JSON is among the output formats.
    #[arg(long, action = clap::ArgAction::Set)]
    word_timestamps: Option<bool>,
    /// How words are timed: chars (a second decoder pass over the text spelled letter by
    /// letter; about 4x closer to hand-labelled word starts than openai-whisper's method, see
    /// the README), refeed (alias openai: a second pass over the text, openai-whisper's exact
    /// method) or single-pass (openai's method on the attention of the decode itself;
    /// cheapest).
    #[arg(long, alias = "alignment", value_enum, default_value = "chars")]
    word_alignment: AlignmentArg,
    /// Subtitles: at most this many words per cue (needs word timestamps).
    #[arg(long)]
    max_words_per_line: Option<usize>,
    /// Subtitles: underline each word as it is spoken (needs word timestamps).
    #[arg(long)]
    highlight_words: bool,
    /// Step between the temperatures tried when a window's decode looks wrong (repetitive or
    /// unlikely): 0, this, twice this, ... up to 1. 0 turns the fallback off.
    #[arg(long, default_value_t = 0.2)]
    temperature_increment_on_fallback: f64,
    /// Token ids never to emit, comma-separated; -1 stands for openai's set of non-speech
    /// symbols, an empty string for none.
    #[arg(long, default_value = "-1", value_parser = token_list, allow_hyphen_values = true)]
    suppress_tokens: TokenList,
    /// Sample text only, no timestamp tokens (segments then span whole windows).
    #[arg(long)]
    without_timestamps: bool,
    /// Latest time, in seconds, the first timestamp of a window may take.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    max_initial_timestamp: f64,
    /// Hypotheses kept by the beam search at temperature 0; 1 decodes greedily.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=32))]
    beam_size: u16,
    /// Beam search: finished hypotheses to collect before stopping, as a multiple of the
    /// beam size.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    patience: f64,
    /// Beam search ranking: omitted divides log-probability by length; a value in [0, 1]
    /// divides it by ((5 + length) / 6)^value.
    #[arg(long, value_parser = unit_interval)]
    length_penalty: Option<f64>,
    /// Candidates sampled at each fallback temperature; the likeliest is kept (openai-whisper
    /// and faster-whisper: 5; 2 measured as accurate and faster).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    best_of: u16,
    /// Windows decoded together (default 8). Above 1, files (or their --clip-timestamps clips)
    /// are cut into 30 s windows (overlapping by 4 s) decoded independently and stitched by
    /// word times, and all files share the batch; 1 runs openai-whisper's sequential loop
    /// (each window prompted with the previous text).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch_size: Option<u16>,
    /// Parts of each file to transcribe, in seconds: start,end,start,end,... (a missing last
    /// end is the end of the file).
    #[arg(long, value_parser = clip_list)]
    clip_timestamps: Option<ClipList>,
    /// Transcribe only the stretches Silero VAD v6 hears speech in (batched and packed: each
    /// stretch shares windows with others, silence between them; else merged into clips of up
    /// to 30 s; times stay on the file's own timeline). Off by default.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    vad: bool,
    /// Silero VAD v6's ONNX file (default: $WHISK_VAD_MODEL, the model's directory, then
    /// target/models/silero-vad-v6 from `cargo xtask fetch-models`).
    #[arg(long)]
    vad_model: Option<PathBuf>,
    /// VAD: speech probability from which a 32 ms frame is speech.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    vad_threshold: f64,
    /// VAD: silence that ends a speech segment, in ms (default 160 batched, 2000 with
    /// --batch-size 1, as faster-whisper).
    #[arg(long)]
    vad_min_silence_ms: Option<u32>,
    /// VAD: padding added at both ends of each speech segment, in ms.
    #[arg(long, default_value_t = 400)]
    vad_speech_pad_ms: u32,
    /// VAD: speech segments shorter than this are dropped, in ms.
    #[arg(long, default_value_t = 0)]
    vad_min_speech_ms: u32,
    /// Batched: files (or --vad clips) of up to 30 s share windows, two seconds of silence
    /// apart (half a second between clips of one file in order), each segment and word going
    /// back to its file by time; many short files need a fraction of the encoder passes. Only
    /// where the language is known (an English model, or --language).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pack: bool,
    /// Skip silent stretches longer than this (seconds) around suspected hallucinations
    /// (needs word timestamps, which it turns on). With --batch-size 1 as openai-whisper
    /// (decoding resumes after the silence); batched, a suspect segment with silence on both
    /// sides is dropped.
    #[arg(long, value_parser = positive)]
    hallucination_silence_threshold: Option<f64>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

/// Token ids from the command line (a newtype: clap reads a bare `Vec` as repeated values).
#[derive(Debug, Clone)]
struct TokenList(Vec<i64>);

fn token_list(s: &str) -> std::result::Result<TokenList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<i64>()
                .ok()
                .filter(|&id| id >= -1)
                .ok_or_else(|| format!("expected token ids (or -1), got {t:?}"))
        })
        .collect::<std::result::Result<_, _>>()
        .map(TokenList)
}

/// Clip boundaries in seconds from the command line.
#[derive(Debug, Clone)]
struct ClipList(Vec<f64>);

fn clip_list(s: &str) -> std::result::Result<ClipList, String> {
    s.split(',')
        .map(|t| non_negative(t.trim()))
        .collect::<std::result::Result<_, _>>()
        .map(ClipList)
}

fn compute_type(s: &str) -> std::result::Result<ComputeType, String> {
    s.parse()
}

fn non_negative(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("expected a number from 0 up, got {s:?}")),
    }
}

fn positive(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("expected a positive number, got {s:?}")),
    }
}

fn unit_interval(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

fn formats(spec: &str) -> Result<Vec<Format>> {
    if spec == "all" {
        return Ok(Format::ALL.to_vec());
    }
    spec.split(',')
        .map(|s| s.trim().parse::<Format>().map_err(anyhow::Error::msg))
        .collect()
}

/// A model named by `--model`, on `--backend` and `--device` where given.
fn model_builder(
    model: &str,
    backend: Option<&str>,
    device: Option<&str>,
) -> Result<whisk::ModelBuilder> {
    let mut builder = Model::builder(whisk::resolve_model(model)?);
    if let Some(backend) = backend {
        builder = builder.backend(backend.parse::<BackendKind>().map_err(anyhow::Error::msg)?);
    }
    if let Some(device) = device {
        builder = builder.device(device.parse::<Device>().map_err(anyhow::Error::msg)?);
    }
    Ok(builder)
}

fn transcribe(args: &TranscribeArgs) -> Result<()> {
    let formats = formats(&args.output_format)?;
    let mut builder = model_builder(&args.model, args.backend.as_deref(), args.device.as_deref())?;
    let load_started = std::time::Instant::now();
    if let Some(path) = &args.vad_model {
        builder = builder.vad_model(path);
    }
    let model = builder
        .compute_type(args.compute_type)
        .time_backend(args.backend_timing)
        .build()?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let run_started = std::time::Instant::now();
    let subtitle_words = args.max_words_per_line.is_some() || args.highlight_words;
    let batch_size = args.batch_size.unwrap_or(8);
    let word_timestamps = args.word_timestamps.unwrap_or(
        formats.contains(&Format::Json)
            || subtitle_words
            || args.hallucination_silence_threshold.is_some(),
    );
    if word_timestamps
        && model.alignment_heads().source == whisk::HeadsSource::LastHalfFallback
        && !args.quiet
    {
        eprintln!(
            "whisk: warning: the model lists no alignment heads; word times use all heads of the upper decoder half and are less reliable"
        );
    }
    let output_options = whisk::output::OutputOptions {
        max_words_per_line: args.max_words_per_line,
        highlight_words: args.highlight_words,
    };
    let options = TranscribeOptions {
        decode: whisk::DecodeOptions {
            language: args.language.clone(),
            task: match args.task {
                TaskArg::Transcribe => Task::Transcribe,
                TaskArg::Translate => Task::Translate,
            },
            suppress_tokens: args.suppress_tokens.0.clone(),
            without_timestamps: args.without_timestamps,
            max_initial_timestamp: Some(args.max_initial_timestamp),
            beam_size: Some(args.beam_size as usize),
            patience: Some(args.patience),
            length_penalty: args.length_penalty,
            ..Default::default()
        },
        initial_prompt: args.initial_prompt.clone(),
        condition_on_previous_text: args.condition_on_previous_text,
        mel_padding: match args.padding {
            PaddingArg::FasterWhisper => whisk::MelPadding::ZeroFeatures,
            PaddingArg::Openai => whisk::MelPadding::Silence,
        },
        word_timestamps,
        word_alignment: match args.word_alignment {
            AlignmentArg::SinglePass => whisk::WordAlignment::SinglePass,
            AlignmentArg::Refeed => whisk::WordAlignment::Refeed,
            AlignmentArg::Chars => whisk::WordAlignment::Chars,
        },
        batch_size: batch_size as usize,
        clip_timestamps: args
            .clip_timestamps
            .as_ref()
            .map_or_else(Vec::new, |c| c.0.clone()),
        hallucination_silence_threshold: args.hallucination_silence_threshold,
        temperatures: fallback_temperatures(args.temperature_increment_on_fallback)?,
        best_of: args.best_of as usize,
        vad: args.vad.then(|| vad_options(args, batch_size > 1)),
        pack_short_inputs: args.pack,
        ..Default::default()
    };
    std::fs::create_dir_all(&args.output_dir).with_context(|| {
        format!(
            "cannot create output directory {}",
            args.output_dir.display()
        )
    })?;

    // Every file is opened (and checked) first, so that a bad one fails before any work; the
    // audio itself is read as it is transcribed.
    let lengths: Vec<Option<f64>> = args
        .files
        .iter()
        .map(|f| whisk::probe_audio(f).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    let groups: Vec<Vec<usize>> = if options.batch_size > 1 {
        vec![(0..args.files.len()).collect()]
    } else {
        (0..args.files.len()).map(|i| vec![i]).collect()
    };
    for group in groups {
        let paths: Vec<&Path> = group.iter().map(|&i| args.files[i].as_path()).collect();
        // A length the headers do not tell counts as long: better a bar too many than none.
        let seconds: f64 = group
            .iter()
            .map(|&i| lengths[i].unwrap_or(f64::INFINITY))
            .sum();
        let name = match group.as_slice() {
            [one] => args.files[*one].display().to_string(),
            many => format!("{} files", many.len()),
        };
        let bar = (!args.quiet && seconds > 30.0).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {percent}% ({elapsed} elapsed, ETA {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(name.clone());
            bar
        });
        let transcripts = model
            .transcribe_files(&paths, &options, &mut |p| {
                if let Some(bar) = &bar {
                    bar.set_length((p.total_seconds * 1000.0) as u64);
                    bar.set_position((p.done_seconds * 1000.0) as u64);
                }
            })
            .with_context(|| format!("transcribing {name}"))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        for (&i, transcript) in group.iter().zip(&transcripts) {
            let file = &args.files[i];
            // Warnings name the file and are printed even with --quiet, as errors are.
            for warning in &transcript.warnings {
                eprintln!("whisk: warning: {warning}");
            }
            if !args.quiet {
                if group.len() > 1 {
                    println!("{}:", file.display());
                }
                for s in &transcript.segments {
                    println!(
                        "[{} --> {}] {}",
                        format_timestamp(s.start, false, '.'),
                        format_timestamp(s.end, false, '.'),
                        s.text.trim()
                    );
                }
            }
            write_outputs(
                file,
                &args.output_dir,
                &formats,
                transcript,
                &output_options,
            )?;
        }
    }
    if let Some(times) = model.backend_times() {
        eprintln!(
            "{}",
            timing_json(&times, load_seconds, run_started.elapsed().as_secs_f64())
        );
    }
    Ok(())
}

/// `--backend-timing`'s line: seconds in each kind of backend call, and the rest of the run
/// (audio, mel, decoding rules, alignment, output) as host time.
fn timing_json(t: &whisk::BackendTimes, load_seconds: f64, wall_seconds: f64) -> String {
    let backend = t.total().as_secs_f64();
    serde_json::json!({
        "load_s": load_seconds,
        "wall_s": wall_seconds,
        "encode_s": t.encode.as_secs_f64(),
        "attach_s": t.attach.as_secs_f64(),
        "copy_s": t.copy.as_secs_f64(),
        "decode_s": t.decode.as_secs_f64(),
        "host_s": (wall_seconds - backend).max(0.0),
        "windows_encoded": t.windows_encoded,
        "encode_calls": t.encode_calls,
        "decode_steps": t.decode_steps,
        "rows_stepped": t.rows_stepped,
    })
    .to_string()
}

fn join_audio(args: &JoinArgs) -> Result<()> {
    let gap = vec![0.0; (args.gap_seconds * whisk::SAMPLE_RATE as f64).round() as usize];
    let mut joined = Vec::new();
    for (i, file) in args.files.iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(&gap);
        }
        joined.extend(whisk::load_audio(file)?);
    }
    std::fs::write(&args.output, wav_16bit(&joined))
        .with_context(|| format!("cannot write {}", args.output.display()))
}

/// A 16-bit PCM WAV file of 16 kHz mono samples.
fn wav_16bit(samples: &[f32]) -> Vec<u8> {
    let rate = whisk::SAMPLE_RATE as u32;
    let data_len = 2 * samples.len() as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(2 * rate).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        let s = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// faster-whisper's VAD choices for the mode, with the command line's on top.
fn vad_options(args: &TranscribeArgs, batched: bool) -> whisk::VadOptions {
    let base = if batched {
        whisk::VadOptions::batched()
    } else {
        whisk::VadOptions::default()
    };
    whisk::VadOptions {
        threshold: args.vad_threshold,
        min_silence_duration_ms: args
            .vad_min_silence_ms
            .unwrap_or(base.min_silence_duration_ms),
        speech_pad_ms: args.vad_speech_pad_ms,
        min_speech_duration_ms: args.vad_min_speech_ms,
        ..base
    }
}

/// `0, step, 2 step, ... <= 1` (openai's `--temperature_increment_on_fallback`).
fn fallback_temperatures(step: f64) -> Result<Vec<f64>> {
    if !(0.0..=1.0).contains(&step) {
        bail!("--temperature-increment-on-fallback must be between 0 and 1, not {step}");
    }
    if step == 0.0 {
        return Ok(vec![0.0]);
    }
    let count = (1.0 / step + 1e-6).floor() as usize;
    Ok((0..=count)
        .map(|i| (i as f64 * step * 1e6).round() / 1e6)
        .collect())
}

fn write_outputs(
    input: &Path,
    dir: &Path,
    formats: &[Format],
    t: &whisk::Transcript,
    opts: &whisk::output::OutputOptions,
) -> Result<()> {
    let Some(stem) = input.file_stem() else {
        bail!("{} has no file name", input.display());
    };
    for f in formats {
        let mut name = stem.to_os_string();
        name.push(format!(".{}", f.extension()));
        let path = dir.join(name);
        std::fs::write(&path, f.render(t, opts))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    whisk::keep_freed_memory_for_reuse();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Transcribe(args) => transcribe(args),
        Command::Serve(args) => serve::run(args),
        Command::BenchSynthetic(args) => synthetic::run(args),
        Command::JoinAudio(args) => join_audio(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("whisk: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause left out where the message before it already says it
/// (our errors name the file and quote the I/O error they wrap).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if text.is_empty() {
            text = message;
        } else if !text.ends_with(&message) {
            text = format!("{text}: {message}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_that_quotes_its_cause_prints_it_once() {
        let io = std::io::Error::new(std::io::ErrorKind::IsADirectory, "Is a directory");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x.onnx: {source}")]
        struct Quoting {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Quoting { source: io }).context("transcribing a.wav");
        assert_eq!(
            error_chain(&e),
            "transcribing a.wav: cannot read x.onnx: Is a directory"
        );
    }
}
