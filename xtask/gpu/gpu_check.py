#!/usr/bin/env python3
"""whisk's GPU check, run by gpu-check.sh from a bundle made by `cargo xtask gpu-bundle`.

1. correctness: jfk and TIMIT files on the device against the CPU's results in the bundle
   (same text, word times within 20 ms), in float32 and float16;
2. throughput: TIMIT files and one long file joined from others, at several batch sizes,
   words on and off, float32 and float16: realtime factor, peak GPU memory, host share;
3. scale: random weights of large-v3's shape (`whisk bench-synthetic`), throughput only.

Writes report.md and report.json to --out, rewritten after every run so that a run cut short
still leaves what it measured. Standard library only: it runs under whatever python3 the
machine has.
"""

import argparse
import json
import os
import struct
import subprocess
import threading
import time
import wave

WORD_TOLERANCE_S = 0.020

# What each mode runs. The GPU plan fits in about 7 minutes on an H200 (checked by the
# budget below: runs that would start after it are listed as skipped, not run).
PLANS = {
    "gpu": {
        "budget_s": 420,
        "correctness_types": ["float32", "float16"],
        "throughput_types": ["float16", "float32"],
        "throughput_batches": [64, 32, 8, 1],
        "throughput_inputs": ["timit", "long"],
        "synthetic_dims": "large-v3",
        "synthetic_types": ["float16", "float32", "bfloat16"],
        "synthetic_batches": [1, 8, 32, 64],
        "synthetic_tokens": 100,
        "timeout_s": 150,
    },
    # The proof on a CPU: the same binary and steps, little enough to finish in minutes.
    "cpu-proof": {
        "budget_s": 900,
        "correctness_types": ["float32", "float16"],
        "correctness_files": 4,
        "throughput_types": ["float32"],
        "throughput_batches": [8, 1],
        "throughput_inputs": ["timit", "long"],
        "throughput_files": 4,
        "long_files": 3,
        "synthetic_dims": "tiny.en",
        "synthetic_types": ["float32"],
        "synthetic_batches": [1, 2],
        "synthetic_tokens": 8,
        "timeout_s": 600,
    },
}


def flac_seconds(path):
    """Length of a FLAC file from its STREAMINFO block."""
    with open(path, "rb") as f:
        head = f.read(42)
    if head[:4] != b"fLaC":
        raise ValueError(f"{path} is not a FLAC file")
    info = head[8:42]
    rate = (info[10] << 12) | (info[11] << 4) | (info[12] >> 4)
    total = ((info[13] & 0x0F) << 32) | struct.unpack(">I", info[14:18])[0]
    return total / rate


def audio_seconds(path):
    if path.endswith(".wav"):
        with wave.open(path) as w:
            return w.getnframes() / w.getframerate()
    return flac_seconds(path)


class GpuMemory:
    """Peak memory in use on the GPU while a run lasts, polled with nvidia-smi."""

    def __init__(self):
        self.available = subprocess.run(
            ["sh", "-c", "command -v nvidia-smi"], capture_output=True
        ).returncode == 0
        self.peak = None
        self._stop = threading.Event()

    @staticmethod
    def used_mib():
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        ).stdout.split()
        return int(out[0]) if out else None

    def __enter__(self):
        if self.available:
            self.baseline = self.used_mib()
            self.peak = self.baseline
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.2):
            used = self.used_mib()
            if used is not None:
                self.peak = max(self.peak or 0, used)

    def __exit__(self, *exc):
        if self.available:
            self._stop.set()
            self._thread.join()

    def peak_mib(self):
        """Peak above what was in use before the run."""
        if not self.available or self.peak is None:
            return None
        return self.peak - (self.baseline or 0)


class Check:
    def __init__(self, args):
        self.args = args
        self.plan = dict(PLANS[args.mode])
        self.whisk = os.path.join(args.work, "bin", "whisk")
        self.model = os.path.join(args.work, "models", "tiny.en-int8")
        self.started = time.monotonic()
        self.report = {
            "mode": args.mode,
            "device": args.device,
            "machine": {},
            "correctness": [],
            "throughput": [],
            "synthetic": [],
            "skipped": [],
            "errors": [],
        }
        manifest = os.path.join(args.bundle, "manifest.json")
        with open(manifest) as f:
            self.manifest = json.load(f)
        self.report["bundle"] = self.manifest

    # -- running ---------------------------------------------------------------------------

    def time_left(self):
        return self.plan["budget_s"] - (time.monotonic() - self.started)

    def run(self, label, cmd):
        """Runs cmd; returns (completed process or None, wall seconds, peak GPU MiB)."""
        if self.time_left() <= 0:
            self.report["skipped"].append(label)
            return None, None, None
        timeout = min(self.plan["timeout_s"], max(self.time_left(), 30))
        print(f"[{time.monotonic() - self.started:6.1f} s] {label}", flush=True)
        start = time.monotonic()
        with GpuMemory() as memory:
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                self.report["errors"].append(f"{label}: timed out after {timeout:.0f} s")
                return None, None, None
        wall = time.monotonic() - start
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            self.report["errors"].append(f"{label}: exit {proc.returncode}: {' | '.join(tail)}")
            return None, wall, memory.peak_mib()
        return proc, wall, memory.peak_mib()

    def transcribe(self, files, out_dir, compute_type, batch, words, timing=True):
        os.makedirs(out_dir, exist_ok=True)
        cmd = [
            self.whisk, "transcribe", *files, "--model", self.model,
            "--device", self.args.device, "--compute-type", compute_type,
            "--batch-size", str(batch), "--word-timestamps", "true" if words else "false",
            "--output-format", "json", "--output-dir", out_dir, "--quiet",
        ]
        if timing:
            cmd.append("--backend-timing")
        return cmd

    # -- 1. correctness --------------------------------------------------------------------

    def correctness(self):
        refs = self.manifest["correctness_files"]
        limit = self.plan.get("correctness_files")
        refs = refs[:limit] if limit else refs
        files = [os.path.join(self.args.bundle, "audio", name) for name in refs]
        for compute_type in self.plan["correctness_types"]:
            out_dir = os.path.join(self.args.work, "correctness", compute_type)
            label = f"correctness {compute_type}: {len(files)} files"
            cmd = self.transcribe(files, out_dir, compute_type, self.manifest["reference_batch"], True, timing=False)
            proc, wall, _ = self.run(label, cmd)
            if proc is None:
                continue
            for name in refs:
                stem = os.path.splitext(name)[0]
                row = compare(
                    os.path.join(self.args.bundle, "cpu-ref", stem + ".json"),
                    os.path.join(out_dir, stem + ".json"),
                )
                row.update({"file": name, "compute_type": compute_type})
                self.report["correctness"].append(row)
            self.save()

    # -- 2. throughput ---------------------------------------------------------------------

    def inputs(self):
        timit = [os.path.join(self.args.bundle, "audio", n) for n in self.manifest["throughput_files"]]
        limit = self.plan.get("throughput_files")
        timit = timit[:limit] if limit else timit
        out = {"timit": timit}
        if "long" in self.plan["throughput_inputs"]:
            long = os.path.join(self.args.work, "long.wav")
            parts = self.manifest["long_parts"][: self.plan.get("long_files")]
            joined = [os.path.join(self.args.bundle, "audio", n) for n in parts]
            subprocess.run([self.whisk, "join-audio", long, *joined, "--gap-seconds", "0.6"], check=True)
            out["long"] = [long]
        return out

    def throughput(self):
        inputs = self.inputs()
        seconds = {k: sum(audio_seconds(f) for f in v) for k, v in inputs.items()}
        for compute_type in self.plan["throughput_types"]:
            for name in self.plan["throughput_inputs"]:
                for batch in self.plan["throughput_batches"]:
                    for words in (True, False):
                        label = f"throughput {name} {compute_type} batch {batch} words {'on' if words else 'off'}"
                        out_dir = os.path.join(self.args.work, "throughput")
                        cmd = self.transcribe(inputs[name], out_dir, compute_type, batch, words)
                        proc, wall, peak = self.run(label, cmd)
                        if proc is None:
                            continue
                        timing = last_json_line(proc.stderr)
                        run_s = timing["wall_s"]
                        self.report["throughput"].append({
                            "input": name, "files": len(inputs[name]), "audio_s": seconds[name],
                            "compute_type": compute_type, "batch": batch, "words": words,
                            "process_s": wall, "load_s": timing["load_s"], "run_s": run_s,
                            "realtime_factor": seconds[name] / run_s,
                            "gpu_peak_mib": peak,
                            "host_share": timing["host_s"] / run_s,
                            "encode_s": timing["encode_s"], "decode_s": timing["decode_s"],
                            "attach_s": timing["attach_s"], "copy_s": timing["copy_s"],
                            "windows": timing["windows_encoded"], "decode_steps": timing["decode_steps"],
                            "rows_per_step": timing["rows_stepped"] / max(timing["decode_steps"], 1),
                        })
                        self.save()

    # -- 3. scale --------------------------------------------------------------------------

    def synthetic(self):
        dims = self.plan["synthetic_dims"]
        batches = ",".join(str(b) for b in self.plan["synthetic_batches"])
        for compute_type in self.plan["synthetic_types"]:
            cmd = [
                self.whisk, "bench-synthetic", "--dims", dims, "--device", self.args.device,
                "--compute-type", compute_type, "--batches", batches,
                "--tokens", str(self.plan["synthetic_tokens"]),
            ]
            proc, wall, peak = self.run(f"synthetic {dims} {compute_type} batches {batches}", cmd)
            if proc is None:
                continue
            result = last_json_line(proc.stdout)
            result.update({"process_s": wall, "gpu_peak_mib": peak})
            self.report["synthetic"].append(result)
            self.save()

    # -- report ----------------------------------------------------------------------------

    def machine(self):
        info = self.report["machine"]
        for key, cmd in [
            ("gpu", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
            ("whisk", [self.whisk, "--version"]),
        ]:
            try:
                info[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
            except (OSError, subprocess.TimeoutExpired) as e:
                info[key] = f"unavailable: {e}"
        info["cpus"] = os.cpu_count()
        info["ld_library_path"] = os.environ.get("LD_LIBRARY_PATH", "")

    def save(self):
        self.report["elapsed_s"] = time.monotonic() - self.started
        with open(os.path.join(self.args.out, "report.json"), "w") as f:
            json.dump(self.report, f, indent=1)
        with open(os.path.join(self.args.out, "report.md"), "w") as f:
            f.write(markdown(self.report))


def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def words_of(transcript):
    return [w for s in transcript["segments"] for w in (s.get("words") or [])]


def compare(ref_path, got_path):
    """Text and word times of one file against the CPU's."""
    with open(ref_path) as f:
        ref = json.load(f)
    if not os.path.exists(got_path):
        return {"same_text": False, "words": 0, "within": 0, "worst_ms": None, "missing": True}
    with open(got_path) as f:
        got = json.load(f)
    same_text = ref["text"].strip() == got["text"].strip()
    a, b = words_of(ref), words_of(got)
    row = {"same_text": same_text, "words": len(a)}
    if [w["word"] for w in a] == [w["word"] for w in b]:
        deltas = [max(abs(x["start"] - y["start"]), abs(x["end"] - y["end"])) for x, y in zip(a, b)]
        row["within"] = sum(d <= WORD_TOLERANCE_S + 1e-9 for d in deltas)
        row["worst_ms"] = round(1000 * max(deltas, default=0.0), 1)
    else:
        row.update({"within": 0, "worst_ms": None, "cpu_text": ref["text"][:300], "device_text": got["text"][:300]})
    return row


def markdown(r):
    lines = [f"# whisk GPU check ({r['mode']}, device {r['device']})", ""]
    m = r["machine"]
    lines += [f"- GPU: {m.get('gpu') or 'none'}; CPUs: {m.get('cpus')}; {m.get('whisk', '')}",
              f"- bundle: {r['bundle'].get('commit', '?')}, {r['bundle'].get('total_mib', '?')} MiB",
              f"- elapsed: {r.get('elapsed_s', 0):.0f} s", ""]
    lines += ["## Correctness against the CPU (same binary, tiny.en int8 weights)", "",
              "| compute | files | same text | words | within 20 ms | worst Δ ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for ct in sorted({c["compute_type"] for c in r["correctness"]}):
        rows = [c for c in r["correctness"] if c["compute_type"] == ct]
        worst = [c["worst_ms"] for c in rows if c["worst_ms"] is not None]
        lines.append(f"| {ct} | {len(rows)} | {sum(c['same_text'] for c in rows)} | {sum(c['words'] for c in rows)} | "
                     f"{sum(c['within'] for c in rows)} | {max(worst) if worst else '—'} |")
    for c in r["correctness"]:
        if not c["same_text"] or c.get("worst_ms") is None:
            lines.append(f"- {c['compute_type']} {c['file']}: CPU «{c.get('cpu_text', '')}» device «{c.get('device_text', '')}»")
    lines += ["", "## Throughput, tiny.en (beam 5, fallback on; every backend call timed, so no overlap)", "",
              "| input | compute | batch | words | audio s | run s | × realtime | load s | GPU MiB | host share | encode s | decode s | rows/step |",
              "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in r["throughput"]:
        lines.append(f"| {t['input']} ({t['files']} files) | {t['compute_type']} | {t['batch']} | {'on' if t['words'] else 'off'} | "
                     f"{t['audio_s']:.0f} | {t['run_s']:.2f} | {t['realtime_factor']:.1f} | {t['load_s']:.2f} | "
                     f"{t['gpu_peak_mib'] if t['gpu_peak_mib'] is not None else '—'} | {100 * t['host_share']:.0f}% | "
                     f"{t['encode_s']:.2f} | {t['decode_s']:.2f} | {t['rows_per_step']:.1f} |")
    lines += ["", "## Scale: random weights of a real model's shape (throughput only)", "",
              "Each window counts as 30 s of audio needing `tokens` decoder steps; words on adds the alignment heads' "
              "attention at every step and one letter-by-letter pass of 4 × tokens.", "",
              "| shape | compute | batch | words | tokens | encode s | decode s | × realtime | GPU MiB (process) | load s |",
              "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in r["synthetic"]:
        for x in s["results"]:
            lines.append(f"| {s['dims']} | {s['compute_type']} | {x['batch']} | {'on' if x['words'] else 'off'} | {x['tokens']} | "
                         f"{x['encode_s']:.3f} | {x['decode_s']:.3f} | {x['realtime_factor']:.1f} | "
                         f"{s['gpu_peak_mib'] if s['gpu_peak_mib'] is not None else '—'} | {s['load_s']:.1f} |")
    if r["skipped"]:
        lines += ["", "## Skipped (time budget)", ""] + [f"- {s}" for s in r["skipped"]]
    if r["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in r["errors"]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--mode", choices=sorted(PLANS), default="gpu")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    check = Check(args)
    check.machine()
    check.save()
    check.correctness()
    check.synthetic()
    check.throughput()
    check.save()
    print(open(os.path.join(args.out, "report.md")).read())
    failed = [c for c in check.report["correctness"] if not c["same_text"] or c["within"] < c["words"]]
    return 1 if check.report["errors"] or failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
