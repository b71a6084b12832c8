//! `cargo xtask gpu-bundle`: everything a GPU machine without cargo or a network needs to
//! check whisk in one call, laid out in `target/gpu-bundle` (carry that folder):
//!
//! - `payload.tar.xz`: the CUDA binary (stripped) and tiny.en in int8 (CTranslate2);
//! - `audio/`: jfk and TIMIT files from `../shared/data`, FLAC as they are;
//! - `cpu-ref/`: this machine's transcripts of the correctness files, by the same binary;
//! - `gpu-check.sh` and `gpu_check.py`: the driver (see `xtask/gpu/`);
//! - `manifest.json`: the commit, the file lists and every part's size.
//!
//! The whole must stay under [`LIMIT_MIB`] (the device tool carries 64 MiB). Then the bundle
//! is proven here on the CPU (`gpu-check.sh --cpu-proof`, the stub libcuda standing in for
//! the driver) unless `--no-proof` is given.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

const LIMIT_MIB: f64 = 60.0;
/// TIMIT files checked for correctness (besides jfk), timed as many files, and joined on the
/// device into the long file.
const CORRECTNESS_TIMIT: usize = 20;
const THROUGHPUT_TIMIT: usize = 60;
const LONG_TIMIT: usize = 80;
/// The batch size of the CPU's reference transcripts; the device runs the same.
const REFERENCE_BATCH: usize = 8;

pub fn gpu_bundle(root: &Path, args: &[String]) -> Result<()> {
    let proof = !args.iter().any(|a| a == "--no-proof");
    crate::fetch::fetch_all(root)?;
    crate::build_cuda(root, &[])?;

    let bundle = root.join("target/gpu-bundle");
    let stage = root.join("target/gpu-bundle-stage");
    for dir in [&bundle, &stage] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let binary = stage.join("bin/whisk");
    fs::create_dir_all(binary.parent().unwrap())?;
    fs::copy(root.join("target/cuda/build/release/whisk"), &binary)?;
    run(Command::new("strip").arg(&binary))?;
    let model = stage.join("models/tiny.en-int8");
    fs::create_dir_all(&model)?;
    for file in ["model.bin", "config.json", "tokenizer.json"] {
        fs::copy(
            root.join("target/models/tiny.en-ct2-int8").join(file),
            model.join(file),
        )?;
    }
    fs::create_dir_all(&bundle)?;
    run(Command::new("tar")
        .env("XZ_OPT", "-6 -T2")
        .arg("-cJf")
        .arg(bundle.join("payload.tar.xz"))
        .arg("-C")
        .arg(&stage)
        .args(["bin", "models"]))?;

    let audio = bundle.join("audio");
    fs::create_dir_all(&audio)?;
    let data = root.join("../shared/data");
    let timit = sorted_files(&data.join("timit_nltk_sample/audio"), "flac")?;
    if timit.len() < THROUGHPUT_TIMIT + LONG_TIMIT {
        bail!(
            "expected at least {} TIMIT files, found {}",
            THROUGHPUT_TIMIT + LONG_TIMIT,
            timit.len()
        );
    }
    let shipped = std::iter::once(data.join("whisper_test_clips/audio16k/jfk.flac"))
        .chain(timit[..THROUGHPUT_TIMIT + LONG_TIMIT].iter().cloned());
    let mut names = Vec::new();
    for path in shipped {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        fs::copy(&path, audio.join(&name))
            .with_context(|| format!("copying {}", path.display()))?;
        names.push(name);
    }
    let correctness: Vec<&String> = names[..=CORRECTNESS_TIMIT].iter().collect();
    let throughput = &names[1..=THROUGHPUT_TIMIT];
    let long_parts = &names[1 + THROUGHPUT_TIMIT..];

    for file in ["gpu-check.sh", "gpu_check.py"] {
        fs::copy(root.join("xtask/gpu").join(file), bundle.join(file))?;
    }
    let stub_libs = stub_library_path(root);
    let reference = bundle.join("cpu-ref");
    run(Command::new(&binary)
        .env("LD_LIBRARY_PATH", &stub_libs)
        .arg("transcribe")
        .args(correctness.iter().map(|n| audio.join(n)))
        .arg("--model")
        .arg(&model)
        .args(["--device", "cpu", "--compute-type", "float32", "--quiet"])
        .args(["--batch-size", &REFERENCE_BATCH.to_string()])
        .args(["--word-timestamps", "true", "--output-format", "json"])
        .arg("--output-dir")
        .arg(&reference))?;

    let sizes = [
        (
            "payload.tar.xz (binary + tiny.en int8)",
            size(&bundle.join("payload.tar.xz"))?,
        ),
        ("audio/", size(&audio)?),
        ("cpu-ref/", size(&reference)?),
        (
            "scripts",
            size(&bundle.join("gpu-check.sh"))? + size(&bundle.join("gpu_check.py"))?,
        ),
    ];
    let total: u64 = sizes.iter().map(|(_, s)| s).sum();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for (what, bytes) in &sizes {
        println!("{:>8.2} MiB  {what}", mib(*bytes));
    }
    println!(
        "{:>8.2} MiB  in all (binary {:.1} MiB and model {:.1} MiB before compression)",
        mib(total),
        mib(size(&binary)?),
        mib(size(&model)?)
    );
    let manifest = serde_json::json!({
        "commit": commit(root),
        "total_mib": (mib(total) * 100.0).round() / 100.0,
        "sizes_mib": sizes.iter().map(|(w, b)| (w.to_string(), serde_json::json!((mib(*b) * 100.0).round() / 100.0))).collect::<serde_json::Map<_, _>>(),
        "correctness_files": correctness,
        "throughput_files": throughput,
        "long_parts": long_parts,
        "reference_batch": REFERENCE_BATCH,
        "reference_compute_type": "float32",
    });
    fs::write(
        bundle.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    if mib(total) > LIMIT_MIB {
        bail!(
            "the bundle is {:.1} MiB, over the {LIMIT_MIB} MiB that can be carried",
            mib(total)
        );
    }
    fs::remove_dir_all(&stage)?;

    if proof {
        let out = root.join("target/gpu-bundle-proof");
        run(Command::new("bash")
            .arg(bundle.join("gpu-check.sh"))
            .arg("--cpu-proof")
            .env("OUT", &out)
            .env("WHISK_EXTRA_LIBS", &stub_libs))?;
        println!("CPU proof: {}", out.join("report.md").display());
    }
    println!(
        "carry target/gpu-bundle and run: bash target/gpu-bundle/gpu-check.sh (report in $OUT)"
    );
    Ok(())
}

/// cuBLAS and friends from the toolkit wheels, and the stub libcuda: enough for the CUDA
/// binary to start here and run on the CPU.
fn stub_library_path(root: &Path) -> String {
    let lib = root.join("target/cuda/toolkit/lib64");
    format!("{}:{}", lib.display(), lib.join("stubs").display())
}

fn sorted_files(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    Ok(files)
}

/// Bytes in a file, or in a folder's files.
fn size(path: &Path) -> Result<u64> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    fs::read_dir(path)?.map(|e| size(&e?.path())).sum()
}

fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!(
        "{}{}",
        git(&["rev-parse", "--short", "HEAD"]),
        if dirty { "+changes" } else { "" }
    )
}
