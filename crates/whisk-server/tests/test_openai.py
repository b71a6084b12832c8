"""`whisk serve` through OpenAI's own Python client (from PyPI): the CLI's results, every
response format, the error statuses, and 16 clients at once.

Run by `cargo xtask python` (and `cargo xtask test`), which builds the CLI and sets WHISK_ROOT.
"""

import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import openai
import pytest

ROOT = Path(os.environ.get("WHISK_ROOT", Path(__file__).resolve().parents[3]))
MODELS = ROOT / "target" / "models"
CLI = ROOT / "target" / "release" / "whisk"
DATA = ROOT.parent / "shared" / "data"
JFK = DATA / "whisper_test_clips" / "audio16k" / "jfk.flac"
TIMIT = sorted((DATA / "timit_nltk_sample" / "audio").glob("*.flac"))
KEY = "test-key"
# The server's decode and the CLI's, alike.
SETTINGS = ["--compute-type", "float32", "--batch-size", "8", "--beam-size", "5"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(CLI), "serve", "--model", str(MODELS / model), "--port", str(self.port), *SETTINGS, *args],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    raise RuntimeError("whisk serve did not start: " + "".join(self.log))
                time.sleep(0.2)

    def client(self, key=KEY):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def stop(self):
        self.process.terminate()
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def tiny():
    server = Server("tiny.en", "--api-key", KEY, "--max-upload-mb", "1")
    yield server
    assert server.stop() == 0, "".join(server.log)


def cli(files, out, *args):
    subprocess.run(
        [str(CLI), "transcribe", *map(str, files), "--model", str(MODELS / "tiny.en"), *SETTINGS,
         # The server gives each request windows of its own, whatever else it batches.
         "--pack", "false", "--word-timestamps", "true", "-f", "json", "-o", str(out), "-q", *args],
        check=True,
    )
    return {f.stem: json.loads((out / (f.stem + ".json")).read_text()) for f in files}


def test_verbose_json_with_words_equals_the_cli(tiny, tmp_path):
    expected = cli([JFK], tmp_path)["jfk"]
    with open(JFK, "rb") as f:
        result = tiny.client().audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert result.text == expected["text"].strip()
    assert result.language == "english" and result.duration == pytest.approx(11.0, abs=0.01)
    assert [s.text for s in result.segments] == [s["text"] for s in expected["segments"]]
    want = [(w["word"].strip(), w["start"], w["end"]) for s in expected["segments"] for w in s["words"]]
    assert [(w.word, w.start, w.end) for w in result.words] == want
    assert any("POST /v1/audio/transcriptions 200 audio 11.0 s" in line for line in tiny.log)


def test_text_json_srt_and_vtt(tiny):
    client = tiny.client()

    def ask(fmt):
        with open(JFK, "rb") as f:
            return client.audio.transcriptions.create(model="whisper-1", file=f, response_format=fmt)

    text = ask("json").text
    assert "ask not what your country can do for you" in text
    assert ask("text").strip() == text
    srt, vtt = ask("srt"), ask("vtt")
    assert srt.startswith("1\n00:00:") and "-->" in srt and "country" in srt
    assert vtt.startswith("WEBVTT") and "country" in vtt


def test_a_wrong_key_is_the_clients_authentication_error(tiny):
    with pytest.raises(openai.AuthenticationError):
        with open(JFK, "rb") as f:
            tiny.client(key="wrong").audio.transcriptions.create(model="whisper-1", file=f)


def test_bad_input_gets_its_error_while_others_are_answered(tiny, tmp_path):
    client = tiny.client()
    good = {}

    def transcribe_good():
        with open(JFK, "rb") as f:
            good["text"] = client.audio.transcriptions.create(model="whisper-1", file=f).text

    worker = threading.Thread(target=transcribe_good)
    worker.start()
    cases = {
        "notes.mp3": b"this is not audio at all\n" * 100,
        "empty.wav": b"",
        "cut.flac": JFK.read_bytes()[:8500],
    }
    for name, data in cases.items():
        with pytest.raises(openai.BadRequestError) as error:
            client.audio.transcriptions.create(model="whisper-1", file=(name, data))
        assert name in str(error.value), error.value
    with pytest.raises(openai.APIStatusError) as error:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", b"\0" * (2 << 20)))
    assert error.value.status_code == 413
    # A form without a file, as a raw request: OpenAI's error shape.
    boundary = "x-boundary"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--{boundary}--\r\n'
    request = urllib.request.Request(
        tiny.url + "/v1/audio/transcriptions", data=body.encode(), method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {KEY}"},
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)
    assert error.value.code == 400
    assert "file" in json.loads(error.value.read())["error"]["message"]
    worker.join()
    assert "ask not what your country can do for you" in good["text"]


def test_sixteen_clients_at_once_each_get_their_own_files_result(tiny, tmp_path):
    files = TIMIT[::10][:16]
    expected = cli(files, tmp_path)
    client = tiny.client()
    results, errors = {}, []

    def ask(f):
        try:
            with open(f, "rb") as audio:
                results[f.stem] = client.audio.transcriptions.create(
                    model="whisper-1", file=audio, response_format="verbose_json",
                    timestamp_granularities=["word"],
                )
        except Exception as e:  # reported below; a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(f,)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for f in files:
        want = expected[f.stem]
        got = results[f.stem]
        assert got.text == want["text"].strip(), f.name
        assert [w.word for w in got.words] == [w["word"].strip() for s in want["segments"] for w in s["words"]]


def test_models_lists_the_model_and_translation_runs_on_base():
    server = Server("base")
    try:
        client = server.client(key="any")
        assert [m.id for m in client.models.list()] == ["whisper-1"]
        german = DATA / "fleurs_cuttledoc" / "audio" / "fleurs-de-000.flac"
        with open(german, "rb") as f:
            english = client.audio.translations.create(model="whisper-1", file=f, response_format="verbose_json")
        assert english.language == "german" and english.task == "translate"
        assert re.search(r"\bthe\b", english.text.lower()), english.text
    finally:
        assert server.stop() == 0
