"""Corpus runs on an existing engine (Ray Data, Daft): a batch transcriber and a resume filter.

Ray Data::

    import ray
    from whisk.corpus import Transcriber, not_done

    ds = ray.data.read_parquet("clips.parquet")          # columns: id, path (or bytes)
    ds = not_done(ds, "out/")                           # a rerun skips ids already written
    ds.map_batches(
        Transcriber,
        fn_constructor_kwargs=dict(model="target/models/tiny.en", compute_type="int8"),
        concurrency=2,        # actors, each with its own model
        batch_size=16,        # rows per call: their windows share one decoder batch
        num_cpus=1,
    ).write_parquet("out/")

Every input row gives one output row: ``id, text, language, duration, segments, words,
error``. A file that cannot be decoded gives a row with ``error`` set and empty text, never a
crashed worker. ``segments`` and ``words`` are lists of structs, so the output is plain
Arrow/Parquet.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional

from . import BatchedInferencePipeline, WhisperModel, decode_audio

#: One output row per input row, in this schema (Arrow types when pyarrow is there).
COLUMNS = ("id", "text", "language", "duration", "segments", "words", "error")


def _schema():
    import pyarrow as pa

    segment = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string())])
    word = pa.struct(
        [("start", pa.float64()), ("end", pa.float64()), ("word", pa.string()), ("probability", pa.float64())]
    )
    return pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("language", pa.string()),
            ("duration", pa.float64()),
            ("segments", pa.list_(segment)),
            ("words", pa.list_(word)),
            ("error", pa.string()),
        ]
    )


def _rows(batch: Any) -> List[Dict[str, Any]]:
    """A batch as Ray or Daft hands it over (dict of columns, pandas, pyarrow) as rows."""
    if hasattr(batch, "to_pylist"):  # pyarrow.Table
        return batch.to_pylist()
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas.DataFrame
        return batch.to_dict("records")
    columns = {name: list(values) for name, values in batch.items()}
    n = len(next(iter(columns.values()), []))
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]


class Transcriber:
    """Transcribes a batch of rows holding ``id`` and ``path`` or ``bytes``; every row's
    windows share one decoder batch. Constructor arguments: the model (path or name), the
    model's ``compute_type``, ``device``, ``cpu_threads``, ``vad_model``, the batch size of the
    decoder, ``pack`` (short inputs share windows; default True) and any argument of
    ``BatchedInferencePipeline.transcribe`` (``word_timestamps`` defaults to True here)."""

    def __init__(
        self,
        model: str,
        compute_type: str = "default",
        device: str = "cpu",
        cpu_threads: int = 0,
        vad_model: Optional[str] = None,
        batch_size: int = 8,
        pack: bool = True,
        **transcribe_kwargs: Any,
    ):
        self.model = WhisperModel(
            model, device=device, compute_type=compute_type, cpu_threads=cpu_threads, vad_model=vad_model
        )
        self.pipeline = BatchedInferencePipeline(self.model)
        self.batch_size = batch_size
        self.pack = pack
        self.kwargs = dict(dict(word_timestamps=True, vad_filter=False), **transcribe_kwargs)

    def transcribe_rows(self, rows: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Output rows for input rows (the work of ``__call__``, without Arrow)."""
        rows = list(rows)
        decoded, out = [], []
        for row in rows:
            try:
                decoded.append(decode_audio(_source(row)))
                out.append(None)
            except Exception as e:  # every failure becomes that row's error
                decoded.append(None)
                out.append(_error_row(row, e))
        good = [i for i, samples in enumerate(decoded) if samples is not None]
        if good:
            results = self.pipeline.transcribe_many(
                [decoded[i] for i in good], batch_size=self.batch_size, pack=self.pack, **self.kwargs
            )
            for i, (segments, info) in zip(good, results):
                out[i] = _result_row(rows[i], segments, info)
        return out

    def __call__(self, batch: Any) -> Any:
        """One output row per input row, as an Arrow table (a dict of columns without pyarrow)."""
        rows = self.transcribe_rows(_rows(batch))
        try:
            import pyarrow as pa
        except ImportError:
            return {name: [row[name] for row in rows] for name in COLUMNS}
        return pa.Table.from_pylist(rows, schema=_schema())


def daft_transcriber(**transcriber_kwargs: Any) -> Any:
    """The same work as a Daft class (``Transcriber``'s arguments): each worker loads the
    model once and transcribes batches of rows together; ``transcribe(id, path)`` gives the
    output columns::

        import daft
        from whisk.corpus import daft_transcriber

        transcriber = daft_transcriber(model="target/models/tiny.en", batch_size=8)
        df = daft.read_parquet("clips.parquet")             # id, path
        df = df.select(transcriber.transcribe(df["id"], df["path"]))
        df.write_parquet("out/")
    """
    import daft
    import pyarrow as pa

    row_type = pa.struct(list(_schema()))

    @daft.cls
    class DaftTranscriber:
        def __init__(self, kwargs: Dict[str, Any]):
            self.inner = Transcriber(**kwargs)

        @daft.method.batch(return_dtype=daft.DataType.from_arrow_type(row_type), unnest=True)
        def transcribe(self, ids: Any, paths: Any) -> Any:
            rows = ({"id": i, "path": p} for i, p in zip(ids.to_pylist(), paths.to_pylist()))
            return pa.array(self.inner.transcribe_rows(rows), type=row_type)

    return DaftTranscriber(transcriber_kwargs)


def _source(row: Dict[str, Any]) -> Any:
    if row.get("path") is not None:
        return str(row["path"])
    if row.get("bytes") is not None:
        return bytes(row["bytes"])
    raise ValueError(f"row {row.get('id')!r} has neither a path nor bytes")


def _error_row(row: Dict[str, Any], error: Exception) -> Dict[str, Any]:
    return dict(
        id=str(row.get("id")), text="", language=None, duration=None, segments=[], words=[],
        error=f"{type(error).__name__}: {error}",
    )


def _result_row(row: Dict[str, Any], segments: List[Any], info: Any) -> Dict[str, Any]:
    return dict(
        id=str(row.get("id")),
        text="".join(s.text for s in segments).strip(),
        language=info.language,
        duration=info.duration,
        segments=[dict(start=s.start, end=s.end, text=s.text) for s in segments],
        words=[
            dict(start=w.start, end=w.end, word=w.word, probability=w.probability)
            for s in segments
            for w in s.words or []
        ],
        error=None,
    )


def done_ids(output_dir: str) -> set:
    """Ids already written under ``output_dir`` (Parquet files), empty when there is none."""
    import pyarrow.parquet as pq

    if not os.path.isdir(output_dir):
        return set()
    done = set()
    for name in sorted(os.listdir(output_dir)):
        if name.endswith(".parquet"):
            done.update(pq.read_table(os.path.join(output_dir, name), columns=["id"]).column("id").to_pylist())
    return done


def not_done(ds: Any, output_dir: str) -> Any:
    """The rows of a Ray dataset whose ``id`` is not yet in ``output_dir``: a job run again
    over the same output writes only what is missing, never a row twice."""
    done = done_ids(output_dir)
    if not done:
        return ds
    return ds.filter(lambda row: str(row["id"]) not in done)
