//! English text normalisation for WER, after openai-whisper's `EnglishTextNormalizer`
//! (`whisper/normalizers/english.py`): lower case, bracketed text and fillers removed,
//! contractions and titles expanded, symbols and diacritics removed, number words turned
//! into digits.
//!
//! Not ported: the British-to-American spelling table (`english.json`), currencies,
//! percentages and decimal numbers in words. TIMIT, our WER set, is American English with
//! few numbers; the same normaliser is applied to every system compared, so the comparison is
//! fair either way.

use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

struct Rules {
    brackets: Regex,
    parens: Regex,
    fillers: Regex,
    space_apostrophe: Regex,
    replacers: Vec<(Regex, &'static str)>,
    digit_commas: Regex,
    periods: Regex,
    prefix_symbols: Regex,
    suffix_percent: Regex,
    spaces: Regex,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = |p: &str| Regex::new(p).expect("valid pattern");
        let replacers = [
            // common contractions
            (r"\bwon't\b", "will not"),
            (r"\bcan't\b", "can not"),
            (r"\blet's\b", "let us"),
            (r"\bain't\b", "aint"),
            (r"\by'all\b", "you all"),
            (r"\bwanna\b", "want to"),
            (r"\bgotta\b", "got to"),
            (r"\bgonna\b", "going to"),
            (r"\bi'ma\b", "i am going to"),
            (r"\bimma\b", "i am going to"),
            (r"\bwoulda\b", "would have"),
            (r"\bcoulda\b", "could have"),
            (r"\bshoulda\b", "should have"),
            (r"\bma'am\b", "madam"),
            // titles and abbreviations
            (r"\bmr\b", "mister "),
            (r"\bmrs\b", "missus "),
            (r"\bst\b", "saint "),
            (r"\bdr\b", "doctor "),
            (r"\bprof\b", "professor "),
            (r"\bcapt\b", "captain "),
            (r"\bgov\b", "governor "),
            (r"\bald\b", "alderman "),
            (r"\bgen\b", "general "),
            (r"\bsen\b", "senator "),
            (r"\brep\b", "representative "),
            (r"\bpres\b", "president "),
            (r"\brev\b", "reverend "),
            (r"\bhon\b", "honorable "),
            (r"\basst\b", "assistant "),
            (r"\bassoc\b", "associate "),
            (r"\blt\b", "lieutenant "),
            (r"\bcol\b", "colonel "),
            (r"\bjr\b", "junior "),
            (r"\bsr\b", "senior "),
            (r"\besq\b", "esquire "),
            // perfect tenses
            (r"'d been\b", " had been"),
            (r"'s been\b", " has been"),
            (r"'d gone\b", " had gone"),
            (r"'s gone\b", " has gone"),
            (r"'d done\b", " had done"),
            (r"'s got\b", " has got"),
            // general contractions
            (r"n't\b", " not"),
            (r"'re\b", " are"),
            (r"'s\b", " is"),
            (r"'d\b", " would"),
            (r"'ll\b", " will"),
            (r"'t\b", " not"),
            (r"'ve\b", " have"),
            (r"'m\b", " am"),
        ]
        .into_iter()
        .map(|(p, s)| (r(p), s))
        .collect();
        Rules {
            brackets: r(r"[<\[][^>\]]*[>\]]"),
            parens: r(r"\(([^)]+?)\)"),
            fillers: r(r"\b(hmm|mm|mhm|mmm|uh|um)\b"),
            space_apostrophe: r(r"\s+'"),
            replacers,
            digit_commas: r(r"(\d),(\d)"),
            periods: r(r"\.([^0-9]|$)"),
            prefix_symbols: r(r"[.$¢€£]([^0-9])"),
            suffix_percent: r(r"([^0-9])%"),
            spaces: r(r"\s+"),
        }
    })
}

/// Removes diacritics and replaces symbols and punctuation with spaces, keeping `keep`
/// (openai `remove_symbols_and_diacritics`).
fn remove_symbols_and_diacritics(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfkd() {
        if keep.contains(c) {
            out.push(c);
            continue;
        }
        match c {
            'œ' => out.push_str("oe"),
            'æ' => out.push_str("ae"),
            'ø' => out.push('o'),
            'ß' => out.push_str("ss"),
            'ł' => out.push('l'),
            'đ' | 'ð' => out.push('d'),
            'þ' => out.push_str("th"),
            _ if is_combining_mark(c) => {}
            _ if c.is_alphanumeric() || c.is_whitespace() || c == '\'' => out.push(c),
            _ => out.push(' '),
        }
    }
    out
}

fn ones(word: &str) -> Option<u64> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    ONES.iter().position(|w| *w == word).map(|i| i as u64)
}

fn tens(word: &str) -> Option<u64> {
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    TENS.iter()
        .position(|w| *w == word)
        .map(|i| 20 + 10 * i as u64)
}

fn multiplier(word: &str) -> Option<u64> {
    match word {
        "hundred" => Some(100),
        "thousand" => Some(1_000),
        "million" => Some(1_000_000),
        "billion" => Some(1_000_000_000),
        "trillion" => Some(1_000_000_000_000),
        _ => None,
    }
}

/// `first` -> (1, "st"), `twentieth` -> (20, "th"), ...
fn ordinal(word: &str) -> Option<(u64, &'static str)> {
    let fixed = match word {
        "first" => Some((1, "st")),
        "second" => Some((2, "nd")),
        "third" => Some((3, "rd")),
        "fifth" => Some((5, "th")),
        "eighth" => Some((8, "th")),
        "ninth" => Some((9, "th")),
        "twelfth" => Some((12, "th")),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    if let Some(stem) = word.strip_suffix("ieth") {
        return tens(&format!("{stem}y")).map(|v| (v, "th"));
    }
    let stem = word.strip_suffix("th")?;
    ones(stem).or_else(|| multiplier(stem)).map(|v| (v, "th"))
}

fn is_number_word(w: &str) -> bool {
    ones(w).is_some() || tens(w).is_some() || multiplier(w).is_some()
}

/// Turns runs of English number words into digits: `twenty two` -> `22`,
/// `one hundred and five` -> `105`, `twenty first` -> `21st`. A lone `second` stays a word
/// (`a second chance`), as it does in openai's normaliser.
fn standardize_numbers(s: &str) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut total = 0u64;
        let mut current = 0u64;
        let mut j = i;
        let mut suffix = "";
        let mut any = false;
        while j < words.len() {
            let w = words[j];
            if let Some(v) = ones(w) {
                current += v;
            } else if let Some(v) = tens(w) {
                current += v;
            } else if let Some(m) = multiplier(w) {
                if m == 100 {
                    current = current.max(1) * 100;
                } else {
                    total += current.max(1) * m;
                    current = 0;
                }
            } else if w == "and"
                && any
                && j + 1 < words.len()
                && (is_number_word(words[j + 1]) || ordinal(words[j + 1]).is_some())
                && (current >= 100 || total > 0)
            {
                // "one hundred and five"
            } else if let Some((v, suf)) = ordinal(w) {
                if w == "second" && !any {
                    break;
                }
                if v >= 100 {
                    current = current.max(1) * v;
                } else {
                    current += v;
                }
                suffix = suf;
                any = true;
                j += 1;
                break;
            } else {
                break;
            }
            any = true;
            j += 1;
        }
        if any {
            out.push(format!("{}{suffix}", total + current));
            i = j;
        } else {
            out.push(words[i].to_string());
            i += 1;
        }
    }
    out.join(" ")
}

/// Normalises English text for WER the way openai-whisper's `EnglishTextNormalizer` does
/// (see the module docs for what is not ported).
pub fn normalize_english(text: &str) -> String {
    let r = rules();
    let mut s = text.to_lowercase();
    s = r.brackets.replace_all(&s, "").into_owned();
    s = r.parens.replace_all(&s, "").into_owned();
    s = r.fillers.replace_all(&s, "").into_owned();
    s = r.space_apostrophe.replace_all(&s, "'").into_owned();
    for (pattern, replacement) in &r.replacers {
        s = pattern.replace_all(&s, *replacement).into_owned();
    }
    s = r.digit_commas.replace_all(&s, "$1$2").into_owned();
    s = r.periods.replace_all(&s, " $1").into_owned();
    s = remove_symbols_and_diacritics(&s, ".%$¢€£");
    // Apostrophes that survived the contraction rules are symbols too.
    s = s.replace('\'', " ");
    s = standardize_numbers(&s);
    s = r.prefix_symbols.replace_all(&s, " $1").into_owned();
    s = r.suffix_percent.replace_all(&s, "$1 ").into_owned();
    s = r.spaces.replace_all(&s, " ").into_owned();
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_case_and_contractions() {
        assert_eq!(
            normalize_english("Don't ask me to carry an oily rag like that."),
            "do not ask me to carry an oily rag like that"
        );
        assert_eq!(
            normalize_english("  Which church do the Smiths worship in?"),
            "which church do the smiths worship in"
        );
        assert_eq!(
            normalize_english("He's [laughs] uh, Mr. Brown's (aside) café"),
            "he is mister brown is cafe"
        );
    }

    #[test]
    fn numbers_become_digits() {
        assert_eq!(normalize_english("Twenty-two or twenty three."), "22 or 23");
        assert_eq!(normalize_english("one hundred and five dogs"), "105 dogs");
        assert_eq!(normalize_english("the twenty first time"), "the 21st time");
        assert_eq!(normalize_english("two thousand and twelve"), "2012");
        assert_eq!(normalize_english("a second chance"), "a second chance");
        assert_eq!(normalize_english("The two artists"), "the 2 artists");
        assert_eq!(normalize_english("1,000 people"), "1000 people");
    }
}
