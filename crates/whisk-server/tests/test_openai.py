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

    def wait_for(self, text, since=0):
        """Waits for a log line holding `text` after line `since`: a request's line is written
        once its answer is on its way, so it can come after the client has it."""
        deadline = time.time() + 60
        while not any(text in line for line in self.log[since:]):
            assert time.time() < deadline, "".join(self.log[since:])
            time.sleep(0.1)


@pytest.fixture(scope="module")
def tiny():
    server = Server("tiny.en", "--api-key", KEY, "--max-upload-mb", "1")
    yield server
    assert server.stop() == 0, "".join(server.log)


@pytest.fixture(scope="module")
def roomy():
    """A server that takes uploads of minutes of WAV."""
    server = Server("tiny.en", "--api-key", KEY, "--max-upload-mb", "64")
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
    tiny.wait_for("POST /v1/audio/transcriptions 200 audio 11.0 s")


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


def rss_mb(process):
    with open(f"/proc/{process.pid}/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmRSS"))
    return int(kib) / 1024


def test_sixteen_clients_at_once_each_get_their_own_files_result(tiny, tmp_path):
    files = TIMIT[::10][:16]
    expected = cli(files, tmp_path)
    client = tiny.client()
    time.sleep(2)  # the server returns freed memory after a second without requests
    before = rss_mb(tiny.process)
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
    # The burst's memory goes back once the server is idle (it held ~1.2 GB when it did not).
    deadline = time.time() + 10
    while rss_mb(tiny.process) > before + 64 and time.time() < deadline:
        time.sleep(0.5)
    assert rss_mb(tiny.process) <= before + 64, (before, rss_mb(tiny.process))


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


def test_stream_sends_segments_as_events_then_the_text(tiny):
    client = tiny.client()
    with open(JFK, "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}, kinds
    text = events[-1].text
    assert "".join(e.delta for e in events[:-1]).strip() == text
    assert "ask not what your country can do for you" in text
    # Segment times ride along with each delta.
    assert all(0 <= e.start < e.end <= 11.1 for e in events[:-1])
    with pytest.raises(openai.BadRequestError):
        with open(JFK, "rb") as f:
            client.audio.transcriptions.create(
                model="whisper-1", file=f, stream=True, response_format="verbose_json"
            )


def long_wav(files, seconds_between=0.5):
    """The files end to end, as 16-bit WAV bytes."""
    import io
    import wave

    import numpy as np
    import whisk

    gap = np.zeros(int(16000 * seconds_between), dtype=np.float32)
    samples = np.concatenate([part for f in files for part in (whisk.decode_audio(str(f)), gap)])
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def test_a_short_request_is_answered_before_a_long_one_that_came_first(roomy):
    # About 8 minutes: 18 windows, more than one batch of 8 holds.
    long = long_wav(TIMIT)
    client = roomy.client()
    finished = []

    def ask(name, data):
        try:
            text = client.audio.transcriptions.create(model="whisper-1", file=(name, data)).text
        except Exception as e:  # a thread's exception is otherwise lost
            text = repr(e)
        finished.append((name, text))

    first = threading.Thread(target=ask, args=("long.wav", long))
    first.start()
    # Until the long request is being decoded: its upload logged no line yet, so wait on time.
    time.sleep(2.0)
    ask("short.flac", JFK.read_bytes())
    first.join()
    assert [name for name, _ in finished] == ["short.flac", "long.wav"]
    assert "ask not what your country can do for you" in finished[0][1]
    assert len(finished[1][1].split()) > 500


def raw_request(url, body_size, send, linger=0.0, boundary="x-boundary"):
    """Sends a transcription request's headers and the first `send` bytes of a body of
    `body_size`, then closes the connection (after `linger` seconds)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            (
                "POST /v1/audio/transcriptions HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {body_size}\r\n\r\n"
            ).encode()
        )
        s.sendall(send)
        time.sleep(linger)


def multipart(name, data, boundary="x-boundary"):
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode()


def test_clients_that_leave_mid_upload_or_mid_decode_free_their_place(roomy):
    client = roomy.client()
    body = multipart("long.wav", long_wav(TIMIT[:80]))
    # Mid-upload: half the body, then gone; the request's error is its own (400).
    before = len(roomy.log)
    raw_request(roomy.url, len(body), body[: len(body) // 2])
    roomy.wait_for("POST /v1/audio/transcriptions 400", before)
    # Mid-decode: the whole body, gone once the request is in the batch: its windows leave
    # the batch.
    before = len(roomy.log)
    raw_request(roomy.url, len(body), body, linger=2.0)
    roomy.wait_for("the client left before its answer", before)
    roomy.wait_for("windows were dropped from the batch", before)
    with open(JFK, "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f).text
    assert "ask not what your country can do for you" in text


def test_a_stream_whose_client_leaves_stops_decoding(roomy):
    import http.client

    before = len(roomy.log)
    boundary = "x-boundary"
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n'.encode()
    body = field + multipart("long.wav", long_wav(TIMIT[:80]), boundary)
    host, port = roomy.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    connection.request("POST", "/v1/audio/transcriptions", body=body, headers={
        "Authorization": f"Bearer {KEY}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    })
    response = connection.getresponse()
    assert response.status == 200
    first = next(line for line in response if line.startswith(b"data:"))
    assert json.loads(first.removeprefix(b"data:"))["type"] == "transcript.text.delta"
    response.close()
    connection.close()
    # Four minutes of audio are left; the decode stops after the window it is in.
    deadline = time.time() + 60
    while not (stopped := [line for line in roomy.log[before:] if "streaming client left" in line]):
        assert time.time() < deadline, "".join(roomy.log[before:])
        time.sleep(0.2)
    done, total = map(float, re.search(r"stopped at ([\d.]+) of ([\d.]+) s", stopped[0]).groups())
    assert done < total - 60, stopped[0]
