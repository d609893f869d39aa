"""The images start and do their job when run exactly as the operator (or chart) renders them.

For an example monitor (manifests/examples, diabetes: two shards): both drift-worker
shards and the model server run from the builders' StatefulSet and Deployment (uid 10001,
read-only root, ALL capabilities dropped, the ConfigMap and Secret as files, /tmp as a
tmpfs, the shard's claim as a directory); the model server answers /predict and its
Sender delivers to the workers, which acknowledge and export the values. The operator
image, run from the Helm chart's Deployment without an API server, exits with a clear
error. The digits monitor (torch) fails in the default worker image with a message
naming the -torch flavour.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from driftwarden.common import auth, names
from driftwarden.operator import builders
from driftwarden.operator.examples import examples
from driftwarden.operator.monitor import Monitor
from driftwarden.operator.settings import OperatorSettings
from driftwarden.testing.local.processes import free_port, free_port_block
from driftwarden.testing.tools import tool_path
from driftwarden.testing.waiting import wait_until
from support.podman_pods import claim_dir, materialise_volumes, podman, run_args, ulimits

# The first test's setup builds the images (a cold build is minutes on 2 shared cores).
pytestmark = pytest.mark.timeout(2400)

ROOT = Path(__file__).resolve().parents[2]
ORDINAL_FIELD = "metadata.labels['apps.kubernetes.io/pod-index']"


def example_monitor(file: str) -> Monitor:
    _, objects = examples()[file]
    body = next(o for o in objects if o["kind"] == names.KIND)
    body = {**body, "metadata": {**body["metadata"], "namespace": "default", "uid": "u-1"}}
    return Monitor.from_body(body)


class Pods:
    """Containers started by one test; every one is removed at the end, logs kept for failures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []
        self.prefix = f"dw-images-{secrets.token_hex(3)}"

    def run(self, name: str, args_after_run: list[str]) -> str:
        podman("run", *args_after_run)
        self.names.append(name)
        return name

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def logs(self, name: str, lines: int = 60) -> str:
        proc = podman("logs", "--tail", str(lines), name, check=False)
        return proc.stdout + proc.stderr

    def running(self, name: str) -> bool:
        proc = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        return proc.stdout.strip() == "true"

    def all_logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{self.logs(n)}" for n in self.names)

    def close(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "5", name, check=False, timeout=60)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    tmp_path.chmod(0o755)
    pods = Pods(tmp_path)
    try:
        yield pods
    finally:
        pods.close()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def wait_ready(pods: Pods, name: str, url: str, timeout: float = 180) -> None:
    def ready() -> bool:
        if not pods.running(name):
            raise AssertionError(f"{name} exited before it was ready:\n{pods.logs(name)}")
        return http_get(url)[0] == 200

    wait_until(ready, timeout=timeout, interval=1.0, what=f"{url} ready", describe=pods.all_logs)


def metric_sum(text: str, metric: str) -> float:
    pattern = re.compile(rf"^{re.escape(metric)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def reference_records(image: str, monitor: Monitor, rows: int) -> list[dict[str, Any]]:
    """Feature rows of the bundle baked into ``image`` (its reference.csv, no host cache)."""
    name = monitor.spec.model.bundle.removeprefix("builtin://")
    bundle = f"/opt/driftwarden-bundles/{name}"
    text = podman(
        "run",
        "--rm",
        *ulimits(),
        "--entrypoint",
        "cat",
        image,
        f"{bundle}/bundle.json",
        timeout=120,
    ).stdout
    features = [f["name"] for f in json.loads(text)["features"]]
    csv = podman(
        "run",
        "--rm",
        *ulimits(),
        "--entrypoint",
        "head",
        image,
        "-n",
        str(rows + 1),
        f"{bundle}/reference.csv",
        timeout=120,
    ).stdout
    frame = pd.read_csv(io.StringIO(csv))
    return json.loads(frame[features].to_json(orient="records"))


def rendered(monitor: Monitor) -> dict[str, Any]:
    settings = OperatorSettings()
    shard_map = builders.next_shard_map(None, None, monitor)
    credential = auth.Credential.generate(monitor.key)
    config = builders.build_config_map(monitor, settings, shard_map)
    secret = builders.build_credential_secret(monitor, credential)
    return {
        "objects": {config["metadata"]["name"]: config, secret["metadata"]["name"]: secret},
        "model": builders.build_model_deployment(monitor, settings)["spec"]["template"]["spec"],
        "workers": builders.build_worker_statefulset(monitor, settings)["spec"]["template"]["spec"],
        "shards": monitor.spec.workers.shards,
    }


def start_workers(
    pods: Pods, images: dict[str, str], pod: dict[str, Any], objects: dict[str, Any], shards: int
) -> int:
    base = free_port_block(shards)
    container = pod["containers"][0]
    for ordinal in range(shards):
        root = pods.root / f"worker-{ordinal}"
        dirs = materialise_volumes(pod, objects, root)
        dirs["data"] = claim_dir(pod, root, "data")
        name = pods.name(f"worker-{ordinal}")
        pods.run(
            name,
            run_args(
                pod,
                container,
                name=name,
                image=images["drift-worker"],
                volume_dirs=dirs,
                field_values={ORDINAL_FIELD: str(ordinal)},
                overrides={
                    "DRIFTWARDEN_WORKER__HOST": "127.0.0.1",
                    "DRIFTWARDEN_WORKER__PORT": str(base + ordinal),
                    "DRIFTWARDEN_WORKER__BASE_PORT": str(base),
                    "DRIFTWARDEN_WORKER__PEER_URL_TEMPLATE": "http://127.0.0.1:{port}",
                },
            ),
        )
    return base


def test_model_server_sends_to_workers_that_acknowledge_and_export(images, pods):
    monitor = example_monitor("diabetes.yaml")
    out = rendered(monitor)
    base = start_workers(pods, images, out["workers"], out["objects"], out["shards"])
    model_pod = out["model"]
    model_port = free_port()
    name = pods.name("model")
    dirs = materialise_volumes(model_pod, out["objects"], pods.root / "model")
    pods.run(
        name,
        run_args(
            model_pod,
            model_pod["containers"][0],
            name=name,
            image=images["model-server"],
            volume_dirs=dirs,
            overrides={
                "DRIFTWARDEN_SERVER__HOST": "127.0.0.1",
                "DRIFTWARDEN_SERVER__PORT": str(model_port),
                "DRIFTWARDEN_SENDER__URL_TEMPLATE": "http://127.0.0.1:{port}",
                "DRIFTWARDEN_SENDER__BASE_PORT": str(base),
            },
        ),
    )
    for ordinal in range(out["shards"]):
        wait_ready(
            pods, pods.name(f"worker-{ordinal}"), f"http://127.0.0.1:{base + ordinal}/readyz"
        )
    model = f"http://127.0.0.1:{model_port}"
    wait_ready(pods, name, f"{model}/readyz")

    records = reference_records(images["model-server"], monitor, 400)
    for start in range(0, len(records), 100):
        request = urllib.request.Request(
            f"{model}/predict",
            data=json.dumps(records[start : start + 100]).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            body = json.loads(response.read())
        assert body, body

    def delivered() -> float:
        acked = metric_sum(http_get(f"{model}/metrics")[1], names.M_SENDER_ACKED)
        exported = sum(
            metric_sum(http_get(f"http://127.0.0.1:{base + i}/metrics")[1], names.M_STREAM_VALUES)
            for i in range(out["shards"])
        )
        return acked if acked > 0 and exported >= acked else 0.0

    acked = wait_until(
        delivered,
        timeout=120,
        interval=1.0,
        what="values acked and exported",
        describe=pods.all_logs,
    )
    assert acked >= len(records), acked


def test_worker_without_torch_names_the_torch_flavour(images, pods):
    monitor = example_monitor("digits.yaml")
    out = rendered(monitor)
    start_workers(pods, images, out["workers"], out["objects"], 1)
    name = pods.name("worker-0")
    wait_until(lambda: not pods.running(name), timeout=120, interval=1.0, what="the worker to exit")
    logs = pods.logs(name, 200)
    assert "-torch image flavour" in logs, logs


def test_operator_fails_clearly_without_an_api_server(images, pods):
    helm = tool_path("helm")
    manifests = subprocess.run(
        [str(helm), "template", "dw", str(ROOT / "charts" / "driftwarden")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    deployment = next(
        d
        for d in yaml.safe_load_all(manifests)
        if d
        and d["kind"] == "Deployment"
        and d["spec"]["template"]["spec"]["containers"][0]["name"] == "operator"
    )
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    name = pods.name("operator")
    started = time.monotonic()
    pods.run(
        name,
        run_args(
            pod,
            container,
            name=name,
            image=images["operator"],
            volume_dirs={},
            field_values={"metadata.name": name, "metadata.namespace": "driftwarden-system"},
            # No service-account token, no KUBERNETES_SERVICE_HOST: no API server to reach.
        ),
    )
    clear = re.compile(r"Invalid kube-config file|No configuration found|Service host/port")

    def failed() -> str | None:
        logs = pods.logs(name, 100)
        return logs if clear.search(logs) or not pods.running(name) else None

    # kopf retries its login activity (every 60 s) instead of exiting; either is fine as
    # long as the reason is the missing API server, not the image (imports, files).
    logs = wait_until(failed, timeout=120, interval=1.0, what="the operator to give up")
    assert clear.search(logs), logs
    for broken in ("ModuleNotFoundError", "ImportError", "Read-only file system", "Permission"):
        assert broken not in logs, logs
    if not pods.running(name):
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert code != "0", logs
    print(f"operator, {time.monotonic() - started:.0f} s after start:\n{logs[-600:]}")


def test_images_run_as_the_numeric_non_root_user(images):
    for image in images.values():
        user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
        assert user == "10001:10001", (image, user)
