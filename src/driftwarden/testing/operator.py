"""Running the real operator against a test control plane (cluster tests, benchmark).

- ``install_crd``: apply the generated CRD and wait until it is served.
- ``restricted_kubeconfig``: a ServiceAccount bound to exactly ``operator_rules()``, and a
  kubeconfig with its token, so the operator under test has the chart's permissions and
  no more (a missing verb fails the tests).
- ``FakeWorkerStatus``: an HTTP server on 127.0.0.1 answering the workers' ``/status``
  for monitors whose kwok pods run no process.
- ``run_operator``: the operator in ``kopf.testing.KopfRunner`` with the given settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import yaml

from driftwarden.common.contracts import DetectorStatus, StreamStatus, WorkerStatus
from driftwarden.common.paths import source_root
from driftwarden.common.sharding import ShardMap
from driftwarden.operator.crd import CRD_NAME
from driftwarden.operator.rbac import operator_rules

REPO = source_root() or Path.cwd()
CRD_FILE = REPO / "manifests" / "crd" / "driftmonitors.yaml"
HANDLERS_MODULE = "driftwarden.operator.handlers"


def install_crd(api_client: Any, *, timeout: float = 60.0) -> None:
    """Create or update the DriftMonitor CRD from manifests/crd and wait until Established."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    body = yaml.safe_load(CRD_FILE.read_text())
    try:
        current = ext.read_custom_resource_definition(CRD_NAME)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(CRD_NAME, body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        ext.create_custom_resource_definition(body)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(CRD_NAME)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {CRD_NAME} not Established within {timeout:.0f} s")


def restricted_kubeconfig(
    api_client: Any,
    admin_kubeconfig: Path,
    out: Path,
    *,
    namespace: str,
    name: str = "driftwarden-operator",
) -> Path:
    """Write a kubeconfig for a ServiceAccount holding only the operator's RBAC rules."""
    from kubernetes import client, utils

    objects = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"{namespace}-{name}"},
            "rules": operator_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{namespace}-{name}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{namespace}-{name}",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
    for obj in objects:
        utils.create_from_dict(api_client, obj)
    token = (
        client.CoreV1Api(api_client)
        .create_namespaced_service_account_token(
            name,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)
            ),
        )
        .status.token
    )
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
        "current-context": name,
    }
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


# 2026-11-23T10:00:00Z, the drift time every fake drifting stream reports
FAKE_DRIFT_TIME = 1_795_428_000.0
FAKE_THRESHOLD = 12.5


def fake_stream(*, drift: bool, last_drift_time: float | None = None) -> StreamStatus:
    """Return a live stream with one ``mixtureCusum`` detector in the given verdict."""
    detector = DetectorStatus(
        statistic=20.0 if drift else 1.0,
        p_value=None,
        alarm=drift,
        drift=drift,
        n_seen=1000,
        threshold=FAKE_THRESHOLD,
        false_alarm_budget=1e6,
    )
    return StreamStatus(
        drift=drift,
        last_drift_time=last_drift_time,
        status="live",
        values=1000,
        window_fill=1.0,
        generation=1,
        detectors={"mixtureCusum": detector},
    )


def fake_worker_status(
    monitor: str, ordinal: int, shards: int, streams: Mapping[str, StreamStatus]
) -> WorkerStatus:
    """Return the /status document of shard ``ordinal`` holding ``streams``, at epoch 1."""
    return WorkerStatus(
        monitor=monitor,
        shard=ordinal,
        epoch=1,
        shards=shards,
        shard_map=ShardMap(monitor=monitor, epoch=1, shards=shards),
        streams=dict(streams),
    )


class FakeWorkerStatus:
    """Serves ``/<namespace>/<monitor>/<ordinal>/status`` from a dict the test sets.

    Beside it, each answering shard behaves as a settled worker toward the operator:
    ``PUT .../v1/shardmap`` is accepted (the epoch is remembered, ``pushed``) and
    ``GET .../v1/handoff`` reports that epoch with nothing outgoing or awaited, so a
    scale-down proceeds as soon as the new map has been pushed.
    """

    def __init__(self) -> None:
        self.answers: dict[str, WorkerStatus] = {}
        self.pushed: dict[str, int] = {}
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _shard(self, suffix: str) -> str | None:
                key = self.path.strip("/").removesuffix(suffix)
                if key not in owner.answers:
                    self.send_error(503, "no such shard")
                    return None
                return key

            def _json(self, doc: str) -> None:
                body = doc.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                owner.requests += 1
                if self.path.endswith("/v1/handoff"):
                    key = self._shard("/v1/handoff")
                    if key is not None:
                        epoch = owner.pushed.get(key, owner.answers[key].epoch)
                        self._json(json.dumps({"epoch": epoch, "outgoing": [], "awaiting": []}))
                    return
                key = self._shard("/status")
                if key is not None:
                    self._json(owner.answers[key].to_json())

            def do_PUT(self) -> None:
                owner.requests += 1
                key = self._shard("/v1/shardmap")
                if key is None:
                    return
                length = int(self.headers.get("Content-Length") or 0)
                pushed = ShardMap.model_validate_json(self.rfile.read(length))
                owner.pushed[key] = max(owner.pushed.get(key, 0), pushed.epoch)
                self._json(json.dumps({"epoch": pushed.epoch}))

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url_template(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{{namespace}}/{{monitor}}/{{ordinal}}/status"

    def set_streams(
        self,
        namespace: str,
        monitor: str,
        shards: int,
        drifting: Mapping[int, list[str]] | None = None,
    ) -> None:
        """Make every shard of a monitor answer; ``drifting`` maps ordinal -> streams."""
        for ordinal in range(shards):
            streams = {
                s: fake_stream(drift=True, last_drift_time=FAKE_DRIFT_TIME)
                for s in (drifting or {}).get(ordinal, [])
            }
            streams[f"feature:quiet-{ordinal}"] = fake_stream(drift=False)
            self.answers[f"{namespace}/{monitor}/{ordinal}"] = fake_worker_status(
                f"{namespace}/{monitor}", ordinal, shards, streams
            )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def run_operator(
    env: Mapping[str, str],
    *,
    kubeconfig: Path | None = None,
    timeout: float = 60.0,
    quiet: bool = False,
    namespaces: list[str] | None = None,
) -> Iterator[Any]:
    """Run the operator in a KopfRunner thread with ``env`` set; yield the runner.

    ``quiet`` keeps kopf to warnings (a log line per handled event costs real time
    at hundreds of monitors). ``namespaces`` limits it to those (default: all).
    """
    from kopf.testing import KopfRunner

    import driftwarden.operator.handlers  # noqa: F401 - registers the handlers

    saved = {k: os.environ.get(k) for k in [*env, "KUBECONFIG"]}
    os.environ.update(env)
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        scope = [f"--namespace={ns}" for ns in namespaces] if namespaces else ["--all-namespaces"]
        args = [
            "run",
            *scope,
            "--standalone",
            *(["--quiet"] if quiet else []),
            "-m",
            HANDLERS_MODULE,
        ]
        with KopfRunner(args, timeout=timeout) as runner:
            yield runner
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def operator_writes() -> int:
    """Return the API writes the running (or last) in-process operator made."""
    from driftwarden.operator import metrics

    return metrics.api_writes()


def reconcile_passes() -> float:
    """Return successful reconcile passes counted in this process."""
    from prometheus_client import REGISTRY

    return (
        REGISTRY.get_sample_value("driftwarden_operator_reconciles_total", {"result": "ok"}) or 0.0
    )
