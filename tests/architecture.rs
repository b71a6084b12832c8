//! The backend-independent crates must never depend on a tensor library, even indirectly;
//! the crates on top reach the rest through the facade only.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

const INDEPENDENT: &[&str] = &[
    "whisk-types",
    "whisk-audio",
    "whisk-vad",
    "whisk-text",
    "whisk-decode",
    "whisk-backend",
    "whisk-weights",
    "whisk-batch",
    "whisk-pipeline",
    "whisk-align",
    "whisk-int8",
];

fn is_tensor_library(name: &str) -> bool {
    name.starts_with("candle")
        || name == "burn"
        || name.starts_with("burn-")
        || name.starts_with("cubecl")
}

/// Crates on top of the facade, with the workspace crates each may use: the rest they reach
/// only through `whisk`.
const ON_THE_FACADE: &[(&str, &[&str])] = &[
    ("whisk-cli", &["whisk", "whisk-server"]),
    ("whisk-python", &["whisk"]),
    ("whisk-server", &["whisk"]),
];

fn metadata() -> serde_json::Value {
    let out = Command::new(env!("CARGO"))
        .current_dir(whisk_tests::root())
        .args(["metadata", "--format-version", "1", "--all-features"])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn crates_on_top_use_only_the_facade() {
    let meta = metadata();
    for (name, allowed) in ON_THE_FACADE {
        let package = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *name)
            .unwrap_or_else(|| panic!("{name} is missing from the workspace"));
        let ours: Vec<&str> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap())
            .filter(|d| d.starts_with("whisk"))
            .collect();
        assert_eq!(&ours, allowed, "{name} depends on {ours:?}");
    }
}

#[test]
fn backend_independent_crates_have_no_tensor_library() {
    let meta = metadata();

    let name_of: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Normal (non-dev) dependency edges of the resolved graph.
    let deps: HashMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let normal = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), normal)
        })
        .collect();

    let mut checked = 0;
    for (id, name) in &name_of {
        if !INDEPENDENT.contains(name) {
            continue;
        }
        checked += 1;
        let mut seen = BTreeSet::new();
        let mut stack = vec![*id];
        while let Some(p) = stack.pop() {
            for &d in deps.get(p).into_iter().flatten() {
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        let bad: Vec<&str> = seen
            .iter()
            .map(|d| name_of[d])
            .filter(|n| is_tensor_library(n))
            .collect();
        assert!(bad.is_empty(), "{name} depends on {bad:?}");
    }
    assert_eq!(
        checked,
        INDEPENDENT.len(),
        "a listed crate is missing from the workspace"
    );
}

#[test]
fn the_candle_backend_does_depend_on_candle() {
    // Guards the test above against a graph walk that finds nothing.
    let out = Command::new(env!("CARGO"))
        .current_dir(whisk_tests::root())
        .args([
            "tree",
            "-p",
            "whisk-candle",
            "--prefix",
            "none",
            "-e",
            "normal",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("candle-core"));
}

/// The README's first command must run a binary cargo can pick: `cargo run` in this workspace
/// needs `--bin` (whisk and whisk-eval are both binaries), and the named one must exist.
#[test]
fn readme_quickstart_runs_an_existing_binary() {
    let readme = std::fs::read_to_string(whisk_tests::root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("cargo run"))
        .expect("the README gives a `cargo run` command");
    let words: Vec<&str> = line.split_whitespace().collect();
    let bin = words
        .windows(2)
        .find(|w| w[0] == "--bin")
        .map(|w| w[1])
        .expect("the `cargo run` command names its binary with --bin");
    let out = Command::new(env!("CARGO"))
        .current_dir(whisk_tests::root())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .expect("cargo metadata runs");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let binaries: Vec<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        binaries.contains(&bin),
        "--bin {bin} is not one of {binaries:?}"
    );
}
