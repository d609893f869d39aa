"""Server settings from the environment, the monitor config, and ``driftwarden serve`` errors."""

from __future__ import annotations

import json

import pytest

from driftwarden.bundles import load_bundle
from driftwarden.model_server.__main__ import main
from driftwarden.model_server.emission import build_emitter, bundle_streams
from driftwarden.model_server.metrics import ServerMetrics
from driftwarden.model_server.settings import ConfigError, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in ("DRIFTWARDEN_BUNDLE", "DRIFTWARDEN_MONITOR_CONFIG", "DRIFTWARDEN_SHARD_MAP"):
        monkeypatch.delenv(key, raising=False)


def test_environment_with_nested_delimiter(monkeypatch):
    monkeypatch.setenv("DRIFTWARDEN_BUNDLE", "builtin://iris")
    monkeypatch.setenv("DRIFTWARDEN_SERVER__MAX_BATCH_ROWS", "32")
    monkeypatch.setenv("DRIFTWARDEN_SERVER__PORT", "9001")
    monkeypatch.setenv("DRIFTWARDEN_SENDER__URL_TEMPLATE", "http://w-{ordinal}.w:8080")
    s = Settings()
    assert (s.bundle_uri(), s.server.max_batch_rows, s.server.port) == ("builtin://iris", 32, 9001)
    assert s.sender.url_template == "http://w-{ordinal}.w:8080"


def test_bundle_and_monitor_come_from_the_monitor_config(tmp_path, monkeypatch):
    path = tmp_path / "monitor.json"
    path.write_text(
        json.dumps(
            {"name": "m", "namespace": "ns", "spec": {"model": {"bundle": "builtin://diamonds"}}}
        )
    )
    monkeypatch.setenv("DRIFTWARDEN_MONITOR_CONFIG", str(path))
    s = Settings()
    assert s.monitor() == ("ns/m", "builtin://diamonds")
    assert s.bundle_uri() == "builtin://diamonds"
    assert Settings(bundle="builtin://iris").bundle_uri() == "builtin://iris"  # override wins


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist; mount"),
        ("{}", "is invalid: missing or bad 'namespace'"),
        ("[", "is invalid"),
    ],
)
def test_bad_monitor_config_is_explained(tmp_path, content, message):
    path = tmp_path / "monitor.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        Settings(monitor_config=path).bundle_uri()


def test_no_bundle_anywhere_says_what_to_set():
    with pytest.raises(ConfigError, match="set DRIFTWARDEN_BUNDLE"):
        Settings().bundle_uri()


def test_serve_exits_2_with_the_reason(capsys):
    assert main([]) == 2
    assert "no model bundle configured" in capsys.readouterr().err


def test_emitter_needs_an_existing_shard_map_and_a_monitor(tmp_path):
    iris = load_bundle("builtin://iris")
    assert build_emitter(Settings(), iris, ServerMetrics(process=False).registry) is None
    with pytest.raises(ConfigError, match="does not exist"):
        build_emitter(Settings(shard_map=tmp_path / "nope.json"), iris, ServerMetrics().registry)
    shard_map = tmp_path / "shardmap.json"
    shard_map.write_text('{"monitor": "ns/m", "epoch": 1, "shards": 2}')
    with pytest.raises(ConfigError, match="set both or neither"):
        build_emitter(Settings(shard_map=shard_map), iris, ServerMetrics().registry)
    shard_map.write_text('{"epoch": -1}')
    monitor = tmp_path / "monitor.json"
    monitor.write_text(
        json.dumps({"name": "m", "namespace": "ns", "spec": {"model": {"bundle": "x"}}})
    )
    with pytest.raises(ConfigError, match="shardmap.json is invalid"):
        build_emitter(
            Settings(shard_map=shard_map, monitor_config=monitor), iris, ServerMetrics().registry
        )


def test_streams_cover_features_predictions_and_embeddings():
    digits = load_bundle("builtin://digits")
    streams = bundle_streams(digits)
    assert {"prediction", "performance", "embedding:penultimate", "feature:pixel_0_0"} <= streams
    assert len(streams) == 64 + 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bundle", "builtin://nope"], "unknown built-in bundle 'builtin://nope'"),
        (["--bundle", "s3://b/m"], "unsupported scheme 's3'"),
        (["--bundle", "/nonexistent/bundle"], "bundle.json is missing"),
    ],
)
def test_serve_refuses_a_bundle_it_cannot_load_before_starting(capsys, flags, message):
    assert main(flags) == 2
    assert message in capsys.readouterr().err
