"""Snapshots: the whole shard state at one WAL position, written atomically.

``snapshot-<lsn>.json`` holds the state after applying every record up to ``lsn``;
recovery loads the newest readable snapshot and replays the log after it. A
snapshot is written to a temporary file, fsynced, renamed into place and the
directory fsynced, so a crash leaves either the old or the new snapshot, never a
half-written one. The two newest are kept (one to fall back to if the newest is
unreadable); older ones and the WAL segments they cover are deleted.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("driftwarden.worker.snapshot")

KEEP = 2
FORMAT = 1


def _lsn_of(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def snapshots(directory: Path) -> list[Path]:
    """Return snapshot files, newest first."""
    return sorted(directory.glob("snapshot-*.json"), key=_lsn_of, reverse=True)


def write_snapshot(directory: Path, lsn: int, state: dict[str, Any]) -> Path:
    """Write ``state`` (taken after record ``lsn``) atomically; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"snapshot-{lsn:020d}.json"
    tmp = directory / f".snapshot-{lsn:020d}.json.tmp"
    data = json.dumps(
        {"format": FORMAT, "lsn": lsn, "state": state}, separators=(",", ":"), allow_nan=False
    )
    with open(tmp, "wb") as f:
        f.write(data.encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for old in snapshots(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    return final


def load_latest(directory: Path) -> tuple[int, dict[str, Any]] | None:
    """Return ``(lsn, state)`` of the newest readable snapshot, or None if there is none."""
    for tmp in directory.glob(".snapshot-*.tmp"):
        tmp.unlink(missing_ok=True)  # an interrupted write; the rename never happened
    for path in snapshots(directory):
        try:
            doc = json.loads(path.read_bytes())
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown snapshot format {doc.get('format')!r}")
            return int(doc["lsn"]), doc["state"]
        except (OSError, ValueError, KeyError) as exc:
            log.error("snapshot %s is unreadable (%s); falling back to an older one", path, exc)
    return None


def oldest_kept_lsn(directory: Path) -> int | None:
    """Return the lsn of the oldest snapshot kept (WAL before it is no longer needed)."""
    found = snapshots(directory)
    return _lsn_of(found[-1]) if found else None
