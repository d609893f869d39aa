"""Local stand-ins: rendered prometheus.yml/alertmanager.yml, secrets, receiver, processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.testing.local import (
    AlertReceiver,
    LocalSecrets,
    LocalStack,
    ManagedProcess,
    ProcessError,
)
from driftwarden.testing.local.config import SecretNotFoundError
from driftwarden.testing.local.processes import free_port_block
from driftwarden.testing.tools import tool_path

SPEC = DriftMonitorSpec.model_validate(
    {
        "model": {"bundle": "builtin://diamonds"},
        "workers": {"shards": 3},
        "alerts": {
            "for": "5s",
            "receivers": [
                {
                    "name": "discord",
                    "discord": {"webhookSecretRef": {"name": "alerting", "key": "discord"}},
                },
                {
                    "name": "slack",
                    "slack": {"apiUrlSecretRef": {"name": "alerting", "key": "slack"}},
                },
                {"name": "hook", "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}}},
            ],
        },
    }
)


@pytest.fixture
def rendered(tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack(
        name="diamonds",
        namespace="ml",
        spec=SPEC,
        run_dir=tmp_path,
        secrets=LocalSecrets(values={"alerting": {"slack": "https://hooks.slack.example/T/B/x"}}),
    )
    stack.render()
    yield stack
    stack.stop()  # never started: closes the receiver socket, leaves run_dir to tmp_path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_rendered_configs_pass_the_real_checkers(rendered: LocalStack) -> None:
    config = rendered.config_dir
    result = _run(str(tool_path("promtool")), "check", "config", str(config / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr
    result = _run(str(tool_path("amtool")), "check-config", str(config / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_like_the_service_monitors(rendered: LocalStack) -> None:
    prom = yaml.safe_load((rendered.config_dir / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert set(jobs) == {"diamonds-model", "diamonds-workers"}
    workers = jobs["diamonds-workers"]["static_configs"]
    assert [c["targets"] for c in workers] == [
        [f"127.0.0.1:{rendered.worker_base_port + k}"] for k in range(3)
    ]
    assert all(c["labels"]["namespace"] == "ml" for c in workers)
    assert [c["labels"]["pod"] for c in workers] == [f"diamonds-workers-{k}" for k in range(3)]
    assert prom["global"]["evaluation_interval"] == "1s"
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{rendered.alertmanager_port}"
    ]


def test_monitor_config_files_are_the_operators(rendered: LocalStack) -> None:
    monitor = json.loads((rendered.config_dir / "monitor.json").read_text())
    assert monitor["name"] == "diamonds" and monitor["namespace"] == "ml"
    assert monitor["spec"]["model"]["bundle"] == "builtin://diamonds"
    shard_map = json.loads((rendered.config_dir / "shardmap.json").read_text())
    assert (
        shard_map["monitor"] == "ml/diamonds"
        and shard_map["shards"] == 3
        and shard_map["epoch"] == 1
    )


def test_alertmanager_routes_the_monitor_to_its_receivers(rendered: LocalStack) -> None:
    am = yaml.safe_load((rendered.config_dir / "alertmanager.yml").read_text())
    [route] = am["route"]["routes"]
    assert route["matchers"] == ['namespace="ml"', 'monitor="diamonds"']
    assert route["group_wait"] == "1s"
    receivers = {r["name"]: r for r in am["receivers"]}
    prefix = "ml/diamonds-driftwarden/"
    # Unresolved Secrets fall back to the local receiver, explicit ones win.
    assert receivers[prefix + "discord"]["discord_configs"][0][
        "webhook_url"
    ] == rendered.receiver.url("discord", "discord")
    assert (
        receivers[prefix + "slack"]["slack_configs"][0]["api_url"]
        == "https://hooks.slack.example/T/B/x"
    )
    assert receivers[prefix + "hook"]["webhook_configs"][0]["url"] == rendered.receiver.url(
        "webhook", "hook"
    )
    assert [r["receiver"] for r in route["routes"]] == [
        prefix + n for n in ("discord", "slack", "hook")
    ]


def test_local_secrets_lookup_order(tmp_path: Path) -> None:
    (tmp_path / "alerting").mkdir()
    (tmp_path / "alerting" / "discord").write_text("https://from-file\n")
    env = {LocalSecrets.env_name("alerting", "discord"): "https://from-env"}
    ref = {"name": "alerting", "key": "discord"}
    assert LocalSecrets(directory=tmp_path, environ={}).resolve(ref) == "https://from-file"
    assert LocalSecrets(directory=tmp_path, environ=env).resolve(ref) == "https://from-env"
    assert LocalSecrets(values={"alerting": {"discord": "v"}}, environ=env).resolve(ref) == "v"
    assert LocalSecrets.env_name("my-secret", "web.hook") == "DRIFTWARDEN_SECRET_MY_SECRET_WEB_HOOK"
    with pytest.raises(SecretNotFoundError, match="DRIFTWARDEN_SECRET_ALERTING_SLACK"):
        LocalSecrets(directory=tmp_path, environ={}).resolve({"name": "alerting", "key": "slack"})


def test_receiver_records_discord_slack_and_webhook_posts() -> None:
    with AlertReceiver() as receiver, httpx.Client() as client:
        discord = {
            "content": "",
            "embeds": [{"title": "[FIRING:1] DriftwardenDataDrift", "description": "carat, depth"}],
        }
        response = client.post(receiver.url("discord", "team"), json=discord)
        assert response.status_code == 204
        assert client.post(receiver.url("discord", "team"), json={"content": ""}).status_code == 400
        assert client.post(receiver.url("slack", "s"), json={"text": "hello"}).status_code == 200
        hook = {
            "status": "resolved",
            "alerts": [{"labels": {"alertname": "X"}, "annotations": {"summary": "gone"}}],
        }
        assert client.post(receiver.url("webhook", "w"), json=hook).status_code == 200
        assert client.post(f"{receiver.base_url}/nope", json={}).status_code == 404
        assert client.post(receiver.url("webhook", "w"), content=b"{not json").status_code == 400
        [got] = receiver.notifications("discord")
        assert got.receiver == "team" and "carat, depth" in got.text and not got.resolved
        [hooked] = receiver.notifications("webhook")
        assert hooked.resolved and "alertname=X" in hooked.text and "gone" in hooked.text
        assert receiver.wait_for(lambda n: n.kind == "slack", timeout=1).text == "hello"
        with pytest.raises(TimeoutError, match="never-sent did not arrive"):
            receiver.wait_for(lambda n: False, timeout=0.2, what="never-sent")


def test_managed_process_stops_its_whole_group(tmp_path: Path) -> None:
    # The parent spawns a grandchild; stopping the parent's group must end both.
    script = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)"
    process = ManagedProcess(
        "sleeper", [sys.executable, "-c", script], log_path=tmp_path / "s.log", health_url=None
    )
    process.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "s.log").read_text().strip().split("\n")[-1].isdigit():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int((tmp_path / "s.log").read_text().strip().split("\n")[-1])
    process.stop(timeout=5)
    assert not process.running
    deadline = time.monotonic() + 5
    while _alive(grandchild):
        assert time.monotonic() < deadline, "grandchild survived the process-group stop"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_health_wait_reports_an_early_exit_with_the_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "crasher",
        [
            sys.executable,
            "-c",
            "import sys; print('bundle not found: builtin://nope'); sys.exit(3)",
        ],
        log_path=tmp_path / "c.log",
        health_url="http://127.0.0.1:9/metrics",
    )
    process.start()
    with pytest.raises(ProcessError, match=r"(?s)crasher exited with status 3.*bundle not found"):
        process.wait_healthy(timeout=20)


def test_free_port_block_is_consecutive_and_free() -> None:
    base = free_port_block(5)
    import socket

    sockets = []
    try:
        for port in range(base, base + 5):
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            sockets.append(sock)
    finally:
        for sock in sockets:
            sock.close()
