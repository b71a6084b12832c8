//! Writers for the formats openai-whisper's CLI writes (`utils.py`): txt, vtt, srt, tsv, json.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::Transcript;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Txt,
    Vtt,
    Srt,
    Tsv,
    Json,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Txt,
        Format::Vtt,
        Format::Srt,
        Format::Tsv,
        Format::Json,
    ];

    /// File extension, also the format's name.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Txt => "txt",
            Format::Vtt => "vtt",
            Format::Srt => "srt",
            Format::Tsv => "tsv",
            Format::Json => "json",
        }
    }

    /// The transcript rendered in this format.
    pub fn render(self, t: &Transcript) -> String {
        match self {
            Format::Txt => to_txt(t),
            Format::Vtt => to_vtt(t),
            Format::Srt => to_srt(t),
            Format::Tsv => to_tsv(t),
            Format::Json => to_json(t),
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.extension() == s)
            .ok_or_else(|| {
                format!("unknown output format `{s}`: use txt, vtt, srt, tsv, json or all")
            })
    }
}

/// `[HH:]MM:SS<marker>mmm` (openai `format_timestamp`).
pub fn format_timestamp(seconds: f64, always_include_hours: bool, decimal_marker: char) -> String {
    let total_ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (hours, rest) = (total_ms / 3_600_000, total_ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (secs, ms) = (rest / 1000, rest % 1000);
    let hours = if always_include_hours || hours > 0 {
        format!("{hours:02}:")
    } else {
        String::new()
    };
    format!("{hours}{minutes:02}:{secs:02}{decimal_marker}{ms:03}")
}

fn cue_text(text: &str) -> String {
    text.trim().replace("-->", "->")
}

pub fn to_txt(t: &Transcript) -> String {
    t.segments
        .iter()
        .map(|s| format!("{}\n", s.text.trim()))
        .collect()
}

pub fn to_vtt(t: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in &t.segments {
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            format_timestamp(s.start, false, '.'),
            format_timestamp(s.end, false, '.'),
            cue_text(&s.text)
        );
    }
    out
}

pub fn to_srt(t: &Transcript) -> String {
    let mut out = String::new();
    for (i, s) in t.segments.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            format_timestamp(s.start, true, ','),
            format_timestamp(s.end, true, ','),
            cue_text(&s.text)
        );
    }
    out
}

/// Tab-separated `start`, `end` (integer milliseconds) and `text`.
pub fn to_tsv(t: &Transcript) -> String {
    let mut out = String::from("start\tend\ttext\n");
    for s in &t.segments {
        let _ = writeln!(
            out,
            "{}\t{}\t{}",
            (s.start * 1000.0).round() as i64,
            (s.end * 1000.0).round() as i64,
            s.text.trim().replace('\t', " ")
        );
    }
    out
}

/// openai-whisper's JSON: `text`, `language`, `segments`.
pub fn to_json(t: &Transcript) -> String {
    serde_json::to_string(t).expect("a transcript always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Segment;

    fn transcript() -> Transcript {
        let seg = |id, start, end, text: &str| Segment {
            id,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![],
            temperature: 0.0,
            avg_logprob: -0.1,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            words: None,
        };
        Transcript {
            text: " Hello there. General --> Kenobi".into(),
            language: "en".into(),
            segments: vec![
                seg(0, 0.0, 1.5, " Hello there."),
                seg(1, 3661.25, 3662.0, " General --> Kenobi"),
            ],
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(1.5, false, '.'), "00:01.500");
        assert_eq!(format_timestamp(3661.25, false, '.'), "01:01:01.250");
        assert_eq!(format_timestamp(0.0, true, ','), "00:00:00,000");
    }

    #[test]
    fn formats() {
        let t = transcript();
        assert_eq!(to_txt(&t), "Hello there.\nGeneral --> Kenobi\n");
        assert_eq!(
            to_srt(&t),
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nGeneral -> Kenobi\n\n"
        );
        assert!(to_vtt(&t).starts_with("WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.\n\n"));
        assert_eq!(
            to_tsv(&t).lines().nth(2),
            Some("3661250\t3662000\tGeneral --> Kenobi")
        );
        let json: serde_json::Value = serde_json::from_str(&to_json(&t)).unwrap();
        assert_eq!(json["segments"][1]["start"], 3661.25);
        assert_eq!("srt".parse::<Format>(), Ok(Format::Srt));
        assert!("doc".parse::<Format>().is_err());
    }
}
