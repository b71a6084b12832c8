"""A faster-whisper script runs unchanged on whisk: the same calls through faster-whisper
1.2.1 (from PyPI, installed by `cargo xtask python`) and whisk, on the same weights, return
results of the same shape, field by field."""

import collections.abc
import dataclasses
import os
import re
from pathlib import Path

import faster_whisper
import numpy as np
import pytest

import whisk

ROOT = Path(os.environ.get("WHISK_ROOT", Path(__file__).resolve().parents[3]))
MODELS = ROOT / "target" / "models"
JFK = str(ROOT.parent / "shared" / "data" / "whisper_test_clips" / "audio16k" / "jfk.flac")


def shape(value):
    """What a script can rely on: dataclasses by class name and fields, sequences by their
    first element, numbers as numbers (faster-whisper mixes ints and floats as whisk does)."""
    if dataclasses.is_dataclass(value):
        fields = {f.name: shape(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return type(value).__name__, fields
    if isinstance(value, (list, tuple)):
        # faster-whisper itself mixes lists and tuples for sequences.
        return "sequence", shape(value[0]) if value else "empty"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def same_shape(theirs, ours, where):
    """faster-whisper's fields all exist in whisk's result with the same shape; whisk may add
    fields of its own (`TranscriptionInfo.warnings`)."""
    if isinstance(theirs, tuple) and len(theirs) == 2 and isinstance(theirs[1], dict):
        assert isinstance(ours, tuple) and ours[0] == theirs[0], f"{where}: {ours} vs {theirs}"
        for name, field in theirs[1].items():
            assert name in ours[1], f"{where}.{name} missing"
            same_shape(field, ours[1][name], f"{where}.{name}")
    else:
        assert ours == theirs, f"{where}: whisk {ours}, faster-whisper {theirs}"


@pytest.fixture(scope="module")
def models():
    tiny = str(MODELS / "tiny.en")
    return (
        faster_whisper.WhisperModel(tiny, device="cpu", compute_type="int8"),
        whisk.WhisperModel(tiny, compute_type="int8", vad_model=str(MODELS / "silero-vad-v6")),
    )


CALLS = {
    "words": lambda m: m.transcribe(JFK, word_timestamps=True),
    "no words": lambda m: m.transcribe(JFK, beam_size=1),
    "vad": lambda m: m.transcribe(JFK, vad_filter=True, vad_parameters=dict(min_silence_duration_ms=500)),
    "numpy": lambda m: m.transcribe(faster_whisper.decode_audio(JFK), language="en"),
}


@pytest.mark.parametrize("call", CALLS)
def test_transcribe_returns_faster_whispers_shapes(models, call):
    (fw_segments, fw_info), (segments, info) = (CALLS[call](m) for m in models)
    assert isinstance(fw_segments, collections.abc.Iterator)
    assert isinstance(segments, collections.abc.Iterator)
    fw_segments, segments = list(fw_segments), list(segments)
    assert len(segments) > 0 and len(fw_segments) > 0
    for fw_segment, segment in zip(fw_segments, segments):
        same_shape(shape(fw_segment), shape(segment), "Segment")
    same_shape(shape(fw_info), shape(info), "TranscriptionInfo")
    # Same weights, same audio: the same words, give or take punctuation.
    assert words(segments) == words(fw_segments)


def words(segments):
    return re.sub(r"[^a-z0-9' ]", " ", " ".join(s.text for s in segments).lower()).split()


def test_batched_pipeline_returns_faster_whispers_shapes(models):
    fw_model, model = models
    fw_segments, fw_info = faster_whisper.BatchedInferencePipeline(fw_model).transcribe(
        JFK, batch_size=4, word_timestamps=True
    )
    segments, info = whisk.BatchedInferencePipeline(model).transcribe(JFK, batch_size=4, word_timestamps=True)
    assert isinstance(segments, collections.abc.Iterator)
    fw_segments, segments = list(fw_segments), list(segments)
    same_shape(shape(fw_segments[0]), shape(segments[0]), "Segment")
    # faster-whisper's batched mode keeps its VAD chunks (dicts of samples) there; whisk keeps
    # the clips it was given, in seconds, as in sequential mode.
    assert info.transcription_options.clip_timestamps == []
    fw_info.transcription_options.clip_timestamps = []
    same_shape(shape(fw_info), shape(info), "TranscriptionInfo")
    assert 0 < info.duration_after_vad <= info.duration


def test_detect_language_and_decode_audio_match_faster_whisper():
    base = str(MODELS / "base")
    fw_model = faster_whisper.WhisperModel(base, device="cpu", compute_type="int8")
    model = whisk.WhisperModel(base, compute_type="int8")
    audio = faster_whisper.decode_audio(JFK)
    theirs, ours = fw_model.detect_language(audio), model.detect_language(audio)
    assert shape(ours) == shape(theirs)
    assert ours[0] == theirs[0] == "en"
    decoded = whisk.decode_audio(JFK)
    assert decoded.dtype == audio.dtype and decoded.shape == audio.shape
    assert np.abs(decoded - audio).max() < 1e-3
