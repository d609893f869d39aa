"""`driftwarden demo --short` end to end: real processes, real Prometheus and Alertmanager.

Runs the demo as a user would (a subprocess of the installed `driftwarden` command),
checks its printed summary and summary.json against what the injected drift must
produce, renders its drift report page in headless Chromium, and checks that nothing
the demo started is left running — after a normal exit and after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from driftwarden.bundles.scenarios import SCENARIOS
from support.chromium import assert_drawn, dom, screenshot

# Set on the demo process; every process it starts inherits it, so /proc finds leftovers.
MARKER = "DRIFTWARDEN_DEMO_TEST_RUN"
# diamonds:carat-shift resamples toward larger stones: carat and the sizes x, y, z move
# (clarity and colour may follow, as they correlate with size in the real data).
EXPECTED_DRIFT = {"carat", "x", "y", "z"}


def processes_with_marker(value: str) -> list[tuple[int, str]]:
    """Return (pid, command line) of every live process whose environment carries the marker."""
    needle = f"{MARKER}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" in status:  # a zombie is already dead, waiting to be reaped
                    continue
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                found.append((int(entry.name), cmdline.strip()))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def assert_nothing_left(marker: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    left = processes_with_marker(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with_marker(marker)
    for pid, _ in left:  # do not leak them into the rest of the session either
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"the demo left processes running: {left}"


def start_demo(args: list[str], marker: str) -> subprocess.Popen[str]:
    env = {**os.environ, MARKER: marker, "COLUMNS": "160", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "driftwarden.cli", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # so a test failure can stop the whole demo group
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the demo did not finish within {timeout:.0f} s; its output:\n{out}")
    return out


def test_short_demo_detects_the_drift_alerts_and_reports(tmp_path):
    marker = uuid.uuid4().hex
    out_dir = tmp_path / "demo"
    proc = start_demo(["--short", "--out", str(out_dir)], marker)
    output = finish(proc, timeout=420)
    print(output)
    assert proc.returncode == 0, f"demo exited {proc.returncode}:\n{output}"
    assert_nothing_left(marker)

    # The printed summary says what drifted, when, the alert, and where to look.
    assert "Driftwarden demo: summary" in output
    assert "Features that drifted" in output
    assert "DriftwardenDataDrift" in output and "received by the webhook" in output
    assert "Prometheus     http://127.0.0.1:" in output
    assert f"Drift report   {out_dir.resolve() / 'index.html'}" in output
    assert "Stopped: every process the demo started has exited." in output

    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["scenario"] == "diamonds:carat-shift"
    assert summary["scenario_description"] == SCENARIOS["diamonds:carat-shift"].description
    drifted = set(summary["drifted_features"])
    assert "carat" in drifted, summary["drifted_features"]
    assert len(drifted & EXPECTED_DRIFT) >= 2, drifted
    for event in summary["stream_events"]:
        if event["stream"].startswith("feature:"):
            # Flagged only after the drift point: no false alarm on the reference half.
            assert event["seconds_after_drift"] is not None and event["seconds_after_drift"] > 0, (
                event
            )
            assert event["rows_sent"] > summary["drift_at_row"], event
    alert = summary["alert"]
    assert alert["name"] == "DriftwardenDataDrift"
    assert summary["drift_started_at"] < alert["firing_at"] <= alert["received_at"]
    assert alert["receiver"] == "webhook/demo"
    assert "carat" in alert["text"], "the notification names the drifting features"

    # The report page renders in headless Chromium, with the drifted features first.
    page = out_dir / "index.html"
    rendered = dom(page)
    assert 'data-feature="carat"' in rendered
    assert rendered.index('class="card drift"') < rendered.index('class="card"')
    png = screenshot(page, tmp_path / "demo-report.png")
    assert_drawn(png)


@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, signal.SIGTERM],  # Ctrl-C in a terminal; a CI runner or `kill`
    ids=["ctrl-c", "sigterm"],
)
def test_interrupt_stops_everything(tmp_path, signum):
    marker = uuid.uuid4().hex
    proc = start_demo(["--out", str(tmp_path / "demo")], marker)
    output = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)
        if "pipeline up" in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        pytest.fail("the demo exited before its pipeline came up:\n" + "".join(output))
    assert processes_with_marker(marker), "the pipeline's processes should be running now"
    time.sleep(2)  # mid-traffic
    proc.send_signal(signum)
    output.append(finish(proc, timeout=60))
    text = "".join(output)
    assert proc.returncode == 130, text
    assert "Interrupted: every process the demo started has been stopped." in text
    assert_nothing_left(marker)
