"""The write-ahead log: every state change of a shard, appended before it is acknowledged.

Records are framed ``u32 length | u32 crc32 | u64 lsn | u8 type | payload`` in
segment files ``wal-<first lsn>.log``; the CRC covers lsn, type and payload, so a
torn tail (power loss in the middle of a write) is detected on open and cut off.
A record is *written* by one ``os.write`` of the whole frame: once ``append``
returns, the record survives the death of the process (``kill -9``), because it is
in the kernel's page cache. Whether it survives the death of the machine depends on
the fsync policy:

- ``always``: ``sync(lsn)`` fsyncs before the batch is acknowledged. Concurrent
  requests share one fsync (group commit), so the cost per batch falls under load.
- ``interval``: a background thread fsyncs every ``fsync_interval`` seconds;
  acknowledged batches from the last interval can be lost if the node dies.
- ``never``: the kernel writes back when it likes (tests, throw-away shards).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

log = logging.getLogger("driftwarden.worker.wal")

FsyncPolicy = Literal["always", "interval", "never"]

_FRAME = struct.Struct("<IIQB")  # length of (lsn|type|payload), crc32, lsn, type
_CRC_OFFSET = 8  # the CRC covers the frame from the lsn on
MAX_RECORD_BYTES = 1 << 30


class WalError(RuntimeError):
    """The log is damaged in a way that loses acknowledged data; the message says where."""


def _segment_name(first_lsn: int) -> str:
    return f"wal-{first_lsn:020d}.log"


def _segment_lsn(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


class WriteAheadLog:
    """An append-only, segmented, checksummed log of (type, payload) records."""

    def __init__(
        self,
        directory: str | Path,
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval: float = 0.05,
        segment_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync policy must be always, interval or never, got {fsync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd: int | None = None
        self._segment_path: Path | None = None
        self._segment_size = 0
        self._next_lsn = 1
        self._written_lsn = 0
        self._durable_lsn = 0
        self._closed = False
        self._recover_tail()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if fsync == "interval":
            self._syncer = threading.Thread(target=self._sync_loop, name="wal-fsync", daemon=True)
            self._syncer.start()

    # ------------------------------------------------------------------ opening

    def segments(self) -> list[Path]:
        """Return the segment files, oldest first."""
        return sorted(self.directory.glob("wal-*.log"), key=_segment_lsn)

    def _recover_tail(self) -> None:
        """Find the last valid record; cut a torn tail off the newest segment."""
        segments = self.segments()
        if not segments:
            return
        last = segments[-1]
        end, last_lsn = _scan_valid(last)
        size = last.stat().st_size
        if end < size:
            log.warning(
                "WAL segment %s: %d bytes after the last valid record at offset %d are a torn "
                "write from a crash; cutting them off (they were never acknowledged)",
                last,
                size - end,
                end,
            )
            with open(last, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        if last_lsn == 0:  # an empty newest segment: its name says where the log goes on
            last_lsn = _segment_lsn(last) - 1
        self._next_lsn = last_lsn + 1
        self._written_lsn = self._durable_lsn = last_lsn

    # ------------------------------------------------------------------ writing

    @property
    def next_lsn(self) -> int:
        return self._next_lsn

    @property
    def written_lsn(self) -> int:
        return self._written_lsn

    @property
    def durable_lsn(self) -> int:
        return self._durable_lsn

    def append(self, rtype: int, payload: bytes) -> int:
        """Write one record (one ``os.write``); return its lsn."""
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        with self._write_lock:
            if self._closed:
                raise WalError("the write-ahead log is closed")
            if self._fd is None or self._segment_size >= self.segment_bytes:
                self._rotate()
            lsn = self._next_lsn
            body = struct.pack("<QB", lsn, rtype)
            crc = zlib.crc32(payload, zlib.crc32(body))
            frame = b"".join([struct.pack("<II", len(body) + len(payload), crc), body, payload])
            assert self._fd is not None
            view = memoryview(frame)
            try:
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError:
                # A partial frame (disk full) would end the log on replay and hide the
                # records after it: cut it off so the log stays a clean prefix.
                os.ftruncate(self._fd, self._segment_size)
                raise
            self._segment_size += len(frame)
            self._next_lsn = lsn + 1
            self._written_lsn = lsn
            if self.fsync == "never":
                self._durable_lsn = lsn
            return lsn

    def _rotate(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)  # a finished segment is always durable
            os.close(self._fd)
        path = self.directory / _segment_name(self._next_lsn)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segment_path = path
        self._segment_size = os.fstat(self._fd).st_size
        _fsync_dir(self.directory)

    def sync(self, lsn: int | None = None) -> None:
        """Block until every record up to ``lsn`` (default: all written) is on disk."""
        target = self._written_lsn if lsn is None else lsn
        if self._durable_lsn >= target:
            return
        # Whoever holds the lock fsyncs for everyone queued behind it (group commit).
        with self._sync_lock:
            if self._durable_lsn >= target:
                return
            with self._write_lock:
                fd, upto = self._fd, self._written_lsn
            if fd is not None:
                try:
                    os.fsync(fd)
                except OSError:
                    if not self._closed:
                        raise
            self._durable_lsn = max(self._durable_lsn, upto)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            try:
                self.sync()
            except OSError:
                log.exception("WAL fsync failed; acknowledged data since the last fsync is at risk")

    def close(self) -> None:
        """Fsync and close the log."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        with self._write_lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            self._closed = True
            self._durable_lsn = self._written_lsn

    # ------------------------------------------------------------------ reading

    def replay(self, after_lsn: int = 0) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(lsn, type, payload)`` of every record with lsn > ``after_lsn``."""
        segments = self.segments()
        for i, path in enumerate(segments):
            nxt = _segment_lsn(segments[i + 1]) if i + 1 < len(segments) else None
            if nxt is not None and nxt <= after_lsn + 1:
                continue  # every record of this segment is older
            yield from _read_segment(path, after_lsn, last=nxt is None)

    def truncate_before(self, lsn: int) -> int:
        """Delete segments whose records are all older than ``lsn``; return how many."""
        segments = self.segments()
        removed = 0
        for i, path in enumerate(segments[:-1]):  # never the segment being written
            if _segment_lsn(segments[i + 1]) <= lsn:
                path.unlink()
                removed += 1
        if removed:
            _fsync_dir(self.directory)
        return removed

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.segments())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _frames(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """Yield ``(end offset, lsn, type, payload)`` of each valid frame; stop at damage."""
    off = 0
    n = len(data)
    while off + _FRAME.size <= n:
        length, crc, lsn, rtype = _FRAME.unpack_from(data, off)
        end = off + 8 + length
        if length < 9 or end > n:
            return
        if zlib.crc32(data[off + _CRC_OFFSET : end]) != crc:
            return
        yield end, lsn, rtype, data[off + _FRAME.size : end]
        off = end


def _scan_valid(path: Path) -> tuple[int, int]:
    end, lsn = 0, 0
    for end, lsn, _, _ in _frames(path.read_bytes()):  # noqa: B007 (the last frame is the answer)
        pass
    return end, lsn


def _read_segment(path: Path, after_lsn: int, *, last: bool) -> Iterator[tuple[int, int, bytes]]:
    data = path.read_bytes()
    end = 0
    for end, lsn, rtype, payload in _frames(data):  # noqa: B007 (end: where the valid frames stop)
        if lsn > after_lsn:
            yield lsn, rtype, payload
    if end != len(data) and not last:
        raise WalError(
            f"WAL segment {path} is damaged at offset {end} of {len(data)} and is not the newest "
            "segment: acknowledged records after that point are lost. Restore the volume from a "
            "backup, or move the damaged segment aside to start from the last snapshot."
        )
