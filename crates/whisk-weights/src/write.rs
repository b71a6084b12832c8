//! Writers for the two layouts we read: a CTranslate2 `model.bin` (float16, float32 or int8
//! with per-row scales, quantised as CTranslate2 does: `scale = 127 / max|row|`,
//! `q = round(x * scale)`) and a Hugging Face `model.safetensors` directory. Used to derive
//! test variants of one checkpoint and to convert models for other tools.

use std::io::Write;
use std::path::Path;

use half::f16;

use crate::tensor::{Tensor, TensorData};
use crate::{block_prefix, Result, Side, WeightsError, WhisperWeights};

/// Storage of the weights in a written `model.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Quantization {
    Float16,
    Float32,
    /// int8 matrices with float32 per-row scales; other tensors float32.
    Int8,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One variable of a `model.bin`: CTranslate2 type id, shape, little-endian bytes.
struct Var {
    name: String,
    type_id: u8,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn float_var(name: String, t: &Tensor, q: Ct2Quantization) -> Var {
    let values = t.to_f32();
    let (type_id, bytes) = match q {
        Ct2Quantization::Float16 => (
            4,
            values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        _ => (0, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
    };
    Var {
        name,
        type_id,
        shape: t.shape.clone(),
        bytes,
    }
}

/// A matrix as int8 plus its `_scale` variable.
fn int8_vars(name: String, t: &Tensor) -> [Var; 2] {
    let values = t.to_f32();
    let cols = t.shape[1..].iter().product::<usize>().max(1);
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(t.shape[0]);
    for row in values.chunks(cols) {
        let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if amax == 0.0 { 1.0 } else { 127.0 / amax };
        scales.push(scale);
        q.extend(
            row.iter()
                .map(|v| (v * scale).round().clamp(-127.0, 127.0) as i8 as u8),
        );
    }
    [
        Var {
            name: name.clone(),
            type_id: 1,
            shape: t.shape.clone(),
            bytes: q,
        },
        Var {
            name: format!("{name}_scale"),
            type_id: 0,
            shape: vec![scales.len()],
            bytes: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        },
    ]
}

fn scalar_var(name: &str, type_id: u8, bytes: Vec<u8>) -> Var {
    Var {
        name: name.to_string(),
        type_id,
        shape: vec![],
        bytes,
    }
}

fn concat_rows(parts: &[&Tensor]) -> Tensor {
    let mut data = Vec::new();
    for p in parts {
        data.extend(p.to_f32());
    }
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    Tensor {
        shape,
        data: TensorData::F32(data),
    }
}

fn zeros(n: usize) -> Tensor {
    Tensor {
        shape: vec![n],
        data: TensorData::F32(vec![0.0; n]),
    }
}

/// Writes `dir/model.bin` in CTranslate2's Whisper layout (binary version 6).
pub fn write_ct2(
    weights: &WhisperWeights,
    dir: &Path,
    quantization: Ct2Quantization,
) -> Result<()> {
    let d = &weights.dims;
    let mut vars: Vec<Var> = Vec::new();
    let mut push = |name: String, t: &Tensor, matrix: bool| {
        if matrix && quantization == Ct2Quantization::Int8 {
            vars.extend(int8_vars(name, t));
        } else {
            vars.push(float_var(name, t, quantization));
        }
    };
    let get = |n: &str| weights.get(n);
    let key_bias = |prefix: &str, n: usize| -> Tensor {
        weights
            .get_optional(&format!("{prefix}.key.bias"))
            .cloned()
            .unwrap_or_else(|| zeros(n))
    };

    push(
        "encoder/conv1/weight".into(),
        get("encoder.conv1.weight")?,
        false,
    );
    push(
        "encoder/conv1/bias".into(),
        get("encoder.conv1.bias")?,
        false,
    );
    push(
        "encoder/conv2/weight".into(),
        get("encoder.conv2.weight")?,
        false,
    );
    push(
        "encoder/conv2/bias".into(),
        get("encoder.conv2.bias")?,
        false,
    );
    push(
        "encoder/position_encodings/encodings".into(),
        get("encoder.positional_embedding")?,
        false,
    );
    push(
        "decoder/embeddings/weight".into(),
        get("decoder.token_embedding.weight")?,
        true,
    );
    push(
        "decoder/position_encodings/encodings".into(),
        get("decoder.positional_embedding")?,
        false,
    );
    for (ct2, ours) in [
        ("encoder/layer_norm", "encoder.ln_post"),
        ("decoder/layer_norm", "decoder.ln"),
    ] {
        push(
            format!("{ct2}/gamma"),
            get(&format!("{ours}.weight"))?,
            false,
        );
        push(format!("{ct2}/beta"), get(&format!("{ours}.bias"))?, false);
    }
    for (side, name, layers, n) in [
        (Side::Encoder, "encoder", d.n_audio_layer, d.n_audio_state),
        (Side::Decoder, "decoder", d.n_text_layer, d.n_text_state),
    ] {
        for i in 0..layers {
            let o = block_prefix(side, i);
            let c = format!("{name}/layer_{i}");
            let ln = |push: &mut dyn FnMut(String, &Tensor, bool),
                      ct2: &str,
                      ours: &str|
             -> Result<()> {
                push(
                    format!("{c}/{ct2}/gamma"),
                    get(&format!("{o}.{ours}.weight"))?,
                    false,
                );
                push(
                    format!("{c}/{ct2}/beta"),
                    get(&format!("{o}.{ours}.bias"))?,
                    false,
                );
                Ok(())
            };
            ln(&mut push, "self_attention/layer_norm", "attn_ln")?;
            let a = format!("{o}.attn");
            let qkv_w = concat_rows(&[
                get(&format!("{a}.query.weight"))?,
                get(&format!("{a}.key.weight"))?,
                get(&format!("{a}.value.weight"))?,
            ]);
            let kb = key_bias(&a, n);
            let qkv_b = concat_rows(&[
                get(&format!("{a}.query.bias"))?,
                &kb,
                get(&format!("{a}.value.bias"))?,
            ]);
            push(format!("{c}/self_attention/linear_0/weight"), &qkv_w, true);
            push(format!("{c}/self_attention/linear_0/bias"), &qkv_b, false);
            push(
                format!("{c}/self_attention/linear_1/weight"),
                get(&format!("{a}.out.weight"))?,
                true,
            );
            push(
                format!("{c}/self_attention/linear_1/bias"),
                get(&format!("{a}.out.bias"))?,
                false,
            );
            if side == Side::Decoder {
                ln(&mut push, "attention/layer_norm", "cross_attn_ln")?;
                let x = format!("{o}.cross_attn");
                push(
                    format!("{c}/attention/linear_0/weight"),
                    get(&format!("{x}.query.weight"))?,
                    true,
                );
                push(
                    format!("{c}/attention/linear_0/bias"),
                    get(&format!("{x}.query.bias"))?,
                    false,
                );
                let kv_w = concat_rows(&[
                    get(&format!("{x}.key.weight"))?,
                    get(&format!("{x}.value.weight"))?,
                ]);
                let kb = key_bias(&x, n);
                let kv_b = concat_rows(&[&kb, get(&format!("{x}.value.bias"))?]);
                push(format!("{c}/attention/linear_1/weight"), &kv_w, true);
                push(format!("{c}/attention/linear_1/bias"), &kv_b, false);
                push(
                    format!("{c}/attention/linear_2/weight"),
                    get(&format!("{x}.out.weight"))?,
                    true,
                );
                push(
                    format!("{c}/attention/linear_2/bias"),
                    get(&format!("{x}.out.bias"))?,
                    false,
                );
            }
            ln(&mut push, "ffn/layer_norm", "mlp_ln")?;
            push(
                format!("{c}/ffn/linear_0/weight"),
                get(&format!("{o}.mlp.0.weight"))?,
                true,
            );
            push(
                format!("{c}/ffn/linear_0/bias"),
                get(&format!("{o}.mlp.0.bias"))?,
                false,
            );
            push(
                format!("{c}/ffn/linear_1/weight"),
                get(&format!("{o}.mlp.2.weight"))?,
                true,
            );
            push(
                format!("{c}/ffn/linear_1/bias"),
                get(&format!("{o}.mlp.2.bias"))?,
                false,
            );
        }
    }
    vars.push(scalar_var(
        "encoder/num_heads",
        2,
        (d.n_audio_head as i16).to_le_bytes().to_vec(),
    ));
    vars.push(scalar_var(
        "decoder/num_heads",
        2,
        (d.n_text_head as i16).to_le_bytes().to_vec(),
    ));
    // GELU, pre-norm, no embedding scaling: what every Whisper checkpoint uses.
    vars.push(scalar_var("decoder/activation", 1, vec![3]));
    vars.push(scalar_var("decoder/pre_norm", 1, vec![1]));
    vars.push(scalar_var("decoder/scale_embeddings", 1, vec![0]));
    vars.sort_by(|a, b| a.name.cmp(&b.name));

    let path = dir.join("model.bin");
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend(((s.len() + 1) as u16).to_le_bytes());
        out.extend(s.as_bytes());
        out.push(0);
    };
    out.extend(6u32.to_le_bytes());
    string(&mut out, "WhisperSpec");
    out.extend(3u32.to_le_bytes());
    out.extend((vars.len() as u32).to_le_bytes());
    for v in &vars {
        string(&mut out, &v.name);
        out.push(v.shape.len() as u8);
        for dim in &v.shape {
            out.extend((*dim as u32).to_le_bytes());
        }
        out.push(v.type_id);
        out.extend((v.bytes.len() as u32).to_le_bytes());
        out.extend(&v.bytes);
    }
    // The output projection shares the token embedding.
    out.extend(1u32.to_le_bytes());
    string(&mut out, "decoder/projection/weight");
    string(&mut out, "decoder/embeddings/weight");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut f = std::fs::File::create(&path).map_err(io_err(&path))?;
    f.write_all(&out).map_err(io_err(&path))?;
    Ok(())
}

/// `transformers` name of an OpenAI state-dict name (inverse of the reader's mapping).
fn hf_name(ours: &str) -> String {
    let fixed = match ours {
        "encoder.positional_embedding" => Some("model.encoder.embed_positions.weight"),
        "decoder.positional_embedding" => Some("model.decoder.embed_positions.weight"),
        "decoder.token_embedding.weight" => Some("model.decoder.embed_tokens.weight"),
        "encoder.ln_post.weight" => Some("model.encoder.layer_norm.weight"),
        "encoder.ln_post.bias" => Some("model.encoder.layer_norm.bias"),
        "decoder.ln.weight" => Some("model.decoder.layer_norm.weight"),
        "decoder.ln.bias" => Some("model.decoder.layer_norm.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return f.to_string();
    }
    let renamed = ours
        .replacen(".blocks.", ".layers.", 1)
        .replacen(".cross_attn_ln.", ".encoder_attn_layer_norm.", 1)
        .replacen(".attn_ln.", ".self_attn_layer_norm.", 1)
        .replacen(".mlp_ln.", ".final_layer_norm.", 1)
        .replacen(".mlp.0.", ".fc1.", 1)
        .replacen(".mlp.2.", ".fc2.", 1)
        .replacen(".cross_attn.", ".encoder_attn.", 1)
        .replacen(".attn.", ".self_attn.", 1)
        .replacen(".query.", ".q_proj.", 1)
        .replacen(".key.", ".k_proj.", 1)
        .replacen(".value.", ".v_proj.", 1)
        .replacen(".out.", ".out_proj.", 1);
    format!("model.{renamed}")
}

/// Writes a Hugging Face directory: `model.safetensors` (tensors in their stored precision),
/// `config.json` and `generation_config.json` (with the alignment heads, when known).
pub fn write_hf(weights: &WhisperWeights, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in weights.names() {
        let t = weights.get(name)?;
        let (dtype, bytes): (_, Vec<u8>) = match &t.data {
            TensorData::F32(v) => (
                safetensors::Dtype::F32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            TensorData::F16(v) => (
                safetensors::Dtype::F16,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            TensorData::BF16(v) => (
                safetensors::Dtype::BF16,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            // Safetensors has no per-row scales: widened.
            TensorData::I8 { .. } => (
                safetensors::Dtype::F32,
                t.to_f32().iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        };
        owned.push((hf_name(name), dtype, t.shape.clone(), bytes));
    }
    let path = dir.join("model.safetensors");
    let views = owned
        .iter()
        .map(|(n, dt, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes).map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| WeightsError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
    safetensors::serialize_to_file(views, None, &path).map_err(|e| WeightsError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;

    let d = &weights.dims;
    let config = serde_json::json!({
        "model_type": "whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "num_mel_bins": d.n_mels,
        "max_source_positions": d.n_audio_ctx,
        "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head,
        "encoder_layers": d.n_audio_layer,
        "vocab_size": d.n_vocab,
        "max_target_positions": d.n_text_ctx,
        "decoder_attention_heads": d.n_text_head,
        "decoder_layers": d.n_text_layer,
        "activation_function": "gelu",
    });
    let gen = match &weights.alignment_heads {
        Some(heads) => serde_json::json!({ "alignment_heads": heads }),
        None => serde_json::json!({}),
    };
    for (file, value) in [("config.json", config), ("generation_config.json", gen)] {
        let p = dir.join(file);
        std::fs::write(&p, serde_json::to_string_pretty(&value).expect("json"))
            .map_err(io_err(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::hf_name;
    use crate::hf::openai_name;

    #[test]
    fn hf_names_round_trip() {
        for ours in [
            "encoder.blocks.3.attn.key.weight",
            "decoder.blocks.0.cross_attn.out.bias",
            "decoder.blocks.1.cross_attn_ln.weight",
            "decoder.blocks.1.mlp.2.bias",
            "decoder.blocks.2.attn_ln.bias",
            "encoder.blocks.0.mlp_ln.weight",
            "encoder.positional_embedding",
            "encoder.conv2.weight",
            "decoder.token_embedding.weight",
        ] {
            assert_eq!(
                openai_name(&hf_name(ours)).as_deref(),
                Some(ours),
                "{}",
                hf_name(ours)
            );
        }
    }
}
