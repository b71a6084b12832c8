//! Temperature fallback and the no-speech skip, driven by a scripted backend: the decoder's
//! logits come from a script, not a model, so each rule is triggered on purpose.

use std::cell::Cell;

use whisk_backend::{Backend, DecodeStep, MelBatch, Result, StepOutput};
use whisk_pipeline::Pipeline;
use whisk_tests::model_dir;
use whisk_text::Tokenizer;
use whisk_types::{DecodeOptions, ModelDims, SpecialTokens, TranscribeOptions};

/// tiny.en's shape, so the real tokenizer fits.
fn dims() -> ModelDims {
    ModelDims::official("tiny.en").expect("a known shape")
}

/// Proposes `script` token by token after the SOT sequence, then end-of-text, with the
/// proposed token `confidence` logits above every other; `<|nospeech|>` gets `no_speech`
/// logits at the `<|startoftranscript|>` position. Counts the decodes it is asked for.
struct Scripted {
    dims: ModelDims,
    special: SpecialTokens,
    script: Vec<u32>,
    confidence: f32,
    no_speech: f32,
    decodes: Cell<usize>,
    /// Windows encoded.
    encodes: Cell<usize>,
    /// Slots whose cross-attention state was computed from an encoding.
    attaches: Cell<usize>,
    /// Slots let go of.
    releases: Cell<usize>,
}

impl Scripted {
    fn next_logits(&self, history: &[u32]) -> Vec<f32> {
        let mut logits = vec![0.0f32; self.dims.n_vocab];
        let last = *history.last().expect("fed at least one token");
        if last == self.special.sot {
            logits[self.special.no_speech as usize] = self.no_speech;
        }
        let begin = history
            .iter()
            .rposition(|&t| t == self.special.no_timestamps)
            .map_or(history.len(), |i| i + 1);
        let sampled = history.len() - begin;
        let next = self
            .script
            .get(sampled)
            .copied()
            .unwrap_or(self.special.eot);
        logits[next as usize] = self.confidence;
        logits
    }
}

impl Backend for Scripted {
    type Encoded = usize;
    /// Each slot's fed tokens; `None` where no window is attached (or it was released), so
    /// that reading such a slot fails as it would on a real backend.
    type Decoder = Vec<Option<Vec<u32>>>;

    fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn device_name(&self) -> String {
        "scripted".into()
    }

    fn encode(&self, mel: MelBatch<'_>) -> Result<usize> {
        self.encodes.set(self.encodes.get() + mel.windows);
        Ok(mel.windows)
    }

    fn new_decoder(&self, slots: usize) -> Result<Self::Decoder> {
        Ok(vec![None; slots])
    }

    fn attach(
        &self,
        decoder: &mut Self::Decoder,
        slots: &[usize],
        _: &usize,
        _: &[usize],
    ) -> Result<()> {
        self.attaches.set(self.attaches.get() + slots.len());
        for &s in slots {
            decoder[s] = Some(Vec::new());
        }
        Ok(())
    }

    fn copy_slots(&self, decoder: &mut Self::Decoder, moves: &[(usize, usize)]) -> Result<()> {
        let before = decoder.clone();
        for &(from, to) in moves {
            assert!(
                before[from].is_some(),
                "copied from slot {from}, which holds nothing"
            );
            decoder[to] = before[from].clone();
        }
        Ok(())
    }

    fn release(&self, decoder: &mut Self::Decoder, slots: &[usize]) -> Result<()> {
        self.releases.set(self.releases.get() + slots.len());
        for &s in slots {
            decoder[s] = None;
        }
        Ok(())
    }

    fn decode_step(&self, decoder: &mut Self::Decoder, step: DecodeStep<'_>) -> Result<StepOutput> {
        let mut out = StepOutput::default();
        for row in step.rows {
            let history = decoder[row.slot]
                .as_mut()
                .unwrap_or_else(|| panic!("stepped slot {}, which holds nothing", row.slot));
            if row.position == 0 && row.tokens.len() > 1 {
                self.decodes.set(self.decodes.get() + 1);
            }
            history.truncate(row.position);
            history.extend_from_slice(row.tokens);
            let mut logits = Vec::new();
            for &at in row.logits_at {
                logits.extend(self.next_logits(&history[..row.position + at + 1]));
            }
            out.logits.push(logits);
        }
        Ok(out)
    }
}

fn pipeline(script_text: &str, confidence: f32, no_speech: f32) -> Pipeline<Scripted> {
    let dir = model_dir("tiny.en");
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), &dims()).unwrap();
    let backend = Scripted {
        dims: dims(),
        special: tokenizer.special().clone(),
        script: tokenizer.encode(script_text).unwrap(),
        confidence,
        no_speech,
        decodes: Cell::new(0),
        encodes: Cell::new(0),
        attaches: Cell::new(0),
        releases: Cell::new(0),
    };
    Pipeline::new(backend, tokenizer, vec![(2, 0)]).unwrap()
}

/// Text without timestamps keeps the script free of timestamp rules; 5 s of (ignored) audio.
/// Five candidates a temperature, so that the best of them stays near the script.
fn options() -> TranscribeOptions {
    TranscribeOptions {
        best_of: 5,
        decode: DecodeOptions {
            without_timestamps: true,
            beam_size: Some(5),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn transcribe(p: &Pipeline<Scripted>, options: &TranscribeOptions) -> whisk_types::Transcript {
    p.transcribe(&vec![0.01f32; 80_000], options, &mut |_| {})
        .unwrap()
}

#[test]
fn repetitive_text_falls_back_through_every_temperature() {
    let p = pipeline(&" the cat sat on the mat.".repeat(12), 30.0, 0.0);
    let t = transcribe(&p, &options());
    // Temperature 0 (one beam search), then five samples at each of 0.2 ... 1.0; each stops
    // at the loop's fourth time instead of running on.
    assert_eq!(p.backend().decodes.get(), 1 + 5 * 5);
    let segment = &t.segments[0];
    assert_eq!(segment.temperature, 1.0);
    // The loop that survived every temperature is cut after its first time.
    assert_eq!(t.text, " the cat sat on the mat.");

    // Without the compression rule, the first decode stands, its loop cut all the same.
    let p = pipeline(&" the cat sat on the mat.".repeat(12), 30.0, 0.0);
    let lenient = TranscribeOptions {
        compression_ratio_threshold: None,
        ..options()
    };
    let t = transcribe(&p, &lenient);
    assert_eq!(p.backend().decodes.get(), 1);
    assert_eq!(t.segments[0].temperature, 0.0);
    assert_eq!(t.text, " the cat sat on the mat.");

    // Repeated three times, a phrase is speech: no fallback, nothing cut.
    let p = pipeline(&" the cat sat on the mat.".repeat(3), 30.0, 0.0);
    let t = transcribe(&p, &options());
    assert_eq!(p.backend().decodes.get(), 1);
    assert_eq!(t.text, " the cat sat on the mat.".repeat(3));
}

#[test]
fn batched_fallback_encodes_its_window_once() {
    // Two inputs, each one window decoded at every temperature (five candidates from 0.2),
    // beside each other in one batch: each window is encoded once for all its decodes, and
    // its cross-attention state computed once (later rows take or copy it from a slot).
    let p = pipeline(&" the cat sat on the mat.".repeat(12), 30.0, 0.0);
    let audio = vec![0.01f32; 80_000];
    let batched = TranscribeOptions {
        batch_size: 4,
        // Each input a window of its own, not timed (this backend gives no attention).
        pack_short_inputs: false,
        ..options()
    };
    let transcripts = p
        .transcribe_many(&[&audio, &audio], &batched, &mut |_| {})
        .unwrap();
    assert_eq!(p.backend().decodes.get(), 2 * (1 + 5 * 5));
    assert_eq!(p.backend().encodes.get(), 2);
    assert_eq!(
        p.backend().attaches.get(),
        2,
        "later decodes reuse the window's slot"
    );

    for t in transcripts {
        assert_eq!(t.text, " the cat sat on the mat.");
    }
}

#[test]
fn idle_slots_let_go_of_their_window_and_are_not_read_again() {
    // Three inputs, two at a time: the third takes the first's slots, and the second's go
    // idle once no row and no waiting decode reads its window. This backend fails a step or
    // a copy from a slot that holds nothing, so a slot let go of too early would show.
    let p = pipeline(" a quiet sentence.", 30.0, 0.0);
    let audio = vec![0.01f32; 80_000];
    let two_at_a_time = TranscribeOptions {
        batch_size: 2,
        pack_short_inputs: false,
        ..options()
    };
    let transcripts = p
        .transcribe_many(&[&audio, &audio, &audio], &two_at_a_time, &mut |_| {})
        .unwrap();
    assert_eq!(p.backend().decodes.get(), 3);
    assert_eq!(
        p.backend().releases.get(),
        5,
        "the second window's five beams"
    );
    for t in transcripts {
        assert_eq!(t.text.trim(), "a quiet sentence.");
    }
}

#[test]
fn unlikely_text_falls_back_and_likely_text_does_not() {
    // Proposed tokens 10 logits above 51863 others: about 30% each, log-probability about
    // -1.2: under the threshold, near enough that every temperature is tried.
    let p = pipeline(" a quiet sentence.", 10.0, 0.0);
    let t = transcribe(&p, &options());
    assert_eq!(p.backend().decodes.get(), 1 + 5 * 5);
    assert!(t.segments.iter().all(|s| s.avg_logprob < -1.0));

    // 8 logits above: about 5% each, log-probability about -3, past rescuing: hotter
    // temperatures would only sample worse, so the first decode is kept.
    let p = pipeline(" a quiet sentence.", 8.0, 0.0);
    let t = transcribe(&p, &options());
    assert_eq!(p.backend().decodes.get(), 1);
    assert!(t.segments.iter().all(|s| s.avg_logprob < -1.5));
    assert_eq!(t.segments[0].temperature, 0.0);

    // After earlier text the same decode may be the prompt's doing (a sentence repeated):
    // every temperature is tried.
    let p = pipeline(" a quiet sentence.", 8.0, 0.0);
    let prompted = TranscribeOptions {
        initial_prompt: Some("Earlier words.".into()),
        ..options()
    };
    transcribe(&p, &prompted);
    assert_eq!(p.backend().decodes.get(), 1 + 5 * 5);

    let p = pipeline(" a quiet sentence.", 30.0, 0.0);
    let t = transcribe(&p, &options());
    assert_eq!(p.backend().decodes.get(), 1);
    assert_eq!(t.text.trim(), "a quiet sentence.");
}

#[test]
fn no_speech_with_unlikely_text_is_skipped() {
    // `<|nospeech|>` dominates at the SOT position and the text is unlikely: silence.
    let p = pipeline(" thanks for watching.", 8.0, 40.0);
    let t = transcribe(&p, &options());
    assert!(t.segments.is_empty(), "{:?}", t.text);
    assert_eq!(t.text, "");

    // The same no-speech probability with confident text is kept (openai's rule needs both).
    let p = pipeline(" thanks for watching.", 30.0, 40.0);
    let t = transcribe(&p, &options());
    assert_eq!(t.text.trim(), "thanks for watching.");
    assert!(t.segments[0].no_speech_prob > 0.6);
}
