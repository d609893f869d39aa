"""Documents between processes (worker /status, monitor.json): one typed model each."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from driftwarden.common.contracts import (
    MonitorConfig,
    WorkerStatus,
    parse_worker_status,
)
from driftwarden.common.errors import ConfigError
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.testing.operator import FAKE_DRIFT_TIME, fake_stream, fake_worker_status


def _doc() -> WorkerStatus:
    return fake_worker_status(
        "ns/app",
        1,
        3,
        {
            "feature:a": fake_stream(drift=True, last_drift_time=FAKE_DRIFT_TIME),
            "feature:b": fake_stream(drift=False),
        },
    )


def test_the_document_round_trips_through_its_wire_form() -> None:
    doc = _doc()
    wire = doc.to_json()
    assert parse_worker_status(wire) == doc
    raw = json.loads(wire)
    # the wire names predate the model and stay snake_case ("in" is a keyword in Python)
    assert set(raw["streams"]["feature:a"]) >= {"drift", "last_drift_time", "window_fill"}
    assert set(raw["streams"]["feature:a"]["detectors"]["mixtureCusum"]) == {
        "statistic",
        "p_value",
        "alarm",
        "drift",
        "n_seen",
        "threshold",
        "false_alarm_budget",
    }
    assert raw["handoff"]["in"] == 0 and "in_" not in raw["handoff"]
    assert doc.drifting() == ["feature:a"] and doc.last_drift_time() == FAKE_DRIFT_TIME


def test_readers_ignore_fields_they_do_not_know() -> None:
    raw = json.loads(_doc().to_json())
    raw["added_later"] = {"x": 1}
    raw["streams"]["feature:a"]["added_later"] = 2
    assert parse_worker_status(json.dumps(raw)) == _doc()


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["streams"]["feature:a"].pop("drift"), "streams.feature:a.drift"),
        (
            lambda d: d["streams"]["feature:b"]["detectors"]["mixtureCusum"].update(threshold="x"),
            "streams.feature:b.detectors.mixtureCusum.threshold",
        ),
        (lambda d: d.update(epoch=-1), "epoch"),
        (lambda d: d.update(streams=[]), "streams"),
    ],
)
def test_a_malformed_document_is_an_error_naming_the_field(
    edit: Callable[[dict[str, Any]], object], field: str
) -> None:
    raw = json.loads(_doc().to_json())
    edit(raw)
    with pytest.raises(ValueError, match=r"bad worker /status: ") as info:
        parse_worker_status(json.dumps(raw))
    assert f"{field}: " in str(info.value), info.value


def test_text_that_is_not_json_is_an_error_too() -> None:
    with pytest.raises(ValueError, match="bad worker /status: .*Invalid JSON"):
        parse_worker_status(b"<html>502</html>")


def test_the_monitor_config_round_trips_through_its_file(tmp_path: Path) -> None:
    spec = DriftMonitorSpec.model_validate({"model": {"bundle": "builtin://iris"}})
    config = MonitorConfig(name="m", namespace="ns", spec=spec)
    config.write(tmp_path / "monitor.json")
    doc = json.loads((tmp_path / "monitor.json").read_text())
    assert sorted(doc) == ["name", "namespace", "spec"]
    assert doc["spec"]["workers"]["window"] == 1000  # defaults filled
    back = MonitorConfig.read(tmp_path / "monitor.json")
    assert back == config and back.key == "ns/m"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"monitor.json does not exist; mount"),
        ("[", r"monitor.json is invalid"),
        ('{"name": "m", "namespace": "ns"}', r"monitor.json is invalid: spec: Field required"),
        (
            '{"name": "m", "namespace": "ns", "spec": {"model": {"bundle": "nope"}}}',
            r"monitor.json is invalid: spec.model.bundle: ",
        ),
    ],
)
def test_a_bad_monitor_config_names_the_file_and_field(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "monitor.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        MonitorConfig.read(path)
