"""Throughput of `whisk serve` for 1, 4 and 16 concurrent clients: requests that wait for the
decoder batched together and packed into shared windows (`--pack true`), batched only, and
one at a time (`--max-batched-requests 1`). Every client sends
TIMIT files (3 s each) through OpenAI's Python client; run by `cargo xtask bench-server`.
Then the wait of a short request (jfk, 11 s) sent while an 8-minute one is being decoded,
in each mode.

Usage: throughput.py [--requests N] [--model DIR] [--clients 1,4,16]
"""

import argparse
import os
import queue
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import openai

ROOT = Path(os.environ.get("WHISK_ROOT", Path(__file__).resolve().parents[3]))
CLI = ROOT / "target" / "release" / "whisk"
JFK = ROOT.parent / "shared" / "data" / "whisper_test_clips" / "audio16k" / "jfk.flac"
TIMIT = sorted((ROOT.parent / "shared" / "data" / "timit_nltk_sample" / "audio").glob("*.flac"))


def start(model, batched, pack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [str(CLI), "serve", "--model", model, "--port", str(port), "--max-batched-requests", str(batched),
         "--pack", "true" if pack else "false"],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("whisk serve did not start")


def run(url, clients, requests):
    work = queue.Queue()
    for i in range(requests):
        work.put(TIMIT[i % len(TIMIT)])
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

    def worker():
        while True:
            try:
                path = work.get_nowait()
            except queue.Empty:
                return
            with open(path, "rb") as f:
                client.audio.transcriptions.create(model="whisper-1", file=f)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return requests / (time.perf_counter() - started)


def short_during_long(url, long_wav):
    """Seconds until a short request sent 2 s after a long one is answered, and until the
    long one is."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    done = {}
    started = time.perf_counter()

    def ask(name, path):
        with open(path, "rb") as f:
            client.audio.transcriptions.create(model="whisper-1", file=f)
        done[name] = time.perf_counter()

    long = threading.Thread(target=ask, args=("long", long_wav))
    long.start()
    time.sleep(2.0)
    short_sent = time.perf_counter()
    ask("short", JFK)
    long.join()
    return done["short"] - short_sent, done["long"] - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--model", default=str(ROOT / "target" / "models" / "tiny.en"))
    parser.add_argument("--clients", default="1,4,16")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    rates, waits = {}, {}
    long_wav = ROOT / "target" / "bench-server-long.wav"
    subprocess.run([str(CLI), "join-audio", str(long_wav), *map(str, TIMIT)], check=True)
    settings = {"batched and packed": (16, True), "batched": (16, False), "one at a time": (1, False)}
    for name, (batched, pack) in settings.items():
        process, url = start(args.model, batched, pack)
        try:
            run(url, 2, 4)  # warm up
            for c in clients:
                rates[name, c] = run(url, c, args.requests)
            waits[name] = short_during_long(url, long_wav)
        finally:
            process.terminate()
            process.wait()
    print(f"{args.requests} requests of TIMIT files (about 3 s each), model {Path(args.model).name}")
    print("| clients | " + " | ".join(f"{name} (requests/s)" for name in settings) + " |")
    print("| ---: |" + " ---: |" * len(settings))
    for c in clients:
        base = rates["one at a time", c]
        cells = [f"{rates[name, c]:.2f} ({rates[name, c] / base:.2f}x)" for name in settings]
        print(f"| {c} | " + " | ".join(cells) + " |")
    print()
    print("jfk (11 s) sent 2 s after the 160 TIMIT files joined (8 min): seconds until answered")
    print("| mode | jfk | the long request |")
    print("| --- | ---: | ---: |")
    for name in settings:
        short, long = waits[name]
        print(f"| {name} | {short:.1f} | {long:.1f} |")


if __name__ == "__main__":
    main()
