//! The Python tests: the package's (against the CLI on the real models) and the server's
//! (`whisk serve` through OpenAI's client), in `target/python/venv`.
//!
//! `cargo xtask python` tests the wheel, as users get it: maturin builds it (release, candle)
//! and pip installs it. `cargo xtask test` tests the same package built by the workspace's own
//! build instead: maturin resolves features for whisk-python alone, which differ from the test
//! build's (serde, half, syn and more), so it compiled nearly every crate a second time, 402 s
//! on 2 cores.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

/// What the Python tests need besides the package: faster-whisper for the parity test, Ray
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

/// Where the package under test comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// The wheel maturin builds.
    Wheel,
    /// The workspace build's `lib_whisk.so` beside the package's Python sources.
    Workspace,
}

pub fn python(root: &Path, pytest_args: &[String], package: Package) -> Result<()> {
    let venv = test_venv(root)?;
    let python = venv.join("bin/python");
    // The tests compare the package's results with the CLI's, and start the server with it.
    build_workspace(root, package == Package::Workspace)?;
    // The package carries Silero VAD (it looks for it there), so that VAD, on by default in
    // batched mode, works wherever it is installed.
    let assets = root.join("crates/whisk-python/python/whisk/assets");
    std::fs::create_dir_all(&assets)?;
    std::fs::copy(
        root.join("target/models/silero-vad-v6/silero_vad_v6.onnx"),
        assets.join("silero_vad_v6.onnx"),
    )
    .context("Silero VAD for the package: run `cargo xtask fetch-models`")?;
    match package {
        Package::Wheel => install_wheel(root, &venv)?,
        Package::Workspace => install_from_workspace(root, &venv)?,
    }
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

/// The `.pth` file that puts the workspace-built package on the venv's path.
const WORKSPACE_PTH: &str = "whisk-workspace.pth";

fn install_wheel(root: &Path, venv: &Path) -> Result<()> {
    let _ = std::fs::remove_file(site_packages(venv)?.join(WORKSPACE_PTH));
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
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--force-reinstall",
            "--no-deps",
        ])
        .arg(&wheel))
}

/// `target/python/package/whisk`: the package's Python sources and assets, and the workspace
/// build's extension module under the name the wheel gives it; a `.pth` file (read by every
/// process of the venv, Ray's workers too) puts it on the path.
fn install_from_workspace(root: &Path, venv: &Path) -> Result<()> {
    // An installed wheel would come first on the path.
    run(Command::new(venv.join("bin/python")).args([
        "-m",
        "pip",
        "uninstall",
        "--quiet",
        "-y",
        "whisk",
    ]))?;
    let package = root.join("target/python/package");
    let _ = std::fs::remove_dir_all(&package);
    copy_dir(
        &root.join("crates/whisk-python/python/whisk"),
        &package.join("whisk"),
    )?;
    // Python names extension modules `.so` on macOS too.
    let built = format!(
        "{}_whisk{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    std::fs::copy(
        root.join("target/release").join(&built),
        package.join("whisk/_whisk.abi3.so"),
    )
    .with_context(|| format!("the workspace build made no target/release/{built}"))?;
    std::fs::write(
        site_packages(venv)?.join(WORKSPACE_PTH),
        format!("{}\n", package.display()),
    )?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The venv's `lib/pythonX.Y/site-packages`.
fn site_packages(venv: &Path) -> Result<PathBuf> {
    std::fs::read_dir(venv.join("lib"))?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .context("the venv has no site-packages")
}

/// `cargo xtask bench-server`: `whisk serve`'s throughput for 1, 4 and 16 clients, requests
/// batched together and one at a time (`crates/whisk-server/bench/throughput.py`).
pub fn bench_server(root: &Path, args: &[String]) -> Result<()> {
    let venv = test_venv(root)?;
    build_workspace(root, false)?;
    run(Command::new(venv.join("bin/python"))
        .arg(root.join("crates/whisk-server/bench/throughput.py"))
        .args(args)
        .env("WHISK_ROOT", root))
}

/// The CLI (and, with `package`, whisk-python's extension module) as `cargo xtask test` builds
/// the workspace: `-p whisk-cli` alone resolves other features (of `serde`, `half`, `syn` and
/// more) and built most crates a second time, 8 of a CI run's minutes.
fn build_workspace(root: &Path, package: bool) -> Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root)
        .args(["build", "--release", "--quiet", "--workspace"])
        .args(["--features", crate::TEST_FEATURES, "--bin", "whisk"]);
    if package {
        cmd.arg("--lib");
    }
    run(&mut cmd)
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
