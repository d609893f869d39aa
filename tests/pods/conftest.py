"""Fixtures of the pods tier: a real control plane plus a real node whose pods are containers.

    def test_something(real_node, core_v1, namespace): ...

``control_plane`` is the cluster tier's control plane with one kwok node, tainted so
that only the tier's own real node (``real_node``: containerd, kubelet, kube-proxy in
their own namespaces, CoreDNS as cluster DNS) runs pods. ``host_before`` is the host's
state (sysctls, netns, links, iptables rules, mounts, cgroups) before any node started;
the session checks at the end that the host is back to it.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from driftwarden.testing.controlplane import ControlPlane
from driftwarden.testing.node import RealNode, host_state
from driftwarden.testing.waiting import wait_until

# The kwok node stays (a real node joins *beside* fake ones) but takes no pods.
FAKE_NODE_TAINT = {"key": "driftwarden.io/fake-node", "value": "true", "effect": "NoSchedule"}


@pytest.fixture(scope="session")
def host_before() -> dict[str, Any]:
    """The host's state before the tier started anything."""
    return host_state()


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, host_before: dict[str, Any]
) -> Iterator[ControlPlane]:
    """The session's control plane (1 tainted kwok node); KUBECONFIG points at it."""
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), nodes=1)
    previous = os.environ.get("KUBECONFIG")
    with plane:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        config.load_kube_config(config_file=str(plane.kubeconfig))
        plane.kubectl(
            "taint",
            "node",
            "kwok-node-0",
            f"{FAKE_NODE_TAINT['key']}={FAKE_NODE_TAINT['value']}:{FAKE_NODE_TAINT['effect']}",
        )
        try:
            yield plane
        finally:
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="session")
def real_node(
    control_plane: ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
    host_before: dict[str, Any],
) -> Iterator[RealNode]:
    """A real node (containerd + kubelet + kube-proxy) with CoreDNS running on it."""
    node = RealNode(control_plane, index=0, workdir=tmp_path_factory.mktemp("node-0"))
    with node:
        node.install_cluster_dns()
        yield node
    after = host_state()
    leftovers = {
        "sysctls": {k: v for k, v in after["sysctls"].items() if host_before["sysctls"][k] != v},
        "netns": [n for n in after["netns"] if node.id in n and n not in host_before["netns"]],
        "cgroups": [c for c in after["cgroups"] if node.id in c],
    }
    leftovers = {key: value for key, value in leftovers.items() if value}
    assert not leftovers, f"the node left the host changed (before, after): {leftovers}"


@pytest.fixture(scope="session")
def k8s_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def core_v1(k8s_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(k8s_api)


@pytest.fixture(scope="session")
def apps_v1(k8s_api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(k8s_api)


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"p-{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace_factory(
    request: pytest.FixtureRequest, core_v1: client.CoreV1Api
) -> Iterator[Callable[..., str]]:
    """Return make(labels=None) -> a fresh namespace; each is deleted after the test."""
    created: list[str] = []

    def make(labels: Mapping[str, str] | None = None) -> str:
        name = _namespace_name(request.node.name)
        core_v1.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=dict(labels or {})))
        )
        created.append(name)
        wait_until(
            lambda: core_v1.read_namespaced_service_account("default", name),
            timeout=60,
            what=f"ServiceAccount default in namespace {name}",
        )
        return name

    yield make
    for name in created:
        try:
            core_v1.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def namespace(namespace_factory: Callable[..., str]) -> str:
    return namespace_factory()
