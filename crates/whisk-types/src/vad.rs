use serde::{Deserialize, Serialize};

/// When a stretch of voice-activity frames counts as speech (`whisk-vad`). Defaults are
/// faster-whisper's `VadOptions`; [`VadOptions::batched`] is what its batched pipeline uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VadOptions {
    /// A frame whose probability reaches this is speech.
    pub threshold: f64,
    /// Below this a frame is silence; between the two it continues what came before.
    /// `None`: `threshold - 0.15`, at least 0.01.
    pub neg_threshold: Option<f64>,
    /// Shorter segments are dropped.
    pub min_speech_duration_ms: u32,
    /// Longer segments are split at their last silence of 98 ms or more, else cut just before
    /// this length. Infinite (no limit) is `null` in JSON, which has no infinity.
    #[serde(with = "null_is_unbounded")]
    pub max_speech_duration_s: f64,
    /// Silence needed to end a segment.
    pub min_silence_duration_ms: u32,
    /// Each segment is widened by this much at both ends (neighbours closer than twice this
    /// share the silence between them).
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            max_speech_duration_s: f64::INFINITY,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

impl VadOptions {
    /// faster-whisper's choice for 30 s windows: segments of at most 30 s, ended by 160 ms of
    /// silence.
    pub fn batched() -> Self {
        Self {
            max_speech_duration_s: crate::CHUNK_LENGTH as f64,
            min_silence_duration_ms: 160,
            ..Self::default()
        }
    }
}

/// An unbounded `f64` as JSON's `null`: serde_json writes infinity as `null` and cannot read
/// it back, so the default options would not survive a round trip.
mod null_is_unbounded {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_infinite() {
            serializer.serialize_none()
        } else {
            serializer.serialize_f64(*value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::INFINITY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_survive_a_json_round_trip_unbounded_or_not() {
        for options in [VadOptions::default(), VadOptions::batched()] {
            let json = serde_json::to_string(&options).unwrap();
            assert_eq!(
                serde_json::from_str::<VadOptions>(&json).unwrap(),
                options,
                "{json}"
            );
        }
        let json = serde_json::to_string(&VadOptions::default()).unwrap();
        assert!(json.contains(r#""max_speech_duration_s":null"#), "{json}");
    }
}
