"""A real model server (``driftwarden serve``) on 127.0.0.1, for tests that need HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from driftwarden.testing.local.processes import ManagedProcess, free_port


def serve_process(
    what: str, port: int, log_path: Path, *, bundle: str | None = None, env: dict[str, str]
) -> ManagedProcess:
    """Return (not started) ``driftwarden serve`` on 127.0.0.1:``port``.

    ``bundle``: a bundle URI; ``None`` leaves it to the monitor config in ``env``
    (``DRIFTWARDEN_MONITOR_CONFIG``). ``env`` adds ``DRIFTWARDEN_*`` settings.
    """
    args = [sys.executable, "-m", "driftwarden.cli", "serve"]
    if bundle is not None:
        args += ["--bundle", bundle]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return ManagedProcess(
        what,
        args,
        log_path=log_path,
        health_url=f"http://127.0.0.1:{port}/readyz",
        env={**os.environ, **env},
    )


@contextmanager
def running_model_server(bundle: str, log_dir: Path, **env: str) -> Iterator[str]:
    """Serve built-in ``bundle`` on a free loopback port; yield its base URL, then stop it.

    ``env`` adds ``DRIFTWARDEN_*`` settings. The bundle is trained into the cache first
    if it is missing, so the first use may take a while.
    """
    port = free_port()
    process = serve_process(
        f"model server ({bundle})",
        port,
        log_dir / f"serve-{bundle}.log",
        bundle=f"builtin://{bundle}",
        env=env,
    )
    process.start()
    try:
        process.wait_healthy(timeout=300)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()
