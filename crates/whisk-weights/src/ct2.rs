//! CTranslate2 model directories (faster-whisper's format).
//!
//! `model.bin` layout (CTranslate2 `src/models/model.cc`, `SerializedModel`), little-endian:
//! `u32 binary_version`; since v2 `string spec_name, u32 spec_revision`; `u32 count`; per
//! variable `string name, u8 rank, u32 dims[rank], u8 dtype, u32 num_bytes, bytes`; since v3
//! `u32 alias_count` and `string alias, string target` pairs. A string is `u16 length` (NUL
//! included) and its bytes. Quantised weights carry a `<name>_scale` of one scale per row.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use whisk_types::ModelDims;

use crate::tensor::{Tensor, TensorData};
use crate::{Result, WeightFormat, WeightsError, WhisperWeights};

/// Newest `model.bin` version this reader knows.
const MAX_BINARY_VERSION: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ct2Type {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2Type {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

struct Variable<'a> {
    dtype: Ct2Type,
    shape: Vec<usize>,
    bytes: &'a [u8],
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(format_err(
                self.path,
                format!(
                    "file ends at byte {} while reading {n} more bytes (truncated?)",
                    self.buf.len()
                ),
            ));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format_err(self.path, "a variable name is not UTF-8".into()))
    }
}

fn format_err(path: &Path, message: String) -> WeightsError {
    WeightsError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// Parses `model.bin` into named variables, aliases resolved.
fn parse<'a>(path: &'a Path, buf: &'a [u8]) -> Result<HashMap<String, Variable<'a>>> {
    let mut cur = Cursor { buf, pos: 0, path };
    let version = cur.u32()?;
    if version == 0 || version > MAX_BINARY_VERSION {
        return Err(format_err(
            path,
            format!("not a CTranslate2 model.bin (binary version {version}; this reader knows 1 to {MAX_BINARY_VERSION})"),
        ));
    }
    if version >= 2 {
        let spec = cur.string()?;
        let _revision = cur.u32()?;
        if spec != "WhisperSpec" {
            return Err(format_err(
                path,
                format!("model spec is `{spec}`, not `WhisperSpec`"),
            ));
        }
    }
    let count = cur.u32()?;
    let mut vars = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let name = cur.string()?;
        let rank = cur.u8()? as usize;
        let shape = (0..rank)
            .map(|_| cur.u32().map(|d| d as usize))
            .collect::<Result<Vec<_>>>()?;
        let elements: usize = shape.iter().product();
        let (dtype, num_bytes) = if version >= 4 {
            let id = cur.u8()?;
            let dtype = Ct2Type::from_id(id).ok_or_else(|| {
                format_err(path, format!("`{name}` has unknown data type id {id}"))
            })?;
            (dtype, cur.u32()? as usize)
        } else {
            let dtype = match cur.u8()? {
                4 => Ct2Type::F32,
                2 => Ct2Type::I16,
                1 => Ct2Type::I8,
                w => return Err(format_err(path, format!("`{name}` has item width {w}"))),
            };
            (dtype, cur.u32()? as usize * dtype.size())
        };
        if num_bytes != elements * dtype.size() {
            return Err(format_err(
                path,
                format!("`{name}`: {num_bytes} bytes for shape {shape:?} of {dtype:?}"),
            ));
        }
        let bytes = cur.take(num_bytes)?;
        vars.insert(
            name,
            Variable {
                dtype,
                shape,
                bytes,
            },
        );
    }
    if version >= 3 {
        for _ in 0..cur.u32()? {
            let alias = cur.string()?;
            let target = cur.string()?;
            if let Some(v) = vars.get(&target) {
                let v = Variable {
                    dtype: v.dtype,
                    shape: v.shape.clone(),
                    bytes: v.bytes,
                };
                vars.insert(alias, v);
            }
        }
    }
    Ok(vars)
}

fn le_f32(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
}

fn le_u16(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
}

struct Reader<'a> {
    path: &'a Path,
    vars: HashMap<String, Variable<'a>>,
}

impl Reader<'_> {
    fn var(&self, name: &str) -> Result<&Variable<'_>> {
        self.vars
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                path: self.path.to_path_buf(),
                name: name.to_string(),
            })
    }

    fn scalar(&self, name: &str) -> Result<usize> {
        let v = self.var(name)?;
        let value = match v.dtype {
            Ct2Type::I8 => v.bytes[0] as i8 as i64,
            Ct2Type::I16 => i16::from_le_bytes([v.bytes[0], v.bytes[1]]) as i64,
            Ct2Type::I32 => i32::from_le_bytes(v.bytes[..4].try_into().unwrap()) as i64,
            _ => return Err(format_err(self.path, format!("`{name}` is not an integer"))),
        };
        usize::try_from(value)
            .map_err(|_| format_err(self.path, format!("`{name}` is negative ({value})")))
    }

    /// A tensor in its stored precision: int8 kept with its per-row scales, int16 dequantised
    /// to f32 (CTranslate2 stores `q = round(x * scale)`, so a row's scale here is `1 / scale`).
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let v = self.var(name)?;
        let data = match v.dtype {
            Ct2Type::F32 => TensorData::F32(le_f32(v.bytes).collect()),
            Ct2Type::F16 => TensorData::F16(le_u16(v.bytes).map(f16::from_bits).collect()),
            Ct2Type::BF16 => TensorData::BF16(le_u16(v.bytes).map(bf16::from_bits).collect()),
            Ct2Type::I8 | Ct2Type::I16 => {
                let scale = self.tensor(&format!("{name}_scale"))?.to_f32();
                let rows = v.shape.first().copied().unwrap_or(1).max(1);
                if scale.len() != rows && scale.len() != 1 {
                    return Err(format_err(
                        self.path,
                        format!("`{name}_scale` has {} values for {rows} rows", scale.len()),
                    ));
                }
                let scale_of_row = |r: usize| scale[if scale.len() == 1 { 0 } else { r }];
                if v.dtype == Ct2Type::I8 {
                    TensorData::I8 {
                        values: v.bytes.iter().map(|&b| b as i8).collect(),
                        row_scales: (0..rows).map(|r| 1.0 / scale_of_row(r)).collect(),
                    }
                } else {
                    let cols = v.bytes.len() / v.dtype.size() / rows;
                    TensorData::F32(
                        le_u16(v.bytes)
                            .enumerate()
                            .map(|(i, u)| u as i16 as f32 / scale_of_row(i / cols.max(1)))
                            .collect(),
                    )
                }
            }
            Ct2Type::I32 => {
                return Err(format_err(
                    self.path,
                    format!("`{name}` is int32, not a weight"),
                ))
            }
        };
        Ok(Tensor {
            shape: v.shape.clone(),
            data,
        })
    }

    fn count_layers(&self, side: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.vars
                    .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }
}

pub(crate) fn read_dir(dir: &Path) -> Result<WhisperWeights> {
    let path = dir.join("model.bin");
    let buf = std::fs::read(&path).map_err(|source| WeightsError::Io {
        path: path.clone(),
        source,
    })?;
    let vars = parse(&path, &buf)?;
    let r = Reader { path: &path, vars };

    let conv1 = r.var("encoder/conv1/weight")?;
    let embed = r.var("decoder/embeddings/weight")?;
    let shape2 = |v: &Variable, name: &str| -> Result<(usize, usize)> {
        match v.shape[..] {
            [a, b] => Ok((a, b)),
            _ => Err(format_err(&path, format!("`{name}` is not a matrix"))),
        }
    };
    let (n_audio_ctx, _) = shape2(
        r.var("encoder/position_encodings/encodings")?,
        "encoder positions",
    )?;
    let (n_text_ctx, _) = shape2(
        r.var("decoder/position_encodings/encodings")?,
        "decoder positions",
    )?;
    let (n_vocab, n_text_state) = shape2(embed, "decoder/embeddings/weight")?;
    if conv1.shape.len() != 3 {
        return Err(format_err(
            &path,
            "`encoder/conv1/weight` is not 3-D".into(),
        ));
    }
    let dims = ModelDims {
        n_mels: conv1.shape[1],
        n_audio_ctx,
        n_audio_state: conv1.shape[0],
        n_audio_head: r.scalar("encoder/num_heads")?,
        n_audio_layer: r.count_layers("encoder"),
        n_vocab,
        n_text_ctx,
        n_text_state,
        n_text_head: r.scalar("decoder/num_heads")?,
        n_text_layer: r.count_layers("decoder"),
    };
    if dims.n_audio_head == 0 || dims.n_text_head == 0 {
        return Err(format_err(&path, "zero attention heads".into()));
    }

    let mut out = BTreeMap::new();
    let mut put = |name: String, t: Tensor| {
        out.insert(name, t);
    };
    put(
        "encoder.conv1.weight".into(),
        r.tensor("encoder/conv1/weight")?,
    );
    put("encoder.conv1.bias".into(), r.tensor("encoder/conv1/bias")?);
    put(
        "encoder.conv2.weight".into(),
        r.tensor("encoder/conv2/weight")?,
    );
    put("encoder.conv2.bias".into(), r.tensor("encoder/conv2/bias")?);
    put(
        "encoder.positional_embedding".into(),
        r.tensor("encoder/position_encodings/encodings")?,
    );
    put(
        "decoder.token_embedding.weight".into(),
        r.tensor("decoder/embeddings/weight")?,
    );
    put(
        "decoder.positional_embedding".into(),
        r.tensor("decoder/position_encodings/encodings")?,
    );
    for (ct2, ours) in [
        ("encoder/layer_norm", "encoder.ln_post"),
        ("decoder/layer_norm", "decoder.ln"),
    ] {
        put(format!("{ours}.weight"), r.tensor(&format!("{ct2}/gamma"))?);
        put(format!("{ours}.bias"), r.tensor(&format!("{ct2}/beta"))?);
    }

    let layer_norm = |put: &mut dyn FnMut(String, Tensor), ct2: &str, ours: &str| -> Result<()> {
        put(format!("{ours}.weight"), r.tensor(&format!("{ct2}/gamma"))?);
        put(format!("{ours}.bias"), r.tensor(&format!("{ct2}/beta"))?);
        Ok(())
    };
    let linear = |put: &mut dyn FnMut(String, Tensor), ct2: &str, ours: &str| -> Result<()> {
        put(
            format!("{ours}.weight"),
            r.tensor(&format!("{ct2}/weight"))?,
        );
        put(format!("{ours}.bias"), r.tensor(&format!("{ct2}/bias"))?);
        Ok(())
    };
    // Fused projections are stacked along the output rows: [q; k; v] or [k; v].
    let split = |put: &mut dyn FnMut(String, Tensor),
                 ct2: &str,
                 ours: &str,
                 parts: &[&str]|
     -> Result<()> {
        let w = r.tensor(&format!("{ct2}/weight"))?;
        let b = r.tensor(&format!("{ct2}/bias"))?;
        let n = w.shape[0] / parts.len();
        if n * parts.len() != w.shape[0] || b.shape[0] != w.shape[0] {
            return Err(format_err(
                &path,
                format!("`{ct2}` does not split into {} parts", parts.len()),
            ));
        }
        for (i, part) in parts.iter().enumerate() {
            put(
                format!("{ours}.{part}.weight"),
                w.slice_rows(i * n, (i + 1) * n),
            );
            let bias = b.slice_rows(i * n, (i + 1) * n);
            // OpenAI's key projection has no bias; CTranslate2 stores zeros in its place.
            if !(*part == "key" && bias.is_all_zero()) {
                put(format!("{ours}.{part}.bias"), bias);
            }
        }
        Ok(())
    };

    for (side, layers) in [
        ("encoder", dims.n_audio_layer),
        ("decoder", dims.n_text_layer),
    ] {
        for i in 0..layers {
            let c = format!("{side}/layer_{i}");
            let o = format!("{side}.blocks.{i}");
            let put: &mut dyn FnMut(String, Tensor) = &mut |n, t| {
                out.insert(n, t);
            };
            layer_norm(
                put,
                &format!("{c}/self_attention/layer_norm"),
                &format!("{o}.attn_ln"),
            )?;
            split(
                put,
                &format!("{c}/self_attention/linear_0"),
                &format!("{o}.attn"),
                &["query", "key", "value"],
            )?;
            linear(
                put,
                &format!("{c}/self_attention/linear_1"),
                &format!("{o}.attn.out"),
            )?;
            if side == "decoder" {
                layer_norm(
                    put,
                    &format!("{c}/attention/layer_norm"),
                    &format!("{o}.cross_attn_ln"),
                )?;
                linear(
                    put,
                    &format!("{c}/attention/linear_0"),
                    &format!("{o}.cross_attn.query"),
                )?;
                split(
                    put,
                    &format!("{c}/attention/linear_1"),
                    &format!("{o}.cross_attn"),
                    &["key", "value"],
                )?;
                linear(
                    put,
                    &format!("{c}/attention/linear_2"),
                    &format!("{o}.cross_attn.out"),
                )?;
            }
            layer_norm(put, &format!("{c}/ffn/layer_norm"), &format!("{o}.mlp_ln"))?;
            linear(put, &format!("{c}/ffn/linear_0"), &format!("{o}.mlp.0"))?;
            linear(put, &format!("{c}/ffn/linear_1"), &format!("{o}.mlp.2"))?;
        }
    }

    let heads = read_alignment_heads(&dir.join("config.json"))?;
    WhisperWeights::new(dims, WeightFormat::CTranslate2, path.clone(), heads, out)
}

/// `alignment_heads: [[layer, head], ...]` from a CTranslate2 `config.json`, if present.
fn read_alignment_heads(path: &PathBuf) -> Result<Option<Vec<(usize, usize)>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format_err(path, format!("invalid JSON: {e}")))?;
    crate::hf::parse_heads(path, json.get("alignment_heads"))
}
