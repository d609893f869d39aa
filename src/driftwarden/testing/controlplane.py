"""A real Kubernetes control plane on loopback, for the cluster tests, benchmarks and demo.

``ControlPlane`` starts the pinned etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (built by ``hack/install-controlplane.sh``) as local processes
on free 127.0.0.1 ports, with their own CA and an admin kubeconfig. kwok plays the
kubelets of a few fake nodes, so Deployments and StatefulSets get Running/Ready pods;
the real prometheus-operator CRDs are installed; a default StorageClass with a small
in-process provisioner makes PersistentVolumeClaims bind.

    with ControlPlane() as cp:
        subprocess.run([tool_path("kubectl"), "--kubeconfig", cp.kubeconfig, "get", "nodes"])

Developers: ``python -m driftwarden.testing.controlplane up`` (then ``down``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from driftwarden.testing import tools
from driftwarden.testing._pki import Pki, make_pki
from driftwarden.testing._provisioner import HostPathProvisioner, storage_class_manifest

__all__ = [
    "DEFAULT_CRD_KINDS",
    "DEFAULT_NODE_CAPACITY",
    "KWOK_NODE_ANNOTATION",
    "STORAGE_CLASS",
    "ControlPlane",
    "ControlPlaneError",
]

log = logging.getLogger(__name__)

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# The first address of that range, which the API server gives the `kubernetes` Service.
KUBERNETES_SERVICE_IP = "10.96.0.1"
# kwok hands out pod IPs from this pool; a /16 leaves room for thousands of pods.
POD_CIDR = "10.244.0.1/16"
STORAGE_CLASS = "standard"  # kind's default class name, so manifests written for kind apply
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Fake nodes cost nothing, so they are sized for the operator benchmark (hundreds of
# monitors, thousands of pods), not for realism.
DEFAULT_NODE_CAPACITY: Mapping[str, str] = {
    "cpu": "256",
    "memory": "1Ti",
    "pods": "1000",
    "ephemeral-storage": "1Ti",
}
# The prometheus-operator kinds Driftwarden, its chart and kube-prometheus-stack users touch.
DEFAULT_CRD_KINDS: tuple[str, ...] = (
    "servicemonitors",
    "podmonitors",
    "prometheusrules",
    "alertmanagerconfigs",
    "prometheuses",
    "alertmanagers",
)
_STATE_FILE = "controlplane.json"
# Free ports are picked before the components bind them; another process may win one.
_START_ATTEMPTS = 3
# Not __name__: that is "__main__" when run with `python -m`.
_MODULE = "driftwarden.testing.controlplane"


class ControlPlaneError(RuntimeError):
    """The control plane could not start, or a component died."""


# Control planes whose processes may still run (strong references: an unreferenced
# ControlPlane must not lose its processes); stopped at interpreter exit if the owner
# forgot (or crashed past) stop().
_LIVE: set[ControlPlane] = set()


@atexit.register
def _stop_leftovers() -> None:
    for plane in list(_LIVE):
        plane.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _Component:
    """One control-plane process: its command line, log file and PID."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self, env: Mapping[str, str]) -> None:
        argv = list(self.argv)
        # If the Python process dies without running stop() (SIGKILL, OOM), the kernel
        # kills the component too. PDEATHSIG fires when the forking *thread* exits, so
        # only use it from the main thread, which lives as long as the process.
        if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env),
                # Own process group: stop() signals the group, so helpers die too.
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored %s", self.name, self.popen.pid, sig.name)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])


class ControlPlane:
    """A running etcd + kube-apiserver + controller-manager + scheduler + kwok on loopback.

    Use as a context manager, or call ``start()`` and ``stop()``. After start:
    ``kubeconfig`` (admin, system:masters), ``server`` (https URL), ``timings``
    (seconds per startup phase and ``total``), ``pids``.

    Args:
        workdir: folder for certificates, etcd data, kubeconfig and ``logs/``; a
            temporary one (removed by ``stop()``) when omitted.
        nodes: number of fake kwok nodes, each with ``node_capacity``.
        install_crds: apply pinned prometheus-operator CRDs and wait until Established.
        crd_kinds: which of them, by plural name; the default skips the four large CRDs
            (probes, scrapeconfigs, prometheusagents, thanosrulers) nothing here uses,
            which halves the CRD phase. ``tools.prometheus_operator_crds()`` lists all.
        provision_volumes: default StorageClass plus the in-process PV provisioner.
        startup_timeout: seconds for the whole startup before it is abandoned.
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        nodes: int = 3,
        node_capacity: Mapping[str, str] | None = None,
        install_crds: bool = True,
        crd_kinds: Collection[str] = DEFAULT_CRD_KINDS,
        provision_volumes: bool = True,
        startup_timeout: float = 180.0,
    ) -> None:
        if nodes < 0:
            raise ValueError(f"nodes must be >= 0, got {nodes}")
        self._given_workdir = Path(workdir) if workdir is not None else None
        self.workdir: Path | None = self._given_workdir
        self.nodes = nodes
        self.node_capacity = dict(node_capacity or DEFAULT_NODE_CAPACITY)
        self.install_crds = install_crds
        self.crd_kinds = tuple(crd_kinds)
        self.provision_volumes = provision_volumes
        self.startup_timeout = startup_timeout
        self.timings: dict[str, float] = {}
        self.ports: dict[str, int] = {}
        self.pki: Pki | None = None
        self._components: list[_Component] = []
        self._provisioner: HostPathProvisioner | None = None
        self._provisioner_client: Any = None
        self._lock = threading.Lock()

    # -- public API -----------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """Path of the admin kubeconfig (valid once started)."""
        return self._require_workdir() / "kubeconfig"

    @property
    def server(self) -> str:
        """The API server's https URL."""
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def pids(self) -> dict[str, int]:
        """PID of every started component, by name."""
        return {c.name: c.pid for c in self._components if c.pid is not None}

    @property
    def kubernetes_version(self) -> str:
        """The pinned Kubernetes version these binaries report (e.g. ``v1.35.4``)."""
        return tools.pinned("KUBERNETES_VERSION")

    def env(self) -> dict[str, str]:
        """Return a copy of os.environ pointing KUBECONFIG at this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def api_client(self) -> Any:
        """Return a new kubernetes.client.ApiClient for the admin user (close it when done)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane and return its result."""
        argv = [str(tools.tool_path("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def running(self) -> bool:
        """True while every started component process is alive."""
        return bool(self._components) and all(c.exit_code() is None for c in self._components)

    def check_health(self) -> None:
        """Raise ControlPlaneError naming any component that has exited, with its log tail."""
        for component in self._components:
            code = component.exit_code()
            if code is not None:
                raise ControlPlaneError(
                    f"{component.name} exited with code {code}; last log lines:\n"
                    f"{component.log_tail()}\n(full log: {component.log_path})"
                )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start every component, wait until the cluster is usable, and return self."""
        with self._lock:
            if self._components:
                raise ControlPlaneError("this ControlPlane is already started; stop() it first")
            for attempt in range(1, _START_ATTEMPTS + 1):
                _LIVE.add(self)
                try:
                    self._start()
                    break
                except BaseException as exc:
                    # Keep a temporary workdir: the component logs explain the failure.
                    self._stop_locked(keep_workdir=True)
                    if "address already in use" in str(exc) and attempt < _START_ATTEMPTS:
                        # Another process took a port between _free_port() and bind().
                        log.warning("a port was taken during startup; retrying on new ports")
                        self._reset_workdir(attempt)
                        continue
                    if self._given_workdir is None and self.workdir is not None:
                        log.error(
                            "control plane failed to start; logs kept in %s",
                            self.workdir / "logs",
                        )
                    raise
        return self

    def stop(self) -> None:
        """Stop the provisioner and every process (by process group), newest first; idempotent."""
        with self._lock:
            self._stop_locked()

    # -- startup --------------------------------------------------------------------

    def _start(self) -> None:
        self.timings = {}
        started = time.monotonic()
        deadline = started + self.startup_timeout
        binaries = {
            name: str(tools.tool_path(name))
            for name in (
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok",
                "kubectl",
            )
        }
        stages = tools.kwok_stages()
        crds = self._crd_files() if self.install_crds else []
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="driftwarden-controlplane-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

        with self._phase("certificates"):
            self.pki = make_pki(
                self.workdir / "pki",
                # The `kubernetes` Service's ClusterIP too: pods on real nodes (the
                # pods tier) reach the API server through it.
                ip_addresses=("127.0.0.1", KUBERNETES_SERVICE_IP),
                dns_names=(
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ),
            )
            self.ports = {
                name: _free_port()
                for name in (
                    "etcd",
                    "etcd-peer",
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kube-scheduler",
                    "kwok",
                )
            }
            self._write_kubeconfig()

        with self._phase("etcd"):
            etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
            self._launch("etcd", [binaries["etcd"], *self._etcd_args(etcd_url)], env)
            self._wait_for("etcd /health", lambda: self._http_ok(etcd_url + "/health"), deadline)

        with self._phase("kube-apiserver"):
            self._launch(
                "kube-apiserver", [binaries["kube-apiserver"], *self._apiserver_args(etcd_url)], env
            )
            self._wait_for(
                "kube-apiserver /readyz",
                lambda: self._http_ok(self.server + "/readyz", admin=True),
                deadline,
            )

        # CRD validation schemas take the API server seconds to compile; apply them in
        # the background while the controllers and nodes come up.
        files = [arg for crd in crds for arg in ("-f", str(crd))]
        crd_apply = None
        if crds:
            # Server-side apply: the Prometheus CRD is too large for the last-applied
            # annotation of a client-side apply.
            crd_apply = _Background(
                "crds-applied",
                [
                    binaries["kubectl"],
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    *files,
                ],
            )
        try:
            self._start_controllers(binaries, stages, env, deadline, crd_apply, files)
        finally:
            if crd_apply is not None:
                crd_apply.kill()
        self.timings["total"] = round(time.monotonic() - started, 2)
        log.info(
            "control plane %s ready in %.1f s (%s); logs in %s",
            self.server,
            self.timings["total"],
            self.timings,
            self.workdir / "logs",
        )

    def _start_controllers(
        self,
        binaries: Mapping[str, str],
        stages: Sequence[Path],
        env: Mapping[str, str],
        deadline: float,
        crd_apply: _Background | None,
        crd_args: Sequence[str],
    ) -> None:
        with self._phase("controllers"):
            self._launch(
                "kube-controller-manager",
                [binaries["kube-controller-manager"], *self._controller_manager_args()],
                env,
            )
            self._launch(
                "kube-scheduler", [binaries["kube-scheduler"], *self._scheduler_args()], env
            )
            self._launch("kwok", [binaries["kwok"], *self._kwok_args(stages)], env)
            for name in ("kube-controller-manager", "kube-scheduler"):
                url = f"https://127.0.0.1:{self.ports[name]}/healthz"
                self._wait_for(f"{name} /healthz", lambda url=url: self._http_ok(url), deadline)

        from kubernetes import client

        workdir = self._require_workdir()
        api = self.api_client()
        try:
            core = client.CoreV1Api(api)
            with self._phase("nodes"):
                for index in range(self.nodes):
                    core.create_node(self._node_manifest(index))
                self._wait_for(
                    f"{self.nodes} kwok nodes Ready",
                    lambda: self._ready_nodes(core) >= self.nodes,
                    deadline,
                )
            if crd_apply is not None:
                with self._phase("crds"):
                    crd_apply.wait(deadline, self.timings)
                    remaining = max(1, int(deadline - time.monotonic()))
                    self.kubectl(
                        "wait",
                        "--for=condition=Established",
                        f"--timeout={remaining}s",
                        *crd_args,
                        timeout=remaining + 10,
                    )
            if self.provision_volumes:
                with self._phase("storage"):
                    client.StorageV1Api(api).create_storage_class(
                        storage_class_manifest(STORAGE_CLASS)
                    )
                    self._provisioner_client = self.api_client()
                    # Its own client: the provisioner thread outlives `api`.
                    self._provisioner = HostPathProvisioner(
                        client.CoreV1Api(self._provisioner_client),
                        STORAGE_CLASS,
                        workdir / "volumes",
                    )
                    self._provisioner.start()
            with self._phase("service-accounts"):
                # Pods are rejected until the controller-manager made the namespace's
                # default ServiceAccount; wait so the first test does not race it.
                self._wait_for(
                    "the default ServiceAccount",
                    lambda: self._exists(
                        core.read_namespaced_service_account, "default", "default"
                    ),
                    deadline,
                )
        finally:
            api.close()

    def _crd_files(self) -> list[Path]:
        by_kind = {
            path.name.removesuffix(".yaml").split("_", 1)[-1]: path
            for path in tools.prometheus_operator_crds()
        }
        unknown = sorted(set(self.crd_kinds) - set(by_kind))
        if unknown:
            raise ControlPlaneError(
                f"no prometheus-operator CRD for {unknown}; available: {sorted(by_kind)}"
            )
        return [by_kind[kind] for kind in self.crd_kinds]

    def _reset_workdir(self, attempt: int) -> None:
        workdir = self._require_workdir()
        shutil.rmtree(workdir / "etcd", ignore_errors=True)
        if (workdir / "logs").exists():
            (workdir / "logs").rename(workdir / f"logs.failed-{attempt}")

    def _phase(self, name: str) -> _Phase:
        return _Phase(self.timings, name)

    def _launch(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        component = _Component(name, argv, self._require_workdir() / "logs" / f"{name}.log")
        self._components.append(component)
        component.start(env)

    def _wait_for(self, what: str, probe: Callable[[], bool], deadline: float) -> None:
        last_error: BaseException | None = None
        while True:
            for component in self._components:
                code = component.exit_code()
                if code is not None:
                    raise ControlPlaneError(
                        f"{component.name} exited with code {code} while waiting for {what}; "
                        f"last log lines:\n{component.log_tail()}\n(full log: {component.log_path})"
                    )
            try:
                if probe():
                    return
            except Exception as exc:
                last_error = exc
            if time.monotonic() > deadline:
                logs = self._require_workdir() / "logs"
                raise ControlPlaneError(
                    f"timed out after {self.startup_timeout:.0f} s waiting for {what} "
                    f"(last probe error: {last_error!r}); component logs are in {logs}"
                )
            time.sleep(0.1)

    def _http_ok(self, url: str, *, admin: bool = False) -> bool:
        context: ssl.SSLContext | None = None
        if url.startswith("https://"):
            if admin:
                assert self.pki is not None
                context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
                context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
            else:
                # The controller-manager and scheduler serve self-signed certificates;
                # their /healthz is public, so only reachability matters here.
                context = ssl._create_unverified_context()
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)

    @staticmethod
    def _exists(read: Callable[..., Any], *args: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            read(*args)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    @staticmethod
    def _ready_nodes(core: Any) -> int:
        ready = 0
        for node in core.list_node(label_selector="type=kwok").items:
            for condition in (node.status.conditions or []) if node.status else []:
                if condition.type == "Ready" and condition.status == "True":
                    ready += 1
        return ready

    # -- component configuration ---------------------------------------------------

    def _etcd_args(self, client_url: str) -> list[str]:
        workdir = self._require_workdir()
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        return [
            "--name=driftwarden",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=driftwarden={peer_url}",
            "--initial-cluster-state=new",
            # Test data is disposable; fsync would make every write wait on the disk.
            "--unsafe-no-fsync",
            # Benchmarks churn objects; keep the keyspace history short.
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=5m",
            "--log-level=warn",
        ]

    def _apiserver_args(self, etcd_url: str) -> list[str]:
        workdir, pki = self._require_workdir(), self.pki
        assert pki is not None
        return [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['kube-apiserver']}",
            f"--cert-dir={workdir / 'apiserver'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            # Privileged pods are allowed by the server; Pod Security admission (on by
            # default) is what restricts them per namespace, as in a real cluster.
            "--allow-privileged=true",
            # Endpoints may not point at loopback, and no pod can reach this server
            # anyway: do not publish it as the `kubernetes` Service's endpoint.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]

    def _controller_manager_args(self) -> list[str]:
        workdir, pki = self._require_workdir(), self.pki
        assert pki is not None
        kubeconfig = str(self.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['kube-controller-manager']}",
            f"--cert-dir={workdir / 'controller-manager'}",
            "--leader-elect=false",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.service_account_key}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            # The default 20 QPS throttles benchmarks with hundreds of workloads.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ]

    def _scheduler_args(self) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['kube-scheduler']}",
            "--leader-elect=false",
        ]

    def _kwok_args(self, stages: Sequence[Path]) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            # Explicit stages also keep kwok from reading a developer's ~/.kwok/kwok.yaml.
            *(f"--config={stage}" for stage in stages),
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ]

    def _node_manifest(self, index: int) -> dict[str, Any]:
        name = f"kwok-node-{index}"
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    # One zone per node, so topology spread constraints have something
                    # to spread over.
                    "topology.kubernetes.io/zone": f"zone-{index}",
                },
            },
            "spec": {},
            "status": {
                "allocatable": dict(self.node_capacity),
                "capacity": dict(self.node_capacity),
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "osImage": "kwok",
                    "kernelVersion": "fake",
                    "kubeletVersion": "fake",
                    "kubeProxyVersion": "fake",
                    "containerRuntimeVersion": "kwok://fake",
                    "bootID": "",
                    "machineID": "",
                    "systemUUID": "",
                },
                # kwok's heartbeat stage only picks up nodes in phase Running.
                "phase": "Running",
            },
        }

    def _write_kubeconfig(self) -> None:
        pki = self.pki
        assert pki is not None

        def b64(path: Path) -> str:
            return b64encode(path.read_bytes()).decode("ascii")

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "driftwarden-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "driftwarden-admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin_cert),
                        "client-key-data": b64(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "driftwarden-test",
                    "context": {
                        "cluster": "driftwarden-test",
                        "user": "driftwarden-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "driftwarden-test",
        }
        path = self.kubeconfig
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        path.chmod(0o600)

    def _require_workdir(self) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("the control plane has not been started")
        return self.workdir

    # -- shutdown -------------------------------------------------------------------

    def _stop_locked(self, *, keep_workdir: bool = False) -> None:
        if self._provisioner is not None:
            self._provisioner.stop()
            self._provisioner = None
        if self._provisioner_client is not None:
            self._provisioner_client.close()
            self._provisioner_client = None
        for component in reversed(self._components):
            component.stop()
        self._components = []
        _LIVE.discard(self)
        if self._given_workdir is None and self.workdir is not None and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class _Background:
    """A short helper command (e.g. kubectl apply) run while startup goes on."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self._started = time.monotonic()
        self._popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, deadline: float, timings: dict[str, float]) -> None:
        """Wait for success (recording its duration in timings) or raise ControlPlaneError."""
        try:
            out, err = self._popen.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise ControlPlaneError(f"{self.name}: {self._popen.args!r} timed out") from None
        timings[self.name] = round(time.monotonic() - self._started, 2)
        if self._popen.returncode != 0:
            raise ControlPlaneError(
                f"{self.name}: exit {self._popen.returncode}: {err.strip() or out.strip()}"
            )

    def kill(self) -> None:
        """Kill it if still running (startup failed elsewhere)."""
        if self._popen.poll() is None:
            self._popen.kill()
            self._popen.communicate()


class _Phase:
    """Context manager that records a startup phase's duration in seconds."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self._timings, self._name = timings, name

    def __enter__(self) -> None:
        self._started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        self._timings[self._name] = round(time.monotonic() - self._started, 2)


# -- developer CLI ---------------------------------------------------------------------


def _cmd_up(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    state_file = workdir / _STATE_FILE
    if state_file.exists() and _alive(json.loads(state_file.read_text())["supervisor"]):
        print(
            f"a control plane already runs from {workdir}; "
            f"`{_cli()} down --workdir {args.workdir}` first",
            file=sys.stderr,
        )
        return 1
    if not args.foreground:
        # Re-run in the foreground in a new session, and wait until it reports ready.
        workdir.mkdir(parents=True, exist_ok=True)
        state_file.unlink(missing_ok=True)
        supervisor_log = workdir / "supervisor.log"
        with open(supervisor_log, "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    _MODULE,
                    "up",
                    "--foreground",
                    "--workdir",
                    str(workdir),
                    "--nodes",
                    str(args.nodes),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while not state_file.exists():
            if proc.poll() is not None:
                print(
                    f"the control plane failed to start; see {supervisor_log}:\n"
                    + "\n".join(supervisor_log.read_text().splitlines()[-20:]),
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        print(f"control plane ready in {state['timings']['total']} s; logs in {workdir}/logs")
        print(f"export KUBECONFIG={state['kubeconfig']}")
        return 0

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    plane = ControlPlane(workdir, nodes=args.nodes)
    with plane:
        state = {
            "supervisor": os.getpid(),
            "kubeconfig": str(plane.kubeconfig),
            "server": plane.server,
            "pids": plane.pids,
            "timings": plane.timings,
        }
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_file)
        print(json.dumps(state, indent=2), flush=True)
        while not stop.wait(1.0):
            if not plane.running():
                plane.check_health()
    state_file.unlink(missing_ok=True)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    state_file = Path(args.workdir).resolve() / _STATE_FILE
    if not state_file.exists():
        print(f"no control plane state in {state_file.parent}; nothing to stop")
        return 0
    state = json.loads(state_file.read_text())
    supervisor = state["supervisor"]
    if _alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
    # A supervisor killed with SIGKILL takes its components along (PDEATHSIG); this is
    # the belt to those braces, and checks the command line so a reused PID is spared.
    for name, pid in state["pids"].items():
        if _alive(pid) and name in _cmdline(pid):
            os.killpg(pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    print("control plane stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _cli() -> str:
    return f"python -m {_MODULE}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the developer CLI (`up` / `down`) and return its exit code."""
    parser = argparse.ArgumentParser(prog=_cli(), description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a control plane and print its KUBECONFIG")
    up.add_argument(
        "--workdir",
        default=".run/controlplane",
        help="certificates, etcd data, kubeconfig and logs (default: %(default)s)",
    )
    up.add_argument("--nodes", type=int, default=3, help="fake kwok nodes (default: %(default)s)")
    up.add_argument(
        "--foreground", action="store_true", help="stay attached and stop everything on Ctrl-C"
    )
    down = sub.add_parser("down", help="stop the control plane started by `up`")
    down.add_argument("--workdir", default=".run/controlplane")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _cmd_up(args) if args.command == "up" else _cmd_down(args)
    except (tools.ToolNotInstalledError, tools.VersionsFileError, ControlPlaneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
