"""Local processes: free ports, start in their own process group, health-wait, stop.

Each process runs in a new session (its own process group) so that stopping it also
stops whatever it spawned (uvicorn workers, shells), and its output goes to a log
file whose tail is quoted in every error about it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

log_tail_bytes = 4000


class ProcessError(RuntimeError):
    """A local process failed to start, died, or never became healthy."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port_block(count: int, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """Return the first port of ``count`` consecutive free ports.

    Drift-worker shards listen on ``base + ordinal`` so the sender's URL template
    (``{port}``) can address every shard, including ones added by a later rescale.
    """
    for _ in range(attempts):
        base = free_port(host)
        if base + count < 65536 and all(_is_free(base + i, host) for i in range(count)):
            return base
    raise ProcessError(f"found no {count} consecutive free TCP ports on {host}")


class ManagedProcess:
    """One child process with a log file, a health URL and a clean stop."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        health_url: str | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.health_url = health_url
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ManagedProcess:
        """Start the process (appending to its log file); return self."""
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(
                f"\n--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode()
            )
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        return self

    def log_tail(self) -> str:
        """Return the last few kilobytes of the process's log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - log_tail_bytes))
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"

    def wait_healthy(self, timeout: float) -> None:
        """Return once ``health_url`` answers 2xx; raise ProcessError with the log tail if not."""
        if self.health_url is None:
            return
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.running:
                    code = self._proc.returncode if self._proc else None
                    raise ProcessError(
                        f"{self.name} exited with status {code} before becoming healthy; "
                        f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(self.health_url)
                    if response.is_success:
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.2)
        raise ProcessError(
            f"{self.name} did not become healthy at {self.health_url} within {timeout:.0f} s "
            f"(last: {last}); its log ({self.log_path}) ends with:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """Kill the process group at once (SIGKILL), as a crash would."""
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
        else:
            # The leader is gone; children it left in the group still have to go.
            self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
