//! Hugging Face `transformers` Whisper directories: `config.json`, `model.safetensors`,
//! optional `generation_config.json` (where `alignment_heads` lives).

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use whisk_types::ModelDims;

use crate::tensor::{Tensor, TensorData};
use crate::{Result, WeightFormat, WeightsError, WhisperWeights};

fn format_err(path: &Path, message: String) -> WeightsError {
    WeightsError::Format {
        path: path.to_path_buf(),
        message,
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| format_err(path, format!("invalid JSON: {e}")))
}

/// `[[layer, head], ...]` into pairs; `None` when the key is absent.
pub(crate) fn parse_heads(
    path: &Path,
    value: Option<&serde_json::Value>,
) -> Result<Option<Vec<(usize, usize)>>> {
    let Some(value) = value else { return Ok(None) };
    let bad = || {
        format_err(
            path,
            "`alignment_heads` is not a list of [layer, head] pairs".into(),
        )
    };
    let list = value.as_array().ok_or_else(bad)?;
    let pairs = list
        .iter()
        .map(|pair| match pair.as_array().map(|p| &p[..]) {
            Some([l, h]) => Some((l.as_u64()? as usize, h.as_u64()? as usize)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(bad)?;
    Ok(Some(pairs))
}

/// OpenAI name for a `transformers` Whisper tensor name, or `None` for tensors we do not use
/// (`proj_out.weight` is tied to the token embedding).
pub(crate) fn openai_name(hf: &str) -> Option<String> {
    let name = hf.strip_prefix("model.").unwrap_or(hf);
    let fixed = match name {
        "encoder.embed_positions.weight" => Some("encoder.positional_embedding"),
        "decoder.embed_positions.weight" => Some("decoder.positional_embedding"),
        "decoder.embed_tokens.weight" => Some("decoder.token_embedding.weight"),
        "encoder.layer_norm.weight" => Some("encoder.ln_post.weight"),
        "encoder.layer_norm.bias" => Some("encoder.ln_post.bias"),
        "decoder.layer_norm.weight" => Some("decoder.ln.weight"),
        "decoder.layer_norm.bias" => Some("decoder.ln.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    if name.starts_with("encoder.conv") {
        return Some(name.to_string());
    }
    let (side, rest) = name.split_once(".layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let part = match rest {
        r if r.starts_with("self_attn_layer_norm.") => {
            r.replacen("self_attn_layer_norm", "attn_ln", 1)
        }
        r if r.starts_with("encoder_attn_layer_norm.") => {
            r.replacen("encoder_attn_layer_norm", "cross_attn_ln", 1)
        }
        r if r.starts_with("final_layer_norm.") => r.replacen("final_layer_norm", "mlp_ln", 1),
        r if r.starts_with("fc1.") => r.replacen("fc1", "mlp.0", 1),
        r if r.starts_with("fc2.") => r.replacen("fc2", "mlp.2", 1),
        r => {
            let (module, proj) = r.split_once('.')?;
            let module = match module {
                "self_attn" => "attn",
                "encoder_attn" => "cross_attn",
                _ => return None,
            };
            let proj = proj
                .replacen("q_proj", "query", 1)
                .replacen("k_proj", "key", 1)
                .replacen("v_proj", "value", 1)
                .replacen("out_proj", "out", 1);
            format!("{module}.{proj}")
        }
    };
    Some(format!("{side}.blocks.{layer}.{part}"))
}

fn usize_field(path: &Path, config: &serde_json::Value, key: &str) -> Result<usize> {
    config
        .get(key)
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .ok_or_else(|| format_err(path, format!("missing integer field `{key}`")))
}

pub(crate) fn read_dir(dir: &Path) -> Result<WhisperWeights> {
    let config_path = dir.join("config.json");
    let config = read_json(&config_path)?;
    let f = |key| usize_field(&config_path, &config, key);
    let dims = ModelDims {
        n_mels: f("num_mel_bins")?,
        n_audio_ctx: f("max_source_positions")?,
        n_audio_state: f("d_model")?,
        n_audio_head: f("encoder_attention_heads")?,
        n_audio_layer: f("encoder_layers")?,
        n_vocab: f("vocab_size")?,
        n_text_ctx: f("max_target_positions")?,
        n_text_state: f("d_model")?,
        n_text_head: f("decoder_attention_heads")?,
        n_text_layer: f("decoder_layers")?,
    };

    let path = dir.join("model.safetensors");
    let buf = std::fs::read(&path).map_err(|source| WeightsError::Io {
        path: path.clone(),
        source,
    })?;
    let st = SafeTensors::deserialize(&buf)
        .map_err(|e| format_err(&path, format!("not a safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let Some(ours) = openai_name(&name) else {
            continue;
        };
        let b = view.data();
        let data = match view.dtype() {
            Dtype::F32 => TensorData::F32(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::F16 => TensorData::F16(
                b.chunks_exact(2)
                    .map(|c| f16::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::BF16 => TensorData::BF16(
                b.chunks_exact(2)
                    .map(|c| bf16::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            other => {
                return Err(format_err(
                    &path,
                    format!("`{name}` has unsupported dtype {other:?}"),
                ))
            }
        };
        tensors.insert(
            ours,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }

    let gen_path = dir.join("generation_config.json");
    let heads = if gen_path.is_file() {
        parse_heads(&gen_path, read_json(&gen_path)?.get("alignment_heads"))?
    } else {
        None
    };
    WhisperWeights::new(dims, WeightFormat::HuggingFace, path, heads, tensors)
}

#[cfg(test)]
mod tests {
    use super::openai_name;

    #[test]
    fn maps_transformers_names() {
        let cases = [
            (
                "model.encoder.layers.3.self_attn.k_proj.weight",
                "encoder.blocks.3.attn.key.weight",
            ),
            (
                "model.decoder.layers.0.encoder_attn.out_proj.bias",
                "decoder.blocks.0.cross_attn.out.bias",
            ),
            (
                "model.decoder.layers.1.encoder_attn_layer_norm.weight",
                "decoder.blocks.1.cross_attn_ln.weight",
            ),
            (
                "model.decoder.layers.1.fc2.bias",
                "decoder.blocks.1.mlp.2.bias",
            ),
            (
                "model.encoder.embed_positions.weight",
                "encoder.positional_embedding",
            ),
            ("model.encoder.conv2.weight", "encoder.conv2.weight"),
        ];
        for (hf, ours) in cases {
            assert_eq!(openai_name(hf).as_deref(), Some(ours), "{hf}");
        }
        assert_eq!(openai_name("proj_out.weight"), None);
    }
}
