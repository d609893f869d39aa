"""driftwarden.testing.tools: versions.env parsing and cache resolution."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from driftwarden.testing import tools

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    versions = tmp_path / "versions.env"
    versions.write_text(
        "# pins\nKUBERNETES_VERSION=v1.35.4\nETCD_VERSION=v3.6.16\n"
        "KWOK_VERSION=v0.8.0\nPROMETHEUS_VERSION=v2.42.0\n"
        "PROMETHEUS_OPERATOR_VERSION=v0.85.0\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("DRIFTWARDEN_CACHE", str(root))
    monkeypatch.setenv("DRIFTWARDEN_VERSIONS_FILE", str(versions))
    for name in tools.TOOLS:
        monkeypatch.delenv("DRIFTWARDEN_TOOL_" + name.upper().replace("-", "_"), raising=False)
    return root


def _install(root: Path, package: str, version: str, *bins: str, complete: bool = True) -> Path:
    folder = root / f"{package}-{version}"
    (folder / "bin").mkdir(parents=True)
    for name in bins:
        path = folder / "bin" / name
        path.write_text("#!/bin/sh\n", encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    if complete:
        (folder / ".complete").write_text("installed=now\n", encoding="utf-8")
    return folder


def test_repository_versions_file_pins_every_known_tool() -> None:
    pins = tools.parse_versions((REPO / "versions.env").read_text(encoding="utf-8"))
    for name, tool in tools.TOOLS.items():
        assert pins.get(tool.version_key, "").startswith("v"), (name, tool.version_key)
    assert pins["GOTOOLCHAIN"] == "local"
    assert pins["PROMETHEUS_OPERATOR_VERSION"]


def test_python_parser_agrees_with_bash_source() -> None:
    # hack/*.sh `source` the same file: both readers must see identical values.
    script = "set -a; source versions.env; set +a; env -0"
    out = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        cwd=REPO,
        env={"PATH": os.environ["PATH"]},
        check=True,
        capture_output=True,
    ).stdout.decode()
    bash_env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    pins = tools.parse_versions((REPO / "versions.env").read_text(encoding="utf-8"))
    assert pins
    for key, value in pins.items():
        assert bash_env[key] == value


def test_parse_skips_comments_and_blank_lines() -> None:
    text = "# header\n\n  # indented comment\nA_VERSION=v1.2.3\nB=local\n"
    assert tools.parse_versions(text) == {"A_VERSION": "v1.2.3", "B": "local"}


@pytest.mark.parametrize(
    "line",
    [
        "A_VERSION = v1",
        'A_VERSION="v1"',
        "A_VERSION=$OTHER",
        "export A=v1",
        "a_version=v1",
        "A_VERSION=v1 # trailing",
    ],
)
def test_parse_rejects_lines_bash_would_read_differently(line: str) -> None:
    with pytest.raises(tools.VersionsFileError, match=r"versions.env:2: .* not a plain KEY=value"):
        tools.parse_versions("# ok\n" + line + "\n")


def test_parse_rejects_duplicate_pins() -> None:
    with pytest.raises(tools.VersionsFileError, match=r":3: A is pinned twice"):
        tools.parse_versions("A=1\n\nA=2\n")


def test_cache_dir_default_and_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DRIFTWARDEN_CACHE", raising=False)
    assert tools.cache_dir() == Path.home() / ".cache" / "driftwarden"
    monkeypatch.setenv("DRIFTWARDEN_CACHE", "")  # bash ${X:-default} treats empty as unset
    assert tools.cache_dir() == Path.home() / ".cache" / "driftwarden"
    monkeypatch.setenv("DRIFTWARDEN_CACHE", str(tmp_path))
    assert tools.cache_dir() == tmp_path


def test_tool_path_resolves_a_complete_install(cache: Path) -> None:
    folder = _install(cache, "kubernetes", "v1.35.4", "kube-apiserver", "kubectl")
    assert tools.tool_path("kube-apiserver") == folder / "bin" / "kube-apiserver"
    assert tools.tool_path("kubectl") == folder / "bin" / "kubectl"


def test_tool_path_shares_a_package_between_executables(cache: Path) -> None:
    folder = _install(cache, "prometheus", "v2.42.0", "prometheus", "promtool")
    assert tools.tool_path("promtool").parent == folder / "bin"


def test_missing_tool_names_the_make_target(cache: Path) -> None:
    with pytest.raises(tools.ToolNotInstalledError) as err:
        tools.tool_path("etcd")
    message = str(err.value)
    assert "etcd v3.6.16" in message and "ETCD_VERSION" in message
    assert "is missing" in message and "make tools" in message
    assert "hack/install-controlplane.sh" in message


def test_interrupted_install_is_not_trusted(cache: Path) -> None:
    _install(cache, "etcd", "v3.6.16", "etcd", complete=False)
    with pytest.raises(tools.ToolNotInstalledError, match="interrupted"):
        tools.tool_path("etcd")


def test_complete_marker_without_binary_is_reported(cache: Path) -> None:
    _install(cache, "kubernetes", "v1.35.4", "kube-apiserver")
    with pytest.raises(tools.ToolNotInstalledError, match="kube-scheduler is missing although"):
        tools.tool_path("kube-scheduler")


def test_version_bump_makes_the_old_build_invisible(cache: Path) -> None:
    _install(cache, "etcd", "v3.6.15", "etcd")
    with pytest.raises(tools.ToolNotInstalledError, match="etcd v3.6.16"):
        tools.tool_path("etcd")


def test_unknown_tool_lists_the_known_ones(cache: Path) -> None:
    with pytest.raises(tools.ToolNotInstalledError, match="unknown tool 'kind'.*kube-apiserver"):
        tools.tool_path("kind")


def test_missing_pin_is_reported(cache: Path) -> None:
    with pytest.raises(tools.VersionsFileError, match="no HELM_VERSION=... line"):
        tools.tool_path("helm")


def test_missing_versions_file_is_reported(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTWARDEN_VERSIONS_FILE", str(cache / "nope.env"))
    with pytest.raises(tools.VersionsFileError, match="does not exist"):
        tools.versions()


def test_versions_rereads_an_edited_file(cache: Path) -> None:
    path = Path(os.environ["DRIFTWARDEN_VERSIONS_FILE"])
    assert tools.versions()["ETCD_VERSION"] == "v3.6.16"
    path.write_text("ETCD_VERSION=v3.6.17\n", encoding="utf-8")
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 1_000_000))
    assert tools.versions() == {"ETCD_VERSION": "v3.6.17"}


def test_environment_override_wins(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = _install(cache, "custom", "x", "kube-apiserver") / "bin" / "kube-apiserver"
    monkeypatch.setenv("DRIFTWARDEN_TOOL_KUBE_APISERVER", str(custom))
    assert tools.tool_path("kube-apiserver") == custom
    monkeypatch.setenv("DRIFTWARDEN_TOOL_KUBE_APISERVER", str(cache / "absent"))
    with pytest.raises(tools.ToolNotInstalledError, match="not an executable"):
        tools.tool_path("kube-apiserver")


def test_data_folders(cache: Path) -> None:
    kwok = _install(cache, "kwok", "v0.8.0", "kwok")
    with pytest.raises(tools.ToolNotInstalledError, match="no kwok Stage files"):
        tools.kwok_stages()
    (kwok / "stages").mkdir()
    (kwok / "stages" / "pod-ready.yaml").write_text("kind: Stage\n", encoding="utf-8")
    assert tools.kwok_stages() == [kwok / "stages" / "pod-ready.yaml"]

    operator = _install(cache, "prometheus-operator", "v0.85.0")
    with pytest.raises(tools.ToolNotInstalledError, match="crds is empty"):
        tools.prometheus_operator_crds()
    (operator / "crds").mkdir()
    crd = operator / "crds" / "monitoring.coreos.com_servicemonitors.yaml"
    crd.write_text("kind: CustomResourceDefinition\n", encoding="utf-8")
    assert tools.prometheus_operator_crds() == [crd]


def test_every_installer_named_in_tools_exists() -> None:
    for tool in tools.TOOLS.values():
        assert (REPO / tool.installer).is_file(), tool.installer
