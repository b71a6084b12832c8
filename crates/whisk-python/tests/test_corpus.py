"""The Ray Data recipe (`whisk.corpus`) on a local cluster: one row per file, a corrupt file
an error row, and a rerun over the same output writes nothing new."""

import json
import os
import subprocess
from pathlib import Path

import daft
import pyarrow.parquet as pq
import pytest
import ray

from whisk.corpus import Transcriber, daft_transcriber, done_ids, not_done

ROOT = Path(os.environ.get("WHISK_ROOT", Path(__file__).resolve().parents[3]))
MODELS = ROOT / "target" / "models"
CLI = ROOT / "target" / "release" / "whisk"
TIMIT = sorted((ROOT.parent / "shared" / "data" / "timit_nltk_sample" / "audio").glob("*.flac"))

# The same decode on both sides; without packing every file's windows are its own, so a
# file's text does not depend on which batch it lands in.
SETTINGS = dict(batch_size=8, pack=False, beam_size=1, best_of=2)
CLI_SETTINGS = ["--batch-size", "8", "--pack", "false", "--beam-size", "1", "--best-of", "2"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def cli_texts(files, out):
    subprocess.run(
        [str(CLI), "transcribe", *map(str, files), "--model", str(MODELS / "tiny.en"), "--compute-type",
         "float32", "-f", "json", "-o", str(out), "-q", *CLI_SETTINGS],
        check=True,
    )
    texts = {}
    for f in files:
        segments = json.loads((out / (f.stem + ".json")).read_text())["segments"]
        texts[f.stem] = "".join(s["text"] for s in segments).strip()
    return texts


def test_ray_data_one_row_per_file_an_error_row_and_a_rerun_adds_nothing(cluster, tmp_path):
    files = TIMIT[:39]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF but nothing a decoder could read " * 64)
    items = [{"id": f.stem, "path": str(f)} for f in files] + [{"id": "corrupt", "path": str(corrupt)}]
    out = tmp_path / "out"

    def run():
        ds = not_done(ray.data.from_items(items), str(out))
        ds.map_batches(
            Transcriber,
            fn_constructor_kwargs=dict(model=str(MODELS / "tiny.en"), **SETTINGS),
            concurrency=2,
            batch_size=10,
            # Half a CPU each, so the two actors leave room for reading and writing tasks
            # on a 2-CPU cluster (with a whole CPU each, those would wait forever).
            num_cpus=0.5,
        ).write_parquet(str(out))

    run()
    rows = pq.read_table(str(out)).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(i["id"] for i in items)
    [bad] = [r for r in rows if r["error"]]
    assert bad["id"] == "corrupt" and "corrupt.wav" in bad["error"] and bad["text"] == ""
    expected = cli_texts(files, tmp_path / "cli")
    for row in rows:
        if row["id"] != "corrupt":
            assert row["text"] == expected[row["id"]], row["id"]
            assert row["duration"] > 0 and row["segments"] and row["words"]
            assert all(0 <= w["start"] <= w["end"] <= row["duration"] + 0.01 for w in row["words"])

    written = sorted(os.listdir(out))
    assert done_ids(str(out)) == {i["id"] for i in items}
    run()
    assert sorted(os.listdir(out)) == written


def test_a_batch_as_pandas_or_a_dict_of_columns_gives_the_same_rows():
    pandas = pytest.importorskip("pandas")
    transcribe = Transcriber(str(MODELS / "tiny.en"), **SETTINGS)
    columns = {"id": [f.stem for f in TIMIT[:3]], "path": [str(f) for f in TIMIT[:3]]}
    from_dict = transcribe(columns).to_pylist()
    from_pandas = transcribe(pandas.DataFrame(columns)).to_pylist()
    assert from_dict == from_pandas
    assert [r["id"] for r in from_dict] == columns["id"] and all(r["text"] for r in from_dict)


def test_the_same_work_as_a_daft_class(tmp_path):
    files = TIMIT[40:50]
    transcriber = daft_transcriber(model=str(MODELS / "tiny.en"), **SETTINGS)
    paths = [str(f) for f in files] + [str(tmp_path / "missing.flac")]
    df = daft.from_pydict({"id": [Path(p).stem for p in paths], "path": paths})
    rows = df.select(transcriber.transcribe(df["id"], df["path"])).to_pylist()
    assert [r["id"] for r in rows] == [Path(p).stem for p in paths]
    expected = cli_texts(files, tmp_path / "cli")
    assert {r["id"]: r["text"] for r in rows[:-1]} == expected
    assert "missing.flac" in rows[-1]["error"] and rows[-1]["text"] == ""
