//! Writers for the formats openai-whisper's CLI writes (`utils.py`): txt, vtt, srt, tsv, json.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::{Transcript, Word};

/// How subtitle and TSV output use word timestamps (when the transcript has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputOptions {
    /// Split each segment into cues of at most this many words (openai
    /// `--max_words_per_line`). `None` keeps one cue per segment.
    pub max_words_per_line: Option<usize>,
    /// Underline each word while it is spoken (openai `--highlight_words`).
    pub highlight_words: bool,
}

/// One subtitle cue: start, end, text.
type Cue = (f64, f64, String);

/// The cues of a transcript: per segment, or per group of words when word timing is asked
/// for and present; with highlighting, one cue per word with that word underlined, and plain
/// cues filling the gaps.
fn cues(t: &Transcript, opts: &OutputOptions) -> Vec<Cue> {
    let wants_words = opts.max_words_per_line.is_some() || opts.highlight_words;
    let mut out = Vec::new();
    for s in &t.segments {
        let words = s.words.as_deref().filter(|w| wants_words && !w.is_empty());
        let Some(words) = words else {
            out.push((s.start, s.end, cue_text(&s.text)));
            continue;
        };
        let per_line = opts.max_words_per_line.unwrap_or(words.len()).max(1);
        for group in words.chunks(per_line) {
            out.extend(group_cues(group, opts.highlight_words));
        }
    }
    out
}

fn group_cues(group: &[Word], highlight: bool) -> Vec<Cue> {
    let text: String = group.iter().map(|w| w.word.as_str()).collect();
    let (start, end) = (group[0].start, group[group.len() - 1].end);
    if !highlight {
        return vec![(start, end, cue_text(&text))];
    }
    let mut out = Vec::new();
    let mut last = start;
    for (i, w) in group.iter().enumerate() {
        if w.start > last {
            out.push((last, w.start, cue_text(&text)));
        }
        let marked: String = group
            .iter()
            .enumerate()
            .map(|(j, x)| {
                if j == i {
                    let body = x.word.trim_start();
                    let lead = &x.word[..x.word.len() - body.len()];
                    format!("{lead}<u>{body}</u>")
                } else {
                    x.word.clone()
                }
            })
            .collect();
        out.push((w.start, w.end, cue_text(&marked)));
        last = w.end;
    }
    out
}

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
    pub fn render(self, t: &Transcript, opts: &OutputOptions) -> String {
        match self {
            Format::Txt => to_txt(t),
            Format::Vtt => to_vtt(t, opts),
            Format::Srt => to_srt(t, opts),
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

pub fn to_vtt(t: &Transcript, opts: &OutputOptions) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for (start, end, text) in cues(t, opts) {
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            format_timestamp(start, false, '.'),
            format_timestamp(end, false, '.'),
            text
        );
    }
    out
}

pub fn to_srt(t: &Transcript, opts: &OutputOptions) -> String {
    let mut out = String::new();
    for (i, (start, end, text)) in cues(t, opts).into_iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            format_timestamp(start, true, ','),
            format_timestamp(end, true, ','),
            text
        );
    }
    out
}

/// Tab-separated `start`, `end` (integer milliseconds) and `text`: one row per word when the
/// transcript has word timestamps, else one per segment.
pub fn to_tsv(t: &Transcript) -> String {
    let ms = |x: f64| (x * 1000.0).round() as i64;
    let mut out = String::from("start\tend\ttext\n");
    for s in &t.segments {
        match &s.words {
            Some(words) => {
                for w in words {
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}",
                        ms(w.start),
                        ms(w.end),
                        w.word.trim().replace('\t', " ")
                    );
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "{}\t{}\t{}",
                    ms(s.start),
                    ms(s.end),
                    s.text.trim().replace('\t', " ")
                );
            }
        }
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
            warnings: Vec::new(),
            language_probs: Vec::new(),
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
        let plain = OutputOptions::default();
        assert_eq!(
            to_srt(&t, &plain),
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nGeneral -> Kenobi\n\n"
        );
        assert!(
            to_vtt(&t, &plain).starts_with("WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.\n\n")
        );
        assert_eq!(
            to_tsv(&t).lines().nth(2),
            Some("3661250\t3662000\tGeneral --> Kenobi")
        );
        let json: serde_json::Value = serde_json::from_str(&to_json(&t)).unwrap();
        assert_eq!(json["segments"][1]["start"], 3661.25);
        assert_eq!("srt".parse::<Format>(), Ok(Format::Srt));
        assert!("doc".parse::<Format>().is_err());
    }

    fn with_words() -> Transcript {
        let mut t = transcript();
        let w = |word: &str, start, end| Word {
            word: word.into(),
            start,
            end,
            probability: 0.9,
        };
        t.segments[0].words = Some(vec![w(" Hello", 0.0, 0.5), w(" there.", 0.7, 1.5)]);
        t.segments[1].words = Some(vec![
            w(" General", 3661.25, 3661.5),
            w(" -->", 3661.5, 3661.6),
            w(" Kenobi", 3661.6, 3662.0),
        ]);
        t
    }

    #[test]
    fn word_level_subtitles() {
        let t = with_words();
        let one = OutputOptions {
            max_words_per_line: Some(1),
            highlight_words: false,
        };
        let srt = to_srt(&t, &one);
        assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:00,500\nHello\n\n2\n00:00:00,700 --> 00:00:01,500\nthere.\n\n"), "{srt}");
        assert_eq!(srt.matches(" --> ").count(), 5);
        let hl = OutputOptions {
            max_words_per_line: None,
            highlight_words: true,
        };
        let vtt = to_vtt(&t, &hl);
        assert!(
            vtt.contains("00:00.000 --> 00:00.500\n<u>Hello</u> there.\n"),
            "{vtt}"
        );
        // The gap between the words keeps the plain line on screen.
        assert!(
            vtt.contains("00:00.500 --> 00:00.700\nHello there.\n"),
            "{vtt}"
        );
        assert!(
            vtt.contains("00:00.700 --> 00:01.500\nHello <u>there.</u>\n"),
            "{vtt}"
        );
        let tsv = to_tsv(&t);
        assert_eq!(tsv.lines().nth(2), Some("700\t1500\tthere."));
        assert_eq!(tsv.lines().count(), 6);
    }
}
