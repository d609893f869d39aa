"""Fixtures of the cluster tier: one real control plane per session, a namespace per test.

    def test_something(control_plane, namespace, core_v1, apps_v1): ...

``control_plane`` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and kwok (3 fake nodes, prometheus-operator CRDs, default StorageClass) once per
session, sets ``KUBECONFIG`` for the session (kopf, kubectl and helm pick it up) and
loads it as the kubernetes client's default configuration. It fails with the make
target to run when the pinned tools are not built.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from driftwarden.testing.controlplane import ControlPlane
from driftwarden.testing.waiting import wait_until


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The session's running control plane; KUBECONFIG points at it while the session runs."""
    # Under pytest's tmp dir the logs of the last runs are kept for post-mortems.
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    previous = os.environ.get("KUBECONFIG")
    with plane:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        config.load_kube_config(config_file=str(plane.kubeconfig))
        try:
            yield plane
        finally:
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="session")
def k8s_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """A kubernetes ApiClient authenticated as cluster admin (shared by the session)."""
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def core_v1(k8s_api: client.ApiClient) -> client.CoreV1Api:
    """CoreV1Api (pods, services, namespaces, PVCs, ...) for the control plane."""
    return client.CoreV1Api(k8s_api)


@pytest.fixture(scope="session")
def apps_v1(k8s_api: client.ApiClient) -> client.AppsV1Api:
    """AppsV1Api (Deployments, StatefulSets) for the control plane."""
    return client.AppsV1Api(k8s_api)


@pytest.fixture(scope="session")
def custom_objects(k8s_api: client.ApiClient) -> client.CustomObjectsApi:
    """CustomObjectsApi (DriftMonitor, ServiceMonitor, PrometheusRule, ...) for the control plane."""
    return client.CustomObjectsApi(k8s_api)


@pytest.fixture(scope="session")
def apiextensions_v1(k8s_api: client.ApiClient) -> client.ApiextensionsV1Api:
    """ApiextensionsV1Api (CustomResourceDefinitions) for the control plane."""
    return client.ApiextensionsV1Api(k8s_api)


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace_factory(
    request: pytest.FixtureRequest, core_v1: client.CoreV1Api
) -> Iterator[Callable[..., str]]:
    """Return make(labels=None) -> name of a fresh namespace, ready for pods; all deleted after the test."""
    created: list[str] = []

    def make(labels: Mapping[str, str] | None = None) -> str:
        name = _namespace_name(request.node.name)
        core_v1.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=dict(labels or {})))
        )
        created.append(name)
        # Pods are rejected until the controller-manager created the default ServiceAccount.
        wait_until(
            lambda: core_v1.read_namespaced_service_account("default", name),
            timeout=60,
            what=f"ServiceAccount default in namespace {name}",
        )
        return name

    yield make
    for name in created:
        try:
            # Not waited for: the namespace controller and kwok finish it in the background.
            core_v1.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def namespace(namespace_factory: Callable[..., str]) -> str:
    """Name of a fresh namespace for this test, deleted afterwards."""
    return namespace_factory()
