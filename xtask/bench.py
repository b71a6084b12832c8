"""Side-by-side speed of whisk and faster-whisper on the same model and audio.

Run by `cargo xtask bench` inside the venv it makes (faster-whisper from PyPI). Every
configuration runs as its own process, interleaved, timed from start to exit (model loading
included, as a user sees it), with the process's peak RSS from wait4. Decoding is greedy on
both sides. Transcripts go to the work folder; WER is scored by `whisk-eval score` with the
same English normaliser for everyone.

faster-whisper worker mode: `bench.py fw MODEL COMPUTE BATCH WORDS OUT INPUT...`.
faster-whisper's encoder alone: `bench.py fw-encode MODEL AUDIO COMPUTE...` (one 30 s window,
as `benches/compute.rs` times whisk's).
"""

import json
import os
import subprocess
import sys
import time


def fw_worker(model_dir, compute, batch, words, out, inputs):
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type=compute, cpu_threads=os.cpu_count())
    batch = int(batch)
    words = words == "1"
    results = []
    for path in inputs:
        if batch > 1:
            # Its default: silero VAD cuts the audio into speech chunks of up to 30 s.
            segments, _ = BatchedInferencePipeline(model).transcribe(
                path, batch_size=batch, beam_size=1, word_timestamps=words, language="en"
            )
        else:
            segments, _ = model.transcribe(
                path, beam_size=1, word_timestamps=words, language="en"
            )
        results.append([{"start": s.start, "end": s.end, "text": s.text} for s in segments])
    with open(out, "w") as f:
        json.dump(results, f)


def fw_encode(model_dir, audio_path, computes):
    """Median milliseconds of `WhisperModel.encode` on one 30 s window, per compute type."""
    import numpy as np
    from faster_whisper import WhisperModel, decode_audio

    audio = decode_audio(audio_path)
    for compute in computes:
        model = WhisperModel(model_dir, device="cpu", compute_type=compute,
                             cpu_threads=os.cpu_count())
        features = model.feature_extractor(audio)
        window = np.zeros((features.shape[0], 3000), dtype=np.float32)
        window[:, :min(3000, features.shape[1])] = features[:, :3000]
        model.encode(window)
        times = []
        for _ in range(10):
            start = time.perf_counter()
            model.encode(window)
            times.append(time.perf_counter() - start)
        print(f"faster-whisper {compute} encoder window: median {1000 * np.median(times):.1f} ms "
              f"(min {1000 * min(times):.1f}, 10 runs)", flush=True)


GNU_TIME = "/usr/bin/time"
RSS_MARK = "bench-peak-rss-kb "


def run(cmd):
    """Wall seconds and peak RSS (MB) of one process. The peak is read by GNU time where there
    is one: a process forked from this one counts this one's memory in its own `ru_maxrss`
    until it execs (Linux keeps the larger), so with the 160 files' audio loaded here every
    row of that case read 317 MB."""
    timed = os.access(GNU_TIME, os.X_OK)
    if timed:
        cmd = [GNU_TIME, "-f", RSS_MARK + "%M", *cmd]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    marked = [line for line in err.splitlines() if line.startswith(RSS_MARK)]
    if timed and marked:
        return wall, int(marked[-1][len(RSS_MARK):]) / 1024.0
    return wall, usage.ru_maxrss / 1024.0


def segments_of_whisk(out_dir, inputs):
    results = []
    for path in inputs:
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(out_dir, stem + ".json")) as f:
            results.append(json.load(f)["segments"])
    return results


def hypothesis(results, case):
    """Text scored against the reference: for a long file, the segments inside its TIMIT part."""
    if case["kind"] == "files":
        return [" ".join(s["text"].strip() for s in r) for r in results]
    limit = case["scored_seconds"]
    return [" ".join(s["text"].strip() for s in results[0] if s["start"] < limit)]


def wer(args, case, texts):
    hyp_path = os.path.join(args["work"], "hyp.txt")
    with open(hyp_path, "w") as f:
        f.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    out = subprocess.run(
        [args["whisk_eval"], "score", case["reference"], hyp_path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.split()[0])


def dropped_utterances(case, texts, alone=None):
    """Utterances of which the long-form text holds less than half the words (words matched
    in order against the whole reference), for cases that know where their utterances are;
    with `alone` (each utterance's text decoded on its own by the same system, from the files
    case of the same run), also how many of those the decode alone got: the ones long-form
    lost. Returns (dropped, lost or None)."""
    import difflib
    import re

    manifest = case.get("utterances")
    if not manifest:
        return None
    words = lambda t: re.sub(r"[^a-z0-9' ]", " ", t.lower().replace("-", " ")).split()

    def half_heard(ref, hyp):
        matched = sum(b.size for b in difflib.SequenceMatcher(
            a=ref, b=hyp, autojunk=False).get_matching_blocks())
        return 2 * matched >= len(ref)

    utterances = json.load(open(manifest))
    ref, owner = [], []
    for k, u in enumerate(utterances):
        w = words(u["text"])
        ref += w
        owner += [k] * len(w)
    matched = [0] * (owner[-1] + 1)
    hyp = words(" ".join(texts))
    for block in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_matching_blocks():
        for i in range(block.a, block.a + block.size):
            matched[owner[i]] += 1
    total = [owner.count(k) for k in range(len(matched))]
    dropped = [k for k, (m, t) in enumerate(zip(matched, total)) if 2 * m < t]
    if alone is None:
        return len(dropped), None
    lost = [k for k in dropped
            if half_heard(words(utterances[k]["text"]), words(alone.get(utterances[k]["utterance"], "")))]
    return len(dropped), len(lost)


def dropped_cell(dropped):
    """`dropped (lost)`: lost are those that the same system got decoding them alone."""
    if dropped is None:
        return "-"
    n, lost = dropped
    return f"{n}" if lost is None else f"{n} ({lost})"


def write_wav(path, samples):
    import wave

    import numpy as np

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(pcm.tobytes())


def prepare(args):
    """The inputs: the 160 TIMIT utterances as files, and joined with the
    whisper_timestamped clips into one long file (and that repeated to an hour)."""
    import numpy as np
    from faster_whisper.audio import decode_audio

    data = os.path.join(args["shared"], "data")
    timit_dir = os.path.join(data, "timit_nltk_sample")
    texts = {}
    with open(os.path.join(timit_dir, "transcript.tsv")) as f:
        next(f)
        for line in f:
            utt, _, text = line.rstrip("\n").split("\t", 2)
            texts[utt] = text
    timit = sorted(texts)
    timit_files = [os.path.join(timit_dir, "audio", u + ".flac") for u in timit]
    clips_dir = os.path.join(data, "whisper_timestamped_clips", "audio16k")
    clips = sorted(os.path.join(clips_dir, c) for c in os.listdir(clips_dir) if c.endswith(".flac"))
    work = args["work"]
    os.makedirs(work, exist_ok=True)
    files_ref = os.path.join(work, "files.ref.txt")
    with open(files_ref, "w") as f:
        f.write("\n".join(texts[u] for u in timit) + "\n")
    long_ref = os.path.join(work, "long.ref.txt")
    with open(long_ref, "w") as f:
        f.write(" ".join(texts[u] for u in timit) + "\n")
    timit_audio = [decode_audio(p) for p in timit_files]
    timit_seconds = sum(len(a) for a in timit_audio) / 16000.0
    long = np.concatenate(timit_audio + [decode_audio(p) for p in clips])
    long_path = os.path.join(work, "long.wav")
    write_wav(long_path, long)
    cases = {
        "files": {"name": "160 files", "kind": "files", "inputs": timit_files,
                  "seconds": timit_seconds, "reference": files_ref},
        "long": {"name": "long file", "kind": "long", "inputs": [long_path],
                 "seconds": len(long) / 16000.0, "reference": long_ref,
                 "scored_seconds": timit_seconds},
    }
    if "pauses" in args["cases"]:
        cases["pauses"] = pauses_case(work, texts, dict(zip(timit, timit_audio)), clips_dir)
    if "hour" in args["cases"]:
        repeats = int(np.ceil(3600 * 16000 / len(long)))
        hour_path = os.path.join(work, "hour.wav")
        write_wav(hour_path, np.tile(long, repeats))
        cases["hour"] = {"name": "hour", "kind": "long", "inputs": [hour_path],
                         "seconds": repeats * len(long) / 16000.0, "reference": long_ref,
                         "scored_seconds": timit_seconds,
                         "only": [["whisk", f"{c} batch {args['fw_batch']}"]
                                  for c in args["whisk_computes"]] + [
                                  ["faster-whisper", f"int8 batched {args['fw_batch']}"]],
                         "words_only": True}
    return [cases[c] for c in args["cases"]]


def pauses_case(work, texts, audio, clips_dir):
    """The 160 utterances in a shuffled order, joined by pauses of 0.3-2.5 s of faint noise,
    with a laughter or silence clip after every eighth (a recording as users bring them: the
    long-form issue's test set). Where each utterance lies goes to `pauses.utterances.json`."""
    import numpy as np
    from faster_whisper.audio import decode_audio

    rng = np.random.default_rng(17)
    order = sorted(audio)
    rng.shuffle(order)
    noise_clips = [decode_audio(os.path.join(clips_dir, c))
                   for c in ("laugh1.flac", "laugh2.flac", "empty.flac", "empty_mp3.flac")]
    parts, placed, at = [], [], 0
    for i, utt in enumerate(order):
        pause = rng.normal(0.0, 0.003, int(rng.uniform(0.3, 2.5) * 16000)).astype(np.float32)
        parts += [pause, audio[utt]]
        at += len(pause)
        placed.append({"utterance": utt, "start": at / 16000.0,
                       "end": (at + len(audio[utt])) / 16000.0, "text": texts[utt]})
        at += len(audio[utt])
        if i % 8 == 7:
            clip = noise_clips[(i // 8) % len(noise_clips)]
            parts.append(clip)
            at += len(clip)
    samples = np.concatenate(parts)
    path = os.path.join(work, "pauses.wav")
    write_wav(path, samples)
    with open(os.path.join(work, "pauses.utterances.json"), "w") as f:
        json.dump(placed, f, indent=0)
    ref = os.path.join(work, "pauses.ref.txt")
    with open(ref, "w") as f:
        f.write(" ".join(p["text"] for p in placed) + "\n")
    return {"name": "pauses", "kind": "long", "inputs": [path], "seconds": len(samples) / 16000.0,
            "reference": ref, "scored_seconds": len(samples) / 16000.0,
            "utterances": os.path.join(work, "pauses.utterances.json")}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "fw":
        fw_worker(*sys.argv[2:7], sys.argv[7:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "fw-encode":
        fw_encode(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    args = json.load(open(sys.argv[1]))
    rows = []
    # Per system and config, each utterance's text decoded alone (the files case), to tell
    # which utterances a long-form run drops that a decode alone gets.
    alone = {}
    for case in prepare(args):
        configs = []
        if "candle" in args["backends"]:
            fb = args["fw_batch"]
            for c in args["whisk_computes"]:
                for b in args["whisk_batches"]:
                    for words in (False, True):
                        configs.append(("whisk", f"{c} batch {b}", b, words, c))
                # faster-whisper's batched mode decodes each chunk once (no temperature
                # fallback): the same work for whisk.
                for words in (False, True):
                    configs.append(("whisk", f"{c} batch {fb} no fallback", fb, words, c))
                # Speech only, as faster-whisper's batched mode (its VAD is on by default),
                # with and without fallback.
                for words in (False, True):
                    configs.append(("whisk", f"{c} batch {fb} vad", fb, words, c))
                for words in (False, True):
                    configs.append(("whisk", f"{c} batch {fb} vad no fallback", fb, words, c))
        # Burn: the sequential loop and one batch size, on the CPU (flex) and, opted in, wgpu.
        for backend, system, batches in (("burn", "whisk burn", [1, args["fw_batch"]]),
                                         ("burn-wgpu", "whisk burn-wgpu", [args["fw_batch"]])):
            if backend in args["backends"]:
                for b in batches:
                    for words in (False, True):
                        configs.append((system, f"batch {b}", b, words, None))
        for compute in args["fw_computes"]:
            for b in (1, args["fw_batch"]):
                for words in (False, True):
                    mode = "sequential" if b == 1 else f"batched {b}"
                    configs.append(("faster-whisper", f"{compute} {mode}", b, words, compute))
        if case.get("only"):
            configs = [c for c in configs if [c[0], c[1]] in case["only"]]
        if case.get("words_only"):
            configs = [c for c in configs if c[3]]
        # Interleave: whisk and faster-whisper alternate, so drift in machine load hits both.
        whisk = [c for c in configs if c[0].startswith("whisk")]
        fw = [c for c in configs if not c[0].startswith("whisk")]
        order = []
        while whisk or fw:
            if whisk:
                order.append(whisk.pop(0))
            if fw:
                order.append(fw.pop(0))
        for system, label, batch, words, compute in order:
            out_dir = os.path.join(args["work"], "out")
            os.makedirs(out_dir, exist_ok=True)
            if system.startswith("whisk"):
                cmd = [args["whisk"], "transcribe", *case["inputs"], "--model", args["model"],
                       "--batch-size", str(batch), "--word-timestamps", str(words).lower(),
                       "--beam-size", "1", "--language", "en", "-f", "json", "-o", out_dir, "-q"]
                if compute:
                    cmd += ["--compute-type", compute]
                if system == "whisk burn":
                    cmd += ["--backend", "burn", "--device", "cpu"]
                elif system == "whisk burn-wgpu":
                    cmd += ["--backend", "burn", "--device", "wgpu"]
                if "no fallback" in label:
                    cmd += ["--temperature-increment-on-fallback", "0"]
                if " vad" in label:
                    cmd += ["--vad", "true", "--vad-model", args["vad_model"]]
                wall, rss = run(cmd)
                results = segments_of_whisk(out_dir, case["inputs"])
            else:
                out = os.path.join(out_dir, "fw.json")
                cmd = [sys.executable, __file__, "fw", args["model"], compute, str(batch),
                       "1" if words else "0", out, *case["inputs"]]
                wall, rss = run(cmd)
                results = json.load(open(out))
            texts = hypothesis(results, case)
            key = (system, label, words)
            if case["kind"] == "files":
                alone[key] = {os.path.splitext(os.path.basename(p))[0]: t
                              for p, t in zip(case["inputs"], texts)}
            row = {
                "case": case["name"], "system": system, "config": label,
                "words": words, "audio": case["seconds"], "wall": wall, "rss": rss,
                "wer": wer(args, case, texts),
                "dropped": dropped_utterances(case, texts, alone.get(key)),
            }
            rows.append(row)
            dropped = ("" if row["dropped"] is None
                       else f", {dropped_cell(row['dropped'])} utterances dropped (lost)")
            print(f"  {row['case']:<10} {system:<15} {label:<18} words={'on ' if words else 'off'}"
                  f" {wall:7.1f} s {rss:7.0f} MB  WER {row['wer']:.2f}%{dropped}", file=sys.stderr,
                  flush=True)
    print_table(rows, args["fw_batch"])


def print_table(rows, fw_batch):
    print()
    print("| case | system | config | word ts | audio s | wall s | × realtime | speed vs fw int8 batched | peak RSS MB | WER % | dropped (lost) |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        base = [b for b in rows if b["case"] == r["case"] and b["system"] == "faster-whisper"
                and b["config"] == f"int8 batched {fw_batch}" and b["words"] == r["words"]]
        ratio = f"{base[0]['wall'] / r['wall']:.2f}" if base else "-"
        print(f"| {r['case']} | {r['system']} | {r['config']} | {'on' if r['words'] else 'off'} |"
              f" {r['audio']:.0f} | {r['wall']:.1f} | {r['audio'] / r['wall']:.1f} | {ratio} |"
              f" {r['rss']:.0f} | {r['wer']:.2f} | {dropped_cell(r['dropped'])} |")


if __name__ == "__main__":
    main()
