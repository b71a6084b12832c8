//! `cargo xtask fuzz [--seconds N] [--seed S]`: random and mutated audio through decoding,
//! resampling, the log-mel and Silero VAD until the time is up (not part of the test suite).
//!
//! Cases: files from `../shared/data` with bits flipped, bytes overwritten, inserted or cut,
//! chunks repeated, headers spliced onto other bodies, or the file cut short; WAV files made
//! up here with any rate, channel count and sample format; random bytes; and raw samples with
//! NaN, infinities and huge values fed straight to the resampler, mel and VAD. Each must end in
//! samples or an error, never a panic, and what comes out must hold: a mel as long as the
//! audio, speech probabilities in [0, 1] (for finite audio), speech segments ordered inside
//! the audio. An input that breaks a rule is saved under `target/fuzz/` and counted; the run
//! exits non-zero if there was one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use whisk_audio::{load_audio_with_damage, log_mel_spectrogram, loudness_db, resample};
use whisk_tests::{root, shared_data};
use whisk_types::{VadOptions, HOP_LENGTH};
use whisk_vad::{speech_segments, SileroVad};

const AUDIO: [&str; 6] = ["flac", "wav", "mp3", "ogg", "m4a", "opus"];

fn main() {
    let mut seconds = 600.0;
    let mut seed = 0u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match (
            pair[0].as_str(),
            pair.get(1).and_then(|v| v.parse::<f64>().ok()),
        ) {
            ("--seconds", Some(s)) => seconds = s,
            ("--seed", Some(s)) => seed = s as u64,
            _ => {
                eprintln!("usage: whisk-fuzz [--seconds N] [--seed S]");
                std::process::exit(2);
            }
        }
    }
    let corpus = audio_files(&shared_data("."));
    assert!(!corpus.is_empty(), "no audio files in ../shared/data");
    let vad_path = root().join("target/models/silero-vad-v6/silero_vad_v6.onnx");
    let vad = SileroVad::from_file(&vad_path)
        .unwrap_or_else(|e| panic!("{e}: run `cargo xtask fetch-models`"));
    let out = root().join("target/fuzz");
    std::fs::create_dir_all(&out).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let (kind, case) = make_case(&mut rng, &corpus);
        let outcome = catch_unwind(AssertUnwindSafe(|| run_case(&case, &vad, &out))).ok();
        tally.count(kind, outcome.as_ref());
        if outcome.is_none() {
            let name = format!("crash-{}-{}", tally.crashes, kind.replace(' ', "-"));
            let kept = case.save(&out.join(&name));
            eprintln!(
                "whisk-fuzz: a {kind} case broke a rule, kept as {}",
                kept.display()
            );
        }
    }
    println!(
        "whisk-fuzz: {} cases in {seconds:.0} s (seed {seed}): {} mutated files, {} made-up WAVs, \
         {} random bytes, {} raw sample arrays; {} decoded ({:.0} s of audio), {} refused with \
         an error, {} damaged; {} broke a rule",
        tally.cases,
        tally.kinds[0],
        tally.kinds[1],
        tally.kinds[2],
        tally.kinds[3],
        tally.decoded,
        tally.audio_seconds,
        tally.errors,
        tally.damaged,
        tally.crashes
    );
    if tally.crashes > 0 {
        std::process::exit(1);
    }
}

/// Every audio file under `dir`.
fn audio_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(audio_files(&path));
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| AUDIO.contains(&e))
        {
            out.push(path);
        }
    }
    out.sort();
    out
}

enum Case {
    /// Bytes to decode as a file with this extension.
    File(Vec<u8>, &'static str),
    /// Samples at this rate, straight to the resampler, mel and VAD.
    Samples(Vec<f32>, u32),
}

impl Case {
    fn save(&self, stem: &Path) -> PathBuf {
        let (bytes, ext) = match self {
            Case::File(bytes, ext) => (bytes.clone(), *ext),
            Case::Samples(samples, rate) => {
                let mut bytes = rate.to_le_bytes().to_vec();
                bytes.extend(samples.iter().flat_map(|x| x.to_le_bytes()));
                (bytes, "f32")
            }
        };
        let path = stem.with_extension(ext);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn make_case(rng: &mut StdRng, corpus: &[PathBuf]) -> (&'static str, Case) {
    match rng.random_range(0..10) {
        0..=5 => {
            let path = &corpus[rng.random_range(0..corpus.len())];
            let mut bytes = std::fs::read(path).unwrap();
            let other = std::fs::read(&corpus[rng.random_range(0..corpus.len())]).unwrap();
            for _ in 0..rng.random_range(1..4) {
                mutate(rng, &mut bytes, &other);
            }
            let ext = AUDIO
                .iter()
                .find(|e| path.extension().is_some_and(|x| x == **e))
                .copied()
                .unwrap_or("wav");
            ("mutated", Case::File(bytes, ext))
        }
        6..=7 => ("made-up wav", Case::File(made_up_wav(rng), "wav")),
        8 => {
            let n = rng.random_range(0..4096);
            let bytes = (0..n).map(|_| rng.random()).collect();
            (
                "random bytes",
                Case::File(bytes, AUDIO[rng.random_range(0..AUDIO.len())]),
            )
        }
        _ => {
            let n = rng.random_range(0..16_000 * 8);
            let samples = (0..n).map(|_| odd_sample(rng)).collect();
            let rate = [8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000, 1, 3];
            (
                "raw samples",
                Case::Samples(samples, rate[rng.random_range(0..rate.len())]),
            )
        }
    }
}

/// One change to a file's bytes; `other` lends headers and chunks.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>, other: &[u8]) {
    if bytes.is_empty() {
        bytes.extend_from_slice(&other[..other.len().min(64)]);
        return;
    }
    let at = rng.random_range(0..bytes.len());
    let len = rng.random_range(1..=256.min(bytes.len() - at));
    match rng.random_range(0..8) {
        0 => {
            for _ in 0..rng.random_range(1..32) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => rng.fill(&mut bytes[at..at + len]),
        2 => bytes.truncate(at),
        3 => {
            bytes.drain(at..at + len);
        }
        4 => {
            let chunk = bytes[at..at + len].to_vec();
            for _ in 0..rng.random_range(1..8) {
                bytes.splice(at..at, chunk.iter().copied());
            }
        }
        5 => {
            let random: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            bytes.splice(at..at, random);
        }
        6 => {
            // Another file's header on this body.
            let head = other.len().min(rng.random_range(4..512));
            bytes.splice(..head.min(bytes.len()), other[..head].iter().copied());
        }
        _ => bytes[at..at + len].fill(if rng.random() { 0 } else { 0xff }),
    }
}

/// A WAV file with any rate, channel count and sample format, holding tones, noise, silence
/// or extreme values; its header may lie about the data's length.
fn made_up_wav(rng: &mut StdRng) -> Vec<u8> {
    let rate: u32 = [
        1, 4_000, 8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000, 192_000,
    ][rng.random_range(0..10)];
    let channels: u16 = rng.random_range(1..=8);
    let (format, bits): (u16, u16) =
        [(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)][rng.random_range(0..6)];
    let frames = rng.random_range(0..(rate as usize * 3).max(1));
    let bytes_per = bits as usize / 8;
    let mut data = Vec::with_capacity(frames * channels as usize * bytes_per);
    let tone = rng.random_range(50.0..8000.0f64);
    let kind = rng.random_range(0..4);
    for i in 0..frames {
        for _ in 0..channels {
            let x = match kind {
                0 => (i as f64 * tone * std::f64::consts::TAU / rate as f64).sin() * 0.5,
                1 => rng.random_range(-1.0..1.0),
                2 => 0.0,
                _ => {
                    if rng.random() {
                        1.0
                    } else {
                        -1.0
                    }
                }
            };
            match (format, bits) {
                (1, 8) => data.push(((x * 127.0) + 128.0) as u8),
                (1, 16) => data.extend(((x * 32767.0) as i16).to_le_bytes()),
                (1, 24) => data.extend(&((x * 8_388_607.0) as i32).to_le_bytes()[..3]),
                (1, _) => data.extend(((x * 2_147_483_647.0) as i32).to_le_bytes()),
                (3, 32) => data.extend(odd_or(rng, x as f32).to_le_bytes()),
                _ => data.extend((odd_or(rng, x as f32) as f64).to_le_bytes()),
            }
        }
    }
    let block = channels as u32 * bytes_per as u32;
    let stated = match rng.random_range(0..4) {
        0 => rng.random(),
        _ => data.len() as u32,
    };
    let mut wav = b"RIFF".to_vec();
    wav.extend((36 + data.len() as u32).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes());
    wav.extend(format.to_le_bytes());
    wav.extend(channels.to_le_bytes());
    wav.extend(rate.to_le_bytes());
    wav.extend((rate * block).to_le_bytes());
    wav.extend((block as u16).to_le_bytes());
    wav.extend(bits.to_le_bytes());
    wav.extend(b"data");
    wav.extend(stated.to_le_bytes());
    wav.extend(data);
    wav
}

/// `x`, or now and then a value no recording holds.
fn odd_or(rng: &mut StdRng, x: f32) -> f32 {
    if rng.random_range(0..1000) == 0 {
        odd_sample(rng)
    } else {
        x
    }
}

fn odd_sample(rng: &mut StdRng) -> f32 {
    match rng.random_range(0..8) {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        3 => f32::MAX,
        4 => 1e-40,
        _ => rng.random_range(-2.0..2.0),
    }
}

/// How a case ended, when it broke no rule.
enum Outcome {
    Refused,
    Decoded { seconds: f64, damaged: bool },
}

#[derive(Default)]
struct Tally {
    cases: usize,
    kinds: [usize; 4],
    crashes: usize,
    decoded: usize,
    errors: usize,
    damaged: usize,
    audio_seconds: f64,
}

impl Tally {
    fn count(&mut self, kind: &str, outcome: Option<&Outcome>) {
        self.cases += 1;
        let k = ["mutated", "made-up wav", "random bytes", "raw samples"]
            .iter()
            .position(|&n| n == kind)
            .expect("a known kind");
        self.kinds[k] += 1;
        match outcome {
            None => self.crashes += 1,
            Some(Outcome::Refused) => self.errors += 1,
            Some(Outcome::Decoded { seconds, damaged }) => {
                self.decoded += 1;
                self.audio_seconds += seconds;
                self.damaged += usize::from(*damaged);
            }
        }
    }
}

fn run_case(case: &Case, vad: &SileroVad, out: &Path) -> Outcome {
    let mut damaged = false;
    let samples = match case {
        Case::File(bytes, ext) => {
            let path = out.join(format!("case.{ext}"));
            std::fs::write(&path, bytes).unwrap();
            match load_audio_with_damage(&path) {
                Ok((samples, damage)) => {
                    if let Some(d) = damage {
                        damaged = true;
                        let message = d.to_string();
                        assert!(
                            message.contains("case."),
                            "damage names the file: {message}"
                        );
                    }
                    samples
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    return Outcome::Refused;
                }
            }
        }
        Case::Samples(samples, rate) => match resample(samples, *rate) {
            Ok(s) => s,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return Outcome::Refused;
            }
        },
    };
    check_samples(&samples, vad);
    Outcome::Decoded {
        seconds: samples.len() as f64 / 16_000.0,
        damaged,
    }
}

/// What must hold for any samples: a mel frame per hop, finite for finite audio; speech
/// probabilities in [0, 1]; speech segments ordered inside the audio.
fn check_samples(samples: &[f32], vad: &SileroVad) {
    let finite = samples.iter().all(|x| x.is_finite());
    let n_mels = 80;
    let mel = log_mel_spectrogram(samples, n_mels, HOP_LENGTH);
    assert_eq!(
        mel.frames,
        samples.len() / HOP_LENGTH + 1,
        "one mel frame per hop"
    );
    if finite {
        assert!(
            mel.data.iter().all(|x| x.is_finite()),
            "finite audio, finite mel"
        );
        let loud = loudness_db(&mel.data, n_mels, mel.frames);
        assert!(loud.iter().all(|x| !x.is_nan()));
    }
    let probabilities = vad.speech_probabilities(samples);
    assert_eq!(probabilities.len(), samples.len() / 512 + 1);
    if finite {
        assert!(
            probabilities.iter().all(|p| (0.0..=1.0).contains(p)),
            "probabilities in [0, 1]"
        );
    }
    let segments = speech_segments(&probabilities, samples.len(), &VadOptions::default());
    let mut last_end = 0;
    for s in &segments {
        assert!(
            s.start < s.end && s.end <= samples.len(),
            "{s:?} in {} samples",
            samples.len()
        );
        assert!(s.start >= last_end, "segments ordered");
        last_end = s.end;
    }
}
