//! `cargo xtask bench`: whisk against faster-whisper on the same model and audio, in one
//! interleaved run. Builds whisk, installs faster-whisper from PyPI into a venv under
//! `target/bench/`, and hands the runs to `xtask/bench.py` (which times every configuration as
//! its own process and prints the table).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

/// The faster-whisper release the reference outputs in `../shared/reference` came from.
const FASTER_WHISPER: &str = "faster-whisper==1.2.1";

const USAGE: &str = "usage: cargo xtask bench [--cases long,files,pauses,hour,encoder] [--whisk-batches 1,4,8,16] [--fw-batch 8] [--backends candle,burn,burn-wgpu] [--compute-types float32,int8] [--fw-compute-types int8,float32] [--model DIR]";

pub fn bench(root: &Path, args: &[String]) -> Result<()> {
    let mut cases = "long,files".to_string();
    let mut whisk_batches = "1,4,8,16".to_string();
    let mut fw_batch = "8".to_string();
    // Burn on wgpu is opt-in: on a machine without a GPU it runs on software Vulkan.
    let mut backends = "candle,burn".to_string();
    let mut model = root.join("target/models/tiny.en");
    // whisk's candle rows, once per compute type.
    let mut computes = "float32,int8".to_string();
    let mut fw_computes = "int8,float32".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--cases" => cases = value()?.clone(),
            "--whisk-batches" => whisk_batches = value()?.clone(),
            "--fw-batch" => fw_batch = value()?.clone(),
            "--backends" => backends = value()?.clone(),
            "--model" => model = value()?.into(),
            "--compute-types" => computes = value()?.clone(),
            "--fw-compute-types" => fw_computes = value()?.clone(),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let numbers = |s: &str| -> Result<Vec<usize>> {
        s.split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .with_context(|| format!("not a number: {n}"))
            })
            .collect()
    };
    let mut cases: Vec<&str> = cases.split(',').map(str::trim).collect();
    if let Some(c) = cases
        .iter()
        .find(|c| !["long", "files", "pauses", "hour", "encoder"].contains(c))
    {
        bail!("unknown case {c}\n{USAGE}");
    }
    if cases.contains(&"encoder") {
        encoder_windows(root, &model)?;
        cases.retain(|c| *c != "encoder");
        if cases.is_empty() {
            return Ok(());
        }
    }

    let backends: Vec<&str> = backends.split(',').map(str::trim).collect();
    if let Some(b) = backends
        .iter()
        .find(|b| !["candle", "burn", "burn-wgpu"].contains(b))
    {
        bail!("unknown backend {b}\n{USAGE}");
    }
    let mut features = vec!["candle"];
    if backends.contains(&"burn") {
        features.push("burn-cpu");
    }
    if backends.contains(&"burn-wgpu") {
        features.push("wgpu");
    }
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "whisk-cli",
        "-p",
        "whisk-eval",
        "--features",
        &features
            .iter()
            .map(|f| format!("whisk-cli/{f}"))
            .collect::<Vec<_>>()
            .join(","),
    ]))?;
    let work = root.join("target/bench");
    let python = venv_with_faster_whisper(&work)?;
    let shared = std::env::var_os("WHISK_SHARED_DIR")
        .map(Into::into)
        .unwrap_or_else(|| root.join("..").join("shared"));
    let config = serde_json::json!({
        "work": work,
        "shared": shared,
        "model": model,
        "whisk": root.join("target/release/whisk"),
        "whisk_eval": root.join("target/release/whisk-eval"),
        "vad_model": root.join("target/models/silero-vad-v6/silero_vad_v6.onnx"),
        "whisk_batches": numbers(&whisk_batches)?,
        "backends": backends,
        "whisk_computes": computes.split(',').map(str::trim).collect::<Vec<_>>(),
        "fw_computes": fw_computes.split(',').map(str::trim).collect::<Vec<_>>(),
        "fw_batch": numbers(&fw_batch)?.first().copied().unwrap_or(8),
        "cases": cases,
    });
    let config_path = work.join("config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    run(Command::new(&python)
        .arg(root.join("xtask/bench.py"))
        .arg(&config_path))
}

/// One encoder window and one decoder step per compute type (criterion, `benches/compute.rs`),
/// then faster-whisper's encoder on the same window, in the same run.
fn encoder_windows(root: &Path, model: &Path) -> Result<()> {
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "bench",
        "-p",
        "whisk-benches",
        "--bench",
        "compute",
    ]))?;
    let python = venv_with_faster_whisper(&root.join("target/bench"))?;
    let shared = std::env::var_os("WHISK_SHARED_DIR")
        .map(Into::into)
        .unwrap_or_else(|| root.join("..").join("shared"));
    run(Command::new(python)
        .arg(root.join("xtask/bench.py"))
        .arg("fw-encode")
        .arg(model)
        .arg(shared.join("data/whisper_test_clips/audio16k/jfk.flac"))
        .args(["int8", "float32"]))
}

/// `target/bench/venv` with faster-whisper installed (once).
fn venv_with_faster_whisper(work: &Path) -> Result<std::path::PathBuf> {
    let venv = work.join("venv");
    let python = venv.join("bin/python");
    let ready = python.is_file()
        && Command::new(&python)
            .args(["-c", "import faster_whisper"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        std::fs::create_dir_all(work)?;
        eprintln!("xtask: installing {FASTER_WHISPER} into {}", venv.display());
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("cannot make a venv (on Debian/Ubuntu: apt-get install python3-venv)")?;
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", FASTER_WHISPER]))?;
    }
    Ok(python)
}
