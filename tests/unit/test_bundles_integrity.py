"""Bundle integrity: the digest, pinning it, and bundles confined to their directories.

Bundles are copies of the built-in iris bundle (small, trained once in the shared cache)
inside a per-test bundles directory (``$DRIFTWARDEN_BUNDLES_DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from driftwarden.bundles import BundleError, BundleIntegrityError, load_bundle
from driftwarden.bundles.bundle import BUNDLES_DIR_ENV
from driftwarden.bundles.bundle_cli import main as bundle_main
from driftwarden.bundles.errors import BundleDigestMismatch
from driftwarden.bundles.integrity import bundle_digest
from driftwarden.common.errors import ConfigError

OTHER = "sha256:" + "0" * 64


@pytest.fixture
def bundles(monkeypatch, tmp_path) -> Path:
    source = load_bundle("builtin://iris").path  # before the bundles dir moves
    root = tmp_path / "bundles"
    root.mkdir()
    shutil.copytree(source, root / "iris")
    monkeypatch.setenv(BUNDLES_DIR_ENV, str(root))
    return root


def _expected_digest(directory: Path, files: list[str]) -> str:
    # The definition, written out again: sha256 of "<sha256 hex>  <name>\n" lines, sorted.
    lines = "".join(
        f"{hashlib.sha256((directory / f).read_bytes()).hexdigest()}  {f}\n" for f in sorted(files)
    )
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def _edit_manifest(directory: Path, **changes: Any) -> None:
    body = json.loads((directory / "bundle.json").read_text())
    for section, fields in changes.items():
        body[section].update(fields)
    (directory / "bundle.json").write_text(json.dumps(body))


# ------------------------------------------------------------------ the digest


def test_the_digest_is_sha256_of_the_sorted_file_listing(bundles):
    directory = bundles / "iris"
    loaded = load_bundle(f"file://{directory}")
    expected = _expected_digest(directory, ["bundle.json", "model.joblib", "reference.csv"])
    assert loaded.digest == expected
    assert bundle_digest(directory, loaded.manifest) == expected


def test_the_digest_covers_every_file_and_nothing_else(bundles):
    directory = bundles / "iris"
    manifest = load_bundle(directory).manifest
    before = bundle_digest(directory, manifest)
    (directory / "README").write_text("not part of the bundle")
    assert bundle_digest(directory, manifest) == before
    copy = Path(shutil.copytree(directory, bundles / "copy"))
    assert bundle_digest(copy, manifest) == before  # the path is not part of it
    for name in ("bundle.json", "model.joblib", "reference.csv"):
        path = copy / name
        original = path.read_bytes()
        path.write_bytes(original + b" ")
        assert bundle_digest(copy, manifest) != before, name
        path.write_bytes(original)
    assert bundle_digest(copy, manifest) == before


def test_a_pinned_bundle_loads_only_with_its_digest(bundles):
    uri = f"file://{bundles}/iris"
    digest = load_bundle(uri).digest
    assert digest is not None
    assert load_bundle(uri, digest=digest).digest == digest
    with pytest.raises(BundleDigestMismatch) as caught:
        load_bundle(uri, digest=OTHER)
    message = str(caught.value)
    assert digest in message and OTHER in message and "refusing to load" in message
    assert "driftwarden bundle digest" in message


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "A" * 64, ""])
def test_malformed_digests_are_refused_before_anything_is_read(bundles, bad):
    with pytest.raises(BundleIntegrityError, match="malformed"):
        load_bundle("builtin://nonexistent-is-not-even-resolved", digest=bad)


# ------------------------------------------------------------------ confinement


def test_file_uris_outside_the_bundles_directory_are_refused(bundles, tmp_path):
    outside = Path(shutil.copytree(bundles / "iris", tmp_path / "elsewhere"))
    for uri in (
        f"file://{outside}",
        f"file://{bundles}/../elsewhere",
        f"file://{bundles}/iris/../../elsewhere",
    ):
        with pytest.raises(BundleIntegrityError, match="outside the bundles directory"):
            load_bundle(uri)
    (bundles / "link").symlink_to(outside)
    with pytest.raises(BundleIntegrityError, match=f"resolves to {outside}, outside"):
        load_bundle(f"file://{bundles}/link")
    (bundles / "inner").symlink_to(bundles / "iris")
    assert load_bundle(f"file://{bundles}/inner").name == "iris"  # a link that stays inside
    # Plain paths are the command line's (a DriftMonitor can only name file:// URIs).
    assert load_bundle(outside).name == "iris"


@pytest.mark.parametrize(
    ("section", "name", "message"),
    [
        ("model", "../secret/model.joblib", "not a plain relative path"),
        ("model", "/etc/model.joblib", "not a plain relative path"),
        ("model", "sub/../../model.joblib", "not a plain relative path"),
        ("reference", "../reference.csv", "not a plain relative path"),
        ("reference", "ref\nerence.csv", "not a plain relative path"),
    ],
)
def test_manifests_naming_files_outside_the_bundle_are_refused(bundles, section, name, message):
    _edit_manifest(bundles / "iris", **{section: {"file": name}})
    with pytest.raises(BundleIntegrityError, match=message):
        load_bundle(f"file://{bundles}/iris")
    with pytest.raises(BundleIntegrityError, match=message):
        load_bundle(bundles / "iris")  # whatever the URI


@pytest.mark.parametrize("name", ["model.joblib", "reference.csv", "bundle.json"])
def test_symlinks_out_of_the_bundle_are_refused(bundles, tmp_path, name):
    directory = bundles / "iris"
    target = tmp_path / f"outside-{name}"
    shutil.move(directory / name, target)
    (directory / name).symlink_to(target)
    with pytest.raises(BundleIntegrityError, match=f"resolves to {target}, outside the bundle"):
        load_bundle(f"file://{directory}")


def test_a_subdirectory_inside_the_bundle_is_fine(bundles):
    directory = bundles / "iris"
    (directory / "weights").mkdir()
    shutil.move(directory / "model.joblib", directory / "weights" / "model.joblib")
    _edit_manifest(directory, model={"file": "weights/model.joblib"})
    loaded = load_bundle(f"file://{directory}")
    assert loaded.digest == _expected_digest(
        directory, ["bundle.json", "reference.csv", "weights/model.joblib"]
    )


# ------------------------------------------------------------------ the command line


def test_cli_prints_and_verifies_digests(bundles, capsys):
    uri = f"file://{bundles}/iris"
    assert bundle_main(["digest", uri]) == 0
    digest = capsys.readouterr().out.strip()
    assert digest == load_bundle(uri).digest
    assert bundle_main(["verify", uri, digest]) == 0
    assert "matches" in capsys.readouterr().out
    assert bundle_main(["verify", uri, OTHER]) == 1
    err = capsys.readouterr().err
    assert digest in err and OTHER in err
    assert bundle_main(["verify", uri, "sha256:nope"]) == 2
    assert bundle_main(["digest", "file:///not/in/the/bundles/dir"]) == 2
    assert "outside the bundles directory" in capsys.readouterr().err


def test_the_driftwarden_command_dispatches_bundle(bundles, capsys):
    from driftwarden.cli import main

    assert main(["bundle", "digest", str(bundles / "iris")]) == 0
    assert capsys.readouterr().out.startswith("sha256:")


# ------------------------------------------------------------------ the loaders


def _monitor_json(path: Path, model: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"namespace": "ml", "name": "m", "spec": {"model": model}}))
    return path


def test_the_model_server_pins_the_monitors_digest(bundles, tmp_path, capsys):
    from driftwarden.model_server.__main__ import main as serve_main
    from driftwarden.model_server.settings import Settings

    uri = f"file://{bundles}/iris"
    config = _monitor_json(tmp_path / "monitor.json", {"bundle": uri, "digest": OTHER})
    settings = Settings(monitor_config=config)
    assert settings.pinned_digest() == OTHER
    assert Settings(monitor_config=config, bundle=uri).pinned_digest() == OTHER
    # Another bundle than the monitor's is not held to the monitor's digest...
    assert Settings(monitor_config=config, bundle="builtin://iris").pinned_digest() is None
    # ...but to an explicit one.
    explicit = Settings(monitor_config=config, bundle="builtin://iris", bundle_digest="x")
    assert explicit.pinned_digest() == "x"

    os.environ["DRIFTWARDEN_MONITOR_CONFIG"] = str(config)
    try:
        assert serve_main([]) == 2
    finally:
        del os.environ["DRIFTWARDEN_MONITOR_CONFIG"]
    err = capsys.readouterr().err
    assert OTHER in err and load_bundle(uri).digest in err


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_model_server_lifespan_refuses_a_mismatched_bundle(bundles, anyio_backend):
    from driftwarden.model_server.app import create_app
    from driftwarden.model_server.settings import Settings

    uri = f"file://{bundles}/iris"
    settings = Settings(bundle=uri, bundle_digest=OTHER)
    app = create_app(settings)
    with pytest.raises(BundleDigestMismatch, match=OTHER):
        async with app.router.lifespan_context(app):
            pass
    good = Settings(bundle=uri, bundle_digest=load_bundle(uri).digest)
    app = create_app(good)
    async with app.router.lifespan_context(app):
        assert app.state.driftwarden.bundle.digest == good.bundle_digest


def test_the_drift_worker_pins_the_monitors_digest(bundles, tmp_path):
    from driftwarden.drift_worker.settings import Settings, build_plan

    uri = f"file://{bundles}/iris"
    digest = load_bundle(uri).digest
    config = _monitor_json(tmp_path / "monitor.json", {"bundle": uri, "digest": OTHER})
    with pytest.raises(ConfigError) as caught:
        build_plan(Settings(monitor_config=config))
    assert OTHER in str(caught.value) and str(digest) in str(caught.value)
    _monitor_json(config, {"bundle": uri, "digest": digest})
    assert build_plan(Settings(monitor_config=config)).streams


def test_bundle_errors_are_bundle_errors():
    assert issubclass(BundleDigestMismatch, BundleIntegrityError)
    assert issubclass(BundleIntegrityError, BundleError)
