"""A real model server (``driftwarden serve``) on 127.0.0.1, for tests that need HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from driftwarden.testing.local.processes import ManagedProcess, free_port


@contextmanager
def running_model_server(bundle: str, log_dir: Path, **env: str) -> Iterator[str]:
    """Serve built-in ``bundle`` on a free loopback port; yield its base URL, then stop it.

    ``env`` adds ``DRIFTWARDEN_*`` settings. The bundle is trained into the cache first
    if it is missing, so the first use may take a while.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = ManagedProcess(
        f"model server ({bundle})",
        [
            sys.executable,
            "-m",
            "driftwarden.cli",
            "serve",
            "--bundle",
            f"builtin://{bundle}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        log_path=log_dir / f"serve-{bundle}.log",
        health_url=f"{base}/readyz",
        env={**os.environ, **env},
    )
    process.start()
    try:
        process.wait_healthy(timeout=300)
        yield base
    finally:
        process.stop()
