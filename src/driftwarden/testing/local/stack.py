"""The whole Driftwarden pipeline as local processes, configured like the cluster.

:class:`LocalStack` renders, from the same builders the operator uses, the monitor
ConfigMap files (``monitor.json``, ``shardmap.json``), the PrometheusRule groups, the
AlertmanagerConfig spec and the dashboard, then starts on 127.0.0.1 with free ports:
an alert receiver (Discord/Slack/webhook stand-in), Alertmanager, N drift-worker
shards (``driftwarden worker``), the model server (``driftwarden serve``) and
Prometheus, waits until each is healthy, and stops them all (process groups) on exit,
on Ctrl-C and on any start-up failure::

    with LocalStack(name="diamonds", spec=spec) as stack:
        httpx.post(stack.model_url + "/predict", json=...)
        stack.query("driftwarden:monitor_feature_drift:share")
        stack.wait_for_alert("DriftwardenDataDrift")
        stack.receiver.notifications("discord")
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from driftwarden.alerts.alertmanager import build_config_spec
from driftwarden.alerts.rules import build_rule_groups
from driftwarden.common import auth
from driftwarden.common.durations import parse_duration
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.dashboards import build_dashboard, build_overview_dashboard
from driftwarden.testing.local.config import (
    LocalSecrets,
    ScrapeTarget,
    SecretNotFoundError,
    render_alertmanager_config,
    render_prometheus_config,
)
from driftwarden.testing.local.processes import (
    ManagedProcess,
    ProcessError,
    free_port,
    free_port_block,
)
from driftwarden.testing.local.receiver import AlertReceiver, Notification

log = logging.getLogger("driftwarden.testing.local")

MONITOR_FILE = "monitor.json"
SHARDMAP_FILE = "shardmap.json"
RULES_FILE = "rules.yml"
# Extra consecutive worker ports reserved beyond spec.workers.shards, for rescaling.
SPARE_WORKER_PORTS = 8


# (python executable, port) -> argv of one process.
CommandFn = Callable[[str, int], list[str]]


def default_worker_command(python: str, port: int) -> list[str]:
    """Return the argv of one drift-worker shard (address in DRIFTWARDEN_WORKER__HOST/PORT)."""
    del port  # passed through the environment, like every other setting
    return [python, "-m", "driftwarden.cli", "worker"]


def default_model_command(python: str, port: int) -> list[str]:
    """Return the argv of the model server (address in DRIFTWARDEN_SERVER__HOST/PORT)."""
    del port
    return [python, "-m", "driftwarden.cli", "serve"]


@dataclass(frozen=True)
class Timing:
    """How fast the local pipeline reacts: scrape, rule evaluation and notification.

    The defaults suit tests and the demo (seconds, not minutes); the alerts' ``for:``
    comes from the monitor spec, as in a cluster.
    """

    scrape_interval: str = "1s"
    evaluation_interval: str = "1s"
    rate_window: str = "10s"
    group_wait: str = "1s"
    group_interval: str = "2s"
    repeat_interval: str = "1h"
    resolve_timeout: str = "10s"


@dataclass(frozen=True)
class ActiveAlert:
    """One alert as Prometheus reports it (``/api/v1/alerts``)."""

    name: str
    state: str  # pending | firing
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    active_at: str


class LocalStack:
    """One DriftMonitor's pipeline on this machine; a context manager.

    ``spec`` is the monitor's DriftMonitorSpec (receivers included). Each receiver's
    Secret reference resolves through ``secrets`` (values, environment, files) and
    otherwise to this stack's own :class:`AlertReceiver`, so alerts are recorded
    locally unless a real Discord/Slack URL is supplied.
    """

    def __init__(
        self,
        *,
        name: str,
        spec: DriftMonitorSpec,
        namespace: str = "default",
        run_dir: Path | None = None,
        timing: Timing = Timing(),
        secrets: LocalSecrets | None = None,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
        start_timeout: float = 120.0,
        worker_command: CommandFn | None = None,
        model_command: CommandFn | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.spec = spec
        self.timing = timing
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.start_timeout = start_timeout
        self.worker_command = worker_command or default_worker_command
        self.model_command = model_command or default_model_command
        self._secrets = secrets or LocalSecrets()
        self._own_run_dir = run_dir is None
        self.run_dir = (
            Path(run_dir)
            if run_dir is not None
            else Path(tempfile.mkdtemp(prefix=f"driftwarden-{name}-"))
        )
        self.receiver = AlertReceiver()
        self.model_port = free_port()
        self.worker_base_port = free_port_block(spec.workers.shards + SPARE_WORKER_PORTS)
        self.prometheus_port = free_port()
        self.alertmanager_port = free_port()
        self._processes: dict[str, ManagedProcess] = {}
        self._shard_map = ShardMap(
            monitor=f"{namespace}/{name}", epoch=1, shards=spec.workers.shards
        )
        self._workers: dict[int, ManagedProcess] = {}
        self._started = False
        self._previous_sigterm: Any = None
        self._http = httpx.Client(timeout=10.0)
        # The monitor credential, as the operator's Secret would hold it: workers get the
        # monitor key, the model server the sender key only (docs/security.md).
        self.credential = auth.Credential.generate(self._shard_map.monitor)
        self._operator_token = auth.TokenSource(self.credential, auth.ROLE_OPERATOR)

    # ------------------------------------------------------------------ URLs

    @property
    def model_url(self) -> str:
        return f"http://127.0.0.1:{self.model_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def worker_url(self, ordinal: int) -> str:
        return f"http://127.0.0.1:{self.worker_base_port + ordinal}"

    @property
    def config_dir(self) -> Path:
        return self.run_dir / "config"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def credential_dir(self) -> Path:
        return self.run_dir / "credential"

    def operator_headers(self) -> dict[str, str]:
        """Return the Authorization header the operator sends (shard-map pushes, state reads)."""
        return self._operator_token.header()

    # ------------------------------------------------------------- rendering

    def render(self) -> None:
        """Write every config file into ``run_dir`` (done by ``start``; callable alone)."""
        for folder in (self.config_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        monitor_json, shardmap_json = self._config_map_files()
        (self.config_dir / MONITOR_FILE).write_text(monitor_json, encoding="utf-8")
        (self.config_dir / SHARDMAP_FILE).write_text(shardmap_json, encoding="utf-8")
        auth.write_credential_files(self.credential_dir, self.credential)
        groups = build_rule_groups(
            self.name, self.namespace, self.spec, rate_window=self.timing.rate_window
        )
        self._write_yaml(self.config_dir / RULES_FILE, {"groups": groups})
        shards = self.spec.workers.shards
        prometheus = render_prometheus_config(
            name=self.name,
            namespace=self.namespace,
            model_targets=[ScrapeTarget(f"127.0.0.1:{self.model_port}", f"{self.name}-model-0")],
            worker_targets=[
                ScrapeTarget(f"127.0.0.1:{self.worker_base_port + k}", f"{self.name}-workers-{k}")
                for k in range(shards)
            ],
            alertmanager=f"127.0.0.1:{self.alertmanager_port}",
            rule_files=[str(self.config_dir / RULES_FILE)],
            scrape_interval=self.timing.scrape_interval,
            evaluation_interval=self.timing.evaluation_interval,
        )
        self._write_yaml(self.config_dir / "prometheus.yml", prometheus)
        self._write_yaml(self.config_dir / "alertmanager.yml", self.alertmanager_config())
        for file_name, dashboard in (
            (f"dashboard-{self.namespace}-{self.name}.json", self.dashboard()),
            ("dashboard-overview.json", build_overview_dashboard()),
        ):
            (self.config_dir / file_name).write_text(
                json.dumps(dashboard, indent=1), encoding="utf-8"
            )

    def _config_map_files(self) -> tuple[str, str]:
        # The operator's own ConfigMap builder, so worker and server read exactly what
        # they read in a cluster.
        from driftwarden.operator.builders import MONITOR_FILE as CM_MONITOR
        from driftwarden.operator.builders import SHARDMAP_FILE as CM_SHARDMAP
        from driftwarden.operator.builders import build_config_map
        from driftwarden.operator.monitor import Monitor
        from driftwarden.operator.settings import OperatorSettings

        monitor = Monitor(
            name=self.name,
            namespace=self.namespace,
            uid="local",
            generation=1,
            labels={},
            spec=self.spec,
        )
        data = build_config_map(monitor, OperatorSettings(), self._shard_map)["data"]
        return data[CM_MONITOR], data[CM_SHARDMAP]

    def alertmanager_spec(self) -> dict[str, Any]:
        """Return the AlertmanagerConfig spec, as the operator renders it, with local timing."""
        return build_config_spec(
            self.name,
            self.namespace,
            self.spec,
            group_wait=self.timing.group_wait,
            group_interval=self.timing.group_interval,
            repeat_interval=self.timing.repeat_interval,
        )

    def alertmanager_config(self) -> dict[str, Any]:
        """Return ``alertmanager.yml`` with every receiver URL resolved."""
        kinds = {}
        for receiver in self.spec.alerts.receivers:
            for kind in ("discord", "slack", "webhook"):
                config = getattr(receiver, kind)
                if config is None:
                    continue
                ref = next(v for k, v in config if k.endswith("secret_ref"))
                kinds[(ref.name, ref.key)] = self.receiver.url(kind, receiver.name)
        secrets = _FallbackSecrets(self._secrets, kinds)
        return render_alertmanager_config(
            [(self.namespace, f"{self.name}-driftwarden", self.alertmanager_spec())],
            secrets,  # type: ignore[arg-type]
            resolve_timeout=self.timing.resolve_timeout,
        )

    def dashboard(self) -> dict[str, Any]:
        """Return this monitor's Grafana dashboard JSON (the operator's ConfigMap content)."""
        return build_dashboard(self.name, self.namespace, self.spec)

    @staticmethod
    def _write_yaml(path: Path, data: Any) -> None:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    # ------------------------------------------------------------ processes

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DRIFTWARDEN_MONITOR_CONFIG": str(self.config_dir / MONITOR_FILE),
                "DRIFTWARDEN_SHARD_MAP": str(self.config_dir / SHARDMAP_FILE),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def _worker_process(self, ordinal: int) -> ManagedProcess:
        port = self.worker_base_port + ordinal
        data_dir = self.run_dir / "workers" / str(ordinal)
        data_dir.mkdir(parents=True, exist_ok=True)
        return ManagedProcess(
            f"worker-{ordinal}",
            self.worker_command(self.python, port),
            log_path=self.log_dir / f"worker-{ordinal}.log",
            # /readyz answers once the shard has restored its snapshot and WAL.
            health_url=f"http://127.0.0.1:{port}/readyz",
            env=self._env(
                DRIFTWARDEN_WORKER__HOST="127.0.0.1",
                DRIFTWARDEN_WORKER__PORT=str(port),
                DRIFTWARDEN_WORKER__ORDINAL=str(ordinal),
                DRIFTWARDEN_WORKER__DATA_DIR=str(data_dir),
                # Handoffs between shards go peer to peer, on base_port + ordinal.
                DRIFTWARDEN_WORKER__PEER_URL_TEMPLATE="http://127.0.0.1:{port}",
                DRIFTWARDEN_WORKER__BASE_PORT=str(self.worker_base_port),
                DRIFTWARDEN_CREDENTIAL_FILE=str(self.credential_dir / auth.WORKER_FILE),
            ),
        )

    def _model_process(self) -> ManagedProcess:
        return ManagedProcess(
            "model-server",
            self.model_command(self.python, self.model_port),
            log_path=self.log_dir / "model-server.log",
            health_url=f"{self.model_url}/readyz",
            env=self._env(
                DRIFTWARDEN_SERVER__HOST="127.0.0.1",
                DRIFTWARDEN_SERVER__PORT=str(self.model_port),
                DRIFTWARDEN_SENDER__URL_TEMPLATE="http://127.0.0.1:{port}",
                DRIFTWARDEN_SENDER__BASE_PORT=str(self.worker_base_port),
                DRIFTWARDEN_CREDENTIAL_FILE=str(self.credential_dir / auth.SENDER_FILE),
            ),
        )

    def _prometheus_process(self) -> ManagedProcess:
        from driftwarden.testing.tools import tool_path

        return ManagedProcess(
            "prometheus",
            [
                str(tool_path("prometheus")),
                f"--config.file={self.config_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.run_dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            log_path=self.log_dir / "prometheus.log",
            health_url=f"{self.prometheus_url}/-/ready",
        )

    def _alertmanager_process(self) -> ManagedProcess:
        from driftwarden.testing.tools import tool_path

        return ManagedProcess(
            "alertmanager",
            [
                str(tool_path("alertmanager")),
                f"--config.file={self.config_dir / 'alertmanager.yml'}",
                f"--storage.path={self.run_dir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                # Empty disables the gossip listener (which binds 0.0.0.0:9094).
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            log_path=self.log_dir / "alertmanager.log",
            health_url=f"{self.alertmanager_url}/-/ready",
        )

    def start(self) -> Self:
        """Render configs, start every process, wait until all are healthy; return self.

        On any failure everything already started is stopped before the error propagates.
        """
        if self._started:
            raise ProcessError("this LocalStack is already started")
        self._started = True
        self._install_sigterm_handler()
        try:
            self.receiver.start()
            self.render()
            self._launch("alertmanager", self._alertmanager_process())
            for ordinal in range(self.spec.workers.shards):
                self._workers[ordinal] = self._launch(
                    f"worker-{ordinal}", self._worker_process(ordinal)
                )
            self._launch("model-server", self._model_process())
            for process in list(self._processes.values()):
                process.wait_healthy(self.start_timeout)
            # Prometheus last: scraping shards that are still restoring would record
            # them as down and raise shard alerts the moment the stack starts.
            # Rules are loaded only once every target has been scraped: Prometheus needs
            # a few seconds to turn its config into targets, and rules evaluated before
            # then see no shards at all.
            rules = (self.config_dir / RULES_FILE).read_text(encoding="utf-8")
            self._write_yaml(self.config_dir / RULES_FILE, {"groups": []})
            self._launch("prometheus", self._prometheus_process()).wait_healthy(self.start_timeout)
            self._wait_for_targets(self.start_timeout)
            (self.config_dir / RULES_FILE).write_text(rules, encoding="utf-8")
            self.reload_prometheus()
            log.info(
                "local stack %s/%s up: model %s, prometheus %s, alertmanager %s, %d shards, logs in %s",
                self.namespace,
                self.name,
                self.model_url,
                self.prometheus_url,
                self.alertmanager_url,
                len(self._workers),
                self.log_dir,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_targets(self, timeout: float, expected: int | None = None) -> None:
        expected = 1 + len(self._workers) if expected is None else expected
        deadline = time.monotonic() + timeout
        health: list[tuple[str, str, str]] = []
        while time.monotonic() < deadline:
            targets = self._prom_get("/api/v1/targets", {"state": "active"})["activeTargets"]
            health = [(t["scrapeUrl"], t["health"], t.get("lastError", "")) for t in targets]
            if len(health) == expected and all(h == "up" for _, h, _ in health):
                return
            time.sleep(0.25)
        raise ProcessError(
            f"Prometheus did not scrape all {expected} targets within {timeout:.0f} s: {health}; "
            f"see {self.log_dir}"
        )

    def reload_prometheus(self) -> None:
        """Make Prometheus re-read prometheus.yml and the rule file (``/-/reload``)."""
        response = self._http.post(self.prometheus_url + "/-/reload")
        if response.status_code != 200:
            raise ProcessError(
                f"Prometheus refused to reload its configuration: HTTP {response.status_code} "
                f"{response.text[:300]}; see {self.log_dir / 'prometheus.log'}"
            )

    def _launch(self, key: str, process: ManagedProcess) -> ManagedProcess:
        self._processes[key] = process
        return process.start()

    def stop(self) -> None:
        """Stop every process (model server first, so its sender can drain) and the receiver."""
        order = [
            "model-server",
            *[f"worker-{k}" for k in sorted(self._workers)],
            "prometheus",
            "alertmanager",
        ]
        for key in order + [k for k in self._processes if k not in order]:
            process = self._processes.get(key)
            if process is not None:
                with contextlib.suppress(Exception):
                    process.stop()
        with contextlib.suppress(Exception):
            self.receiver.stop()
        self._http.close()
        self._restore_sigterm_handler()
        if self._own_run_dir and os.environ.get("DRIFTWARDEN_KEEP_RUN_DIR") != "1":
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _install_sigterm_handler(self) -> None:
        # Ctrl-C arrives as KeyboardInterrupt and unwinds through __exit__; SIGTERM
        # (e.g. from a CI runner) is turned into the same so processes never leak.
        if threading.current_thread() is not threading.main_thread():
            return

        def _raise(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self._previous_sigterm = signal.signal(signal.SIGTERM, _raise)

    def _restore_sigterm_handler(self) -> None:
        if (
            self._previous_sigterm is not None
            and threading.current_thread() is threading.main_thread()
        ):
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    # --------------------------------------------------------------- shards

    @property
    def shards(self) -> dict[int, ManagedProcess]:
        return dict(self._workers)

    def kill_shard(self, ordinal: int) -> None:
        """Kill drift-worker shard ``ordinal`` with SIGKILL (a crash, not a shutdown)."""
        self._workers[ordinal].kill()

    def restart_shard(self, ordinal: int, timeout: float | None = None) -> None:
        """Start shard ``ordinal`` again on its port and data dir; wait until healthy."""
        process = self._worker_process(ordinal)
        self._workers[ordinal] = self._processes[f"worker-{ordinal}"] = process
        process.start()
        process.wait_healthy(timeout or self.start_timeout)

    @property
    def shard_map(self) -> ShardMap:
        """Return the shard map currently published to workers and the model server."""
        return self._shard_map

    def scale(self, shards: int, *, timeout: float | None = None) -> ShardMap:
        """Reshard to ``shards`` workers, as ``kubectl scale driftmonitor`` does; return the new map.

        Growing starts the new shards first; then the next-epoch shard map is written
        (the model server's sender and the workers poll it) and pushed to every shard,
        Prometheus gets the new targets and rules, and, when shrinking, the removed
        shards are stopped once every handoff has completed.
        """
        timeout = timeout or self.start_timeout
        old = self._shard_map.shards
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        if (
            shards > old + SPARE_WORKER_PORTS
            or shards > self.spec.workers.shards + SPARE_WORKER_PORTS
        ):
            raise ValueError(
                f"this stack reserved ports for at most {self.spec.workers.shards + SPARE_WORKER_PORTS} "
                f"shards; start a new LocalStack for {shards}"
            )
        for ordinal in range(old, shards):
            self._workers[ordinal] = self._launch(
                f"worker-{ordinal}", self._worker_process(ordinal)
            )
        for ordinal in range(old, shards):
            self._workers[ordinal].wait_healthy(timeout)
        self._shard_map = self._shard_map.advance(shards)
        self.spec = self.spec.model_copy(
            update={"workers": self.spec.workers.model_copy(update={"shards": shards})}
        )
        self.render()
        body = self._shard_map.model_dump_json()
        for ordinal in range(max(old, shards)):
            response = self._http.put(
                f"{self.worker_url(ordinal)}/v1/shardmap",
                content=body,
                headers=self.operator_headers(),
            )
            if response.status_code >= 300:
                raise ProcessError(
                    f"shard {ordinal} refused shard map epoch {self._shard_map.epoch}: HTTP "
                    f"{response.status_code} {response.text[:300]}"
                )
        self._wait_settled(range(max(old, shards)), timeout)
        # Prometheus drops removed shards' targets before they stop, so a scale-down
        # never looks like a shard going down.
        self.reload_prometheus()
        self._wait_for_targets(timeout, expected=1 + shards)
        for ordinal in range(shards, old):
            self._workers.pop(ordinal).stop()
            self._processes.pop(f"worker-{ordinal}", None)
        return self._shard_map

    def _wait_settled(self, ordinals: range, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending: dict[int, Any] = {}
        while time.monotonic() < deadline:
            pending = {}
            for ordinal in ordinals:
                doc = self._http.get(f"{self.worker_url(ordinal)}/v1/handoff").json()
                if doc.get("outgoing") or doc.get("awaiting"):
                    pending[ordinal] = doc
            if not pending:
                return
            time.sleep(0.2)
        raise ProcessError(f"stream handoffs still pending after {timeout:.0f} s: {pending}")

    def process_logs(self) -> dict[str, str]:
        """Return the tail of every process's log, keyed by process name (for failure reports)."""
        return {key: p.log_tail() for key, p in self._processes.items()}

    # ------------------------------------------------------------- queries

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Return the instant-vector result of ``promql`` on this stack's Prometheus."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        data = self._prom_get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(
        self, promql: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        """Return the matrix result of ``promql`` between ``start`` and ``end`` (unix seconds)."""
        data = self._prom_get(
            "/api/v1/query_range", {"query": promql, "start": start, "end": end, "step": step}
        )
        return list(data["result"])

    def _prom_get(self, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        response = self._http.get(self.prometheus_url + path, params=params)
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if response.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(
                f"Prometheus {path} {params.get('query')!r} failed: HTTP {response.status_code} "
                f"{body.get('errorType', '')} {body.get('error', response.text[:300])}"
            )
        return body["data"]

    def alerts(self) -> list[ActiveAlert]:
        """Return the alerts Prometheus currently holds (pending and firing)."""
        data = self._prom_get("/api/v1/alerts", {})
        return [
            ActiveAlert(
                name=a["labels"].get("alertname", ""),
                state=a["state"],
                labels=a["labels"],
                annotations=a.get("annotations", {}),
                active_at=a.get("activeAt", ""),
            )
            for a in data["alerts"]
        ]

    def wait_for_alert(
        self,
        alertname: str,
        *,
        state: str = "firing",
        timeout: float = 120.0,
        where: Callable[[ActiveAlert], bool] | None = None,
    ) -> ActiveAlert:
        """Return the first alert ``alertname`` in ``state``, polling Prometheus until ``timeout``."""
        deadline = time.monotonic() + timeout
        seen: list[ActiveAlert] = []
        while True:
            seen = self.alerts()
            for alert in seen:
                if (
                    alert.name == alertname
                    and alert.state == state
                    and (where is None or where(alert))
                ):
                    return alert
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"alert {alertname} never reached state {state} within {timeout:.0f} s; "
                    f"alerts now: {[(a.name, a.state, dict(a.labels)) for a in seen] or 'none'}"
                )
            time.sleep(0.5)

    def wait_for_no_alert(self, alertname: str, *, timeout: float = 120.0) -> None:
        """Return once Prometheus holds no alert ``alertname`` (pending or firing)."""
        deadline = time.monotonic() + timeout
        while True:
            active = [a for a in self.alerts() if a.name == alertname]
            if not active:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"alert {alertname} still active after {timeout:.0f} s: "
                    f"{[(a.state, dict(a.labels)) for a in active]}"
                )
            time.sleep(0.5)

    def received(self, kind: str | None = None) -> list[Notification]:
        """Return the notifications the local receiver got (of one ``kind`` if given)."""
        return self.receiver.notifications(kind)

    def for_seconds(self) -> float:
        """Return the monitor's ``alerts.for`` in seconds."""
        return parse_duration(self.spec.alerts.for_)


class _FallbackSecrets:
    """Secrets from the user's LocalSecrets first, else the local receiver's URL."""

    def __init__(self, primary: LocalSecrets, fallback: Mapping[tuple[str, str], str]) -> None:
        self._primary = primary
        self._fallback = fallback

    def resolve(self, ref: Mapping[str, str]) -> str:
        try:
            return self._primary.resolve(ref)
        except SecretNotFoundError:
            key = (ref["name"], ref["key"])
            if key in self._fallback:
                return self._fallback[key]
            raise


@contextlib.contextmanager
def local_stack(**kwargs: Any) -> Iterator[LocalStack]:
    """Yield a started :class:`LocalStack` (same keywords), stopped on exit."""
    stack = LocalStack(**kwargs)
    with stack:
        yield stack
