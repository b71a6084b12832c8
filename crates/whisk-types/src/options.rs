use serde::{Deserialize, Serialize};

/// What the decoder is asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Speech to text in the spoken language.
    #[default]
    Transcribe,
    /// Speech to English text.
    Translate,
}

/// How the last window of a file is filled up to 30 s.
///
/// Measured on the 160 TIMIT utterances with tiny.en (`cargo xtask eval`, `eval-words`):
/// `ZeroFeatures` times word starts better (median error 103 ms against 107 ms) and matches
/// faster-whisper's text and word times; `Silence` has the lower WER (20.6% against 21.3%).
/// Word timing is whisk's headline, so `ZeroFeatures` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MelPadding {
    /// openai-whisper: 30 s of silent audio are appended before the spectrogram, so padding
    /// frames carry the log-mel floor, as in training.
    Silence,
    /// faster-whisper: the spectrogram of the audio (plus 10 ms) is padded with zero-valued
    /// features. Reproduces faster-whisper's output on the same weights.
    #[default]
    ZeroFeatures,
}

/// How words are timed.
///
/// Measured on TIMIT's hand labels with tiny.en (`cargo xtask eval-words`), median start
/// error and share of starts within 50 ms: `Chars` 22 ms / 80% (held-out speakers 23 ms /
/// 80%), `Refeed` 103 ms / 22% (faster-whisper: 103 ms / 22%), `SinglePass` 103 ms / 22%.
/// `Chars` (the default) is the most accurate; its letters are kept near the segment the
/// decoder's timestamps put them in, so a long silence inside a window cannot swallow words,
/// and a word after a pause starts where the sound comes back.
/// `Refeed` reproduces openai-whisper's and faster-whisper's times; `SinglePass` skips the
/// second decoder pass and is the cheapest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WordAlignment {
    /// The decoder returns the alignment heads' attention at every step of the decode that
    /// produces the transcript: no second forward pass.
    SinglePass,
    /// A second decoder pass over `<|notimestamps|>` and the text, as openai-whisper and
    /// faster-whisper do.
    Refeed,
    /// Character-level alignment: a second decoder pass over the text spelled one character
    /// per token, the two most concentrated heads of all decoder layers, DTW over characters
    /// ("Whisper Has an Internal Word Aligner", 2025). A window whose characters overrun the
    /// text context falls back to `Refeed`.
    #[default]
    Chars,
}

/// Options of one 30 s window's decode. Defaults follow openai-whisper's `DecodingOptions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeOptions {
    pub task: Task,
    /// Language code (`"en"`, `"de"`, ...); `None` detects it on multilingual models.
    pub language: Option<String>,
    /// Emit no timestamp tokens (`<|notimestamps|>` in the SOT sequence). Default `false`.
    pub without_timestamps: bool,
    /// Latest allowed first timestamp, in seconds. Default `Some(1.0)`.
    pub max_initial_timestamp: Option<f64>,
    /// Suppress blank output (space or end-of-text) at the first sampled position. Default `true`.
    pub suppress_blank: bool,
    /// Token ids never to sample; `-1` stands for OpenAI's non-speech symbol set. Default `[-1]`.
    pub suppress_tokens: Vec<i64>,
    /// Most tokens sampled per window; `None` means half the text context (224).
    pub sample_len: Option<usize>,
    /// Beam width at temperature 0; `None` (or 1) decodes greedily. Default `None`, as
    /// openai's `DecodingOptions` (its CLI and faster-whisper use 5).
    pub beam_size: Option<usize>,
    /// Finished hypotheses a beam search collects, as a multiple of `beam_size`.
    /// Default `None` (1.0).
    pub patience: Option<f64>,
    /// `None` ranks beam hypotheses by log-probability over length; `Some(a)` divides by
    /// `((5 + length) / 6)^a`. Default `None`.
    pub length_penalty: Option<f64>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            task: Task::Transcribe,
            language: None,
            without_timestamps: false,
            max_initial_timestamp: Some(1.0),
            suppress_blank: true,
            suppress_tokens: vec![-1],
            sample_len: None,
            beam_size: None,
            patience: None,
            length_penalty: None,
        }
    }
}

/// Options of a long-form transcription. Defaults follow openai-whisper's `transcribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscribeOptions {
    pub decode: DecodeOptions,
    /// Feed the previous window's text as a prompt to the next. Default `true`.
    pub condition_on_previous_text: bool,
    /// Text fed as a prompt to the first window. Default `None`.
    pub initial_prompt: Option<String>,
    /// Skip a window as silent when its no-speech probability is above this and its average
    /// log-probability below `logprob_threshold`. Default `Some(0.6)`.
    pub no_speech_threshold: Option<f64>,
    /// A decode with a lower average log-probability is retried at the next temperature.
    /// Default `Some(-1.0)`.
    pub logprob_threshold: Option<f64>,
    /// Padding of the last window. Default [`MelPadding::ZeroFeatures`] (faster-whisper).
    pub mel_padding: MelPadding,
    /// Temperatures tried in turn while a window's decode fails the thresholds.
    /// Default `[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]`.
    pub temperatures: Vec<f64>,
    /// A decode whose text compresses better than this (gzip ratio) is repetitive and is
    /// retried hotter. Default `Some(2.4)`.
    pub compression_ratio_threshold: Option<f64>,
    /// Candidates drawn at each temperature above zero; the likeliest is kept. Default 2
    /// (openai-whisper and faster-whisper draw 5): batched (the default mode), on the bench's
    /// 160 TIMIT files, long file and pause set, 2 gave the same or lower WER at 1.1-1.6x the
    /// speed (long file: 39.8 s, 20.00% with 5; 25.3 s, 19.30% with 2). In the sequential
    /// loop the pause set was mixed: 25.5 -> 23.6% with words, 26.2 -> 28.4% without; pass 5
    /// there for openai's behaviour.
    pub best_of: usize,
    /// Seed of the sampler used above temperature zero, for reproducible output. Default 0.
    pub seed: u64,
    /// Time every word (`Segment::words`). Default `false`.
    pub word_timestamps: bool,
    /// How words are timed. Default [`WordAlignment::Chars`].
    pub word_alignment: WordAlignment,
    /// Windows decoded together. 1 (default) runs openai's sequential loop: each window starts
    /// where the previous one's text ended and is prompted with it. Above 1, every input is
    /// cut into 30 s windows up front, overlapping by [`WINDOW_OVERLAP_SECONDS`], decoded
    /// independently this many at a time (inputs share the batch) and stitched by word times.
    pub batch_size: usize,
    /// Parts of the input to transcribe, in seconds: `start, end, start, end, ...`; a
    /// missing last end is the end of the input. Empty (default) is the whole input. In
    /// batched mode each clip is cut into windows of its own.
    pub clip_timestamps: Vec<f64>,
    /// With word timestamps: skip silent stretches longer than this many seconds around a
    /// suspected hallucination (a segment of improbable, very short or very long words), as
    /// openai-whisper does. Default `None`. In batched mode, where every window is decoded
    /// on its own and there is no seek to move, a suspect segment with silence (or the
    /// input's edge, or another suspect) on both sides is dropped.
    pub hallucination_silence_threshold: Option<f64>,
    /// Voice activity detection: transcribe only the stretches Silero VAD hears speech in
    /// (`whisk`'s facade runs it; it turns them into clips, merged up to 30 s, so no word can
    /// land in audio it cut away). Default `None`: the whole input.
    pub vad: Option<crate::VadOptions>,
    /// In batched mode, lay inputs (or VAD's clips) of up to 30 s end to end in shared
    /// windows, two seconds of silence apart (half a second between clips of one input in
    /// order), and hand each segment and word back to its input by time: many short files need a fraction
    /// of the encoder passes. Only where the language is known (an English model, or
    /// `decode.language`), since a window holds one language. Default `true`.
    pub pack_short_inputs: bool,
}

/// Overlap of consecutive windows in batched long-form mode. Each side keeps the words of its
/// half of the overlap, so a word cut by one window's edge is taken whole from the other.
pub const WINDOW_OVERLAP_SECONDS: f64 = 4.0;

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            decode: DecodeOptions::default(),
            condition_on_previous_text: true,
            initial_prompt: None,
            no_speech_threshold: Some(0.6),
            logprob_threshold: Some(-1.0),
            mel_padding: MelPadding::ZeroFeatures,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            best_of: 2,
            seed: 0,
            word_timestamps: false,
            word_alignment: WordAlignment::Chars,
            batch_size: 1,
            clip_timestamps: Vec::new(),
            hallucination_silence_threshold: None,
            vad: None,
            pack_short_inputs: true,
        }
    }
}
