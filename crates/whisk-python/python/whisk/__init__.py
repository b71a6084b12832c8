"""whisk: Whisper speech-to-text with accurate word timestamps, behind faster-whisper's API.

    from whisk import WhisperModel

    model = WhisperModel("target/models/tiny.en", compute_type="int8")
    segments, info = model.transcribe("jfk.flac", word_timestamps=True)
    for segment in segments:
        print(f"[{segment.start:.2f} -> {segment.end:.2f}] {segment.text}")
        for word in segment.words:
            print(f"    {word.start:.2f} {word.end:.2f} {word.word}")

``WhisperModel`` and ``BatchedInferencePipeline`` take faster-whisper 1.2.1's arguments with
its defaults wherever whisk has the feature; an argument whisk lacks raises
``NotImplementedError`` when it is given a value other than its default, never silence.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import _whisk

__version__ = _whisk.__version__

__all__ = [
    "BatchedInferencePipeline",
    "Segment",
    "Segments",
    "TranscriptionInfo",
    "TranscriptionOptions",
    "VadOptions",
    "WhisperModel",
    "Word",
    "decode_audio",
]

Audio = Union[str, "os.PathLike[str]", bytes, BinaryIO, np.ndarray]

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: List[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: Optional[List[Word]]
    temperature: Optional[float]


@dataclass
class VadOptions:
    """Silero VAD's segmenter settings, faster-whisper's names and defaults."""

    threshold: float = 0.5
    neg_threshold: Optional[float] = None
    min_speech_duration_ms: int = 0
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: int = 2000
    speech_pad_ms: int = 400


@dataclass
class TranscriptionOptions:
    """The arguments a transcription ran with, under faster-whisper's names."""

    beam_size: int
    best_of: int
    patience: float
    length_penalty: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    log_prob_threshold: Optional[float]
    no_speech_threshold: Optional[float]
    compression_ratio_threshold: Optional[float]
    condition_on_previous_text: bool
    prompt_reset_on_temperature: float
    temperatures: List[float]
    initial_prompt: Optional[Union[str, Iterable[int]]]
    prefix: Optional[str]
    suppress_blank: bool
    suppress_tokens: Optional[List[int]]
    without_timestamps: bool
    max_initial_timestamp: float
    word_timestamps: bool
    prepend_punctuations: str
    append_punctuations: str
    multilingual: bool
    max_new_tokens: Optional[int]
    clip_timestamps: Union[str, List[float]]
    hallucination_silence_threshold: Optional[float]
    hotwords: Optional[str]


@dataclass
class TranscriptionInfo:
    language: str
    language_probability: float
    duration: float
    duration_after_vad: float
    all_language_probs: Optional[List[Tuple[str, float]]]
    transcription_options: TranscriptionOptions
    vad_options: Optional[VadOptions]
    #: whisk's own: what went wrong without stopping the transcription (a damaged file).
    warnings: List[str] = field(default_factory=list)
    #: whisk's own: the options as whisk ran them (its `TranscribeOptions`).
    whisk_options: Dict[str, Any] = field(default_factory=dict)


def _audio_input(audio: Audio) -> Tuple[str, Any, str]:
    """(kind, data, name) as the Rust side reads it."""
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise ValueError(f"audio array must be 1-D mono samples at 16 kHz, got shape {audio.shape}")
        samples = np.ascontiguousarray(audio, dtype="<f4")
        return "samples", samples.tobytes(), "<array>"
    if isinstance(audio, (str, os.PathLike)):
        return "path", os.fspath(audio), os.fspath(audio)
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return "bytes", bytes(audio), "<bytes>"
    if hasattr(audio, "read"):
        name = getattr(audio, "name", None)
        data = audio.read()
        if not isinstance(data, bytes):
            raise ValueError("audio file object must be opened in binary mode ('rb')")
        return "bytes", data, name if isinstance(name, str) else "<file object>"
    raise TypeError(
        "audio must be a path, bytes, a binary file object or a float32 numpy array at 16 kHz, "
        f"got {type(audio).__name__}"
    )


def decode_audio(input_file: Audio, sampling_rate: int = 16000, split_stereo: bool = False) -> np.ndarray:
    """An audio file (path, bytes or binary file object) as mono float32 samples at 16 kHz."""
    if sampling_rate != 16000:
        raise NotImplementedError("whisk decodes audio at 16 kHz only")
    _unsupported("split_stereo", split_stereo, False)
    kind, data, name = _audio_input(input_file)
    if kind == "samples":
        return np.frombuffer(data, dtype="<f4").copy()
    return np.frombuffer(_whisk.decode_audio(kind, data, name), dtype="<f4").copy()


def _bundled_vad_model() -> Optional[str]:
    """Silero VAD v6 (MIT, from faster-whisper's wheel), carried in this wheel when it was
    built by `cargo xtask python`."""
    path = os.path.join(os.path.dirname(__file__), "assets", "silero_vad_v6.onnx")
    return path if os.path.isfile(path) else None


def _unsupported(name: str, value: Any, default: Any) -> None:
    if value != default:
        raise NotImplementedError(
            f"whisk does not support {name}={value!r} (only the default, {default!r})"
        )


def _clips(clip_timestamps: Union[str, List[float], None]) -> List[float]:
    if clip_timestamps is None:
        return []
    if isinstance(clip_timestamps, str):
        values = [float(t) for t in clip_timestamps.split(",") if t.strip()]
    else:
        values = [float(t) for t in clip_timestamps]
    return [] if values == [0.0] else values


def _vad_options(vad_parameters: Union[dict, VadOptions, None], batched: bool) -> VadOptions:
    if isinstance(vad_parameters, VadOptions):
        return vad_parameters
    base = VadOptions(max_speech_duration_s=30.0, min_silence_duration_ms=160) if batched else VadOptions()
    for key, value in (vad_parameters or {}).items():
        if not hasattr(base, key):
            raise NotImplementedError(f"whisk's VAD has no parameter {key!r}")
        setattr(base, key, value)
    return base


def _vad_json(vad: VadOptions) -> Dict[str, Any]:
    # JSON has no infinity: whisk reads an unbounded length as null.
    return {k: None if isinstance(v, float) and math.isinf(v) else v for k, v in vars(vad).items()}


def _options(batch_size: int, **kw: Any) -> Dict[str, Any]:
    """faster-whisper's arguments as whisk's `TranscribeOptions` (its JSON shape)."""
    _unsupported("repetition_penalty", kw["repetition_penalty"], 1)
    _unsupported("no_repeat_ngram_size", kw["no_repeat_ngram_size"], 0)
    _unsupported("prompt_reset_on_temperature", kw.get("prompt_reset_on_temperature", 0.5), 0.5)
    _unsupported("prefix", kw["prefix"], None)
    _unsupported("prepend_punctuations", kw["prepend_punctuations"], PREPEND_PUNCTUATIONS)
    _unsupported("append_punctuations", kw["append_punctuations"], APPEND_PUNCTUATIONS)
    _unsupported("multilingual", kw["multilingual"], False)
    _unsupported("chunk_length", kw["chunk_length"], None)
    _unsupported("hotwords", kw["hotwords"], None)
    _unsupported("language_detection_threshold", kw["language_detection_threshold"], 0.5)
    _unsupported("language_detection_segments", kw["language_detection_segments"], 1)
    # CTranslate2 divides a hypothesis' score by its length to this power; 1 is openai's
    # plain length normalisation, whisk's `length_penalty: None`.
    _unsupported("length_penalty", kw["length_penalty"], 1)
    if kw["task"] not in ("transcribe", "translate"):
        raise ValueError(f"task must be 'transcribe' or 'translate', got {kw['task']!r}")
    if kw["initial_prompt"] is not None and not isinstance(kw["initial_prompt"], str):
        raise NotImplementedError("whisk takes initial_prompt as text, not token ids")
    temperature = kw["temperature"]
    temperatures = [float(temperature)] if isinstance(temperature, (int, float)) else [float(t) for t in temperature]
    if not temperatures:
        raise ValueError("temperature must name at least one temperature")
    if kw["beam_size"] < 1 or kw["best_of"] < 1:
        raise ValueError("beam_size and best_of must be at least 1")
    options = json.loads(_whisk.default_options())
    decode = options["decode"]
    decode.update(
        task=kw["task"],
        language=kw["language"],
        without_timestamps=kw["without_timestamps"],
        max_initial_timestamp=kw["max_initial_timestamp"],
        suppress_blank=kw["suppress_blank"],
        suppress_tokens=list(kw["suppress_tokens"] or []),
        sample_len=kw["max_new_tokens"],
        beam_size=kw["beam_size"],
        patience=float(kw["patience"]),
    )
    options.update(
        condition_on_previous_text=kw.get("condition_on_previous_text", True),
        initial_prompt=kw["initial_prompt"],
        no_speech_threshold=kw["no_speech_threshold"],
        logprob_threshold=kw["log_prob_threshold"],
        temperatures=temperatures,
        compression_ratio_threshold=kw["compression_ratio_threshold"],
        best_of=kw["best_of"],
        word_timestamps=kw["word_timestamps"],
        batch_size=batch_size,
        clip_timestamps=_clips(kw["clip_timestamps"]),
        hallucination_silence_threshold=kw["hallucination_silence_threshold"],
    )
    return options


def _segment(s: Dict[str, Any]) -> Segment:
    words = s.get("words")
    return Segment(
        id=s["id"],
        seek=s["seek"],
        start=s["start"],
        end=s["end"],
        text=s["text"],
        tokens=s["tokens"],
        avg_logprob=s["avg_logprob"],
        compression_ratio=s["compression_ratio"],
        no_speech_prob=s["no_speech_prob"],
        words=None if words is None else [Word(w["start"], w["end"], w["word"], w["probability"]) for w in words],
        temperature=s["temperature"],
    )


class Segments(Iterator[Segment]):
    """A transcription's segments, each yielded as soon as it is final (window by window in
    sequential mode; batched mode finishes all windows first). Dropping the iterator before
    its end stops the transcription after the window being decoded."""

    def __init__(self, stream: Any, duration: float = 0.0, log_progress: bool = False):
        self._stream = stream
        self._bar = _ProgressBar(duration) if log_progress else None

    def __iter__(self) -> "Segments":
        return self

    def __next__(self) -> Segment:
        try:
            segment = _segment(json.loads(next(self._stream)))
        except StopIteration:
            if self._bar is not None:
                self._bar.close()
            raise
        if self._bar is not None:
            self._bar.update(self._stream.done_seconds)
        return segment

    @property
    def done_seconds(self) -> float:
        """Seconds of audio transcribed when the segments yielded so far were final
        (infinite once the transcription has finished)."""
        return self._stream.done_seconds


class _ProgressBar:
    """``log_progress``: seconds of audio done, on a tqdm bar as faster-whisper shows it
    (when tqdm is installed), else on one line of stderr."""

    def __init__(self, duration: float):
        self._total = round(duration, 2)
        self._shown = 0.0
        try:
            from tqdm import tqdm

            self._tqdm = tqdm(total=self._total, unit="seconds")
        except ImportError:
            self._tqdm = None

    def update(self, done: float) -> None:
        done = round(min(done, self._total), 2)
        if done <= self._shown:
            return
        if self._tqdm is not None:
            self._tqdm.update(done - self._shown)
        else:
            sys.stderr.write(f"\rwhisk: {done:.1f} / {self._total:.1f} seconds")
        self._shown = done

    def close(self) -> None:
        self.update(self._total)
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            sys.stderr.write("\n")


def _transcription_options(kw: Dict[str, Any]) -> TranscriptionOptions:
    temperature = kw["temperature"]
    given = dict(
        kw,
        temperatures=[temperature] if isinstance(temperature, (int, float)) else list(temperature),
        suppress_tokens=None if kw["suppress_tokens"] is None else list(kw["suppress_tokens"]),
        condition_on_previous_text=kw.get("condition_on_previous_text", True),
        prompt_reset_on_temperature=kw.get("prompt_reset_on_temperature", 0.5),
        # Parsed as faster-whisper keeps them: seconds, "0" being [0.0].
        clip_timestamps=_clips(kw["clip_timestamps"]) or ([0.0] if kw["clip_timestamps"] is not None else []),
    )
    names = TranscriptionOptions.__dataclass_fields__
    return TranscriptionOptions(**{name: given[name] for name in names})


def _info(
    language: str,
    language_probs: List[Tuple[str, float]],
    outcome: Dict[str, Any],
    warnings: List[str],
    kw: Dict[str, Any],
    options: Dict[str, Any],
    vad: Optional[VadOptions],
) -> TranscriptionInfo:
    duration = outcome["duration"]
    after_vad = outcome["duration_after_vad"]
    return TranscriptionInfo(
        language=language,
        language_probability=language_probs[0][1] if language_probs else 1.0,
        duration=duration,
        duration_after_vad=duration if after_vad is None else after_vad,
        all_language_probs=language_probs or None,
        transcription_options=_transcription_options(kw),
        vad_options=vad,
        warnings=warnings,
        whisk_options=options,
    )


class WhisperModel:
    """A Whisper model (a CTranslate2 or Hugging Face directory, or a model name where whisk
    was built to fetch it). ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"metal"`` or
    ``"wgpu"`` (as compiled in); ``compute_type`` is faster-whisper's (``"default"``,
    ``"float32"``, ``"int8"``, ``"int8_float32"``, ``"bfloat16"``, ``"auto"``, ...)."""

    def __init__(
        self,
        model_size_or_path: str,
        device: str = "cpu",
        device_index: int = 0,
        compute_type: str = "default",
        cpu_threads: int = 0,
        num_workers: int = 1,
        download_root: Optional[str] = None,
        local_files_only: bool = False,
        files: Optional[dict] = None,
        revision: Optional[str] = None,
        use_auth_token: Optional[Union[str, bool]] = None,
        backend: Optional[str] = None,
        vad_model: Optional[str] = None,
    ):
        _unsupported("download_root", download_root, None)
        _unsupported("files", files, None)
        _unsupported("revision", revision, None)
        _unsupported("use_auth_token", use_auth_token, None)
        if device == "auto":
            device = "cpu"
        if device == "cuda" and device_index:
            device = f"cuda:{device_index}"
        # num_workers exists in faster-whisper to run calls from several threads at once;
        # whisk's model does that anyway (every call releases the GIL).
        del num_workers, local_files_only
        if vad_model is None and "WHISK_VAD_MODEL" not in os.environ:
            vad_model = _bundled_vad_model()
        self._model = _whisk.Model(
            os.fspath(model_size_or_path),
            device=device,
            compute_type=compute_type,
            backend=backend,
            cpu_threads=cpu_threads,
            vad_model=vad_model,
        )

    @property
    def is_multilingual(self) -> bool:
        return self._model.is_multilingual

    @property
    def device_name(self) -> str:
        return self._model.device_name

    def detect_language(self, audio: Audio) -> Tuple[str, float, List[Tuple[str, float]]]:
        """(language, probability, all probabilities) from the first 30 s."""
        if not self.is_multilingual:
            return "en", 1.0, [("en", 1.0)]
        probs = self._model.detect_language(*_audio_input(audio))
        return probs[0][0], probs[0][1], probs

    def transcribe(
        self,
        audio: Audio,
        language: Optional[str] = None,
        task: str = "transcribe",
        log_progress: bool = False,
        beam_size: int = 5,
        best_of: int = 5,
        patience: float = 1,
        length_penalty: float = 1,
        repetition_penalty: float = 1,
        no_repeat_ngram_size: int = 0,
        temperature: Union[float, List[float], Tuple[float, ...]] = DEFAULT_TEMPERATURES,
        compression_ratio_threshold: Optional[float] = 2.4,
        log_prob_threshold: Optional[float] = -1.0,
        no_speech_threshold: Optional[float] = 0.6,
        condition_on_previous_text: bool = True,
        prompt_reset_on_temperature: float = 0.5,
        initial_prompt: Optional[Union[str, Iterable[int]]] = None,
        prefix: Optional[str] = None,
        suppress_blank: bool = True,
        suppress_tokens: Optional[List[int]] = (-1,),
        without_timestamps: bool = False,
        max_initial_timestamp: float = 1.0,
        word_timestamps: bool = False,
        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
        append_punctuations: str = APPEND_PUNCTUATIONS,
        multilingual: bool = False,
        vad_filter: bool = False,
        vad_parameters: Optional[Union[dict, VadOptions]] = None,
        max_new_tokens: Optional[int] = None,
        chunk_length: Optional[int] = None,
        clip_timestamps: Union[str, List[float]] = "0",
        hallucination_silence_threshold: Optional[float] = None,
        hotwords: Optional[str] = None,
        language_detection_threshold: Optional[float] = 0.5,
        language_detection_segments: int = 1,
    ) -> Tuple[Iterator[Segment], TranscriptionInfo]:
        """Transcribes one input: a path, bytes, a binary file object or float32 samples at
        16 kHz. Returns ``(segments, info)`` as faster-whisper does. The transcription runs on
        a thread of its own from this call on; ``segments`` yields each segment as soon as its
        window is done, so a long file's first lines arrive early."""
        kw = dict(locals())
        del kw["self"], kw["audio"], kw["vad_filter"], kw["vad_parameters"]
        return self._transcribe(audio, kw, vad_filter, vad_parameters, batch_size=1)

    def _prepare(self, kw, vad_filter, vad_parameters, batch_size):
        options = _options(batch_size, **kw)
        vad = _vad_options(vad_parameters, batch_size > 1) if vad_filter else None
        if vad is not None:
            options["vad"] = _vad_json(vad)
        return options, vad

    def _transcribe(self, audio, kw, vad_filter, vad_parameters, batch_size):
        options, vad = self._prepare(kw, vad_filter, vad_parameters, batch_size)
        started = self._model.transcribe(*_audio_input(audio), json.dumps(options))
        probs = [tuple(p) for p in started["language_probs"]]
        info = _info(started["language"], probs, started, started["warnings"], kw, options, vad)
        segments = Segments(started["segments"], started["duration"], kw["log_progress"])
        return segments, info

    def _transcribe_many(self, audios, kw, vad_filter, vad_parameters, batch_size, pack=True):
        _unsupported("log_progress in transcribe_many", kw["log_progress"], False)
        options, vad = self._prepare(kw, vad_filter, vad_parameters, batch_size)
        options["pack_short_inputs"] = pack
        outcomes = self._model.transcribe_many([_audio_input(a) for a in audios], json.dumps(options))
        results = []
        for outcome in outcomes:
            transcript = json.loads(outcome["transcript"])
            probs = [tuple(p) for p in outcome["language_probs"]]
            warnings = transcript.get("warnings", [])
            info = _info(transcript["language"], probs, outcome, warnings, kw, options, vad)
            results.append(([_segment(s) for s in transcript["segments"]], info))
        return results


class BatchedInferencePipeline:
    """Windows decoded ``batch_size`` at a time (faster-whisper's batched pipeline). Unlike
    faster-whisper's, whisk keeps timestamps and temperature fallback in batched mode, and
    ``transcribe_many`` shares one batch between many inputs, packing short ones together."""

    def __init__(self, model: WhisperModel):
        self.model = model

    def transcribe(
        self,
        audio: Audio,
        language: Optional[str] = None,
        task: str = "transcribe",
        log_progress: bool = False,
        beam_size: int = 5,
        best_of: int = 5,
        patience: float = 1,
        length_penalty: float = 1,
        repetition_penalty: float = 1,
        no_repeat_ngram_size: int = 0,
        temperature: Union[float, List[float], Tuple[float, ...]] = DEFAULT_TEMPERATURES,
        compression_ratio_threshold: Optional[float] = 2.4,
        log_prob_threshold: Optional[float] = -1.0,
        no_speech_threshold: Optional[float] = 0.6,
        initial_prompt: Optional[Union[str, Iterable[int]]] = None,
        prefix: Optional[str] = None,
        suppress_blank: bool = True,
        suppress_tokens: Optional[List[int]] = (-1,),
        without_timestamps: bool = False,
        max_initial_timestamp: float = 1.0,
        word_timestamps: bool = False,
        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
        append_punctuations: str = APPEND_PUNCTUATIONS,
        multilingual: bool = False,
        vad_filter: bool = True,
        vad_parameters: Optional[Union[dict, VadOptions]] = None,
        max_new_tokens: Optional[int] = None,
        chunk_length: Optional[int] = None,
        clip_timestamps: Optional[List[float]] = None,
        hallucination_silence_threshold: Optional[float] = None,
        batch_size: int = 8,
        hotwords: Optional[str] = None,
        language_detection_threshold: Optional[float] = 0.5,
        language_detection_segments: int = 1,
    ) -> Tuple[Iterator[Segment], TranscriptionInfo]:
        """faster-whisper's batched ``transcribe``; ``without_timestamps`` defaults to False
        here (whisk stitches windows by their timestamps and words)."""
        kw = dict(locals())
        del kw["self"], kw["audio"], kw["vad_filter"], kw["vad_parameters"], kw["batch_size"]
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        return self.model._transcribe(audio, kw, vad_filter, vad_parameters, batch_size)

    def transcribe_many(
        self,
        audios: List[Audio],
        batch_size: int = 8,
        vad_filter: bool = False,
        pack: bool = True,
        **kwargs: Any,
    ) -> List[Tuple[List[Segment], TranscriptionInfo]]:
        """Transcribes many inputs in one batch: windows of all inputs share the decoder and,
        with ``pack``, inputs of up to 30 s are laid end to end in shared windows (fewer
        encoder passes; a file's text can differ from its decode alone). Takes ``transcribe``'s
        other arguments; returns ``(segments, info)`` per input, in order. A bad input fails
        the whole call before any work (its message names it)."""
        kw = _batched_defaults()
        unknown = set(kwargs) - set(kw)
        if unknown:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(unknown))}")
        kw.update(kwargs)
        vad_parameters = kw.pop("vad_parameters")
        return self.model._transcribe_many(list(audios), kw, vad_filter, vad_parameters, batch_size, pack)


def _batched_defaults() -> Dict[str, Any]:
    import inspect

    parameters = inspect.signature(BatchedInferencePipeline.transcribe).parameters
    skip = {"self", "audio", "vad_filter", "batch_size"}
    return {name: p.default for name, p in parameters.items() if name not in skip}
