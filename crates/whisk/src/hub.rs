//! Models by name: a directory on disk, or a Hugging Face repository fetched into the hub
//! cache with hf-hub (`tiny.en` is short for `openai/whisper-tiny.en`).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Files a Hugging Face Whisper directory needs; `generation_config.json` is optional.
const REQUIRED: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
const OPTIONAL: [&str; 1] = ["generation_config.json"];

/// The names of OpenAI's checkpoints, usable without the `openai/whisper-` prefix.
const OPENAI_MODELS: [&str; 12] = [
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v1",
    "large-v2",
    "large-v3",
    "large-v3-turbo",
];

/// `tiny.en` -> `openai/whisper-tiny.en`; `owner/name` stays as it is.
pub fn repo_id(name: &str) -> Option<String> {
    if OPENAI_MODELS.contains(&name) {
        return Some(format!("openai/whisper-{name}"));
    }
    let (owner, repo) = name.split_once('/')?;
    (!owner.is_empty() && !repo.is_empty() && !repo.contains('/')).then(|| name.to_string())
}

/// Resolves `model` to a local directory: an existing directory as it is, otherwise a hub
/// repository, taken from the local cache when all its files are there and downloaded when not.
pub fn resolve_model(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let Some(repo) = repo_id(model) else {
        return Err(Error::ModelNotFound {
            name: model.to_string(),
            detail: "it is not a directory, nor a hub repository id (owner/name) or an OpenAI model name (tiny, base.en, large-v3, ...)".into(),
        });
    };
    let start_err = |e: hf_hub::HFError| Error::ModelNotFound {
        name: model.to_string(),
        detail: format!("cannot start the hub client: {e}"),
    };
    let inner = hf_hub::HFClient::new().map_err(start_err)?;
    let cache = inner.cache_dir().to_path_buf();
    let client = hf_hub::HFClientSync::from_inner(inner).map_err(start_err)?;
    let (owner, name) = repo.split_once('/').expect("repo ids have an owner");
    let handle = client.model(owner, name);
    let fetch = |file: &str, local_only: bool| {
        handle
            .download_file()
            .filename(file)
            .local_files_only(local_only)
            .send()
    };
    let cached: Option<Vec<PathBuf>> = REQUIRED.iter().map(|f| fetch(f, true).ok()).collect();
    let files = match cached {
        Some(files) => files,
        None => REQUIRED
            .iter()
            .map(|f| fetch(f, false))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::ModelNotFound {
                name: model.to_string(),
                detail: format!(
                    "`{repo}` is not in the hub cache {} and could not be downloaded: {e}",
                    cache.display()
                ),
            })?,
    };
    for f in OPTIONAL {
        // Alignment heads live here; without it, the documented fallback heads are used.
        let _ = fetch(f, false).or_else(|_| fetch(f, true));
    }
    Ok(files[0]
        .parent()
        .expect("a downloaded file sits in a snapshot directory")
        .to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_repositories() {
        assert_eq!(
            repo_id("tiny.en").as_deref(),
            Some("openai/whisper-tiny.en")
        );
        assert_eq!(
            repo_id("distil-whisper/distil-large-v3").as_deref(),
            Some("distil-whisper/distil-large-v3")
        );
        assert_eq!(repo_id("tiny.fr"), None);
        assert_eq!(repo_id("a/b/c"), None);
    }

    #[test]
    fn offline_lookup_names_the_cache() {
        // No network here: a hub name that is not cached must fail with a message that says
        // where it looked, not panic or hang.
        let dir = std::env::temp_dir().join("whisk-empty-hub-cache");
        std::env::set_var("HF_HUB_CACHE", &dir);
        std::env::set_var("HF_HUB_OFFLINE", "1");
        match resolve_model("openai/whisper-does-not-exist-xyz") {
            Err(Error::ModelNotFound { detail, .. }) => {
                assert!(detail.contains(&dir.display().to_string()), "{detail}")
            }
            other => panic!("expected ModelNotFound, got {other:?}"),
        }
    }
}
