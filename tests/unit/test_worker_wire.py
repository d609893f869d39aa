"""The ingest wire format: exact round trips and decode errors that name the problem."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.ingest import wire

floats = st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=30)
texts = st.lists(st.text(max_size=8), max_size=30)


@st.composite
def batches(draw: st.DrawFn) -> wire.Batch:
    segments = []
    for i in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(sorted(wire.KINDS)))
        if kind == wire.KIND_EMBEDDING:
            rows, dim = draw(st.integers(0, 4)), draw(st.integers(1, 3))
            cols: dict[str, wire.Column] = {
                "v": np.arange(rows * dim, dtype=np.float32).reshape(rows, dim)
            }
        else:
            v = draw(st.one_of(floats.map(lambda x: np.asarray(x, dtype="<f8")), texts))
            cols = {"v": v}
            if kind in (wire.KIND_PREDICTIONS, wire.KIND_LABELS):
                cols["id"] = [f"id-{j}-é" for j in range(len(v))]
        segments.append(
            wire.Segment(f"s{i}", draw(st.integers(0, 2**53)), kind, draw(st.floats(0, 2e9)), cols)
        )
    return wire.Batch(
        draw(st.text(min_size=1, max_size=10)), draw(st.integers(0, 1000)), segments, "ns/m"
    )


def same(a: wire.Batch, b: wire.Batch) -> bool:
    if (a.sender, a.epoch, a.monitor, len(a.segments)) != (
        b.sender,
        b.epoch,
        b.monitor,
        len(b.segments),
    ):
        return False
    for x, y in zip(a.segments, b.segments, strict=True):
        if (x.stream, x.seq, x.kind, x.ts, sorted(x.columns)) != (
            y.stream,
            y.seq,
            y.kind,
            y.ts,
            sorted(y.columns),
        ):
            return False
        for k in x.columns:
            cx, cy = x.columns[k], y.columns[k]
            if isinstance(cx, np.ndarray):
                if not (
                    isinstance(cy, np.ndarray)
                    and cx.shape == cy.shape
                    and cx.tobytes() == cy.tobytes()
                ):
                    return False
            elif list(cx) != list(cy):
                return False
    return True


@settings(max_examples=80, deadline=None)
@given(batch=batches())
def test_binary_round_trip_is_exact(batch: wire.Batch) -> None:
    assert same(wire.decode(wire.encode(batch)), batch)


def test_json_form_decodes_to_the_same_batch() -> None:
    batch = wire.Batch(
        "s",
        3,
        [
            wire.Segment("feature:a", 1, "values", 5.0, {"v": np.array([0.1, 2.5])}),
            wire.Segment("feature:c", 2, "values", 5.0, {"v": ["x", "y"]}),
            wire.Segment(
                "performance", 3, "labels", 6.0, {"id": ["1", "2"], "v": np.array([1.0, 0.0])}
            ),
        ],
        "ns/m",
    )
    assert same(wire.from_json(json.loads(json.dumps(wire.to_json(batch)))), batch)


def _header(body: bytes) -> dict:
    n = struct.unpack_from("<I", body, 4)[0]
    return json.loads(body[8 : 8 + n])


def _with_header(body: bytes, header: dict) -> bytes:
    n = struct.unpack_from("<I", body, 4)[0]
    raw = json.dumps(header).encode()
    return body[:4] + struct.pack("<I", len(raw)) + raw + body[8 + n :]


GOOD = wire.encode(
    wire.Batch("s", 1, [wire.Segment("feature:a", 1, "values", 1.0, {"v": np.array([1.0, 2.0])})])
)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda h: h.pop("sender"), "missing field 'sender'"),
        (lambda h: h.update(epoch="1"), "field 'epoch' must be int"),
        (lambda h: h["segments"][0].update(kind="weird"), "unknown kind 'weird'"),
        (lambda h: h["segments"][0]["columns"][0].update(dtype="i2"), "unknown dtype 'i2'"),
        (lambda h: h["segments"][0]["columns"][0].update(shape=[3]), "needs 24 bytes, got 16"),
        (lambda h: h["segments"][0]["columns"][0].update(nbytes=99), "declares 99 bytes"),
        (lambda h: h["segments"][0].update(seq=-1), "seq must be >= 0"),
        (lambda h: h["segments"][0]["columns"][0].update(name="w"), "needs columns ['v']"),
    ],
)
def test_decode_errors_name_the_field(edit, needle: str) -> None:
    header = _header(GOOD)
    edit(header)
    with pytest.raises(wire.WireError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        wire.decode(_with_header(GOOD, header))


def test_non_finite_values_are_refused_with_their_row() -> None:
    body = wire.encode(
        wire.Batch(
            "s", 1, [wire.Segment("feature:a", 1, "values", 1.0, {"v": np.array([1.0, np.nan])})]
        )
    )
    with pytest.raises(wire.WireError, match="non-finite value at row 1"):
        wire.decode(body)


def test_string_offsets_are_checked() -> None:
    body = bytearray(
        wire.encode(
            wire.Batch("s", 1, [wire.Segment("feature:c", 1, "values", 1.0, {"v": ["ab", "c"]})])
        )
    )
    n = struct.unpack_from("<I", body, 4)[0]
    struct.pack_into("<I", body, 8 + n + 4, 9)  # second offset beyond the blob
    with pytest.raises(wire.WireError, match="offsets are inconsistent"):
        wire.decode(bytes(body))


def test_values_column_types() -> None:
    assert wire.values_column([1, 2.5]).dtype == np.float64
    assert wire.values_column(["a", 1]) == ["a", "1"]
    with pytest.raises(ValueError, match="one-dimensional"):
        wire.values_column(np.ones((2, 2)))
