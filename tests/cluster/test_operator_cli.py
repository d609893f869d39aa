"""`driftwarden operator` as a real process: health, metrics, reconciling, clean SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from driftwarden.operator.examples import examples
from driftwarden.operator.generate import dump_all
from driftwarden.testing.controlplane import ControlPlane
from driftwarden.testing.operator import install_crd
from driftwarden.testing.waiting import wait_until

GROUP, VERSION, PLURAL = "driftwarden.io", "v1alpha1", "driftmonitors"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def operator_process(
    control_plane: ControlPlane, k8s_api: client.ApiClient, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen, int, int]]:
    install_crd(k8s_api)
    health, metrics = _free_port(), _free_port()
    env = {
        **control_plane.env(),
        "DRIFTWARDEN_OPERATOR__HEALTH_PORT": str(health),
        "DRIFTWARDEN_OPERATOR__METRICS_PORT": str(metrics),
        "DRIFTWARDEN_OPERATOR__WORKER_STATUS_URL": "",
        "DRIFTWARDEN_OPERATOR__LOG_FORMAT": "json",
    }
    log = (tmp_path / "operator.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftwarden.cli", "operator", "--standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc, health, metrics
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_the_cli_reconciles_serves_health_and_metrics_and_stops_cleanly(
    operator_process: tuple[subprocess.Popen, int, int],
    control_plane: ControlPlane,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    tmp_path: Path,
) -> None:
    proc, health, metrics = operator_process
    control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=dump_all(examples()["iris.yaml"][1])
    )

    def ready() -> bool:
        mon = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in mon.get("status", {}).get("conditions", [])
        )

    wait_until(
        ready,
        timeout=180,
        interval=0.5,
        what="iris Ready under `driftwarden operator`",
        describe=lambda: (tmp_path / "operator.log").read_text()[-3000:],
    )
    assert httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=5).status_code == 200
    text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    assert 'driftwarden_operator_api_writes_total{kind="StatefulSet",verb="apply"}' in text
    assert 'driftwarden_operator_reconciles_total{result="ok"}' in text

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, (tmp_path / "operator.log").read_text()[-3000:]
    log = (tmp_path / "operator.log").read_text()
    assert '"severity"' in log  # kopf's JSON log lines, as DRIFTWARDEN_OPERATOR__LOG_FORMAT says
    assert "Traceback" not in log
