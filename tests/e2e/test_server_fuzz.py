"""Schemathesis against the model server's own OpenAPI document, for every built-in bundle.

Every check is on (no 5xx, every status and content type documented, responses match
their schemas, schema-valid requests accepted and schema-invalid ones refused, ...),
with a fixed seed and a bounded number of examples so the run is the same each time
and takes well under a minute per bundle. It found the 500 for ``carat: 1e308`` (the
float32 check of the random forest) and the published schema allowing the ``[]`` the
server refused; the input limits and the batch bounds in the schema fixed both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from driftwarden.bundles.train import BUILTIN
from support.model_server import running_model_server

# Seed, example counts and the stricter expected statuses: the same file serves a run by hand.
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Keeps generated /feedback timestamps inside their moving window (see the file).
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
RUN_LIMIT_S = 240  # a bound for a hang; a run takes 15-40 s here


def schemathesis(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The CLI of the pinned schemathesis installed with this interpreter.
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
        check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
    )


@pytest.mark.parametrize("bundle", sorted(BUILTIN))
def test_schemathesis_finds_nothing(bundle, tmp_path):
    with running_model_server(bundle, tmp_path) as base:
        started = time.monotonic()
        run = schemathesis(
            "--config-file",
            str(CONFIG),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--no-color",
            cwd=tmp_path,
        )
        took = time.monotonic() - started
    # The summary and the last failures; a failure's curl line can quote a huge body.
    report = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, f"schemathesis found problems with {bundle}:\n{report}"
    assert "Test cases:" in run.stdout and "No issues found" in run.stdout, report
    print(f"{bundle}: schemathesis ran clean in {took:.1f} s")
