use whisk_types::{SpecialTokens, Task};

/// The start-of-transcript sequence (openai `Tokenizer.sot_sequence`): `<|startoftranscript|>`,
/// then on multilingual models the language and task, then `<|notimestamps|>` when asked.
pub fn sot_sequence(
    special: &SpecialTokens,
    multilingual: bool,
    language: Option<usize>,
    task: Task,
    without_timestamps: bool,
) -> Vec<u32> {
    let mut seq = vec![special.sot];
    if multilingual {
        if let Some(lang) = language.and_then(|i| special.language_token(i)) {
            seq.push(lang);
        }
        seq.push(match task {
            Task::Transcribe => special.transcribe,
            Task::Translate => special.translate,
        });
    }
    if without_timestamps {
        seq.push(special.no_timestamps);
    }
    seq
}

/// The tokens fed before sampling: `<|startofprev|>` and the tail of the previous text (at most
/// half the context, as openai's `_get_initial_tokens`), then the SOT sequence.
pub fn build_prompt(
    special: &SpecialTokens,
    previous: &[u32],
    sot_sequence: &[u32],
    n_text_ctx: usize,
) -> Vec<u32> {
    let mut out = Vec::new();
    if !previous.is_empty() {
        let keep = n_text_ctx / 2 - 1;
        out.push(special.sot_prev);
        out.extend_from_slice(&previous[previous.len().saturating_sub(keep)..]);
    }
    out.extend_from_slice(sot_sequence);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multilingual() -> SpecialTokens {
        SpecialTokens {
            eot: 50257,
            sot: 50258,
            language_begin: 50259,
            num_languages: 99,
            translate: 50358,
            transcribe: 50359,
            sot_lm: 50360,
            sot_prev: 50361,
            no_speech: 50362,
            no_timestamps: 50363,
            timestamp_begin: 50364,
        }
    }

    #[test]
    fn sot_sequence_layouts() {
        let s = multilingual();
        assert_eq!(
            sot_sequence(&s, true, Some(2), Task::Transcribe, false),
            vec![50258, 50261, 50359]
        );
        assert_eq!(
            sot_sequence(&s, true, None, Task::Translate, true),
            vec![50258, 50358, 50363]
        );
        assert_eq!(
            sot_sequence(&s, false, Some(0), Task::Transcribe, false),
            vec![50258]
        );
    }

    #[test]
    fn prompt_keeps_the_tail_of_previous_text() {
        let s = multilingual();
        let previous: Vec<u32> = (0..300).collect();
        let p = build_prompt(&s, &previous, &[50258], 448);
        assert_eq!(p[0], s.sot_prev);
        assert_eq!(p.len(), 1 + 223 + 1);
        assert_eq!(p[1], 300 - 223);
        assert_eq!(build_prompt(&s, &[], &[50258], 448), vec![50258]);
    }
}
