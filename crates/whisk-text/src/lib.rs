//! Whisper's tokenizer: byte-level BPE from `tokenizer.json` (the `tokenizers` crate), plus the
//! special-token layout and language list read off the same vocabulary.

use std::path::{Path, PathBuf};

use whisk_types::{ModelDims, SpecialTokens};

/// Why a tokenizer could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("tokenizer {path} lacks the special token {token}")]
    MissingSpecial { path: PathBuf, token: String },
    #[error("tokenizer {path} does not fit the model: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("tokenizer: {0}")]
    Codec(String),
    #[error("unknown language `{0}`; use a code such as en, de, fr, zh")]
    UnknownLanguage(String),
}

pub type Result<T> = std::result::Result<T, TextError>;

/// Languages written without spaces between words, whose words are single characters
/// (openai's list).
pub fn writes_without_spaces(language: &str) -> bool {
    matches!(language, "zh" | "ja" | "th" | "lo" | "my" | "yue")
}

/// Text spelled one character per token, for character-level alignment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CharSequence {
    /// Character (and space) tokens.
    pub tokens: Vec<u32>,
    /// For each input word, the range of `tokens` holding its characters.
    pub words: Vec<Option<std::ops::Range<usize>>>,
}

/// Whisper's tokenizer with its special tokens and languages.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    /// Language codes in OpenAI's order, read from the `<|xx|>` tokens.
    languages: Vec<String>,
    multilingual: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("special", &self.special)
            .field("languages", &self.languages.len())
            .finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` and checks its special tokens against the model's vocabulary size.
    pub fn from_file(path: &Path, dims: &ModelDims) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TextError::Load {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TextError::MissingSpecial {
                    path: path.to_path_buf(),
                    token: token.to_string(),
                })
        };
        let no_timestamps = id("<|notimestamps|>")?;
        let sot = id("<|startoftranscript|>")?;
        let translate = id("<|translate|>")?;
        let special = SpecialTokens {
            eot: id("<|endoftext|>")?,
            sot,
            language_begin: sot + 1,
            num_languages: translate - sot - 1,
            translate,
            transcribe: id("<|transcribe|>")?,
            sot_lm: id("<|startoflm|>")?,
            sot_prev: id("<|startofprev|>")?,
            no_speech: id("<|nospeech|>").or_else(|_| id("<|nocaptions|>"))?,
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
        };
        // 1501 timestamp tokens, <|0.00|> to <|30.00|>, close the vocabulary.
        if special.timestamp_begin as usize + 1501 != dims.n_vocab {
            return Err(TextError::Mismatch {
                path: path.to_path_buf(),
                reason: format!(
                    "timestamps start at {} but the model has {} tokens",
                    special.timestamp_begin, dims.n_vocab
                ),
            });
        }
        let languages = (0..special.num_languages)
            .map(|i| {
                let token = inner
                    .id_to_token(special.language_begin + i)
                    .unwrap_or_default();
                token
                    .trim_start_matches("<|")
                    .trim_end_matches("|>")
                    .to_string()
            })
            .collect();
        Ok(Self {
            inner,
            special,
            languages,
            multilingual: dims.is_multilingual(),
        })
    }

    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// Language codes in OpenAI's order; index `i` is token `language_begin + i`.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// Index of a language code (`"de"`) in [`Self::languages`].
    pub fn language_index(&self, code: &str) -> Result<usize> {
        let code = code.trim().to_lowercase();
        self.languages
            .iter()
            .position(|l| *l == code)
            .ok_or(TextError::UnknownLanguage(code))
    }

    /// Encodes text without adding any special token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TextError::Codec(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes the text tokens among `tokens`; special and timestamp tokens are dropped.
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        let text: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|t| self.special.is_text(*t))
            .collect();
        self.inner
            .decode(&text, false)
            .map_err(|e| TextError::Codec(e.to_string()))
    }

    /// Decodes tokens as text, special tokens included (`<|endoftext|>`), timestamps skipped.
    fn decode_raw(&self, tokens: &[u32]) -> Result<String> {
        let kept: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|t| !self.special.is_timestamp(*t))
            .collect();
        self.inner
            .decode(&kept, false)
            .map_err(|e| TextError::Codec(e.to_string()))
    }

    /// Splits tokens where whole characters end (openai `split_tokens_on_unicode`): a
    /// multi-byte character cut across tokens stays in one piece.
    pub fn split_tokens_on_unicode(&self, tokens: &[u32]) -> Result<Vec<(String, Vec<u32>)>> {
        const REPLACEMENT: char = '\u{fffd}';
        let full: Vec<char> = self.decode_raw(tokens)?.chars().collect();
        let mut out = Vec::new();
        let mut current = Vec::new();
        let mut offset = 0;
        for &t in tokens {
            current.push(t);
            let decoded = self.decode_raw(&current)?;
            let chars: Vec<char> = decoded.chars().collect();
            let complete = match chars.iter().position(|&c| c == REPLACEMENT) {
                None => true,
                Some(i) => full.get(offset + i) == Some(&REPLACEMENT),
            };
            if complete {
                offset += chars.len();
                out.push((decoded, std::mem::take(&mut current)));
            }
        }
        Ok(out)
    }

    /// Groups tokens into words (openai `split_to_word_tokens`): at spaces and punctuation for
    /// most languages, per character for languages written without spaces.
    pub fn split_to_word_tokens(
        &self,
        tokens: &[u32],
        language: &str,
    ) -> Result<Vec<(String, Vec<u32>)>> {
        if writes_without_spaces(language) {
            return self.split_tokens_on_unicode(tokens);
        }
        let mut words: Vec<(String, Vec<u32>)> = Vec::new();
        for (sub, sub_tokens) in self.split_tokens_on_unicode(tokens)? {
            let special = sub_tokens[0] >= self.special.eot;
            let with_space = sub.starts_with(' ');
            let trimmed = sub.trim();
            // Python's `in string.punctuation`: a substring test.
            let punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".contains(trimmed);
            match words.last_mut() {
                Some(last) if !(special || with_space || punctuation) => {
                    last.0.push_str(&sub);
                    last.1.extend(sub_tokens);
                }
                _ => words.push((sub, sub_tokens)),
            }
        }
        Ok(words)
    }

    /// The character sequence that character-level alignment feeds the decoder in place of
    /// `words`: every letter or digit of each word as its own token(s), punctuation dropped,
    /// one space token before each word when `language` writes spaces. Words with no letter or
    /// digit get no characters.
    pub fn char_sequence(&self, words: &[&str], language: &str) -> Result<CharSequence> {
        let spaces = !writes_without_spaces(language);
        let space = self.encode(" ")?;
        let mut seq = CharSequence::default();
        for word in words {
            let letters: Vec<char> = word.chars().filter(|c| c.is_alphanumeric()).collect();
            if letters.is_empty() {
                seq.words.push(None);
                continue;
            }
            // Every word, the first too, follows a space of its own (Whisper writes text
            // as " word word"): the space's row takes the silence before the word.
            if spaces {
                seq.tokens.extend_from_slice(&space);
            }
            let first = seq.tokens.len();
            let mut buf = [0u8; 4];
            for c in letters {
                seq.tokens.extend(self.encode(c.encode_utf8(&mut buf))?);
            }
            seq.words.push(Some(first..seq.tokens.len()));
        }
        Ok(seq)
    }

    /// OpenAI's `non_speech_tokens`: symbols and speaker-tag punctuation that are suppressed so
    /// the model writes words, while hyphens and apostrophes stay allowed inside words.
    pub fn non_speech_tokens(&self) -> Result<Vec<u32>> {
        let mut symbols: Vec<String> = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』"
            .chars()
            .map(String::from)
            .collect();
        symbols.extend(
            "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
                .split(' ')
                .map(String::from),
        );
        // U+2640..U+267F symbols share their first UTF-8 bytes, so their first token is safe
        // to suppress even when they take several tokens.
        let miscellaneous = ["♩", "♪", "♫", "♬", "♭", "♮", "♯"];
        let mut result = vec![self.encode(" -")?[0], self.encode(" '")?[0]];
        for (symbol, misc) in symbols
            .iter()
            .map(|s| (s.as_str(), false))
            .chain(miscellaneous.iter().map(|s| (*s, true)))
        {
            for text in [symbol.to_string(), format!(" {symbol}")] {
                let tokens = self.encode(&text)?;
                if tokens.len() == 1 || (misc && !tokens.is_empty()) {
                    result.push(tokens[0]);
                }
            }
        }
        result.sort_unstable();
        result.dedup();
        Ok(result)
    }
}
