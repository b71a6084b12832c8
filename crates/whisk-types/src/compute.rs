use serde::{Deserialize, Serialize};

/// The number type a backend computes in, named as faster-whisper names its `compute_type`.
///
/// Weights of any stored type (CTranslate2 float16, float32 or int8; safetensors) are loaded
/// into this type. `Default` is float32 on every device until a GPU run has shown that float16
/// keeps the text and the word times (`cargo xtask gpu-bundle`'s check measures exactly that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeType {
    /// The device's default: float32 everywhere for now.
    #[default]
    Default,
    Float32,
    /// Half precision: meant for GPUs (on the CPU it works, slowly).
    Float16,
    /// bfloat16: float32's range in half the bytes; GPUs and CPUs with BF16 instructions.
    BFloat16,
    /// int8 weights and matrix products in the linear layers, `f32` elsewhere (CTranslate2's
    /// `int8_float32`); CPU only.
    Int8,
    /// The fastest type measured to keep float32's accuracy on the device: int8 on CPUs with
    /// an exact int8 dot-product kernel (AVX-512 VNNI, Arm dot product), else float32.
    Auto,
}

impl ComputeType {
    /// The names `FromStr` accepts.
    pub const NAMES: &'static str =
        "default, auto, float32, float16, bfloat16, int8 (alias int8_float32)";

    /// The type `Default` stands for.
    pub fn resolved(self) -> ComputeType {
        match self {
            ComputeType::Default => ComputeType::Float32,
            other => other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ComputeType::Default => "default",
            ComputeType::Float32 => "float32",
            ComputeType::Float16 => "float16",
            ComputeType::BFloat16 => "bfloat16",
            ComputeType::Int8 => "int8",
            ComputeType::Auto => "auto",
        }
    }
}

impl std::fmt::Display for ComputeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ComputeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(ComputeType::Default),
            "float32" => Ok(ComputeType::Float32),
            "float16" => Ok(ComputeType::Float16),
            "bfloat16" => Ok(ComputeType::BFloat16),
            "int8" | "int8_float32" => Ok(ComputeType::Int8),
            "auto" => Ok(ComputeType::Auto),
            _ if s.starts_with("int8") || s.starts_with("int16") => Err(format!(
                "compute type `{s}` is not supported yet: use {}",
                Self::NAMES
            )),
            _ => Err(format!("unknown compute type `{s}`: use {}", Self::NAMES)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_errors() {
        for t in [
            ComputeType::Default,
            ComputeType::Float32,
            ComputeType::Float16,
            ComputeType::BFloat16,
            ComputeType::Int8,
            ComputeType::Auto,
        ] {
            assert_eq!(t.name().parse::<ComputeType>(), Ok(t));
        }
        assert_eq!("int8_float32".parse(), Ok(ComputeType::Int8));
        assert!("int8_float16"
            .parse::<ComputeType>()
            .unwrap_err()
            .contains("not supported yet"));
        assert!("f16"
            .parse::<ComputeType>()
            .unwrap_err()
            .contains("unknown"));
        assert_eq!(ComputeType::Default.resolved(), ComputeType::Float32);
    }
}
