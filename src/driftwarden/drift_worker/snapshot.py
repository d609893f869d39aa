"""Snapshots: the whole shard state at one WAL position, written atomically and checksummed.

``snapshot-<lsn>.json`` holds the state after applying every record up to ``lsn``;
recovery loads the newest readable snapshot and replays the log after it. The file
is one header line ``DWS2 <sha256 of the body> <body length>`` and the JSON body, so
a flipped bit or a truncated file is detected before anything of it is used. A
snapshot is written to a temporary file, fsynced, renamed into place and the
directory fsynced, so a crash leaves either the old or the new snapshot, never a
half-written one; a write that fails (volume full) removes its temporary file. The
two newest are kept (one to fall back to if the newest is damaged); older ones and
the WAL segments they cover are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftwarden.drift_worker.fileio import REAL, FileIO, fsync_dir, write_all

log = logging.getLogger("driftwarden.worker.snapshot")

KEEP = 2
FORMAT = 2
MAGIC = b"DWS2"


class SnapshotError(ValueError):
    """A snapshot file that cannot be trusted; the message says what is wrong with it."""


def _lsn_of(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def snapshots(directory: Path) -> list[Path]:
    """Return snapshot files, newest first."""
    return sorted(directory.glob("snapshot-*.json"), key=_lsn_of, reverse=True)


def encode(lsn: int, state: dict[str, Any]) -> bytes:
    """Return the file content of a snapshot (header line with checksum, then JSON)."""
    body = json.dumps(
        {"format": FORMAT, "lsn": lsn, "state": state}, separators=(",", ":"), allow_nan=False
    ).encode()
    return b"%s %s %d\n" % (MAGIC, hashlib.sha256(body).hexdigest().encode(), len(body)) + body


def decode(data: bytes) -> tuple[int, dict[str, Any]]:
    """Return ``(lsn, state)`` of a snapshot's bytes; raise :class:`SnapshotError` if damaged."""
    if data.startswith(b"{"):
        return _decode_unchecked(data)
    if not data.startswith(MAGIC + b" "):
        raise SnapshotError("no DWS2 header (not a snapshot, or its first bytes are damaged)")
    header, sep, body = data.partition(b"\n")
    parts = header.split(b" ")
    if not sep or len(parts) != 3 or not parts[2].isdigit():
        raise SnapshotError("the header line is damaged")
    digest, length = parts[1].decode(errors="replace"), int(parts[2])
    if len(body) != length:
        raise SnapshotError(
            f"the body has {len(body)} bytes, the header says {length} (truncated?)"
        )
    if hashlib.sha256(body).hexdigest() != digest:
        raise SnapshotError("the body does not match its sha256 checksum (damaged on disk)")
    doc = json.loads(body)
    if doc.get("format") != FORMAT:
        raise SnapshotError(f"unknown snapshot format {doc.get('format')!r}")
    return int(doc["lsn"]), doc["state"]


def _decode_unchecked(data: bytes) -> tuple[int, dict[str, Any]]:
    """Format 1 (before checksums): accepted so an upgraded shard keeps its state."""
    doc = json.loads(data)
    if doc.get("format") != 1:
        raise SnapshotError(f"unknown snapshot format {doc.get('format')!r}")
    log.warning("snapshot of lsn %s has no checksum (format 1); the next one will", doc.get("lsn"))
    return int(doc["lsn"]), doc["state"]


def write_snapshot(directory: Path, lsn: int, state: dict[str, Any], *, io: FileIO = REAL) -> Path:
    """Write ``state`` (taken after record ``lsn``) atomically; return its path.

    Raises ``OSError`` with nothing left behind if the volume cannot take it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"snapshot-{lsn:020d}.json"
    tmp = directory / f".snapshot-{lsn:020d}.json.tmp"
    data = encode(lsn, state)
    try:
        fd = io.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(io, fd, data)
            io.fsync(fd)
        finally:
            io.close(fd)
        io.replace(tmp, final)
        fsync_dir(io, directory)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    for old in snapshots(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    return final


@dataclass
class Loaded:
    """What :func:`load_latest` found: the newest good snapshot, and every damaged one."""

    lsn: int = 0
    state: dict[str, Any] | None = None
    damaged: list[str] = field(default_factory=list)


def load_latest(directory: Path) -> Loaded:
    """Return the newest snapshot that passes its checksum, and the damaged ones newer than it."""
    for tmp in directory.glob(".snapshot-*.tmp"):
        tmp.unlink(missing_ok=True)  # an interrupted write; the rename never happened
    out = Loaded()
    for path in snapshots(directory):
        try:
            lsn, state = decode(path.read_bytes())
            if lsn != _lsn_of(path):
                raise SnapshotError(f"it says lsn {lsn} but is named after lsn {_lsn_of(path)}")
            out.lsn, out.state = lsn, state
            return out
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("snapshot %s is damaged (%s); falling back to an older one", path, exc)
            out.damaged.append(f"{path.name}: {exc}")
    return out


def oldest_kept_lsn(directory: Path) -> int | None:
    """Return the lsn of the oldest snapshot kept (WAL before it is no longer needed)."""
    found = snapshots(directory)
    return _lsn_of(found[-1]) if found else None
