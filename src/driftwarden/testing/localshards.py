"""Real worker processes on this machine, for e2e tests, benchmarks and the demo.

:class:`LocalShards` writes ``monitor.json``, ``shardmap.json`` and a streams file
into a directory, starts one ``python -m driftwarden.drift_worker`` per shard on
consecutive free ports of 127.0.0.1, and can kill (``SIGKILL``), restart and
reshard them. Every process it starts is stopped by :meth:`stop`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from driftwarden.common import auth
from driftwarden.common.contracts import MonitorConfig, WorkerStatus, parse_worker_status
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.drift_worker.settings import write_streams_file
from driftwarden.drift_worker.streams import StreamSpec


class PortTaken(RuntimeError):
    """A shard could not bind its port (taken by another process after we chose it)."""


def free_port_range(count: int, *, attempts: int = 200) -> int:
    """Return a base port such that ``base .. base+count-1`` are free on 127.0.0.1."""
    import random

    for _ in range(attempts):
        base = random.randint(20000, 60000 - count)
        socks = []
        try:
            for k in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found on 127.0.0.1")


class LocalShards:
    """Drift-worker shard processes of one monitor on 127.0.0.1."""

    def __init__(
        self,
        root: Path,
        monitor_spec: dict[str, Any],
        streams: list[StreamSpec],
        shards: int,
        *,
        namespace: str = "default",
        name: str = "local",
        fsync: str = "always",
        max_shards: int = 16,
        extra_env: dict[str, str] | None = None,
        snapshot_every_values: int = 5_000_000,
        wal: bool = True,
        handoff_timeout_s: float | None = None,
        storage_failure_exit_s: float | None = None,
        peer_base_port: int | None = None,
        credential: auth.Credential | None = None,
    ) -> None:
        """``credential``: the monitor's (default: a new one); a second set of
        processes on the same ``root`` must pass the first one's, as the Secret is
        shared by every pod of a monitor."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.monitor = f"{namespace}/{name}"
        self.fsync = fsync
        self.max_shards = max_shards
        self.base_port = free_port_range(max_shards)
        self.extra_env = extra_env or {}
        self.snapshot_every_values = snapshot_every_values
        self.wal = wal
        self.handoff_timeout_s = handoff_timeout_s
        self.storage_failure_exit_s = storage_failure_exit_s
        # where shards reach each other (handoffs): shard k at peer_base_port + k;
        # default: directly, like senders (a test may put a proxy in between)
        self.peer_base_port = peer_base_port
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        MonitorConfig(
            name=name, namespace=namespace, spec=DriftMonitorSpec.model_validate(monitor_spec)
        ).write(self.root / "monitor.json")
        write_streams_file(self.root / "streams.json", streams)
        self.map = ShardMap(monitor=self.monitor, epoch=1, shards=shards)
        self.write_map()
        # The monitor credential, written as the operator's Secret would mount it.
        self.credential = credential or auth.Credential.generate(self.monitor)
        self.credential_files = auth.write_credential_files(
            self.root / "credential", self.credential
        )
        self._tokens = {
            role: auth.TokenSource(self.credential, role)
            for role in (auth.ROLE_SENDER, auth.ROLE_OPERATOR)
        }

    def headers(self, role: str = auth.ROLE_OPERATOR) -> dict[str, str]:
        """Return the Authorization header of ``role`` (operator: map pushes, state reads)."""
        return self._tokens[role].header()

    def sender_env(self) -> dict[str, str]:
        """Return the settings of a model server that sends to these shards."""
        return {
            "DRIFTWARDEN_MONITOR_CONFIG": str(self.root / "monitor.json"),
            "DRIFTWARDEN_SHARD_MAP": str(self.root / "shardmap.json"),
            "DRIFTWARDEN_SENDER__URL_TEMPLATE": self.url_template,
            "DRIFTWARDEN_SENDER__BASE_PORT": str(self.base_port),
            "DRIFTWARDEN_CREDENTIAL_FILE": str(self.credential_files[auth.SENDER_FILE]),
        }

    @property
    def sender_credential(self) -> auth.Credential:
        """The credential a Sender to these shards needs (the sender role key only)."""
        return self.credential.for_role(auth.ROLE_SENDER)

    @property
    def url_template(self) -> str:
        return "http://127.0.0.1:{port}"

    def url(self, ordinal: int) -> str:
        return f"http://127.0.0.1:{self.base_port + ordinal}"

    def write_map(self) -> None:
        """Write ``self.map`` to the mounted-map file the shards poll (atomically)."""
        tmp = self.root / "shardmap.json.tmp"
        tmp.write_text(self.map.model_dump_json())
        os.replace(tmp, self.root / "shardmap.json")

    def data_dir(self, ordinal: int) -> Path:
        return self.root / f"data-{ordinal}"

    def start(
        self,
        ordinal: int,
        *,
        wait: bool = True,
        env: dict[str, str] | None = None,
        wrap: list[str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """Start (or restart) shard ``ordinal``.

        ``env`` adds environment variables; ``wrap`` is a command prefix the worker
        command is appended to (e.g. ``unshare`` for a private mount); ``preexec_fn``
        runs in the child before exec (e.g. resource limits).
        """
        log = open(self.root / f"shard-{ordinal}.log", "ab")  # noqa: SIM115 - owned by the process
        cmd = [
            sys.executable,
            "-m",
            "driftwarden.drift_worker",
            "--ordinal",
            str(ordinal),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.base_port + ordinal),
            "--data-dir",
            str(self.data_dir(ordinal)),
            "--monitor-config",
            str(self.root / "monitor.json"),
            "--shard-map",
            str(self.root / "shardmap.json"),
            "--streams-file",
            str(self.root / "streams.json"),
            "--fsync",
            self.fsync,
            "--peer-url-template",
            self.url_template,
            "--base-port",
            str(self.peer_base_port or self.base_port),
            "--snapshot-every-values",
            str(self.snapshot_every_values),
            "--log-level",
            "INFO",
            "--credential-file",
            str(self.credential_files[auth.WORKER_FILE]),
        ]
        if not self.wal:
            cmd.append("--no-wal")
        if self.handoff_timeout_s is not None:
            cmd += ["--handoff-timeout", str(self.handoff_timeout_s)]
        if self.storage_failure_exit_s is not None:
            cmd += ["--storage-failure-exit", str(self.storage_failure_exit_s)]
        full_env = {**os.environ, **self.extra_env, **(env or {})}
        self.procs[ordinal] = subprocess.Popen(
            [*(wrap or []), *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            preexec_fn=preexec_fn,
        )
        log.close()
        if wait:
            self.wait_healthy(ordinal)

    def start_all(self, attempts: int = 3) -> None:
        """Start every shard of the current map; move to new ports if one was taken meanwhile."""
        for attempt in range(attempts):
            for k in range(self.map.shards):
                self.start(k, wait=False)
            try:
                for k in range(self.map.shards):
                    self.wait_healthy(k)
                return
            except PortTaken:
                # another process grabbed a port between our check and the bind
                self.stop()
                if attempt + 1 == attempts:
                    raise
                self.base_port = free_port_range(self.max_shards)

    def wait_healthy(self, ordinal: int, timeout: float = 240.0) -> None:
        """Wait for ``/healthz``; the timeout is generous because shared CI machines can be slow."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[ordinal]
            if proc.poll() is not None:
                tail = self.log(ordinal)[-3000:]
                error = PortTaken if "address already in use" in tail else RuntimeError
                raise error(f"shard {ordinal} exited with {proc.returncode}; log:\n{tail}")
            try:
                if httpx.get(self.url(ordinal) + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(
            f"shard {ordinal} not healthy after {timeout}s; log:\n{self.log(ordinal)[-3000:]}"
        )

    def log(self, ordinal: int) -> str:
        path = self.root / f"shard-{ordinal}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_exit(self, ordinal: int, timeout: float = 240.0) -> int:
        """Wait for shard ``ordinal`` to exit by itself; return its exit status."""
        proc = self.procs.pop(ordinal)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise TimeoutError(
                f"shard {ordinal} still running after {timeout}s; log:\n{self.log(ordinal)[-3000:]}"
            ) from None

    def kill(self, ordinal: int) -> None:
        """SIGKILL shard ``ordinal`` (no shutdown, no final snapshot)."""
        proc = self.procs.pop(ordinal)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def terminate(self, ordinal: int) -> None:
        proc = self.procs.pop(ordinal)
        proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def reshard(self, shards: int, *, push: bool = True) -> ShardMap:
        """Publish the next epoch: start new shards, write the map and push it to every shard."""
        self.map = self.map.advance(shards)
        for k in range(shards):
            if k not in self.procs:
                self.start(k, wait=False)
        for k in range(shards):
            self.wait_healthy(k)
        self.write_map()
        if push:
            self.push_map()
        return self.map

    def push_map(self) -> None:
        """PUT the current map to every shard at once (as an operator would)."""
        from concurrent.futures import ThreadPoolExecutor

        body = self.map.model_dump_json()

        def put(k: int) -> None:
            httpx.put(
                self.url(k) + "/v1/shardmap", content=body, headers=self.headers(), timeout=30.0
            ).raise_for_status()

        with ThreadPoolExecutor(max(1, len(self.procs))) as pool:
            list(pool.map(put, list(self.procs)))

    def handoffs(self, ordinal: int) -> dict[str, Any]:
        """Return shard ``ordinal``'s pending handoffs (``GET /v1/handoff``)."""
        return httpx.get(self.url(ordinal) + "/v1/handoff", timeout=30.0).json()

    def status(self, ordinal: int) -> WorkerStatus:
        """Return shard ``ordinal``'s validated ``/status`` document."""
        resp = httpx.get(self.url(ordinal) + "/status", timeout=30.0)
        resp.raise_for_status()
        return parse_worker_status(resp.content)

    def wait_settled(self, timeout: float = 180.0) -> float:
        """Wait until no shard has handoffs in flight; return the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            docs = [self.handoffs(k) for k in list(self.procs)]
            if all(not d["outgoing"] and not d["awaiting"] for d in docs):
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"handoffs still pending after {timeout}s")

    def retire(self) -> None:
        """Stop shards beyond the current count (after :meth:`wait_settled`)."""
        for k in sorted(self.procs):
            if k >= self.map.shards:
                self.terminate(k)

    def stop(self) -> None:
        """Stop every process this object started."""
        for k in list(self.procs):
            try:
                self.terminate(k)
            except (OSError, subprocess.SubprocessError) as exc:  # keep stopping the others
                print(f"stopping shard {k} failed: {exc}", file=sys.stderr)
