//! Word timing against reference boundaries: match words by an edit-distance alignment of
//! their normalised spellings, then measure start and end errors of the matched pairs.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// A timed word: start and end in seconds, and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub start: f64,
    pub end: f64,
    pub word: String,
}

/// Hand labels: `start<TAB>end<TAB>word` per line (the shared data sets' word TSVs).
pub fn read_labels(path: &Path) -> Result<Vec<TimedWord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 3 {
                bail!("{}: bad line `{l}`", path.display());
            }
            Ok(TimedWord {
                start: f[0].parse()?,
                end: f[1].parse()?,
                word: f[2].to_string(),
            })
        })
        .collect()
}

/// Words of an openai-whisper-shaped JSON transcript (`segments[].words[]`).
pub fn reference_words(path: &Path) -> Result<Vec<TimedWord>> {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )?;
    let mut out = Vec::new();
    for s in json["segments"].as_array().into_iter().flatten() {
        for w in s["words"].as_array().into_iter().flatten() {
            out.push(TimedWord {
                start: w["start"].as_f64().unwrap_or(0.0),
                end: w["end"].as_f64().unwrap_or(0.0),
                word: w["word"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    Ok(out)
}

/// Words of a whisk transcript, across its segments.
pub fn transcript_words(t: &whisk::Transcript) -> Vec<TimedWord> {
    t.segments
        .iter()
        .flat_map(|s| s.words.iter().flatten())
        .map(|w| TimedWord {
            start: w.start,
            end: w.end,
            word: w.word.clone(),
        })
        .collect()
}

/// Lower case, letters, digits and apostrophes only: `" Don't,"` -> `"don't"`.
pub fn normalize_word(w: &str) -> String {
    w.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Pairs `(i, j)` of `reference[i]` and `hyp[j]` with the same normalised spelling, on a
/// minimum-edit alignment of the two sequences.
pub fn match_words(reference: &[TimedWord], hyp: &[TimedWord]) -> Vec<(usize, usize)> {
    let r: Vec<String> = reference.iter().map(|w| normalize_word(&w.word)).collect();
    let h: Vec<String> = hyp.iter().map(|w| normalize_word(&w.word)).collect();
    let (n, m) = (r.len(), h.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = d[i - 1][j - 1] + usize::from(r[i - 1] != h[j - 1]);
            d[i][j] = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
        }
    }
    let (mut i, mut j) = (n, m);
    let mut pairs = Vec::new();
    while i > 0 && j > 0 {
        let same = r[i - 1] == h[j - 1];
        if d[i][j] == d[i - 1][j - 1] + usize::from(!same) {
            if same && !r[i - 1].is_empty() {
                pairs.push((i - 1, j - 1));
            }
            i -= 1;
            j -= 1;
        } else if d[i][j] == d[i - 1][j] + 1 {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    pairs.reverse();
    pairs
}

/// Absolute errors in seconds, summarised.
#[derive(Debug, Clone, Default)]
pub struct ErrorStats {
    errors: Vec<f64>,
    /// Signed errors (hypothesis minus reference), for the bias.
    signed: Vec<f64>,
}

impl ErrorStats {
    pub fn push(&mut self, hyp: f64, reference: f64) {
        self.errors.push((hyp - reference).abs());
        self.signed.push(hyp - reference);
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    fn median_of(v: &[f64]) -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }

    pub fn median(&self) -> f64 {
        Self::median_of(&self.errors)
    }

    pub fn mean(&self) -> f64 {
        self.errors.iter().sum::<f64>() / self.errors.len().max(1) as f64
    }

    /// Median signed error: positive means late.
    pub fn median_bias(&self) -> f64 {
        Self::median_of(&self.signed)
    }

    /// Share of errors at or below `limit` seconds.
    pub fn within(&self, limit: f64) -> f64 {
        self.errors.iter().filter(|e| **e <= limit + 1e-9).count() as f64
            / self.errors.len().max(1) as f64
    }
}

/// A pause of at least this long before a labelled word makes it an after-pause word.
pub const PAUSE_SECONDS: f64 = 0.1;

/// Start and end errors of one system against the labels.
#[derive(Debug, Clone, Default)]
pub struct TimingReport {
    pub reference_words: usize,
    pub starts: ErrorStats,
    pub ends: ErrorStats,
    /// Start errors of utterance-initial words, words after a pause of at least
    /// [`PAUSE_SECONDS`], and the other (inner) words.
    pub initial_starts: ErrorStats,
    pub after_pause_starts: ErrorStats,
    pub inner_starts: ErrorStats,
    /// End errors of words followed by a pause of at least [`PAUSE_SECONDS`] (not the last).
    pub ends_before_pause: ErrorStats,
}

impl TimingReport {
    /// Adds one utterance: `labels` are the hand-labelled words, `hyp` the system's.
    pub fn add(&mut self, labels: &[TimedWord], hyp: &[TimedWord]) {
        self.reference_words += labels.len();
        for (i, j) in match_words(labels, hyp) {
            self.starts.push(hyp[j].start, labels[i].start);
            self.ends.push(hyp[j].end, labels[i].end);
            let by_place = if i == 0 {
                &mut self.initial_starts
            } else if labels[i].start - labels[i - 1].end >= PAUSE_SECONDS {
                &mut self.after_pause_starts
            } else {
                &mut self.inner_starts
            };
            by_place.push(hyp[j].start, labels[i].start);
            if labels
                .get(i + 1)
                .is_some_and(|next| next.start - labels[i].end >= PAUSE_SECONDS)
            {
                self.ends_before_pause.push(hyp[j].end, labels[i].end);
            }
        }
    }

    /// One markdown table row: matched, then median / mean / within 50, 100, 200 ms for
    /// starts and ends, and the median start bias.
    pub fn row(&self, name: &str) -> String {
        let ms = |x: f64| format!("{:.0}", x * 1000.0);
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        format!(
            "| {name} | {}/{} | {} | {} | {}/{}/{} | {} | {} | {}/{}/{} | {} |",
            self.starts.len(),
            self.reference_words,
            ms(self.starts.median()),
            ms(self.starts.mean()),
            pct(self.starts.within(0.05)),
            pct(self.starts.within(0.1)),
            pct(self.starts.within(0.2)),
            ms(self.ends.median()),
            ms(self.ends.mean()),
            pct(self.ends.within(0.05)),
            pct(self.ends.within(0.1)),
            pct(self.ends.within(0.2)),
            ms(self.starts.median_bias()),
        )
    }

    /// One markdown row of start errors by the word's place: words, median and share
    /// within 50 ms for utterance-initial, after-pause and inner words.
    pub fn places_row(&self, name: &str) -> String {
        let cell = |e: &ErrorStats| {
            format!(
                "{} | {:.0} | {:.0}%",
                e.len(),
                e.median() * 1000.0,
                e.within(0.05) * 100.0
            )
        };
        format!(
            "| {name} | {} | {} | {} | {} |",
            cell(&self.initial_starts),
            cell(&self.after_pause_starts),
            cell(&self.inner_starts),
            cell(&self.ends_before_pause)
        )
    }

    pub const PLACES_HEADER: &'static str = "| system | initial words | median ms | ≤50 ms | after-pause words | median ms | ≤50 ms | inner words | median ms | ≤50 ms | ends before a pause | median ms | ≤50 ms |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

    pub const HEADER: &'static str = "| system | matched | start median ms | start mean ms | starts ≤50/100/200 ms | end median ms | end mean ms | ends ≤50/100/200 ms | start bias ms |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tw(word: &str, start: f64, end: f64) -> TimedWord {
        TimedWord {
            start,
            end,
            word: word.into(),
        }
    }

    #[test]
    fn matches_survive_insertions_and_substitutions() {
        let labels = [
            tw("she", 0.1, 0.3),
            tw("had", 0.3, 0.5),
            tw("your", 0.5, 0.7),
            tw("suit", 0.7, 1.0),
        ];
        let hyp = [
            tw(" She", 0.12, 0.31),
            tw(" has", 0.31, 0.5),
            tw(" a", 0.5, 0.55),
            tw(" your", 0.55, 0.7),
            tw(" suit.", 0.75, 1.1),
        ];
        assert_eq!(match_words(&labels, &hyp), vec![(0, 0), (2, 3), (3, 4)]);
        let mut r = TimingReport::default();
        r.add(&labels, &hyp);
        assert_eq!(r.starts.len(), 3);
        assert!((r.starts.median() - 0.05).abs() < 1e-9);
        assert!((r.starts.within(0.02) - 1.0 / 3.0).abs() < 1e-9);
    }
}
