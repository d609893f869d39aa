"""Paths of the pinned tools that hack/install-*.sh build or fetch.

Every tool version lives in ``versions.env`` at the repository root. Each installer
puts a tool pinned as ``FOO_VERSION=vX`` into
``${DRIFTWARDEN_CACHE:-~/.cache/driftwarden}/<package>-<vX>/bin/`` and writes a
``.complete`` marker there once everything is in place, so a half-finished build is
never used. Adding a tool is one line in :data:`TOOLS`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from driftwarden.common.paths import source_root

__all__ = [
    "TOOLS",
    "Tool",
    "ToolNotInstalledError",
    "VersionsFileError",
    "cache_dir",
    "kwok_stages",
    "package_dir",
    "parse_versions",
    "pinned",
    "prometheus_operator_crds",
    "tool_path",
    "versions",
    "versions_file",
]

COMPLETE_MARKER = ".complete"
_KEY_VALUE = re.compile(r"^(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>[^\s'\"$`\\]*)$")


@dataclass(frozen=True)
class Tool:
    """Where one executable comes from: its cache package, pin and installer."""

    package: str  # cache folder prefix: <package>-<version>
    version_key: str  # key in versions.env
    installer: str  # hack/ script that installs it


_CONTROLPLANE = "hack/install-controlplane.sh"
_PROMETHEUS = "hack/install-prometheus.sh"
_NODE = "hack/install-node.sh"

#: Executable name -> where it is installed. One line per tool.
TOOLS: dict[str, Tool] = {
    "kube-apiserver": Tool("kubernetes", "KUBERNETES_VERSION", _CONTROLPLANE),
    "kube-controller-manager": Tool("kubernetes", "KUBERNETES_VERSION", _CONTROLPLANE),
    "kube-scheduler": Tool("kubernetes", "KUBERNETES_VERSION", _CONTROLPLANE),
    "kubectl": Tool("kubernetes", "KUBERNETES_VERSION", _CONTROLPLANE),
    "etcd": Tool("etcd", "ETCD_VERSION", _CONTROLPLANE),
    "kwok": Tool("kwok", "KWOK_VERSION", _CONTROLPLANE),
    "helm": Tool("helm", "HELM_VERSION", "hack/install-helm.sh"),
    "prometheus": Tool("prometheus", "PROMETHEUS_VERSION", _PROMETHEUS),
    "promtool": Tool("prometheus", "PROMETHEUS_VERSION", _PROMETHEUS),
    "alertmanager": Tool("alertmanager", "ALERTMANAGER_VERSION", _PROMETHEUS),
    "amtool": Tool("alertmanager", "ALERTMANAGER_VERSION", _PROMETHEUS),
    # Real nodes of the pods tier; kubelet and kube-proxy have their own cache folder so
    # the control plane's is never rebuilt for them.
    "kubelet": Tool("kubernetes-node", "KUBERNETES_VERSION", _NODE),
    "kube-proxy": Tool("kubernetes-node", "KUBERNETES_VERSION", _NODE),
    "pause": Tool("kubernetes-node", "KUBERNETES_VERSION", _NODE),
    "containerd": Tool("containerd", "CONTAINERD_VERSION", _NODE),
    "containerd-shim-runc-v2": Tool("containerd", "CONTAINERD_VERSION", _NODE),
    "ctr": Tool("containerd", "CONTAINERD_VERSION", _NODE),
    "runc": Tool("runc", "RUNC_VERSION", _NODE),
    "bridge": Tool("cni-plugins", "CNI_PLUGINS_VERSION", _NODE),
    "host-local": Tool("cni-plugins", "CNI_PLUGINS_VERSION", _NODE),
    "loopback": Tool("cni-plugins", "CNI_PLUGINS_VERSION", _NODE),
    "coredns": Tool("coredns", "COREDNS_VERSION", _NODE),
    "busybox": Tool("busybox", "BUSYBOX_VERSION", _NODE),
}


class VersionsFileError(RuntimeError):
    """versions.env is missing, malformed, or lacks a pin."""


class ToolNotInstalledError(RuntimeError):
    """A pinned tool is not (completely) installed in the cache."""


def versions_file() -> Path:
    """Return the path of versions.env ($DRIFTWARDEN_VERSIONS_FILE, else the repo root's)."""
    override = os.environ.get("DRIFTWARDEN_VERSIONS_FILE")
    if override:
        return Path(override)
    root = source_root()
    if root is None:
        raise ToolNotInstalledError(
            "versions.env not found: driftwarden is not installed from a source checkout; "
            "set DRIFTWARDEN_VERSIONS_FILE to the path of versions.env"
        )
    return root / "versions.env"


def parse_versions(text: str, *, source: str = "versions.env") -> dict[str, str]:
    """Return the KEY=value pins of a versions.env text, rejecting anything bash would not read the same."""
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _KEY_VALUE.match(line)
        if match is None:
            raise VersionsFileError(
                f"{source}:{lineno}: {raw!r} is not a plain KEY=value line "
                "(upper-case key, no spaces, quotes or $ in the value); fix that line"
            )
        key = match["key"]
        if key in pins:
            raise VersionsFileError(
                f"{source}:{lineno}: {key} is pinned twice; keep one line per pin"
            )
        pins[key] = match["value"]
    return pins


@cache
def _versions_cached(path: Path, mtime_ns: int) -> dict[str, str]:
    return parse_versions(path.read_text(encoding="utf-8"), source=str(path))


def versions() -> dict[str, str]:
    """Return every pin of versions.env as a new dict (e.g. ``{"KUBERNETES_VERSION": "v1.35.4"}``)."""
    path = versions_file()
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise VersionsFileError(
            f"{path} does not exist; run from a Driftwarden checkout or point "
            "DRIFTWARDEN_VERSIONS_FILE at its versions.env"
        ) from None
    return dict(_versions_cached(path, mtime_ns))


def pinned(key: str) -> str:
    """Return the value of one pin of versions.env (e.g. ``pinned("ETCD_VERSION")``)."""
    pins = versions()
    try:
        return pins[key]
    except KeyError:
        raise VersionsFileError(
            f"{versions_file()} has no {key}=... line; add the pin (see docs/control-plane.md)"
        ) from None


def cache_dir() -> Path:
    """Return the tool cache root: $DRIFTWARDEN_CACHE, else ~/.cache/driftwarden (as hack/lib.sh)."""
    # `${DRIFTWARDEN_CACHE:-...}` in bash treats an empty value as unset; so do we.
    override = os.environ.get("DRIFTWARDEN_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "driftwarden"


def package_dir(package: str, version_key: str, *, installer: str) -> Path:
    """Return the finished install folder of one pinned package, or raise ToolNotInstalledError."""
    version = pinned(version_key)
    folder = cache_dir() / f"{package}-{version}"
    if not (folder / COMPLETE_MARKER).is_file():
        state = "was interrupted (no .complete marker)" if folder.exists() else "is missing"
        raise ToolNotInstalledError(
            f"{package} {version} ({version_key} in versions.env) {state} in {folder}; "
            f"run `make tools` (or `bash {installer}`) to build it"
        )
    return folder


def tool_path(name: str) -> Path:
    """Return the path of a pinned executable, e.g. ``tool_path("kube-apiserver")``.

    ``DRIFTWARDEN_TOOL_<NAME>`` (upper-case, ``-`` as ``_``) overrides the cache, for a
    developer testing another build. Raises ToolNotInstalledError naming the make
    target to run when the tool is not installed.
    """
    override = os.environ.get("DRIFTWARDEN_TOOL_" + name.upper().replace("-", "_"))
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise ToolNotInstalledError(
                f"DRIFTWARDEN_TOOL_{name.upper().replace('-', '_')}={override} is not an "
                "executable file; fix or unset it"
            )
        return path
    try:
        tool = TOOLS[name]
    except KeyError:
        raise ToolNotInstalledError(
            f"unknown tool {name!r}; known tools: {', '.join(sorted(TOOLS))} "
            "(add a line to driftwarden.testing.tools.TOOLS for a new one)"
        ) from None
    path = package_dir(tool.package, tool.version_key, installer=tool.installer) / "bin" / name
    if not os.access(path, os.X_OK):
        raise ToolNotInstalledError(
            f"{path} is missing although its install is marked complete; run "
            f"`bash {tool.installer}` again (delete {path.parent.parent} first if it persists)"
        )
    return path


def kwok_stages() -> list[Path]:
    """Return the kwok Stage files (node and pod lifecycles) shipped beside the kwok binary."""
    folder = package_dir("kwok", "KWOK_VERSION", installer=_CONTROLPLANE) / "stages"
    stages = sorted(folder.glob("*.yaml"))
    if not stages:
        raise ToolNotInstalledError(
            f"{folder} holds no kwok Stage files; run `bash {_CONTROLPLANE}` again"
        )
    return stages


def prometheus_operator_crds() -> list[Path]:
    """Return the pinned prometheus-operator CRD manifests (ServiceMonitor, PrometheusRule, ...)."""
    installer = "hack/install-prometheus-operator-crds.sh"
    folder = package_dir("prometheus-operator", "PROMETHEUS_OPERATOR_VERSION", installer=installer)
    crds = sorted((folder / "crds").glob("*.yaml"))
    if not crds:
        raise ToolNotInstalledError(f"{folder}/crds is empty; run `bash {installer}` again")
    return crds
