//! Shared paths for the benchmarks (models from `cargo xtask fetch-models`, speech from
//! `../shared/data`).

use std::path::PathBuf;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace")
        .to_path_buf()
}

pub fn model_dir(name: &str) -> PathBuf {
    root().join("target/models").join(name)
}

pub fn shared_data(rel: &str) -> PathBuf {
    std::env::var_os("WHISK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"))
        .join("data")
        .join(rel)
}
