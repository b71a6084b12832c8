//! `cargo xtask python`: the `whisk` wheel (maturin, release, candle), installed into
//! `target/python/venv`, and the Python tests: the package's (against the CLI on the real
//! models) and the server's (`whisk serve` through OpenAI's client).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

/// What the Python tests need besides the wheel: faster-whisper for the parity test, Ray
/// Data and Daft for the corpus recipes', OpenAI's client for the server's.
const TEST_REQUIREMENTS: [&str; 7] = [
    "maturin>=1.9,<2",
    "pytest",
    "numpy",
    "faster-whisper==1.2.1",
    "ray[data]",
    "daft",
    "openai",
];

pub fn python(root: &Path, pytest_args: &[String]) -> Result<()> {
    let venv = test_venv(root)?;
    let python = venv.join("bin/python");
    // The tests compare the package's results with the CLI's, and start the server with it.
    build_cli(root)?;
    // The wheel carries Silero VAD (the package looks for it there), so that VAD, on by
    // default in batched mode, works wherever the wheel is installed.
    let assets = root.join("crates/whisk-python/python/whisk/assets");
    std::fs::create_dir_all(&assets)?;
    std::fs::copy(
        root.join("target/models/silero-vad-v6/silero_vad_v6.onnx"),
        assets.join("silero_vad_v6.onnx"),
    )
    .context("Silero VAD for the wheel: run `cargo xtask fetch-models`")?;
    let wheels = root.join("target/python/wheels");
    let _ = std::fs::remove_dir_all(&wheels);
    run(Command::new(venv.join("bin/maturin"))
        .current_dir(root)
        .args(["build", "--release", "--quiet"])
        .args(["-m", "crates/whisk-python/Cargo.toml", "-o"])
        .arg(&wheels))?;
    let wheel = std::fs::read_dir(&wheels)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("maturin made no wheel")?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--force-reinstall",
            "--no-deps",
        ])
        .arg(&wheel))?;
    run(Command::new(&python)
        .current_dir(root.join("target/python"))
        // Nothing written into the source tree: no cache, no bytecode.
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(root.join("crates/whisk-python/tests"))
        .arg(root.join("crates/whisk-server/tests"))
        .args(pytest_args)
        .env("WHISK_ROOT", root))
}

/// `cargo xtask bench-server`: `whisk serve`'s throughput for 1, 4 and 16 clients, requests
/// batched together and one at a time (`crates/whisk-server/bench/throughput.py`).
pub fn bench_server(root: &Path, args: &[String]) -> Result<()> {
    let venv = test_venv(root)?;
    build_cli(root)?;
    run(Command::new(venv.join("bin/python"))
        .arg(root.join("crates/whisk-server/bench/throughput.py"))
        .args(args)
        .env("WHISK_ROOT", root))
}

/// The CLI as `cargo xtask test` builds the workspace: `-p whisk-cli` alone resolves other
/// features (of `serde`, `half`, `syn` and more) and built most crates a second time, 8 of a
/// CI run's minutes.
fn build_cli(root: &Path) -> Result<()> {
    run(Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--release", "--quiet", "--workspace"])
        .args(["--features", crate::TEST_FEATURES, "--bin", "whisk"]))
}

/// `target/python/venv` with the test requirements.
fn test_venv(root: &Path) -> Result<std::path::PathBuf> {
    let venv = root.join("target/python/venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        eprintln!("xtask: making {}", venv.display());
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("cannot make a venv (on Debian/Ubuntu: apt-get install python3-venv)")?;
    }
    // Quick when they are there already; an older venv gets what was added since.
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(TEST_REQUIREMENTS))?;
    Ok(venv)
}
