"""Storage faults for tests: a :class:`~driftwarden.drift_worker.fileio.FileIO` that fails on cue.

A worker started with ``DRIFTWARDEN_FAULT_INJECTION=<rules.json>`` routes the WAL's
and the snapshot writer's file operations through :class:`FaultInjectingIO`, which
raises the chosen ``OSError`` (or sleeps) *before* making the real call, so the
worker's own error handling runs exactly as for a real fault. The rules file is
re-read whenever it changes, so a test can start and stop a fault while the worker
runs::

    {"rules": [{"op": "fsync", "path": "wal", "errno": "EIO", "times": 1},
               {"op": "fsync", "delay_s": 3.0}],
     "durable_log": "/tmp/t/durable.tsv"}

- ``op``: ``write``, ``fsync``, ``open`` or ``replace``; ``path``: a substring of the
  file's path (default: any); ``errno``: a name from :mod:`errno`; ``delay_s``: sleep
  first; ``times``: how many calls the rule hits (default: all); ``partial``: a
  failing ``write`` first writes half its bytes, as a nearly full disk does.
- ``durable_log``: after every successful fsync of a file, ``<path>\\t<size>`` is
  appended; :func:`simulate_power_loss` cuts every WAL segment back to its last
  fsynced size, which is what a node crash leaves.

Refused inside a Kubernetes pod: this is a test harness, never a production switch.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from driftwarden.drift_worker.fileio import FileIO

ENV = "DRIFTWARDEN_FAULT_INJECTION"


class FaultInjectingIO(FileIO):
    """Real file operations, preceded by whatever the rules file says should go wrong."""

    def __init__(self, rules_path: Path) -> None:
        self.rules_path = Path(rules_path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._rules: list[dict[str, Any]] = []
        self._durable_log: Path | None = None
        self._paths: dict[int, str] = {}
        self._pending: dict[str, Any] | None = None  # a partial write's failure, due next call
        self._reload()

    def _reload(self) -> None:
        try:
            mtime = self.rules_path.stat().st_mtime_ns
        except FileNotFoundError:
            self._rules, self._mtime = [], None
            return
        if mtime == self._mtime:
            return
        doc = json.loads(self.rules_path.read_text() or "{}")
        self._rules = [dict(r) for r in doc.get("rules", [])]
        log = doc.get("durable_log")
        self._durable_log = Path(log) if log else None
        self._mtime = mtime

    def _fault(self, op: str, fd: int | None = None, path: Any = None) -> dict[str, Any] | None:
        where = str(path) if path is not None else self._paths.get(fd if fd is not None else -1, "")
        with self._lock:
            self._reload()
            for rule in self._rules:
                if rule.get("op") != op or rule.get("path", "") not in where:
                    continue
                times = rule.get("times")
                if times is not None:
                    if times <= 0:
                        continue
                    rule["times"] = times - 1
                return rule
        return None

    @staticmethod
    def _raise(rule: dict[str, Any], what: str) -> None:
        if rule.get("delay_s"):
            time.sleep(float(rule["delay_s"]))
        name = rule.get("errno")
        if name:
            code = getattr(errno, name)
            raise OSError(code, f"{os.strerror(code)} (injected into {what})")

    def open(self, path: Any, flags: int, mode: int = 0o644) -> int:
        rule = self._fault("open", path=path)
        if rule:
            self._raise(rule, f"open {path}")
        fd = super().open(path, flags, mode)
        self._paths[fd] = str(path)
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        rule = self._fault("write", fd)
        if rule:
            if rule.get("partial") and rule.get("errno") and len(data) > 1:
                self._pending = rule
                return super().write(fd, data[: len(data) // 2])
            self._raise(rule, f"write to {self._paths.get(fd)}")
        pending, self._pending = self._pending, None
        if pending:
            self._raise(pending, f"write to {self._paths.get(fd)}")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        rule = self._fault("fsync", fd)
        if rule:
            self._raise(rule, f"fsync of {self._paths.get(fd)}")
        super().fsync(fd)
        path = self._paths.get(fd)
        if self._durable_log is not None and path and os.path.isfile(path):
            size = os.fstat(fd).st_size
            with self._lock, open(self._durable_log, "a") as f:
                f.write(f"{path}\t{size}\n")

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        super().close(fd)

    def replace(self, src: Any, dst: Any) -> None:
        rule = self._fault("replace", path=dst)
        if rule:
            self._raise(rule, f"rename to {dst}")
        super().replace(src, dst)


def from_environment() -> FaultInjectingIO | None:
    """Return the fault layer named by ``DRIFTWARDEN_FAULT_INJECTION``, or None."""
    path = os.environ.get(ENV)
    if not path:
        return None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise RuntimeError(
            f"{ENV} is set inside a Kubernetes pod: storage fault injection is a test harness "
            "and is refused in a cluster; unset it"
        )
    return FaultInjectingIO(Path(path))


def write_rules(path: Path, rules: list[dict[str, Any]], durable_log: Path | None = None) -> None:
    """Replace the rules a running worker follows (atomically, so it never reads half a file)."""
    doc: dict[str, Any] = {"rules": rules}
    if durable_log is not None:
        doc["durable_log"] = str(durable_log)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def simulate_power_loss(durable_log: Path, wal_dir: Path) -> dict[str, int]:
    """Cut every WAL segment back to its last fsynced size; return the bytes cut per file.

    Run it only while the worker is stopped (after ``kill -9``). A segment never
    fsynced is emptied: its directory entry survives (that fsync happens at
    creation), its data does not.
    """
    durable: dict[str, int] = {}
    if durable_log.exists():
        for line in durable_log.read_text().splitlines():
            path, _, length = line.rpartition("\t")
            durable[path] = max(durable.get(path, 0), int(length))
    cut: dict[str, int] = {}
    for seg in sorted(wal_dir.glob("wal-*.log")):
        keep = durable.get(str(seg), 0)
        size = seg.stat().st_size
        if size > keep:
            os.truncate(seg, keep)
            cut[seg.name] = size - keep
    return cut
