"""``driftwarden load`` against a real model server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from driftwarden.common import names
from driftwarden.testing.local.processes import free_port
from support.model_server import running_model_server


def load(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "driftwarden.cli", "load", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def served(base: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(names.M_REQUESTS) and 'handler="/predict"' in line
    )


def test_load_reports_throughput_latency_and_answers(tmp_path):
    with running_model_server("diamonds", tmp_path) as base:
        closed = load(
            f"{base}/predict",
            "--bundle",
            "builtin://diamonds",
            "--scenario",
            "diamonds:carat-shift",
            "--drift-at",
            "100",
            "--rows",
            "300",
            "--clients",
            "4",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--json",
        )
        assert closed.returncode == 0, closed.stderr
        report = json.loads(closed.stdout)
        assert report["requests"] > 0 and report["errors"] == 0
        assert report["statuses"] == {"200": report["requests"]}
        assert 0 < report["p50_ms"] <= report["p90_ms"] <= report["p99_ms"] <= report["max_ms"]
        # Every request the tool counted reached the server (no warm-up here).
        assert served(base) == report["requests"]

        # Open loop at 40 req/s for 2 s: never more than the schedule allows.
        paced = load(
            f"{base}/predict",
            "--bundle",
            "builtin://diamonds",
            "--rate",
            "40",
            "--clients",
            "4",
            "--duration",
            "2",
            "--warmup",
            "0",
        )
        assert paced.returncode == 0, paced.stderr
        assert "open loop at 40 req/s" in paced.stdout and "p99" in paced.stdout
        assert served(base) - report["requests"] <= 80


def test_load_says_what_is_wrong(tmp_path):
    closed_port = f"http://127.0.0.1:{free_port()}/predict"
    unreachable = load(closed_port, "--bundle", "builtin://iris", "--duration", "1")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    wrong = load(closed_port, "--bundle", "builtin://iris", "--scenario", "diamonds:cut-mix")
    assert wrong.returncode == 2 and "not 'iris'" in wrong.stderr
