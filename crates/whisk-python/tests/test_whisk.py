"""The `whisk` Python package against the CLI on real models and speech.

Run by `cargo xtask python`, which builds the wheel and installs it into `target/python/venv`,
and by `cargo xtask test`, which puts the workspace build's package there instead; both set
WHISK_ROOT to the workspace.
"""

import json
import math
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import whisk

ROOT = Path(os.environ.get("WHISK_ROOT", Path(__file__).resolve().parents[3]))
MODELS = ROOT / "target" / "models"
CLI = ROOT / "target" / "release" / "whisk"
DATA = ROOT.parent / "shared" / "data"
JFK = DATA / "whisper_test_clips" / "audio16k" / "jfk.flac"
TIMIT = sorted((DATA / "timit_nltk_sample" / "audio").glob("*.flac"))
VAD = MODELS / "silero-vad-v6"

# One setting for both sides, so results must be identical (same weights, same code).
CLI_SEQUENTIAL = ["--compute-type", "float32", "--beam-size", "5", "--best-of", "2", "--batch-size", "1"]
PY_SEQUENTIAL = dict(beam_size=5, best_of=2)


@pytest.fixture(scope="module")
def tiny():
    return whisk.WhisperModel(str(MODELS / "tiny.en"), vad_model=str(VAD))


@pytest.fixture(scope="module")
def base():
    return whisk.WhisperModel(str(MODELS / "base"), compute_type="int8")


def cli(files, tmp_path, *args):
    out = tmp_path / "cli"
    subprocess.run(
        [str(CLI), "transcribe", *map(str, files), "--model", str(MODELS / "tiny.en"),
         "--word-timestamps", "true", "-f", "json", "-o", str(out), "-q", *args],
        check=True,
    )
    return [json.loads((out / (Path(f).stem + ".json")).read_text()) for f in files]


def as_dicts(segments):
    return [
        dict(start=s.start, end=s.end, text=s.text,
             words=[(w.word, w.start, w.end) for w in s.words or []])
        for s in segments
    ]


def cli_dicts(transcript):
    return [
        dict(start=s["start"], end=s["end"], text=s["text"],
             words=[(w["word"], w["start"], w["end"]) for w in s.get("words", [])])
        for s in transcript["segments"]
    ]


def test_jfk_text_and_word_times_equal_the_cli(tiny, tmp_path):
    [expected] = cli([JFK], tmp_path, *CLI_SEQUENTIAL)
    segments, info = tiny.transcribe(str(JFK), word_timestamps=True, **PY_SEQUENTIAL)
    got = as_dicts(segments)
    assert got == cli_dicts(expected)
    assert "ask not what your country can do for you" in " ".join(s["text"] for s in got)
    assert info.language == "en" and info.duration == pytest.approx(11.0, abs=0.01)
    ask = [w for s in got for w in s["words"] if w[0].strip() == "ask"]
    assert 3.2 <= ask[0][1] <= 3.4, ask


def test_a_path_bytes_a_file_object_and_samples_give_the_same_result(tiny):
    def run(audio):
        segments, info = tiny.transcribe(audio, word_timestamps=True, beam_size=1)
        return as_dicts(segments), info.duration

    from_path = run(JFK)
    assert from_path[0]
    assert run(JFK.read_bytes()) == from_path
    with open(JFK, "rb") as f:
        assert run(f) == from_path
    samples = whisk.decode_audio(str(JFK))
    assert samples.dtype == np.float32 and len(samples) == 176000
    assert run(samples) == from_path
    assert run(samples.astype(np.float64)) == from_path


def test_segments_arrive_window_by_window_before_the_last_window_is_decoded(tiny):
    gap = np.zeros(16000, dtype=np.float32)
    long = np.concatenate([part for f in TIMIT[:20] for part in (whisk.decode_audio(str(f)), gap)])
    segments, info = tiny.transcribe(long, beam_size=1)
    assert info.duration > 65
    first = next(segments)
    # Handed over when the first window was done, with more than a window still to decode.
    assert segments.done_seconds < info.duration - 30, segments.done_seconds
    streamed = [first] + list(segments)
    assert math.isinf(segments.done_seconds)
    [(whole, _)] = whisk.BatchedInferencePipeline(tiny).transcribe_many(
        [long], batch_size=1, beam_size=1, vad_filter=False
    )
    assert as_dicts(streamed) == as_dicts(whole)
    assert len(streamed) >= 10


def test_dropping_the_segments_iterator_stops_the_transcription(tiny):
    import gc
    import time

    gap = np.zeros(8000, dtype=np.float32)
    long = np.concatenate([part for f in TIMIT[:100] for part in (whisk.decode_audio(str(f)), gap)])
    segments, info = tiny.transcribe(long, beam_size=5)
    next(segments)
    assert segments.done_seconds < info.duration - 120
    del segments
    gc.collect()
    # The window being decoded is finished, then the thread stops: within seconds the process
    # is quiet, and stays so (the minutes left would keep both cores busy for ten seconds
    # and more).
    def cpu_seconds_over(wall):
        cpu = time.process_time()
        time.sleep(wall)
        return time.process_time() - cpu

    deadline = time.time() + 8
    while cpu_seconds_over(0.5) > 0.1:
        assert time.time() < deadline, "still decoding"
    assert cpu_seconds_over(3.0) < 0.3


def test_the_package_carries_the_vad_model(monkeypatch):
    monkeypatch.delenv("WHISK_VAD_MODEL", raising=False)
    # No vad_model given, and none beside the model or in this directory: the package's own.
    model = whisk.WhisperModel(str(MODELS / "tiny.en"))
    silence = np.zeros(16000 * 40, dtype=np.float32)
    segments, info = whisk.BatchedInferencePipeline(model).transcribe(silence)
    assert list(segments) == [] and info.duration_after_vad == 0


def test_log_progress_counts_seconds_up_to_the_duration(tiny, capsys):
    segments, info = tiny.transcribe(str(JFK), log_progress=True)
    assert "ask not what your country" in "".join(s.text for s in segments)
    err = capsys.readouterr().err
    assert "11.0" in err and "seconds" in err, err


def test_batched_pipeline_gives_the_cli_batched_texts_on_timit(tiny, tmp_path):
    # Every other file: 80 files still fill more than one batch of packed windows.
    files = TIMIT[::2]
    assert len(files) == 80
    expected = cli(files, tmp_path, "--compute-type", "float32", "--beam-size", "1", "--batch-size", "8")
    pipeline = whisk.BatchedInferencePipeline(tiny)
    results = pipeline.transcribe_many(
        [str(f) for f in files], batch_size=8, beam_size=1, best_of=2, word_timestamps=True
    )
    assert len(results) == len(files)
    for f, want, (segments, info) in zip(files, expected, results):
        assert [s["text"] for s in as_dicts(segments)] == [s["text"] for s in cli_dicts(want)], f.name
        assert all(w.end <= info.duration + 0.01 for s in segments for w in s.words), f.name
    # One file through the faster-whisper-shaped call (VAD off, as in the CLI run).
    [alone] = cli(files[:1], tmp_path, "--compute-type", "float32", "--beam-size", "1", "--batch-size", "8")
    segments, _ = pipeline.transcribe(
        str(files[0]), batch_size=8, beam_size=1, best_of=2, vad_filter=False, word_timestamps=True
    )
    assert as_dicts(segments) == cli_dicts(alone)


def test_four_threads_share_one_model(tiny):
    files = [str(f) for f in TIMIT[:4]]
    alone = [[s.text for s in tiny.transcribe(f, beam_size=1)[0]] for f in files]
    results = [None] * 4
    errors = []

    def work(i):
        try:
            for _ in range(2):
                results[i] = [s.text for s in tiny.transcribe(files[i], beam_size=1)[0]]
        except Exception as e:  # reported below; a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == alone


def test_bad_input_raises_an_exception_naming_it_and_the_model_still_works(tiny, tmp_path):
    with pytest.raises(ValueError, match="<bytes>"):
        tiny.transcribe(b"these bytes are no audio file")
    missing = tmp_path / "missing.flac"
    with pytest.raises(ValueError, match="missing.flac"):
        tiny.transcribe(str(missing))
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(JFK.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.flac"):
        with open(truncated, "rb") as f:
            tiny.transcribe(f)
    with pytest.raises(ValueError, match="mono"):
        tiny.transcribe(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(TypeError):
        tiny.transcribe(12345)
    segments, _ = tiny.transcribe(str(JFK), beam_size=1)
    assert "country" in " ".join(s.text for s in segments)


def test_a_damaged_file_is_transcribed_up_to_the_damage_with_a_warning(tiny, tmp_path):
    cut = tmp_path / "cut.flac"
    data = JFK.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    segments, info = tiny.transcribe(str(cut), beam_size=1)
    assert "fellow" in " ".join(s.text for s in segments)
    assert info.warnings and "cut.flac" in info.warnings[0]


def test_arguments_whisk_lacks_are_refused_not_ignored(tiny):
    for kwargs in [dict(repetition_penalty=1.1), dict(hotwords="whisk"), dict(prefix="And"),
                   dict(length_penalty=0.5), dict(vad_filter=True, vad_parameters=dict(window_size_samples=512))]:
        with pytest.raises(NotImplementedError):
            tiny.transcribe(str(JFK), **kwargs)
    with pytest.raises(ValueError, match="compute_type"):
        whisk.WhisperModel(str(MODELS / "tiny.en"), compute_type="int3")
    with pytest.raises(FileNotFoundError):
        whisk.WhisperModel(str(MODELS / "no-such-model"))


def test_silence_gives_no_segments_with_vad(tiny):
    silence = np.zeros(40 * 16000, dtype=np.float32)
    for run in [
        lambda: tiny.transcribe(silence, vad_filter=True),
        lambda: whisk.BatchedInferencePipeline(tiny).transcribe(silence),
    ]:
        segments, info = run()
        assert list(segments) == []
        assert info.duration == 40.0


def test_base_inputs_in_several_languages_share_a_batch(base):
    # Without a language each input's own is detected, in one call: the same languages and
    # texts as each transcribed alone.
    fleurs = DATA / "fleurs_cuttledoc" / "audio"
    files = [fleurs / f"fleurs-{lang}-000.flac" for lang in ("de", "fr", "es", "en")]
    batched = whisk.BatchedInferencePipeline(base)
    together = batched.transcribe_many([str(f) for f in files], beam_size=1)
    for f, (segments, info) in zip(files, together):
        alone, alone_info = batched.transcribe(str(f), beam_size=1, vad_filter=False)
        alone = list(alone)
        assert info.language == f.stem.split("-")[1] == alone_info.language, (f.name, info.language)
        assert info.all_language_probs[0] == (info.language, info.language_probability)
        # Detected on the window as the batch decodes it, where alone it is the raw first 30 s.
        assert info.language_probability > 0.5 and alone_info.language_probability > 0.5
        assert [s.text for s in segments] == [s.text for s in alone], f.name
    assert len({info.language for _, info in together}) == 4
    # An input heard as nothing still tells the language detected on it.
    silence = np.zeros(5 * 16000, dtype=np.float32)
    (segments, info), _ = batched.transcribe_many([silence, str(files[0])], beam_size=1)
    assert list(segments) == []
    assert info.all_language_probs and info.language == info.all_language_probs[0][0]


def test_base_detects_the_language_and_translates(base):
    language, probability, probs = base.detect_language(str(JFK))
    assert language == "en" and probability > 0.5 and probs[0] == ("en", probability)
    german = DATA / "fleurs_cuttledoc" / "audio" / "fleurs-de-000.flac"
    segments, info = base.transcribe(str(german), beam_size=1)
    text = " ".join(s.text for s in segments)
    assert info.language == "de" and info.language_probability > 0.5, info
    assert info.all_language_probs[0][0] == "de"
    assert "Hongkong" in text or "Hong Kong" in text, text
    segments, info = base.transcribe(str(german), beam_size=1, task="translate")
    english = " ".join(s.text for s in segments)
    assert info.language == "de" and english != text
    assert " the " in english.lower(), english
