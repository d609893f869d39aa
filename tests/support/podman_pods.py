"""Run a container the way the kubelet would run the operator's rendered pod, with podman.

From the rendered pod spec and container: ``command``/``args``, ``env`` (fieldRef
values supplied by the caller, as the kubelet's downward API would), the pod and
container securityContext (user, group, fsGroup, read-only root, dropped capabilities,
no privilege escalation), and every volume: a ConfigMap or Secret becomes a read-only
directory of its files (with their modes), an emptyDir a tmpfs of its sizeLimit, a
claim a directory owned by fsGroup. The one deviation is the network: pods share the
host network on 127.0.0.1, so each container gets its listen address and peer URLs as
extra env (``overrides``), never a different command or image.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime=runc"]


def ulimits() -> list[str]:
    """Explicit limits: podman's defaults exceed this host's hard limits (see hack/images.sh)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}... failed: {proc.stderr[-3000:]}")
    return proc


def _size_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def materialise_volumes(
    pod_spec: Mapping[str, Any], objects: Mapping[str, Mapping[str, Any]], root: Path
) -> dict[str, Path]:
    """Write every ConfigMap/Secret/claim volume of ``pod_spec`` under ``root``; name -> dir.

    ``objects``: the rendered ConfigMap and Secret by name (what the API server would hold).
    """
    fs_group = int(pod_spec["securityContext"]["fsGroup"])
    out: dict[str, Path] = {}
    for volume in pod_spec["volumes"]:
        name = volume["name"]
        folder = root / name
        if "configMap" in volume or "secret" in volume:
            folder.mkdir(parents=True)
            os.chmod(folder, 0o755)
            source = volume.get("configMap") or volume["secret"]
            obj = objects[source.get("name") or source.get("secretName")]
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            if "secret" in volume:
                data = {k: base64.b64decode(v) for k, v in data.items()}
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                path = folder / item["path"]
                path.write_bytes(data[item["key"]])
                # The kubelet gives projected files group fsGroup and defaultMode.
                os.chown(path, 0, fs_group)
                os.chmod(path, source["defaultMode"])
            out[name] = folder
    return out


def claim_dir(pod_spec: Mapping[str, Any], root: Path, name: str) -> Path:
    """A PersistentVolumeClaim's directory, group-owned by fsGroup (as the kubelet makes it)."""
    fs_group = int(pod_spec["securityContext"]["fsGroup"])
    folder = root / name
    folder.mkdir(parents=True)
    os.chown(folder, 0, fs_group)
    os.chmod(folder, 0o2770)
    return folder


def run_args(
    pod_spec: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    name: str,
    image: str,
    volume_dirs: Mapping[str, Path],
    field_values: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> list[str]:
    """The `podman run` arguments (after `run`) for one rendered container."""
    pod_sec = pod_spec["securityContext"]
    sec = container.get("securityContext") or {}
    user = sec.get("runAsUser", pod_sec["runAsUser"])
    group = sec.get("runAsGroup", pod_sec["runAsGroup"])
    args = ["--detach", "--name", name, "--network", "host", *ulimits()]
    args += ["--user", f"{user}:{group}", "--group-add", str(pod_sec["fsGroup"])]
    if sec.get("readOnlyRootFilesystem"):
        # Only the pod's volumes are writable (podman would add tmpfs /tmp, /run otherwise).
        args += ["--read-only", "--read-only-tmpfs=false"]
    for cap in (sec.get("capabilities") or {}).get("drop", []):
        args += ["--cap-drop", cap]
    if sec.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is not None and "emptyDir" in volume:
            size = _size_bytes(volume["emptyDir"].get("sizeLimit", "256Mi"))
            args += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
            continue
        folder = volume_dirs[mount["name"]]
        mode = "ro" if mount.get("readOnly") else "rw"
        args += ["--volume", f"{folder}:{mount['mountPath']}:{mode}"]
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = (field_values or {})[field]
    env.update(overrides or {})
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    command = list(container.get("command") or [])
    if command:
        args += ["--entrypoint", json.dumps(command)]
    return [*args, image, *container.get("args", [])]
