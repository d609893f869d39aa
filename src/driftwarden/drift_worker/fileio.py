"""The file operations the WAL and the snapshot writer make, behind one small seam.

Production uses :data:`REAL` (the ``os`` calls themselves). The fault-injection
tests (``driftwarden.testing.faults``) swap in a subclass that fails or delays
chosen calls *before* delegating to these, so a fault travels through exactly the
code path a real ``EIO``/``ENOSPC`` would: the storage layer never knows which one
it has.
"""

from __future__ import annotations

import os


class FileIO:
    """``open``/``write``/``fsync``/``ftruncate``/``replace`` as the storage layer uses them."""

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        os.replace(src, dst)


REAL = FileIO()


def write_all(io: FileIO, fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = io.write(fd, view)
        view = view[written:]


def fsync_dir(io: FileIO, directory: str | os.PathLike[str]) -> None:
    """Fsync a directory, so a file created or renamed in it survives a power loss."""
    fd = io.open(directory, os.O_RDONLY)
    try:
        io.fsync(fd)
    finally:
        io.close(fd)
