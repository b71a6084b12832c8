//! `cargo xtask python`: the `whisk` wheel (maturin, release, candle), installed into
//! `target/python/venv`, and its tests (pytest, against the CLI on the real models).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

/// What the Python tests need besides the wheel: faster-whisper for the parity test, Ray
/// Data and Daft for the corpus recipes'.
const TEST_REQUIREMENTS: [&str; 6] = [
    "maturin>=1.9,<2",
    "pytest",
    "numpy",
    "faster-whisper==1.2.1",
    "ray[data]",
    "daft",
];

pub fn python(root: &Path, pytest_args: &[String]) -> Result<()> {
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
    // The tests compare the package's results with the CLI's.
    run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "whisk-cli",
    ]))?;
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
        .args(pytest_args)
        .env("WHISK_ROOT", root))
}
