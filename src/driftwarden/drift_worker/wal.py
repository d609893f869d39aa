"""The write-ahead log: every state change of a shard, appended before it is acknowledged.

Records are framed ``u32 length | u32 crc32 | u64 lsn | u8 type | payload`` in
segment files ``wal-<first lsn>.log``; the CRC covers lsn, type and payload. LSNs
are consecutive across segments, so a gap or a repeat is damage too.
A record is *written* by one ``os.write`` of the whole frame: once ``append``
returns, the record survives the death of the process (``kill -9``), because it is
in the kernel's page cache. Whether it survives the death of the machine depends on
the fsync policy:

- ``always``: ``sync(lsn)`` fsyncs before the batch is acknowledged. Concurrent
  requests share one fsync (group commit), so the cost per batch falls under load.
- ``interval``: a background thread fsyncs every ``fsync_interval`` seconds;
  acknowledged batches from the last interval can be lost if the node dies.
- ``never``: the kernel writes back when it likes (tests, throw-away shards).

Fail-stop: a failed write is cut off (the log stays a clean prefix) and raised, so
the caller refuses the batch and may retry later (a full volume that gets space
back just works again). A failed *fsync* is different: Linux may have dropped the
dirty pages, and a later fsync can succeed without them, so the log is marked
failed for good (:class:`WalFailed` on every later ``append``/``sync``) and the
process must restart and recover from what is really on disk.

On open, damage at the end of the newest segment is told apart from damage to
acknowledged records: a short last frame, or one whose unwritten part reads as
zeros up to the end of the file, is a write torn by a power loss (never
acknowledged with ``fsync=always``) and is cut off with a WARNING; anything else
(a complete frame with a bad checksum, valid records after a bad one, LSNs out of
order) raises :class:`WalError` naming the file and offset, and the shard does not
start.
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

from driftwarden.drift_worker.fileio import REAL, FileIO, fsync_dir, write_all

log = logging.getLogger("driftwarden.worker.wal")

FsyncPolicy = Literal["always", "interval", "never"]

_FRAME = struct.Struct("<IIQB")  # length of (lsn|type|payload), crc32, lsn, type
_CRC_OFFSET = 8  # the CRC covers the frame from the lsn on
_MIN_LENGTH = 9  # lsn + type
MAX_RECORD_BYTES = 1 << 30
# A power loss leaves whole unwritten blocks; a zero run this long up to the end of
# the file, starting on a block boundary, is read as "never written".
_SECTOR = 512


class WalError(RuntimeError):
    """The log is damaged in a way that loses acknowledged data; the message says where."""


class WalFailed(OSError):
    """An fsync failed: nothing written since the last good fsync may be on disk.

    Sticky for the life of the process: acknowledging anything after it would rest
    on records that may be gone. The process must restart and recover from disk.
    """


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
        io: FileIO = REAL,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync policy must be always, interval or never, got {fsync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.io = io
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd: int | None = None
        self._segment_path: Path | None = None
        self._segment_size = 0
        self._next_lsn = 1
        self._written_lsn = 0
        self._durable_lsn = 0
        self._closed = False
        self.failed: WalFailed | None = None
        self.write_errors = 0
        self.fsync_errors = 0
        self.last_error: str | None = None  # the latest storage error, cleared by a good write
        self._recover_tail()
        self._sync_existing()
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
        """Find the last valid record; cut a torn tail off the newest segment, refuse damage."""
        segments = self.segments()
        if not segments:
            return
        last = segments[-1]
        data = last.read_bytes()
        end, last_lsn = _check_frames(last, data, _segment_lsn(last))
        if end < len(data):
            _refuse_unless_torn(last, data, end, last_lsn)
            log.warning(
                "WAL segment %s: %d bytes after the last valid record at offset %d are a write "
                "torn by a crash (short or never written); cutting them off (with fsync=always "
                "they were never acknowledged)",
                last,
                len(data) - end,
                end,
            )
            with open(last, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        if last_lsn == 0:  # an empty newest segment: its name says where the log goes on
            last_lsn = _segment_lsn(last) - 1
        self._next_lsn = last_lsn + 1
        self._written_lsn = self._durable_lsn = last_lsn

    def _sync_existing(self) -> None:
        """Fsync every segment found at start-up before anything in it counts as durable.

        A previous process may have written records whose fsync failed (it then
        stopped); their pages can still be in the kernel's cache, so recovery reads
        and applies them, and a retried batch would be acknowledged as their
        duplicate. Making them durable now, before the first acknowledgement, keeps
        "duplicates only once the original is durable" true across restarts.
        """
        for path in self.segments():
            fd = self.io.open(path, os.O_RDONLY)
            try:
                self.io.fsync(fd)
            finally:
                self.io.close(fd)
        if self.segments():
            fsync_dir(self.io, self.directory)

    def continue_after(self, lsn: int) -> None:
        """Make the next record's lsn exceed ``lsn`` (a snapshot's): LSNs never go backwards.

        Only a log that lost its fsynced tail can be behind a snapshot, which the
        policy ``never`` allows on a node crash; the log then goes on from a new
        segment named after the snapshot, so a later recovery skips nothing.
        """
        with self._write_lock:
            if self._next_lsn > lsn:
                return
            if self._fd is not None:
                self.io.close(self._fd)
                self._fd = None
            self._next_lsn = lsn + 1
            self._written_lsn = self._durable_lsn = lsn

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
        """Write one record (one ``os.write``); return its lsn.

        Raises ``OSError`` (nothing of the record is left in the log; retry later)
        or :class:`WalFailed` (the log is unusable until the process restarts).
        """
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        with self._write_lock:
            if self._closed:
                raise WalError("the write-ahead log is closed")
            if self.failed is not None:
                raise self.failed
            try:
                if self._fd is None or self._segment_size >= self.segment_bytes:
                    self._rotate()
            except WalFailed:
                raise
            except OSError as exc:
                self._write_failed(exc)
                raise
            lsn = self._next_lsn
            body = struct.pack("<QB", lsn, rtype)
            crc = zlib.crc32(payload, zlib.crc32(body))
            frame = b"".join([struct.pack("<II", len(body) + len(payload), crc), body, payload])
            assert self._fd is not None
            try:
                write_all(self.io, self._fd, frame)
            except OSError as exc:
                self._write_failed(exc)
                # A partial frame (disk full) would end the log on replay and hide the
                # records after it: cut it off so the log stays a clean prefix.
                try:
                    self.io.ftruncate(self._fd, self._segment_size)
                except OSError as cut:
                    self._fail(
                        f"cannot cut a partly written record off {self._segment_path}: {cut}"
                    )
                raise
            self._segment_size += len(frame)
            self._next_lsn = lsn + 1
            self._written_lsn = lsn
            self.last_error = None
            if self.fsync == "never":
                self._durable_lsn = lsn
            return lsn

    def _write_failed(self, exc: OSError) -> None:
        self.write_errors += 1
        self.last_error = f"write to {self._segment_path or self.directory}: {exc}"

    def _fail(self, reason: str) -> WalFailed:
        if self.failed is None:
            self.failed = WalFailed(
                f"write-ahead log {self.directory} failed: {reason}; records since the last good "
                "fsync may not be on disk, so this process acknowledges nothing more and must "
                "restart to recover from what the volume really holds"
            )
            self.last_error = reason
            log.error("%s", self.failed)
        return self.failed

    def _rotate(self) -> None:
        # Open the next segment first: if that fails (no space for an inode), the
        # current one stays open and nothing changed.
        path = self.directory / _segment_name(self._next_lsn)
        fd = self.io.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        old, old_path = self._fd, self._segment_path
        if old is not None:
            try:
                self.io.fsync(old)  # a finished segment is always durable
            except OSError as exc:
                self.fsync_errors += 1
                self.io.close(fd)
                raise self._fail(f"fsync of {old_path}: {exc}") from exc
            self.io.close(old)
        self._fd = fd
        self._segment_path = path
        self._segment_size = os.fstat(fd).st_size
        try:
            fsync_dir(self.io, self.directory)
        except OSError as exc:
            self.fsync_errors += 1
            raise self._fail(f"fsync of directory {self.directory}: {exc}") from exc

    def sync(self, lsn: int | None = None) -> None:
        """Block until every record up to ``lsn`` (default: all written) is on disk.

        Raises :class:`WalFailed` if it never can be (this or an earlier fsync failed).
        """
        target = self._written_lsn if lsn is None else lsn
        if self.failed is not None:
            raise self.failed
        if self._durable_lsn >= target:
            return
        # Whoever holds the lock fsyncs for everyone queued behind it (group commit).
        with self._sync_lock:
            if self.failed is not None:
                raise self.failed
            if self._durable_lsn >= target:
                return
            with self._write_lock:
                fd, upto, path = self._fd, self._written_lsn, self._segment_path
            if fd is not None:
                try:
                    self.io.fsync(fd)
                except OSError as exc:
                    if self._closed:
                        return
                    self.fsync_errors += 1
                    raise self._fail(f"fsync of {path}: {exc}") from exc
            self._durable_lsn = max(self._durable_lsn, upto)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            try:
                self.sync()
            except OSError:
                return  # failed for good; the service sees wal.failed and stops

    def close(self) -> None:
        """Fsync (unless the log failed) and close the log."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        with self._write_lock:
            if self._fd is not None:
                try:
                    if self.failed is None:
                        self.io.fsync(self._fd)
                        self._durable_lsn = self._written_lsn
                finally:
                    self.io.close(self._fd)
                    self._fd = None
            self._closed = True

    # ------------------------------------------------------------------ reading

    def replay(self, after_lsn: int = 0) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(lsn, type, payload)`` of every record with lsn > ``after_lsn``.

        Raises :class:`WalError` if records the caller needs are missing or damaged.
        """
        segments = self.segments()
        expected = None  # the next lsn, once known
        for i, path in enumerate(segments):
            nxt = _segment_lsn(segments[i + 1]) if i + 1 < len(segments) else None
            if nxt is not None and nxt <= after_lsn + 1:
                continue  # every record of this segment is older
            first = _segment_lsn(path)
            if expected is None and first > after_lsn + 1:
                raise WalError(
                    f"WAL segment {path} starts at lsn {first} but recovery needs the records from "
                    f"lsn {after_lsn + 1} on (after the snapshot): records {after_lsn + 1}..{first - 1} "
                    "are missing, so acknowledged data would be lost. Restore the volume from a backup."
                )
            if expected is not None and first != expected:
                raise WalError(
                    f"WAL segment {path} starts at lsn {first}, but the previous segment ends at lsn "
                    f"{expected - 1}: the log has a gap. Restore the volume from a backup."
                )
            data = path.read_bytes()
            end, last = _check_frames(path, data, first)
            if end != len(data):
                raise WalError(
                    f"WAL segment {path} is damaged at offset {end} of {len(data)}: acknowledged "
                    "records after that point would be lost. Restore the volume from a backup, or "
                    "move the damaged segment aside to start from the last snapshot."
                )
            for _end, lsn, rtype, payload in _frames(data):
                if lsn > after_lsn:
                    yield lsn, rtype, payload
            expected = (last if last else first - 1) + 1

    def truncate_before(self, lsn: int) -> int:
        """Delete segments whose records are all older than ``lsn``; return how many."""
        segments = self.segments()
        removed = 0
        for i, path in enumerate(segments[:-1]):  # never the segment being written
            if _segment_lsn(segments[i + 1]) <= lsn:
                path.unlink()
                removed += 1
        if removed:
            fsync_dir(self.io, self.directory)
        return removed

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.segments())


def _frames(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """Yield ``(end offset, lsn, type, payload)`` of each valid frame; stop at damage."""
    off = 0
    n = len(data)
    while off + _FRAME.size <= n:
        length, crc, lsn, rtype = _FRAME.unpack_from(data, off)
        end = off + 8 + length
        if length < _MIN_LENGTH or end > n:
            return
        if zlib.crc32(data[off + _CRC_OFFSET : end]) != crc:
            return
        yield end, lsn, rtype, data[off + _FRAME.size : end]
        off = end


def _check_frames(path: Path, data: bytes, first_lsn: int) -> tuple[int, int]:
    """Return ``(end of the valid frames, last lsn)``; raise if their LSNs are not consecutive."""
    end, expected, last = 0, first_lsn, 0
    for frame_end, lsn, _, _ in _frames(data):
        if lsn != expected:
            raise WalError(
                f"WAL segment {path}: the record at offset {end} has lsn {lsn}, expected {expected}: "
                "records are out of order or from another log. Restore the volume from a backup."
            )
        end, last, expected = frame_end, lsn, lsn + 1
    return end, last


def _refuse_unless_torn(path: Path, data: bytes, off: int, last_lsn: int) -> None:
    """Raise :class:`WalError` unless the bytes from ``off`` on are a torn (unacknowledged) write."""
    where = f"WAL segment {path} is damaged at offset {off} of {len(data)}"
    later = _valid_frame_after(data, off, last_lsn)
    if later is not None:
        raise WalError(
            f"{where}, and a valid record (lsn {later[1]}) follows at offset {later[0]}: an "
            "acknowledged record in the middle of the log is corrupt and every record after it would "
            "be lost. Restore the volume from a backup; to give up the records from that offset on, "
            f"`truncate -s {off} {path}` and restart."
        )
    if _looks_torn(data, off):
        return
    raise WalError(
        f"{where}: the record there is complete but fails its checksum (a flipped bit on disk, not a "
        "torn write), and it may have been acknowledged. Restore the volume from a backup; if you "
        f"accept losing that record, `truncate -s {off} {path}` and restart."
    )


def _looks_torn(data: bytes, off: int) -> bool:
    tail = data[off:]
    if len(tail) < _FRAME.size or not tail.strip(b"\0"):
        return True  # a short header, or the file grew but nothing was written into it
    length, crc, _lsn, _type = _FRAME.unpack_from(data, off)
    if length >= _MIN_LENGTH and off + 8 + length > len(data):
        # Short: the write stopped early, unless the bytes that are there are the whole
        # record with a damaged length field.
        return zlib.crc32(data[off + _CRC_OFFSET :]) != crc
    # Complete but failing its checksum: torn only if it ends in whole blocks never
    # written (zeros from a block boundary to the end of the file).
    zeros_from = len(data.rstrip(b"\0"))
    boundary = -(-zeros_from // _SECTOR) * _SECTOR
    return len(data) - boundary >= _SECTOR


def _valid_frame_after(data: bytes, off: int, last_lsn: int) -> tuple[int, int] | None:
    """Return ``(offset, lsn)`` of a valid frame that starts after ``off``, if any.

    Looks for the next few LSNs' bytes (a C-speed search) instead of trying every offset.
    """
    n = len(data)
    for lsn in range(last_lsn + 1, last_lsn + 65):
        pattern = struct.pack("<Q", lsn)
        at = data.find(pattern, off + 1)
        while at != -1:
            start = at - _CRC_OFFSET
            if start > off:
                length, crc, _, _ = _FRAME.unpack_from(data, start)
                end = start + 8 + length
                intact = length >= _MIN_LENGTH and end <= n
                if intact and zlib.crc32(data[start + _CRC_OFFSET : end]) == crc:
                    return start, lsn
            at = data.find(pattern, at + 1)
    return None
