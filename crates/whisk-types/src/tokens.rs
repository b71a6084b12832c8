/// Ids of the special tokens of one vocabulary.
///
/// The layout follows OpenAI's tokenizer: `<|endoftext|>`, `<|startoftranscript|>`, the
/// language tokens, then task and control tokens, then the timestamp tokens `<|0.00|>` ...
/// `<|30.00|>` from `timestamp_begin` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub eot: u32,
    pub sot: u32,
    /// First language token (`<|en|>`); languages follow in OpenAI's `LANGUAGES` order.
    pub language_begin: u32,
    pub num_languages: u32,
    pub translate: u32,
    pub transcribe: u32,
    pub sot_lm: u32,
    pub sot_prev: u32,
    /// `<|nospeech|>` (`<|nocaptions|>` in older vocabularies).
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// `<|0.00|>`; every id at or above it is a timestamp.
    pub timestamp_begin: u32,
}

impl SpecialTokens {
    /// Whisper's layout on a vocabulary of 30 for unit tests: text 0..10, eot 10, sot 11,
    /// one language 12, translate 13, transcribe 14, sot_lm 15, sot_prev 16, no_speech 17,
    /// no_timestamps 18, timestamps 19..30.
    #[doc(hidden)]
    pub fn small_for_tests() -> Self {
        Self {
            eot: 10,
            sot: 11,
            language_begin: 12,
            num_languages: 1,
            translate: 13,
            transcribe: 14,
            sot_lm: 15,
            sot_prev: 16,
            no_speech: 17,
            no_timestamps: 18,
            timestamp_begin: 19,
        }
    }

    pub fn is_timestamp(&self, token: u32) -> bool {
        token >= self.timestamp_begin
    }

    /// True for the plain text tokens that make up a transcript.
    pub fn is_text(&self, token: u32) -> bool {
        token < self.eot
    }

    /// The token of the language at `index` in OpenAI's language list.
    pub fn language_token(&self, index: usize) -> Option<u32> {
        (index < self.num_languages as usize).then(|| self.language_begin + index as u32)
    }

    /// Position of `token` in OpenAI's language list, if it is a language token.
    pub fn language_index(&self, token: u32) -> Option<usize> {
        (token >= self.language_begin && token < self.language_begin + self.num_languages)
            .then(|| (token - self.language_begin) as usize)
    }
}
