"""A real Kubernetes node (containerd + kubelet + kube-proxy) for the pods tier.

``RealNode`` joins a running :class:`~driftwarden.testing.controlplane.ControlPlane` as a
node whose pods are real containers. Everything it runs stays inside namespaces and
folders it creates itself, and :meth:`RealNode.stop` removes them again:

* **network**: a network namespace of its own (``dwpods-<pid>-<n>``) holding a veth
  interface with the node IP, the CNI bridge of its pods, and kube-proxy's iptables
  rules. It has no link to the host's network at all. The kubelet, kube-proxy and pods
  reach the API server on the host's 127.0.0.1 through a forwarder whose listening
  socket lives inside the node's namespace (:mod:`driftwarden.testing.netns`); tests
  reach pods and Services with :meth:`RealNode.forward`, a port on the host's loopback.
* **mounts**: containerd, kubelet and kube-proxy share one private mount namespace
  (slave of the host's, so nothing they mount propagates out) with its own ``/run``
  (tmpfs), ``/var/lib`` and ``/var/log`` (folders of the workdir); the mounts vanish
  with its last process.
* **kernel settings**: kubelet runs with ``protectKernelDefaults: true``, so it never
  writes the host-wide ``vm.*``/``kernel.*`` settings it would otherwise change; the
  node's mount namespace shows it the values it checks for, as read-only files.
* **cgroups**: every node process and container lives under ``/dwpods-<pid>-<n>`` in
  each cgroup hierarchy (kubelet ``cgroupRoot``); stop() kills what is left in it and
  removes the tree.
* **images**: imported with ``podman save | ctr -n k8s.io images import -``, never
  pulled; the pause and CoreDNS images are built here from the pinned binaries.

kubelet 1.35 on this cgroup-v1/hybrid host needs ``failCgroupV1: false`` and
``cgroupDriver: cgroupfs`` (PID 1 is not systemd); containerd needs
``restrict_oom_score_adj = true`` (root has no CAP_SYS_RESOURCE here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import yaml

from driftwarden.testing import tools
from driftwarden.testing._pki import issue_client_cert
from driftwarden.testing.controlplane import ControlPlane, ControlPlaneError, _Component
from driftwarden.testing.netns import (
    NETNS_DIR,
    TcpForwarder,
    add_netns,
    delete_netns,
    ip,
    list_netns,
)

__all__ = [
    "CLUSTER_DNS_IP",
    "NODE_LABEL",
    "NodeError",
    "RealNode",
    "busybox_image",
    "cleanup_stale_nodes",
    "coredns_manifests",
    "host_state",
]

log = logging.getLogger(__name__)

#: Label every real node carries (kwok nodes carry type=kwok).
NODE_LABEL = "driftwarden.io/node-type"
#: The cluster DNS Service's ClusterIP (inside the control plane's 10.96.0.0/16).
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
#: Real pods get addresses from 10.245.<n>.0/24; kwok's fake pods use 10.244.0.0/16.
POD_NETWORK = "10.245.0.0/16"
# Prefix of every netns and cgroup a node creates: dwpods-<owner pid>-<index>.
_PREFIX = "dwpods"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# Host-wide settings kubelet checks (pkg/kubelet/cm setupKernelTunables) and the values
# it wants. The node's mount namespace shows it these values, read-only.
_KUBELET_KERNEL_TUNABLES: Mapping[str, str] = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
_IMAGE_PREFIX = "localhost/driftwarden-pods"


class NodeError(RuntimeError):
    """The node could not start, or one of its components died."""


def host_state() -> dict[str, Any]:
    """Return what a node must leave as it found it: host sysctls, netns, links, rules, mounts."""
    iptables = {}
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
            # Counters and the timestamp comment change by themselves.
            iptables[tool] = sorted(
                line.split(" [")[0] for line in out.splitlines() if not line.startswith("#")
            )
    return {
        "sysctls": {key: _read_sysctl(key) for key in _KUBELET_KERNEL_TUNABLES},
        "netns": sorted(list_netns()),
        "links": sorted(
            line.split(":")[1].strip().split("@")[0]
            for line in ip("-o", "link", "show").splitlines()
        ),
        "iptables": iptables,
        "mounts": sorted(
            line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ),
        "cgroups": sorted(
            str(path) for path in _CGROUP_ROOT.glob(f"*/{_PREFIX}-*") if path.is_dir()
        ),
    }


def _read_sysctl(key: str) -> str:
    return (Path("/proc/sys") / key).read_text().strip()


def _cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, the v2 unified one)."""
    return sorted(p for p in _CGROUP_ROOT.iterdir() if (p / "cgroup.procs").exists())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_nodes() -> list[str]:
    """Remove netns and cgroups of nodes whose owning process died without stop(); return them."""
    removed = []
    for name in sorted(list_netns()):
        owner = _owner_pid(name)
        if owner is not None and not _pid_alive(owner):
            _kill_cgroup_tree(name)
            _remove_cgroup_tree(name)
            delete_netns(name)
            removed.append(name)
    for hierarchy in _cgroup_hierarchies():
        for path in hierarchy.glob(f"{_PREFIX}-*"):
            owner = _owner_pid(path.name)
            if owner is not None and not _pid_alive(owner):
                _kill_cgroup_tree(path.name)
                _remove_cgroup_tree(path.name)
                removed.append(str(path))
    return removed


def _owner_pid(name: str) -> int | None:
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == _PREFIX and parts[1].isdigit():
        return int(parts[1])
    return None


def _cgroup_pids(root_name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in _cgroup_hierarchies():
        base = hierarchy / root_name
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _kill_cgroup_tree(root_name: str, timeout: float = 30.0) -> None:
    """SIGKILL every process in the node's cgroups until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _cgroup_pids(root_name)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise NodeError(f"processes {sorted(pids)} in cgroup {root_name} survived SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _remove_cgroup_tree(root_name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for hierarchy in _cgroup_hierarchies():
        base = hierarchy / root_name
        if not base.is_dir():
            continue
        # Deepest first: a cgroup can only be removed once its children are.
        cgroups = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for path in [*cgroups, base]:
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # EBUSY for a moment after the last task exits.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


class RealNode:
    """One real node of a test control plane; use as a context manager or start()/stop().

    Args:
        control_plane: the running ControlPlane to join.
        index: distinguishes several nodes (name, pod subnet, netns).
        workdir: folder for certificates, containerd/kubelet state and ``logs/``; a
            temporary one (removed by stop()) when omitted.
    """

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        index: int = 0,
        workdir: Path | str | None = None,
        startup_timeout: float = 240.0,
        publish_apiserver_endpoint: bool = True,
    ) -> None:
        self.control_plane = control_plane
        self.index = index
        self.name = f"pods-node-{index}"
        self.id = f"{_PREFIX}-{os.getpid()}-{index}"
        self.node_ip = f"10.246.0.{10 + index}"
        self.pod_subnet = f"10.245.{index}.0/24"
        self.startup_timeout = startup_timeout
        # The `kubernetes` Service has one endpoint: the first node's API forwarder.
        self.publish_apiserver_endpoint = publish_apiserver_endpoint
        self._given_workdir = Path(workdir) if workdir is not None else None
        self.workdir: Path | None = self._given_workdir
        self.timings: dict[str, float] = {}
        self._components: list[_Component] = []
        self._forwarders: list[TcpForwarder] = []
        self._netns_created = False
        self._cgroups_created = False

    # -- public API -----------------------------------------------------------------

    @property
    def netns(self) -> Path:
        """Pin path of the node's network namespace."""
        return NETNS_DIR / self.id

    @property
    def containerd_socket(self) -> Path:
        return self._wd() / "containerd" / "containerd.sock"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start containerd, kubelet and kube-proxy; return once the node is Ready."""
        try:
            self._start()
        except BaseException:
            logs = self.workdir / "logs" if self.workdir else None
            log.error("node %s failed to start; logs in %s", self.name, logs)
            self.stop(keep_workdir=True)
            raise
        return self

    def stop(self, *, keep_workdir: bool = False) -> None:
        """Stop every node process and container and remove what the node created; idempotent."""
        # kubelet first, so it does not restart containers that containerd is stopping.
        for component in reversed(self._components):
            component.stop(grace=10.0)
        self._components = []
        if self._cgroups_created:
            _kill_cgroup_tree(self.id)
            _remove_cgroup_tree(self.id)
            self._cgroups_created = False
        for forwarder in self._forwarders:
            forwarder.close()
        self._forwarders = []
        if self._netns_created:
            delete_netns(self.id)
            self._netns_created = False
        self._delete_node_object()
        if self._given_workdir is None and self.workdir is not None and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def check_health(self) -> None:
        """Raise NodeError naming any node component that exited, with its log tail."""
        for component in self._components:
            code = component.exit_code()
            if code is not None:
                raise NodeError(
                    f"{component.name} of {self.name} exited with code {code}; last log lines:\n"
                    f"{component.log_tail()}\n(full log: {component.log_path})"
                )

    def pids(self) -> set[int]:
        """PIDs of every process of the node: its daemons, shims and containers."""
        return _cgroup_pids(self.id)

    def forward(self, host: str, port: int) -> int:
        """Return a port on the host's 127.0.0.1 that connects to host:port inside the node's network."""
        forwarder = TcpForwarder(
            ("127.0.0.1", 0),
            (host, port),
            target_netns=self.netns,
            name=f"{self.name}-to-{host}:{port}",
        )
        self._forwarders.append(forwarder)
        return forwarder.port

    def listen(self, port: int, target: tuple[str, int]) -> None:
        """Accept connections on node-ip:port inside the node's network; splice them to target on the host."""
        self._forwarders.append(
            TcpForwarder(
                (self.node_ip, port), target, listen_netns=self.netns, name=f"{self.name}:{port}"
            )
        )

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 600.0) -> str:
        """Run the pinned ctr against this node's containerd (namespace k8s.io)."""
        argv = [
            str(tools.tool_path("ctr")),
            "--address",
            str(self.containerd_socket),
            "--namespace",
            "k8s.io",
            *args,
        ]
        result = subprocess.run(
            argv, input=input, capture_output=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise NodeError(
                f"ctr {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    def import_image(self, reference: str) -> None:
        """Import a podman image into the node (`podman save | ctr images import -`); never pulls."""
        with tempfile.TemporaryFile() as archive:
            save = subprocess.run(
                ["podman", "save", "--format", "docker-archive", reference],
                stdout=archive,
                stderr=subprocess.PIPE,
                check=False,
            )
            if save.returncode != 0:
                raise NodeError(
                    f"podman save {reference} failed: {save.stderr.decode(errors='replace').strip()}"
                )
            archive.seek(0)
            argv = [
                str(tools.tool_path("ctr")),
                "--address",
                str(self.containerd_socket),
                "--namespace",
                "k8s.io",
                "images",
                "import",
                "-",
            ]
            result = subprocess.run(argv, stdin=archive, capture_output=True, check=False)
            if result.returncode != 0:
                raise NodeError(
                    f"ctr images import of {reference} failed: "
                    f"{result.stderr.decode(errors='replace').strip()}"
                )

    def images(self) -> list[str]:
        """Names of the images the node's containerd holds."""
        return self.ctr("images", "list", "--quiet").split()

    def pod_logs(self, namespace: str, pod: str, lines: int = 40) -> str:
        """Return the tail of every container log of a pod, read from the node's log folder."""
        folder = self._wd() / "var-log" / "pods"
        chunks = []
        for path in sorted(folder.glob(f"{namespace}_{pod}_*/*/*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {path.parent.name} ({path.name}) ---\n" + "\n".join(text))
        return "\n".join(chunks) or f"(no container logs for {namespace}/{pod})"

    def component_logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.log_tail(lines)}" for c in self._components)

    # -- startup --------------------------------------------------------------------

    def _start(self) -> None:
        started = time.monotonic()
        deadline = started + self.startup_timeout
        cp = self.control_plane
        if cp.pki is None or not cp.running():
            raise NodeError("the control plane is not running; start it before the node")
        binaries = {
            name: str(tools.tool_path(name))
            for name in (
                "containerd",
                "containerd-shim-runc-v2",
                "ctr",
                "runc",
                "kubelet",
                "kube-proxy",
                "pause",
                "coredns",
                "busybox",
            )
        }
        cni_bin = tools.tool_path("bridge").parent
        for needed in ("podman", "buildah", "iptables", "nsenter", "unshare"):
            if shutil.which(needed) is None:
                raise NodeError(
                    f"{needed} is not on PATH; the pods tier needs it (Debian: apt-get install "
                    "podman buildah iptables util-linux)"
                )
        cleanup_stale_nodes()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="driftwarden-node-"))
        wd = self.workdir
        for sub in (
            "pki",
            "logs",
            "containerd",
            "cni/net.d",
            "cni/ipam",
            "kubelet",
            "var-lib",
            "var-log",
            "kernel-tunables",
            "config",
        ):
            (wd / sub).mkdir(parents=True, exist_ok=True)

        with self._phase("certificates"):
            kubelet_cert = issue_client_cert(
                cp.pki, wd / "pki", "kubelet", f"/O=system:nodes/CN=system:node:{self.name}"
            )
            proxy_cert = issue_client_cert(
                cp.pki, wd / "pki", "kube-proxy", "/CN=system:kube-proxy"
            )
            self._write_kubeconfig(wd / "config" / "kubelet.kubeconfig", kubelet_cert)
            self._write_kubeconfig(wd / "config" / "kube-proxy.kubeconfig", proxy_cert)

        with self._phase("network"):
            add_netns(self.id)
            self._netns_created = True
            # The node's "uplink": a veth pair whose both ends stay in the node's
            # namespace (this kernel has no dummy devices). It holds the node IP, and
            # locally sent packets need a route before kube-proxy's DNAT rewrites a
            # ClusterIP: the default route through it is that route. Nothing sent
            # through it goes anywhere but its own peer.
            ip("link", "add", "dw0", "type", "veth", "peer", "name", "dw0-end", netns=self.id)
            ip("addr", "add", f"{self.node_ip}/32", "dev", "dw0", netns=self.id)
            for link in ("dw0", "dw0-end"):
                ip("link", "set", link, "up", netns=self.id)
            ip("route", "add", "default", "dev", "dw0", netns=self.id)
            api_port = int(cp.server.rsplit(":", 1)[1])
            # One listener on every address of the node's network: the kubelet and
            # kube-proxy use 127.0.0.1:<port> (the API server's certificate covers it),
            # pods reach <node-ip>:<port> through the `kubernetes` Service.
            self._forwarders.append(
                TcpForwarder(
                    ("0.0.0.0", api_port),
                    ("127.0.0.1", api_port),
                    listen_netns=self.netns,
                    name=f"{self.name}-apiserver",
                )
            )
            self._write_cni_config(cni_bin)

        with self._phase("cgroups"):
            self._make_cgroups()

        with self._phase("containerd"):
            self._write_containerd_config(binaries)
            self._launch(
                "containerd",
                self._in_new_node_namespaces(
                    [binaries["containerd"], "--config", str(wd / "config" / "containerd.toml")],
                    path_dirs=[Path(binaries["containerd"]).parent],
                ),
            )
            self._wait_for(
                "containerd to answer", lambda: bool(self.ctr("version", timeout=10)), deadline
            )

        with self._phase("images"):
            self._import_binary_image("pause", binaries["pause"], self._pause_tag())
            self._import_binary_image(
                "coredns", binaries["coredns"], tools.pinned("COREDNS_VERSION")
            )
            self._import_busybox_image(binaries["busybox"])

        with self._phase("kubelet"):
            self._write_kubelet_config(binaries)
            self._launch(
                "kubelet",
                self._in_node_namespaces(
                    [
                        binaries["kubelet"],
                        f"--config={wd / 'config' / 'kubelet.yaml'}",
                        f"--kubeconfig={wd / 'config' / 'kubelet.kubeconfig'}",
                        f"--root-dir={wd / 'kubelet'}",
                        f"--hostname-override={self.name}",
                        f"--node-ip={self.node_ip}",
                        f"--node-labels={NODE_LABEL}=real",
                        "--v=2",
                    ]
                ),
            )
            self._wait_for("the node to be Ready", self._node_ready, deadline)

        with self._phase("kube-proxy"):
            self._write_kube_proxy_config()
            self._launch(
                "kube-proxy",
                self._in_node_namespaces(
                    [
                        binaries["kube-proxy"],
                        f"--config={wd / 'config' / 'kube-proxy.yaml'}",
                        "--v=2",
                    ]
                ),
            )
            self._wait_for(
                "kube-proxy /healthz", lambda: self._node_http_ok(10256, "/healthz"), deadline
            )
        if self.publish_apiserver_endpoint:
            self._publish_apiserver_endpoint(api_port)
        self.timings["total"] = round(time.monotonic() - started, 2)
        log.info("node %s ready in %.1f s (%s)", self.name, self.timings["total"], self.timings)

    def _phase(self, name: str) -> _Phase:
        return _Phase(self.timings, name)

    def _wd(self) -> Path:
        if self.workdir is None:
            raise NodeError("the node has not been started")
        return self.workdir

    def _launch(self, name: str, argv: list[str]) -> None:
        component = _Component(name, argv, self._wd() / "logs" / f"{name}.log")
        self._components.append(component)
        env = {
            "PATH": f"{Path(tools.tool_path('containerd')).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self._wd()),
            "LANG": "C.UTF-8",
        }
        component.start(env)

    def _wait_for(self, what: str, probe: Callable[[], bool], deadline: float) -> None:
        last: BaseException | None = None
        while True:
            self.check_health()
            try:
                if probe():
                    return
            except Exception as exc:
                last = exc
            if time.monotonic() > deadline:
                raise NodeError(
                    f"timed out after {self.startup_timeout:.0f} s waiting for {what} on "
                    f"{self.name} (last error: {last!r});\n{self.component_logs()}"
                )
            time.sleep(0.25)

    def _in_new_node_namespaces(
        self, argv: Sequence[str], *, path_dirs: Sequence[Path]
    ) -> list[str]:
        """Wrap argv so it starts the node's mount namespace inside its network namespace."""
        wd = self._wd()
        script = ["set -e"]
        # The node's own /run (containerd state and shim sockets, pod netns pins),
        # /var/lib (CNI cache) and /var/log (/var/log/pods and /var/log/containers).
        script.append("mount -t tmpfs -o mode=0755,size=256m driftwarden-node-run /run")
        script.append(f"mount --bind {shlex.quote(str(wd / 'var-lib'))} /var/lib")
        script.append(f"mount --bind {shlex.quote(str(wd / 'var-log'))} /var/log")
        for key, value in _KUBELET_KERNEL_TUNABLES.items():
            fake = wd / "kernel-tunables" / key.replace("/", ".")
            fake.write_text(value + "\n")
            target = shlex.quote(f"/proc/sys/{key}")
            script.append(f"mount --bind {shlex.quote(str(fake))} {target}")
            script.append(f"mount -o remount,bind,ro {target}")
        script.extend(self._join_cgroup_lines("node"))
        script.append("exec " + shlex.join(argv))
        return [
            "nsenter",
            f"--net={self.netns}",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--",
            "/bin/sh",
            "-c",
            "\n".join(script),
        ]

    def _in_node_namespaces(self, argv: Sequence[str]) -> list[str]:
        """Wrap argv so it runs in containerd's network and mount namespaces and the node cgroup."""
        containerd = self._components[0]
        assert containerd.name == "containerd" and containerd.pid is not None
        script = [*self._join_cgroup_lines("node"), "exec " + shlex.join(argv)]
        return [
            "nsenter",
            f"--target={containerd.pid}",
            "--net",
            "--mount",
            "--",
            "/bin/sh",
            "-c",
            "\n".join(script),
        ]

    def _join_cgroup_lines(self, child: str) -> list[str]:
        return [
            f"echo $$ > {shlex.quote(str(h / self.id / child / 'cgroup.procs'))}"
            for h in _cgroup_hierarchies()
        ]

    def _make_cgroups(self) -> None:
        self._cgroups_created = True
        for hierarchy in _cgroup_hierarchies():
            for path in (hierarchy / self.id, hierarchy / self.id / "node"):
                path.mkdir(exist_ok=True)
                if hierarchy.name == "cpuset":
                    # A v1 cpuset starts empty; a task cannot join it until it has CPUs and memory nodes.
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        (path / knob).write_text((path.parent / knob).read_text())

    def _write_kubeconfig(self, path: Path, cert: tuple[Path, Path]) -> None:
        cp = self.control_plane
        assert cp.pki is not None

        def b64(p: Path) -> str:
            return b64encode(p.read_bytes()).decode("ascii")

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "driftwarden-test",
                    # The node's own loopback: the forwarder in its netns leads to the host's.
                    "cluster": {
                        "server": cp.server,
                        "certificate-authority-data": b64(cp.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "node",
                    "user": {
                        "client-certificate-data": b64(cert[0]),
                        "client-key-data": b64(cert[1]),
                    },
                }
            ],
            "contexts": [
                {"name": "node", "context": {"cluster": "driftwarden-test", "user": "node"}}
            ],
            "current-context": "node",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    def _write_cni_config(self, cni_bin: Path) -> None:
        wd = self._wd()
        gateway = self.pod_subnet.replace(".0/24", ".1")
        conflist = {
            "cniVersion": "1.0.0",
            "name": "driftwarden-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "dwbr0",
                    "isGateway": True,
                    # Pods never talk to anything outside the node's namespace: no NAT.
                    "ipMasq": False,
                    # A pod reaching its own Service IP gets DNATed back to itself.
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_subnet, "gateway": gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(wd / "cni" / "ipam"),
                    },
                }
            ],
        }
        (wd / "cni" / "net.d" / "10-driftwarden.conflist").write_text(
            json.dumps(conflist, indent=2)
        )
        self._cni_bin = cni_bin

    def _write_containerd_config(self, binaries: Mapping[str, str]) -> None:
        wd = self._wd()
        root, state = wd / "containerd" / "root", wd / "containerd" / "state"
        config = f"""\
# Generated by driftwarden.testing.node for {self.name}.
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{self.containerd_socket}"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{wd / "containerd" / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{_IMAGE_PREFIX}/pause:{self._pause_tag()}"
  # root here lacks CAP_SYS_RESOURCE: never ask runc for a lower OOM score than ours.
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{binaries["runc"]}"
        Root = "/run/driftwarden-runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self._cni_bin}"
    conf_dir = "{wd / "cni" / "net.d"}"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
"""
        (wd / "config" / "containerd.toml").write_text(config)

    def _write_kubelet_config(self, binaries: Mapping[str, str]) -> None:
        wd = self._wd()
        cp = self.control_plane
        assert cp.pki is not None
        (wd / "config" / "resolv.conf").write_text("# pods use the cluster DNS; nothing upstream\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This host mounts cgroup v1 controllers (hybrid); kubelet 1.35 refuses that by default.
            "failCgroupV1": False,
            # PID 1 is not systemd.
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.id}",
            # Never write host-wide kernel settings (see the module docstring).
            "protectKernelDefaults": True,
            # root lacks CAP_SYS_RESOURCE: lowering our own OOM score would fail.
            "oomScoreAdj": 0,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.node_ip,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(cp.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [CLUSTER_DNS_IP],
            "resolvConf": str(wd / "config" / "resolv.conf"),
            "failSwapOn": False,
            # Images are imported, never pulled: garbage-collecting one would lose it.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # The disk is shared with builds; evict only when it is really full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "serializeImagePulls": False,
            "registerNode": True,
            "maxPods": 110,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }
        (wd / "config" / "kubelet.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _write_kube_proxy_config(self) -> None:
        wd = self._wd()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(wd / "config" / "kube-proxy.kubeconfig")},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": POD_NETWORK,
            "bindAddress": self.node_ip,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "oomScoreAdj": 0,
            # Leave every conntrack sysctl as it is (nf_conntrack_max is host-wide).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        }
        (wd / "config" / "kube-proxy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _pause_tag(self) -> str:
        bin_dir = tools.tool_path("pause").parent
        return (bin_dir.parent / "pause.tag").read_text().strip()

    def _import_binary_image(self, name: str, binary: str, tag: str) -> None:
        """Build a one-binary image with buildah (from scratch) and import it into the node."""
        reference = f"{_IMAGE_PREFIX}/{name}:{tag}"
        container = _run(["buildah", "from", "scratch"]).strip()
        try:
            _run(["buildah", "copy", "--chmod", "0755", container, binary, f"/{name}"])
            _run(["buildah", "config", "--entrypoint", json.dumps([f"/{name}"]), container])
            _run(["buildah", "commit", "--quiet", container, reference])
        finally:
            _run(["buildah", "rm", container], check=False)
        self.import_image(reference)

    def _import_busybox_image(self, busybox: str) -> None:
        """The tier's probe image: static busybox with its applets linked (sh, httpd, wget, nslookup)."""
        rootfs = self._wd() / "busybox-rootfs"
        (rootfs / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(busybox, rootfs / "bin" / "busybox")
        applets = _run([busybox, "--list"]).split()
        for applet in applets:
            link = rootfs / "bin" / applet
            if applet != "busybox" and not link.exists():
                link.symlink_to("busybox")
        for folder in ("tmp", "etc", "data", "www"):
            (rootfs / folder).mkdir(exist_ok=True)
        (rootfs / "etc" / "passwd").write_text(
            "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
        )
        (rootfs / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
        reference = busybox_image()
        container = _run(["buildah", "from", "scratch"]).strip()
        try:
            _run(["buildah", "copy", container, f"{rootfs}/", "/"])
            _run(
                [
                    "buildah",
                    "config",
                    "--cmd",
                    json.dumps(["/bin/sh"]),
                    "--env",
                    "PATH=/bin",
                    container,
                ]
            )
            _run(["buildah", "commit", "--quiet", container, reference])
        finally:
            _run(["buildah", "rm", container], check=False)
        self.import_image(reference)

    def install_cluster_dns(self, timeout: float = 120.0) -> None:
        """Run CoreDNS (the locally built image) as kube-system/coredns behind the kube-dns Service."""
        self.control_plane.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump_all(coredns_manifests())
        )
        self.control_plane.kubectl(
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )

    def _node_ready(self) -> bool:
        from kubernetes import client

        api = self.control_plane.api_client()
        try:
            node = client.CoreV1Api(api).read_node(self.name)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        finally:
            api.close()
        conditions = (node.status.conditions if node.status else None) or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def _node_http_ok(self, port: int, path: str) -> bool:
        local = self.forward("127.0.0.1", port)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{local}{path}", timeout=3) as response:
                return bool(response.status == 200)
        finally:
            forwarder = self._forwarders.pop()
            forwarder.close()

    def _publish_apiserver_endpoint(self, api_port: int) -> None:
        """Point the `kubernetes` Service at the node's API forwarder, so pods reach the API server."""
        from kubernetes import client

        api = self.control_plane.api_client()
        try:
            core = client.CoreV1Api(api)
            discovery = client.DiscoveryV1Api(api)
            # The API server publishes no endpoint itself (it listens on the host's
            # loopback only, --endpoint-reconciler-type=none).
            endpoints: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
                },
                "subsets": [
                    {
                        "addresses": [{"ip": self.node_ip}],
                        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
                    }
                ],
            }
            slice_: dict[str, Any] = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kubernetes",
                    "labels": {
                        "kubernetes.io/service-name": "kubernetes",
                        "endpointslice.kubernetes.io/managed-by": "driftwarden-pods-tier",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.node_ip], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
            }
            writes: tuple[tuple[Any, Any, dict[str, Any]], ...] = (
                (core.create_namespaced_endpoints, core.replace_namespaced_endpoints, endpoints),
                (
                    discovery.create_namespaced_endpoint_slice,
                    discovery.replace_namespaced_endpoint_slice,
                    slice_,
                ),
            )
            for create, replace, body in writes:
                try:
                    create("default", body)
                except client.exceptions.ApiException as exc:
                    if exc.status != 409:
                        raise
                    replace("kubernetes", "default", body)
        finally:
            api.close()

    def _delete_node_object(self) -> None:
        cp = self.control_plane
        if not cp.running():
            return
        with contextlib.suppress(Exception):
            cp.kubectl(
                "delete", "node", self.name, "--ignore-not-found", "--wait=false", check=False
            )


def busybox_image() -> str:
    """The tier's probe image (static busybox) that every node holds; pods use it with imagePullPolicy Never."""
    return f"{_IMAGE_PREFIX}/busybox:{tools.pinned('BUSYBOX_VERSION')}"


def coredns_manifests() -> list[dict[str, Any]]:
    """CoreDNS as kubeadm sets it up, minus `forward`: no name is resolved outside the cluster."""
    labels = {"k8s-app": "kube-dns"}
    corefile = f"""\
.:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus :9153
    cache 30
    loop
    loadbalance
}}
"""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": f"{_IMAGE_PREFIX}/coredns:{tools.pinned('COREDNS_VERSION')}",
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                                ],
                                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                    "failureThreshold": 5,
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "volumeMounts": [
                                    {
                                        "name": "config",
                                        "mountPath": "/etc/coredns",
                                        "readOnly": True,
                                    }
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ],
            },
        },
    ]


class _Phase:
    def __init__(self, timings: dict[str, float], name: str) -> None:
        self._timings, self._name = timings, name

    def __enter__(self) -> None:
        self._started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        self._timings[self._name] = round(time.monotonic() - self._started, 2)


def _run(argv: Sequence[str], *, check: bool = True) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=300)
    if check and result.returncode != 0:
        raise NodeError(
            f"{' '.join(argv)} failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


# ControlPlaneError is re-exported for callers that catch both.
_ = ControlPlaneError
