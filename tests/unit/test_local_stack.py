"""LocalStack start-up failure: a clear error naming the process, and nothing left running."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.testing.local import LocalStack, ProcessError

SPEC = DriftMonitorSpec.model_validate(
    {"model": {"bundle": "builtin://diamonds"}, "workers": {"shards": 2}}
)


def _crashing_worker(python: str, port: int) -> list[str]:
    return [python, "-c", "import sys; print('monitor config is invalid: spec.model'); sys.exit(2)"]


def _idle_model(python: str, port: int) -> list[str]:
    return [python, "-c", "import time; time.sleep(120)"]


def test_failed_start_stops_everything_and_quotes_the_log(tmp_path: Path) -> None:
    stack = LocalStack(
        name="diamonds",
        spec=SPEC,
        run_dir=tmp_path,
        worker_command=_crashing_worker,
        model_command=_idle_model,
        python=sys.executable,
        start_timeout=60,
    )
    with pytest.raises(
        ProcessError, match=r"(?s)worker-0 exited with status 2.*monitor config is invalid"
    ):
        stack.start()
    survivors = [name for name, process in stack._processes.items() if process.running]
    assert not survivors, f"still running after a failed start: {survivors}"
    # Alertmanager had started (it comes first) and was stopped again.
    assert "alertmanager" in stack._processes
    assert (tmp_path / "logs" / "alertmanager.log").is_file()


def test_commands_get_the_operator_environment(tmp_path: Path) -> None:
    stack = LocalStack(name="diamonds", namespace="ml", spec=SPEC, run_dir=tmp_path)
    try:
        stack.render()
        worker = stack._worker_process(1)
        assert worker.env is not None
        assert worker.env["DRIFTWARDEN_WORKER__ORDINAL"] == "1"
        assert worker.env["DRIFTWARDEN_WORKER__PORT"] == str(stack.worker_base_port + 1)
        assert worker.env["DRIFTWARDEN_MONITOR_CONFIG"] == str(tmp_path / "config" / "monitor.json")
        assert worker.health_url == f"{stack.worker_url(1)}/readyz"
        model = stack._model_process()
        assert model.env is not None
        assert model.env["DRIFTWARDEN_SENDER__URL_TEMPLATE"] == "http://127.0.0.1:{port}"
        assert model.env["DRIFTWARDEN_SENDER__BASE_PORT"] == str(stack.worker_base_port)
        assert model.env["DRIFTWARDEN_SERVER__PORT"] == str(stack.model_port)
    finally:
        stack.stop()
