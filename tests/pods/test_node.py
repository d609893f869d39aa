"""A real node: kubelet, containerd, kube-proxy and CoreDNS run real containers from imported images."""

from __future__ import annotations

import ipaddress
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from driftwarden.testing import tools
from driftwarden.testing.controlplane import ControlPlane
from driftwarden.testing.node import NODE_LABEL, RealNode, busybox_image, host_state
from driftwarden.testing.waiting import wait_until
from support.pods import busybox_container, explain, wait_for_ready_pods

HTTPD = "mkdir -p /www && echo $HOSTNAME > /www/index.html && echo ok > /www/ready && exec httpd -f -p 8080 -h /www"


def _get(port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode().strip()


def _apply(control_plane: ControlPlane, namespace: str, *objects: dict[str, Any]) -> None:
    import yaml

    control_plane.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(objects))


def _deployment(name: str, replicas: int, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def test_real_node_joins_beside_a_kwok_node(real_node: RealNode, core_v1: client.CoreV1Api) -> None:
    node = core_v1.read_node(real_node.name)
    info = node.status.node_info
    # Reported by a real kubelet and containerd, not by kwok.
    assert info.kubelet_version == tools.pinned("KUBERNETES_VERSION")
    assert info.container_runtime_version.startswith(
        "containerd://" + tools.pinned("CONTAINERD_VERSION").removeprefix("v")
    )
    assert node.metadata.labels[NODE_LABEL] == "real"
    assert "kwok.x-k8s.io/node" not in (node.metadata.annotations or {})
    assert [a.address for a in node.status.addresses if a.type == "InternalIP"] == [
        real_node.node_ip
    ]
    fake = core_v1.read_node("kwok-node-0")
    assert fake.status.node_info.kubelet_version == "fake"
    assert any(c.type == "Ready" and c.status == "True" for c in fake.status.conditions)
    images = real_node.images()
    assert busybox_image() in images, images


def test_a_pod_is_ready_only_through_its_passing_probe(
    real_node: RealNode, control_plane: ControlPlane, core_v1: client.CoreV1Api, namespace: str
) -> None:
    probe = {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1}
    missing = {"httpGet": {"path": "/missing", "port": 8080}, "periodSeconds": 1}
    _apply(
        control_plane,
        namespace,
        _deployment(
            "good", 1, busybox_container("httpd", HTTPD, ports=[8080], readinessProbe=probe)
        ),
        _deployment(
            "bad", 1, busybox_container("httpd", HTTPD, ports=[8080], readinessProbe=missing)
        ),
    )
    [good] = wait_for_ready_pods(core_v1, real_node, namespace, {"app": "good"}, 1)
    assert good.spec.node_name == real_node.name
    assert ipaddress.ip_address(good.status.pod_ip) in ipaddress.ip_network(real_node.pod_subnet)
    # The pod's own address inside the node's network serves what the container wrote.
    assert _get(real_node.forward(good.status.pod_ip, 8080)) == good.metadata.name

    def probe_failed() -> bool:
        return any(
            e.reason == "Unhealthy"
            and "Readiness probe failed: HTTP probe failed with statuscode: 404" in e.message
            for e in core_v1.list_namespaced_event(namespace).items
        )

    wait_until(
        probe_failed,
        timeout=60,
        what="the kubelet's failed-probe event",
        describe=explain(core_v1, real_node, namespace),
    )
    [bad] = core_v1.list_namespaced_pod(namespace, label_selector="app=bad").items
    assert bad.status.phase == "Running"
    assert [c.status for c in bad.status.conditions if c.type == "Ready"] == ["False"]


def test_services_route_through_kube_proxy_and_resolve_through_cluster_dns(
    real_node: RealNode, control_plane: ControlPlane, core_v1: client.CoreV1Api, namespace: str
) -> None:
    probe = {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    _apply(
        control_plane,
        namespace,
        _deployment(
            "web", 2, busybox_container("httpd", HTTPD, ports=[8080], readinessProbe=probe)
        ),
        service,
    )
    pods = wait_for_ready_pods(core_v1, real_node, namespace, {"app": "web"}, 2)
    names = {p.metadata.name for p in pods}
    cluster_ip = core_v1.read_namespaced_service("web", namespace).spec.cluster_ip
    port = real_node.forward(cluster_ip, 80)

    seen: set[str] = set()

    def both_backends_answered() -> bool:
        seen.add(_get(port))
        return seen == names

    # kube-proxy picks a backend at random per connection; both answer within a few tries.
    wait_until(
        both_backends_answered,
        timeout=60,
        interval=0.05,
        what=f"answers from {names} via {cluster_ip}",
    )

    # From inside a pod: the name resolves through CoreDNS and the Service answers.
    client_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                busybox_container(
                    "client",
                    f"nslookup web.{namespace}.svc.cluster.local && wget -qO- http://web/ && echo done",
                )
            ],
        },
    }
    _apply(control_plane, namespace, client_pod)
    describe = explain(core_v1, real_node, namespace)
    wait_until(
        lambda: core_v1.read_namespaced_pod("client", namespace).status.phase == "Succeeded",
        timeout=90,
        what="the client pod to resolve and fetch http://web/",
        describe=describe,
    )
    logs = real_node.pod_logs(namespace, "client")
    assert cluster_ip in logs, logs
    assert any(name in logs for name in names), logs


def test_statefulset_claims_get_real_volumes_that_survive_a_pod(
    real_node: RealNode, control_plane: ControlPlane, core_v1: client.CoreV1Api, namespace: str
) -> None:
    script = "echo $HOSTNAME >> /data/owners && " + HTTPD
    container = busybox_container(
        "store",
        script,
        ports=[8080],
        readinessProbe={"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "store"},
        "spec": {
            "replicas": 2,
            "serviceName": "store",
            "selector": {"matchLabels": {"app": "store"}},
            "template": {
                "metadata": {"labels": {"app": "store"}},
                "spec": {"containers": [container]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Mi"}},
                    },
                }
            ],
        },
    }
    _apply(control_plane, namespace, statefulset)
    wait_for_ready_pods(core_v1, real_node, namespace, {"app": "store"}, 2)

    def owners(pod: str) -> list[str]:
        claim = core_v1.read_namespaced_persistent_volume_claim(f"data-{pod}", namespace)
        volume = core_v1.read_persistent_volume(claim.spec.volume_name)
        return (Path(volume.spec.host_path.path) / "owners").read_text().split()

    assert owners("store-0") == ["store-0"]
    assert owners("store-1") == ["store-1"]
    uid = core_v1.read_namespaced_pod("store-0", namespace).metadata.uid
    core_v1.delete_namespaced_pod("store-0", namespace, grace_period_seconds=0)

    def replaced() -> bool:
        pod = core_v1.read_namespaced_pod("store-0", namespace)
        return pod.metadata.uid != uid and any(
            c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
        )

    wait_until(
        replaced,
        timeout=120,
        what="store-0 recreated and Ready",
        describe=explain(core_v1, real_node, namespace),
    )
    # The new pod got the same claim, so its volume holds both incarnations' lines.
    assert owners("store-0") == ["store-0", "store-0"]


def _cgroups_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def _state(pid: int) -> str:
    """The process's state letter (R, S, Z, ...), or "" once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""
    return next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")


def _node_leftovers(
    before: dict[str, Any], after: dict[str, Any], node_id: str, workdir: Path
) -> dict[str, Any]:
    """What the stopped node left on the host: anything new that names it, and any changed sysctl."""

    def new(key: str, match: Callable[[str], bool]) -> list[str]:
        return [x for x in after[key] if x not in before[key] and match(x)]

    rules_after = [r for rules in after["iptables"].values() for r in rules]
    rules_before = {r for rules in before["iptables"].values() for r in rules}
    return {
        key: value
        for key, value in {
            "sysctls": {k: v for k, v in after["sysctls"].items() if before["sysctls"][k] != v},
            "netns": new("netns", lambda n: node_id in n or n.startswith("cni-")),
            "cgroups": new("cgroups", lambda c: node_id in c),
            "mounts": new("mounts", lambda m: str(workdir) in m or "netns" in m or "kubelet" in m),
            "links": new("links", lambda n: n.startswith(("dw", "veth", "cni"))),
            "iptables": [
                r
                for r in rules_after
                if r not in rules_before and ("KUBE" in r or "10.245." in r or "10.96." in r)
            ],
        }.items()
        if value
    }


def test_a_stopped_node_leaves_nothing_behind(
    control_plane: ControlPlane,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    real_node: RealNode,
) -> None:
    before = host_state()
    node = RealNode(
        control_plane, index=1, workdir=tmp_path / "node-1", publish_apiserver_endpoint=False
    )
    with node:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "tenant", "labels": {"app": "tenant"}},
            "spec": {
                "nodeName": node.name,
                "containers": [
                    busybox_container(
                        "httpd",
                        HTTPD,
                        readinessProbe={
                            "httpGet": {"path": "/ready", "port": 8080},
                            "periodSeconds": 1,
                        },
                        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
                    )
                ],
                "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
            },
        }
        _apply(control_plane, namespace, pod)
        wait_for_ready_pods(core_v1, node, namespace, {"app": "tenant"}, 1)
        pids = node.pids()
        assert pids, "the node reported no processes"
    # Every process of the node (kubelet, containerd, shims, containers) is gone.
    assert not node.pids()
    # An exited shim stays a zombie until this VM's PID 1 reaps it: exited all the same.
    alive = [pid for pid in pids if node.id in _cgroups_of(pid) and _state(pid) not in ("Z", "")]
    assert not alive, {pid: _cgroups_of(pid) for pid in alive}
    leftovers = _node_leftovers(before, host_state(), node.id, tmp_path / "node-1")
    assert not leftovers, leftovers


@pytest.mark.parametrize("key", ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"])
def test_the_host_kernel_settings_kubelet_checks_are_untouched(
    real_node: RealNode, host_before: dict[str, Any], key: str
) -> None:
    assert (Path("/proc/sys") / key).read_text().strip() == host_before["sysctls"][key]
