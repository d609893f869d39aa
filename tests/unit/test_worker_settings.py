"""Worker configuration: environment, flags, ordinal from the pod name, plans from bundles."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from driftwarden.common import names
from driftwarden.common.durations import parse_duration
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.drift_worker.__main__ import load_settings, main
from driftwarden.drift_worker.plan import MonitorPlan, plan_from_bundle
from driftwarden.drift_worker.settings import (
    ConfigError,
    Settings,
    check_plan,
    read_streams_file,
    write_streams_file,
)
from driftwarden.drift_worker.streams import StreamSpec


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (
        "POD_NAME",
        "HOSTNAME",
        "DRIFTWARDEN_WORKER__ORDINAL",
        "DRIFTWARDEN_WORKER__PEER_URL_TEMPLATE",
    ):
        monkeypatch.delenv(key, raising=False)


def test_ordinal_and_peers_from_the_statefulset_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "diamonds-workers-4")
    s = Settings()
    assert s.resolve_ordinal() == 4
    assert s.resolve_peer_template() == "http://diamonds-workers-{ordinal}.diamonds-workers:8080"
    monkeypatch.setenv("POD_NAME", "other-2")  # POD_NAME (downward API) wins over HOSTNAME
    assert Settings().resolve_ordinal() == 2


def test_missing_ordinal_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "laptop")
    with pytest.raises(ConfigError, match="DRIFTWARDEN_WORKER__ORDINAL or pass --ordinal"):
        Settings().resolve_ordinal()
    with pytest.raises(ConfigError, match="DRIFTWARDEN_WORKER__PEER_URL_TEMPLATE"):
        Settings().resolve_peer_template()


def test_environment_nested_settings_and_flag_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DRIFTWARDEN_WORKER__FSYNC", "interval")
    monkeypatch.setenv("DRIFTWARDEN_WORKER__ORDINAL", "3")
    monkeypatch.setenv("DRIFTWARDEN_WORKER__HANDOFF_TIMEOUT_S", "42")
    monkeypatch.setenv("DRIFTWARDEN_SHARD_MAP", str(tmp_path / "map.json"))
    s = load_settings([])
    assert (s.worker.fsync, s.worker.ordinal, s.worker.handoff_timeout_s) == ("interval", 3, 42.0)
    assert s.shard_map == tmp_path / "map.json"
    s = load_settings(["--ordinal", "1", "--fsync", "never", "--no-wal", "--port", "9999"])
    assert (s.worker.ordinal, s.worker.fsync, s.worker.wal_enabled, s.worker.port) == (
        1,
        "never",
        False,
        9999,
    )
    monkeypatch.setenv("DRIFTWARDEN_WORKER__FSYNC", "sometimes")
    with pytest.raises(ValueError, match="fsync"):
        load_settings([])


def test_main_exits_2_with_a_message_naming_the_missing_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "--ordinal",
                "0",
                "--monitor-config",
                str(tmp_path / "nope.json"),
                "--peer-url-template",
                "http://x:{port}",
            ]
        )
    assert code == 2
    assert any("DRIFTWARDEN_MONITOR_CONFIG" in r.getMessage() for r in caplog.records)


def test_main_refuses_a_shard_map_of_another_monitor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = {"model": {"bundle": "builtin://x"}, "detectors": {"numeric": [{"type": "ks"}]}}
    (tmp_path / "monitor.json").write_text(
        json.dumps({"name": "m", "namespace": "ns", "spec": spec})
    )
    write_streams_file(
        tmp_path / "streams.json", [StreamSpec("feature:a", "numeric", np.arange(10.0))]
    )
    (tmp_path / "map.json").write_text('{"monitor": "ns/other", "epoch": 1, "shards": 1}')
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "--ordinal",
                "0",
                "--monitor-config",
                str(tmp_path / "monitor.json"),
                "--streams-file",
                str(tmp_path / "streams.json"),
                "--shard-map",
                str(tmp_path / "map.json"),
                "--peer-url-template",
                "http://x:{port}",
            ]
        )
    assert code == 2 and any("'ns/other'" in r.getMessage() for r in caplog.records)


def test_streams_file_round_trip(tmp_path: Path) -> None:
    streams = [
        StreamSpec("feature:a", "numeric", np.array([0.5, 1.5])),
        StreamSpec("feature:c", "categorical", ["x", "y"], categories=("x", "y")),
        StreamSpec("performance", "performance", np.array([0.1]), task="regression"),
    ]
    write_streams_file(tmp_path / "s.json", streams)
    back = read_streams_file(tmp_path / "s.json")
    assert [(s.name, s.kind, s.categories, s.task) for s in back] == [
        (s.name, s.kind, s.categories, s.task) for s in streams
    ]
    assert back[0].reference.tolist() == [0.5, 1.5] and back[1].reference == ["x", "y"]
    (tmp_path / "bad.json").write_text('{"streams": [{"kind": "numeric"}]}')
    with pytest.raises(ConfigError, match="bad.json is invalid"):
        read_streams_file(tmp_path / "bad.json")


def test_check_plan_names_the_stream_whose_detectors_fail() -> None:
    def factory(stream: StreamSpec) -> dict:
        raise ValueError("no reference")

    plan = MonitorPlan("ns/m", {"feature:a": StreamSpec("feature:a", "numeric", None)}, factory)
    with pytest.raises(ConfigError, match="stream 'feature:a' .*no reference"):
        check_plan(plan)


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("5 minutes")


def test_plan_from_a_classification_bundle() -> None:
    from driftwarden.bundles import load_bundle

    bundle = load_bundle("builtin://iris")
    spec = DriftMonitorSpec.model_validate(
        {
            "model": {"bundle": "builtin://iris"},
            "labelJoin": {"maxDelay": "15m"},
            "detectors": {"numeric": [{"type": "ks"}], "categorical": [], "concept": []},
        }
    )
    plan = plan_from_bundle("ns/iris", spec, bundle)
    features = [names.feature_stream(f) for f in bundle.feature_names]
    assert set(plan.streams) == {*features, names.STREAM_PREDICTION, names.STREAM_PERFORMANCE}
    perf = plan.streams[names.STREAM_PERFORMANCE]
    assert perf.task == "classification" and set(np.unique(perf.reference)) <= {0.0, 1.0}
    assert plan.streams[names.STREAM_PREDICTION].kind == "categorical"
    assert plan.join.max_delay_s == 900
    check_plan(plan)
    assert list(plan.factory(perf)) == []  # concept: [] switches concept detectors off
    assert list(plan.factory(plan.streams[features[0]])) == ["ks"]


def test_warm_up_runs_every_detector_kind_without_touching_the_plan() -> None:
    from driftwarden.drift_worker.plan import spec_factory, warm_up

    spec = DriftMonitorSpec.model_validate({"model": {"bundle": "builtin://x"}})
    rng = np.random.default_rng(0)
    streams = {
        "feature:a": StreamSpec("feature:a", "numeric", rng.normal(size=300)),
        "feature:c": StreamSpec(
            "feature:c", "categorical", list("abc" * 50), categories=("a", "b", "c")
        ),
        "performance": StreamSpec("performance", "performance", rng.random(300), task="regression"),
    }
    plan = MonitorPlan("ns/m", streams, spec_factory(spec))
    assert warm_up(plan) >= 0.0
    fresh = plan.factory(streams["feature:a"])["mixtureCusum"]
    assert fresh.n_seen == 0  # the factory still builds empty detectors
