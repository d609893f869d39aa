"""Whose data directory this is: a lock against a second process, an identity against a wrong volume.

Two processes appending to one WAL interleave records and corrupt it; a volume of
shard 3 mounted on shard 1 (a restored or re-bound PVC) would serve shard 3's
streams as shard 1's. So a shard takes an exclusive lock on ``<data_dir>/LOCK``
for as long as it runs, and ``<data_dir>/shard.json`` records the monitor and the
ordinal the directory belongs to, written when the directory is first used and
checked at every start.

The lock is a POSIX record lock (``fcntl.lockf``): it excludes other processes,
including on another node where the filesystem supports POSIX locks (NFSv4, most
CSI drivers), and the kernel drops it when the process dies, even by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

LOCK_FILE = "LOCK"
IDENTITY_FILE = "shard.json"


class DataDirError(ValueError):
    """This process must not use this data directory; the message says why and what to do."""


class DataDirLock:
    """An exclusive lock on a data directory, held until :meth:`release` or process exit."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        directory.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(self._fd)
            os.close(self._fd)
            self._fd = None
            raise DataDirError(
                f"data directory {directory} is in use by another process ({holder}); two shards "
                "writing one write-ahead log would corrupt it. Stop the other process, or give this "
                "one its own volume (a StatefulSet gives every pod its own PVC)."
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing drops the lock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"


def check_identity(directory: Path, monitor: str, ordinal: int) -> bool:
    """Raise :class:`DataDirError` unless ``directory`` is shard ``ordinal``'s of ``monitor``.

    Returns False when the directory records no owner yet (new, or from before
    identities were recorded); :func:`record_identity` then writes it.
    """
    path = directory / IDENTITY_FILE
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise DataDirError(
            f"{path} is unreadable ({exc}): cannot tell whose state {directory} holds. Restore it "
            f'as {{"monitor": "<namespace>/<name>", "ordinal": <n>}} if you know, else give the '
            "shard an empty volume."
        ) from None
    check_owner(directory, monitor, ordinal, doc.get("monitor"), doc.get("ordinal"))
    return True


def check_owner(
    directory: Path, monitor: str, ordinal: int, found_monitor: object, found_ordinal: object
) -> None:
    """Raise :class:`DataDirError` if the recorded owner is another monitor or shard."""
    if found_monitor is not None and found_monitor != monitor:
        raise DataDirError(
            f"{directory} holds the state of monitor {found_monitor!r} but this worker serves "
            f"{monitor!r}; give the shard an empty volume"
        )
    if found_ordinal is not None and found_ordinal != ordinal:
        raise DataDirError(
            f"{directory} holds the state of shard {found_ordinal} of {monitor}, but this is "
            f"shard {ordinal}: serving it here would put another shard's streams under this "
            "ordinal. Mount the volume on its own shard (PVC data-<statefulset>-<ordinal>), or give "
            "this shard an empty volume."
        )


def record_identity(directory: Path, monitor: str, ordinal: int) -> None:
    """Write ``shard.json`` (atomically) naming the owner of ``directory``."""
    path = directory / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"monitor": monitor, "ordinal": ordinal}))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
