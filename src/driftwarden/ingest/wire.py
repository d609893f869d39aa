"""The ingest wire format: columnar batches a sender posts to a drift-worker shard.

A batch is one ``POST /v1/ingest`` body holding *segments*; a segment is one
stream's slice of values from one sender, with a per-sender sequence number the
worker uses to de-duplicate retries (``seq`` grows with every segment a sender
seals, so per stream it is strictly increasing).

Binary form (``Content-Type: application/x-driftwarden-batch``), all little-endian::

    b"DWB1" | u32 header_len | header (UTF-8 JSON) | column bytes, in header order

The header is small (a few hundred bytes); the values travel as raw ``<f8``/``<f4``
array bytes, so decoding is ``np.frombuffer`` and a batch of 10,000 values costs
microseconds, where JSON would cost milliseconds. String columns (categorical
values, prediction ids, class labels) are ``n+1`` ``<u4`` offsets followed by the
UTF-8 blob.

JSON form (``application/json``) carries the same fields with columns as lists; it
exists for curl and debugging, not for throughput.

Segment kinds and their columns:

- ``values``: ``v`` (numeric ``f8`` or categorical ``str``) - features, prediction;
- ``embedding``: ``v`` (``f4``/``f8``, shape ``(n, dim)``);
- ``predictions``: ``id`` (``str``) and ``v`` - predictions for the label join;
- ``labels``: ``id`` (``str``) and ``v`` - ground-truth labels for the join.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"DWB1"
CONTENT_TYPE = "application/x-driftwarden-batch"
JSON_CONTENT_TYPE = "application/json"
MAX_HEADER_BYTES = 4 * 1024 * 1024

KIND_VALUES = "values"
KIND_EMBEDDING = "embedding"
KIND_PREDICTIONS = "predictions"
KIND_LABELS = "labels"
KINDS: dict[str, tuple[str, ...]] = {
    KIND_VALUES: ("v",),
    KIND_EMBEDDING: ("v",),
    KIND_PREDICTIONS: ("id", "v"),
    KIND_LABELS: ("id", "v"),
}
_DTYPES = {"f8": np.dtype("<f8"), "f4": np.dtype("<f4")}
_HEAD = struct.Struct("<4sI")


class WireError(ValueError):
    """A batch that cannot be decoded; the message names the field and what was wrong."""


Column = np.ndarray | list[str]


@dataclass(frozen=True)
class Segment:
    """One stream's slice of a batch: values in arrival order plus the de-dup key."""

    stream: str
    seq: int
    kind: str
    ts: float
    columns: dict[str, Column]

    @property
    def n(self) -> int:
        return len(self.columns["v"])

    def values_count(self) -> int:
        """Return the number of scalar values (rows x dim for embeddings)."""
        v = self.columns["v"]
        return int(v.size) if isinstance(v, np.ndarray) else len(v)


@dataclass(frozen=True)
class Batch:
    """A decoded batch: who sent it, the epoch it was routed by, and its segments."""

    sender: str
    epoch: int
    segments: list[Segment] = field(default_factory=list)
    monitor: str = ""

    def values_count(self) -> int:
        return sum(s.values_count() for s in self.segments)


# --------------------------------------------------------------------------- encode


def _column_bytes(name: str, col: Column) -> tuple[dict[str, Any], bytes]:
    if isinstance(col, np.ndarray) and col.dtype.kind in "fiub":
        arr = col if col.dtype.kind == "f" and col.dtype.itemsize in (4, 8) else col.astype("<f8")
        dt = "f4" if arr.dtype.itemsize == 4 else "f8"
        arr = np.ascontiguousarray(arr, dtype=_DTYPES[dt])
        meta: dict[str, Any] = {"name": name, "dtype": dt, "shape": list(arr.shape)}
        data = arr.tobytes()
    else:
        strings = [str(x) for x in col]
        encoded = [s.encode() for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype="<u4")
        if encoded:
            np.cumsum([len(b) for b in encoded], out=offsets[1:])
        meta = {"name": name, "dtype": "str", "shape": [len(encoded)]}
        data = offsets.tobytes() + b"".join(encoded)
    meta["nbytes"] = len(data)
    return meta, data


def encode(batch: Batch) -> bytes:
    """Return the binary form of ``batch``."""
    parts: list[bytes] = []
    segs = []
    for seg in batch.segments:
        cols = []
        for name in KINDS[seg.kind]:
            meta, data = _column_bytes(name, seg.columns[name])
            cols.append(meta)
            parts.append(data)
        segs.append(
            {"stream": seg.stream, "seq": seg.seq, "kind": seg.kind, "ts": seg.ts, "columns": cols}
        )
    header = json.dumps(
        {"sender": batch.sender, "epoch": batch.epoch, "monitor": batch.monitor, "segments": segs},
        separators=(",", ":"),
    ).encode()
    return b"".join([_HEAD.pack(MAGIC, len(header)), header, *parts])


def to_json(batch: Batch) -> dict[str, Any]:
    """Return the JSON form of ``batch`` (lists instead of raw bytes)."""
    return {
        "sender": batch.sender,
        "epoch": batch.epoch,
        "monitor": batch.monitor,
        "segments": [
            {
                "stream": s.stream,
                "seq": s.seq,
                "kind": s.kind,
                "ts": s.ts,
                "columns": {
                    k: (v.tolist() if isinstance(v, np.ndarray) else list(v))
                    for k, v in s.columns.items()
                },
            }
            for s in batch.segments
        ],
    }


# --------------------------------------------------------------------------- decode


def _require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise WireError(f"{where}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise WireError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _check_segment(seg: Segment, where: str) -> Segment:
    if not seg.stream:
        raise WireError(f"{where}: empty stream name")
    if seg.seq < 0:
        raise WireError(f"{where}: seq must be >= 0, got {seg.seq}")
    if not math.isfinite(seg.ts):
        raise WireError(f"{where}: ts must be a finite number")
    lengths = {k: len(c) for k, c in seg.columns.items()}
    if len(set(lengths.values())) > 1:
        raise WireError(f"{where}: columns have different lengths {lengths}")
    v = seg.columns["v"]
    if seg.kind == KIND_EMBEDDING:
        if not isinstance(v, np.ndarray) or v.ndim != 2:
            raise WireError(f"{where}: embedding column 'v' must be a numeric (rows, dim) matrix")
    elif isinstance(v, np.ndarray) and v.ndim != 1:
        raise WireError(f"{where}: column 'v' must be one-dimensional, got shape {v.shape}")
    if isinstance(v, np.ndarray) and not np.isfinite(v).all():
        bad = int(np.flatnonzero(~np.isfinite(v.reshape(len(v), -1)).all(axis=1))[0])
        raise WireError(f"{where}: column 'v' holds a non-finite value at row {bad}")
    if "id" in seg.columns and isinstance(seg.columns["id"], np.ndarray):
        raise WireError(f"{where}: column 'id' must hold strings")
    return seg


def _segment_header(raw: Any, i: int) -> tuple[str, int, str, float, str]:
    where = f"segments[{i}]"
    if not isinstance(raw, dict):
        raise WireError(f"{where}: must be an object")
    stream = _require(raw, "stream", str, where)
    where = f"segments[{i}] (stream {stream!r})"
    seq = _require(raw, "seq", int, where)
    kind = _require(raw, "kind", str, where)
    if kind not in KINDS:
        raise WireError(f"{where}: unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    ts = float(_require(raw, "ts", (int, float), where))
    return stream, seq, kind, ts, where


def decode(body: bytes) -> Batch:
    """Return the batch in a binary body; raise :class:`WireError` naming what is wrong."""
    view = memoryview(body)
    if len(view) < _HEAD.size:
        raise WireError(f"body of {len(view)} bytes is shorter than the {_HEAD.size}-byte preamble")
    magic, header_len = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise WireError(f"bad magic {bytes(magic)!r}: expected {MAGIC!r} (binary batch format v1)")
    if header_len > MAX_HEADER_BYTES or _HEAD.size + header_len > len(view):
        raise WireError(f"header length {header_len} exceeds the body ({len(view)} bytes)")
    try:
        header = json.loads(bytes(view[_HEAD.size : _HEAD.size + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("header must be a JSON object")
    sender = _require(header, "sender", str, "batch")
    epoch = _require(header, "epoch", int, "batch")
    monitor = header.get("monitor", "")
    raw_segments = _require(header, "segments", list, "batch")
    if not sender:
        raise WireError("batch: field 'sender' must not be empty")
    offset = _HEAD.size + header_len
    segments = []
    for i, raw in enumerate(raw_segments):
        stream, seq, kind, ts, where = _segment_header(raw, i)
        cols_meta = _require(raw, "columns", list, where)
        columns: dict[str, Column] = {}
        for meta in cols_meta:
            if not isinstance(meta, dict):
                raise WireError(f"{where}: each column must be an object")
            name = _require(meta, "name", str, where)
            dtype = _require(meta, "dtype", str, f"{where} column {name!r}")
            shape = _require(meta, "shape", list, f"{where} column {name!r}")
            nbytes = _require(meta, "nbytes", int, f"{where} column {name!r}")
            if nbytes < 0 or offset + nbytes > len(view):
                raise WireError(
                    f"{where} column {name!r}: declares {nbytes} bytes but only "
                    f"{len(view) - offset} remain in the body"
                )
            data = view[offset : offset + nbytes]
            offset += nbytes
            columns[name] = _decode_column(data, dtype, shape, f"{where} column {name!r}")
        expected = KINDS[kind]
        if sorted(columns) != sorted(expected):
            raise WireError(
                f"{where}: kind {kind!r} needs columns {list(expected)}, got {sorted(columns)}"
            )
        segments.append(_check_segment(Segment(stream, seq, kind, ts, columns), where))
    if offset != len(view):
        raise WireError(f"{len(view) - offset} trailing bytes after the last column")
    return Batch(sender=sender, epoch=epoch, segments=segments, monitor=monitor)


def _decode_column(data: memoryview, dtype: str, shape: list[Any], where: str) -> Column:
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise WireError(f"{where}: shape must be a list of non-negative integers, got {shape}")
    if dtype == "str":
        if len(shape) != 1:
            raise WireError(f"{where}: string columns are one-dimensional")
        n = shape[0]
        head = (n + 1) * 4
        if len(data) < head:
            raise WireError(f"{where}: {len(data)} bytes cannot hold {n + 1} offsets")
        offsets = np.frombuffer(data[:head], dtype="<u4")
        blob = bytes(data[head:])
        if (
            offsets[0] != 0
            or offsets[-1] != len(blob)
            or (np.diff(offsets.astype(np.int64)) < 0).any()
        ):
            raise WireError(
                f"{where}: string offsets are inconsistent with the {len(blob)}-byte blob"
            )
        try:
            text = blob.decode()
        except UnicodeDecodeError:
            raise WireError(f"{where}: strings are not valid UTF-8") from None
        if len(text) == len(blob):  # ASCII: byte offsets are character offsets
            return [text[offsets[j] : offsets[j + 1]] for j in range(n)]
        return [blob[offsets[j] : offsets[j + 1]].decode() for j in range(n)]
    if dtype not in _DTYPES:
        raise WireError(f"{where}: unknown dtype {dtype!r}; expected f8, f4 or str")
    dt = _DTYPES[dtype]
    count = int(np.prod(shape))
    if count * dt.itemsize != len(data):
        raise WireError(
            f"{where}: shape {shape} of {dtype} needs {count * dt.itemsize} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dt).reshape(shape)


def from_json(obj: Any) -> Batch:
    """Return the batch in a JSON document; raise :class:`WireError` naming what is wrong."""
    if not isinstance(obj, dict):
        raise WireError("batch must be a JSON object")
    sender = _require(obj, "sender", str, "batch")
    epoch = _require(obj, "epoch", int, "batch")
    if not sender:
        raise WireError("batch: field 'sender' must not be empty")
    raw_segments = _require(obj, "segments", list, "batch")
    segments = []
    for i, raw in enumerate(raw_segments):
        stream, seq, kind, ts, where = _segment_header(raw, i)
        cols = _require(raw, "columns", dict, where)
        expected = KINDS[kind]
        if sorted(cols) != sorted(expected):
            raise WireError(
                f"{where}: kind {kind!r} needs columns {list(expected)}, got {sorted(cols)}"
            )
        columns: dict[str, Column] = {}
        for name, values in cols.items():
            if not isinstance(values, list):
                raise WireError(f"{where} column {name!r}: must be a list")
            columns[name] = _json_column(values, name, kind, f"{where} column {name!r}")
        segments.append(_check_segment(Segment(stream, seq, kind, ts, columns), where))
    return Batch(sender=sender, epoch=epoch, segments=segments, monitor=str(obj.get("monitor", "")))


def _json_column(values: list[Any], name: str, kind: str, where: str) -> Column:
    if name == "id" or (values and all(isinstance(x, str) for x in values)):
        if not all(isinstance(x, str) for x in values):
            raise WireError(f"{where}: mixes strings with other values")
        return list(values)
    try:
        arr = np.asarray(values, dtype="<f8")
    except (TypeError, ValueError):
        raise WireError(f"{where}: values must be all numbers or all strings") from None
    if kind == KIND_EMBEDDING and arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    return arr


def values_column(values: Sequence[Any] | np.ndarray) -> Column:
    """Return ``values`` as a wire column: float64 array if numeric, else a list of str."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"a column must be one-dimensional, got shape {values.shape}")
        if values.dtype.kind in "fiu":
            # Always a copy: the caller may reuse its buffer after emit returns.
            return np.array(values, dtype="<f8", copy=True)
        return [str(x) for x in values.tolist()]
    seq = values if isinstance(values, list) else list(values)
    if not seq:
        return np.empty(0, dtype="<f8")
    if all(type(x) in _NUMBER_TYPES for x in seq):  # exact types: fast, and bool/str stay out
        return np.array(seq, dtype="<f8")
    if all(
        isinstance(x, (int, float, np.number)) and not isinstance(x, (bool, np.bool_)) for x in seq
    ):
        return np.array(seq, dtype="<f8")
    return [x if type(x) is str else str(x) for x in seq]


_NUMBER_TYPES = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})
