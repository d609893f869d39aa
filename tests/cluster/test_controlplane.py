"""The test control plane behaves like a real cluster in the ways Driftwarden relies on."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from driftwarden.testing import tools
from driftwarden.testing.controlplane import STORAGE_CLASS, ControlPlane, ControlPlaneError
from driftwarden.testing.kube import describe_pods
from driftwarden.testing.waiting import wait_until

IMAGE = "registry.invalid/driftwarden/never-pulled:1"  # kwok runs no containers
MONITORING = "monitoring.coreos.com"


def _labels(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app}


def _container(name: str = "main") -> client.V1Container:
    return client.V1Container(
        name=name,
        image=IMAGE,
        resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64Mi"}),
    )


def _create_deployment(apps_v1: client.AppsV1Api, namespace: str, name: str, replicas: int) -> None:
    """Create a Deployment of ``replicas`` pods running one plain container."""
    labels = _labels(name)
    apps_v1.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1DeploymentSpec(
                replicas=replicas,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[_container()]),
                ),
            ),
        ),
    )


def test_server_reports_the_pinned_version(
    k8s_api: client.ApiClient, control_plane: ControlPlane
) -> None:
    pinned = tools.pinned("KUBERNETES_VERSION")
    info = client.VersionApi(k8s_api).get_code()
    assert info.git_version == pinned
    assert (info.major, info.minor) == ("1", pinned.split(".")[1])
    out = json.loads(control_plane.kubectl("version", "--output=json").stdout)
    assert out["clientVersion"]["gitVersion"] == pinned
    assert out["serverVersion"]["gitVersion"] == pinned


def test_kubeconfig_is_exported_for_the_session(control_plane: ControlPlane) -> None:
    assert os.environ["KUBECONFIG"] == str(control_plane.kubeconfig)
    assert stat.S_IMODE(control_plane.kubeconfig.stat().st_mode) == 0o600
    # Anything that reads KUBECONFIG (kubectl, helm, kopf) reaches the same server.
    result = subprocess.run(
        [str(tools.tool_path("kubectl")), "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert sorted(result.stdout.split()) == [f"node/kwok-node-{i}" for i in range(3)]


def test_fake_nodes_are_ready_with_capacity(core_v1: client.CoreV1Api) -> None:
    nodes = core_v1.list_node().items
    assert len(nodes) == 3
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True", node.metadata.name
        assert parse_quantity(node.status.allocatable["pods"]) >= 110
        assert not node.spec.taints
    assert len({n.metadata.labels["topology.kubernetes.io/zone"] for n in nodes}) == 3


def test_deployment_pods_become_running_and_ready(
    namespace: str, core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api
) -> None:
    _create_deployment(apps_v1, namespace, "web", replicas=3)
    wait_until(
        lambda: (
            (apps_v1.read_namespaced_deployment_status("web", namespace).status.ready_replicas or 0)
            == 3
        ),
        timeout=90,
        what="Deployment web with 3 ready replicas",
        describe=lambda: describe_pods(core_v1, namespace),
    )
    pods = core_v1.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=web").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.status.phase == "Running"
        assert pod.spec.node_name.startswith("kwok-node-")
        assert pod.status.pod_ip
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"

    # Scaling down goes through the ReplicaSet controller and kwok's pod deletion.
    apps_v1.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    wait_until(
        lambda: (
            len(
                core_v1.list_namespaced_pod(
                    namespace, label_selector="app.kubernetes.io/name=web"
                ).items
            )
            == 1
        ),
        timeout=90,
        what="Deployment web scaled down to 1 pod",
        describe=lambda: describe_pods(core_v1, namespace),
    )


def test_statefulset_volume_claims_bind_and_pods_run(
    namespace: str, core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api
) -> None:
    labels = _labels("store")
    core_v1.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="store"),
            spec=client.V1ServiceSpec(
                cluster_ip="None",
                selector=labels,
                ports=[client.V1ServicePort(name="http", port=8080)],
            ),
        ),
    )
    container = _container()
    container.volume_mounts = [client.V1VolumeMount(name="data", mount_path="/data")]
    apps_v1.create_namespaced_stateful_set(
        namespace,
        client.V1StatefulSet(
            metadata=client.V1ObjectMeta(name="store"),
            spec=client.V1StatefulSetSpec(
                replicas=2,
                service_name="store",
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[container]),
                ),
                volume_claim_templates=[
                    client.V1PersistentVolumeClaim(
                        metadata=client.V1ObjectMeta(name="data"),
                        spec=client.V1PersistentVolumeClaimSpec(
                            access_modes=["ReadWriteOnce"],
                            resources=client.V1VolumeResourceRequirements(
                                requests={"storage": "1Gi"}
                            ),
                        ),
                    )
                ],
            ),
        ),
    )
    wait_until(
        lambda: (
            (
                apps_v1.read_namespaced_stateful_set_status(
                    "store", namespace
                ).status.ready_replicas
                or 0
            )
            == 2
        ),
        timeout=120,
        what="StatefulSet store with 2 ready replicas",
        describe=lambda: describe_pods(core_v1, namespace),
    )
    claims = core_v1.list_namespaced_persistent_volume_claim(namespace).items
    assert sorted(c.metadata.name for c in claims) == ["data-store-0", "data-store-1"]
    volume_names = set()
    for claim in claims:
        assert claim.status.phase == "Bound"
        # DefaultStorageClass admission gave the claim our default class.
        assert claim.spec.storage_class_name == STORAGE_CLASS
        volume = core_v1.read_persistent_volume(claim.spec.volume_name)
        assert volume.spec.claim_ref.uid == claim.metadata.uid
        assert volume.spec.capacity["storage"] == "1Gi"
        volume_names.add(volume.metadata.name)

    # Deleting the claims releases their volumes, which the provisioner then deletes.
    apps_v1.delete_namespaced_stateful_set("store", namespace)
    wait_until(
        lambda: not core_v1.list_namespaced_pod(namespace).items,
        timeout=90,
        what="StatefulSet pods deleted",
    )
    core_v1.delete_collection_namespaced_persistent_volume_claim(namespace)
    wait_until(
        lambda: (
            not volume_names & {v.metadata.name for v in core_v1.list_persistent_volume().items}
        ),
        timeout=90,
        what=f"released volumes {sorted(volume_names)} deleted",
    )


@pytest.mark.parametrize(
    "plural",
    [
        "servicemonitors",
        "podmonitors",
        "prometheusrules",
        "alertmanagerconfigs",
        "prometheuses",
        "alertmanagers",
    ],
)
def test_prometheus_operator_crds_are_established(
    apiextensions_v1: client.ApiextensionsV1Api, plural: str
) -> None:
    crd = apiextensions_v1.read_custom_resource_definition(f"{plural}.{MONITORING}")
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions["Established"] == "True"
    version = tools.pinned("PROMETHEUS_OPERATOR_VERSION")
    assert crd.metadata.annotations["operator.prometheus.io/version"] == version.lstrip("v")


def test_prometheus_operator_kinds_are_served_with_their_schema(
    namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    monitor = {
        "apiVersion": f"{MONITORING}/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "workers"},
        "spec": {
            "selector": {"matchLabels": _labels("workers")},
            "endpoints": [{"port": "http", "interval": "15s"}],
        },
    }
    custom_objects.create_namespaced_custom_object(
        MONITORING, "v1", namespace, "servicemonitors", monitor
    )
    rule = {
        "apiVersion": f"{MONITORING}/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "drift"},
        "spec": {
            "groups": [
                {
                    "name": "drift",
                    "rules": [
                        {
                            "alert": "DriftDetected",
                            "expr": "driftwarden_drift_detected > 0",
                            "for": "5m",
                            "labels": {"severity": "warning"},
                            "annotations": {"summary": "drift"},
                        }
                    ],
                }
            ]
        },
    }
    custom_objects.create_namespaced_custom_object(
        MONITORING, "v1", namespace, "prometheusrules", rule
    )
    stored = custom_objects.get_namespaced_custom_object(
        MONITORING, "v1", namespace, "prometheusrules", "drift"
    )
    assert stored["spec"]["groups"][0]["rules"][0]["alert"] == "DriftDetected"

    # The real CRD schema is enforced: an interval that is not a duration is refused.
    bad = {
        **monitor,
        "metadata": {"name": "bad"},
        "spec": {**monitor["spec"], "endpoints": [{"port": "http", "interval": "often"}]},
    }
    with pytest.raises(ApiException) as err:
        custom_objects.create_namespaced_custom_object(
            MONITORING, "v1", namespace, "servicemonitors", bad
        )
    assert err.value.status == 422
    assert "interval" in err.value.body


def test_pod_security_restricted_namespace_rejects_privileged_pods(
    namespace_factory, core_v1: client.CoreV1Api
) -> None:
    namespace = namespace_factory(
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
    )
    privileged = _container()
    privileged.security_context = client.V1SecurityContext(privileged=True)
    with pytest.raises(ApiException) as err:
        core_v1.create_namespaced_pod(
            namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name="privileged"),
                spec=client.V1PodSpec(containers=[privileged]),
            ),
        )
    assert err.value.status == 403
    reason = json.loads(err.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in reason
    assert 'privileged (container "main" must not set securityContext.privileged=true)' in reason

    compliant = _container()
    compliant.security_context = client.V1SecurityContext(
        allow_privilege_escalation=False,
        capabilities=client.V1Capabilities(drop=["ALL"]),
    )
    core_v1.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="compliant"),
            spec=client.V1PodSpec(
                containers=[compliant],
                security_context=client.V1PodSecurityContext(
                    run_as_non_root=True,
                    run_as_user=65532,
                    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
                ),
            ),
        ),
    )
    wait_until(
        lambda: core_v1.read_namespaced_pod("compliant", namespace).status.phase == "Running",
        timeout=60,
        what="compliant pod Running",
        describe=lambda: describe_pods(core_v1, namespace),
    )


def test_garbage_collector_deletes_owned_objects(namespace: str, core_v1: client.CoreV1Api) -> None:
    owner = core_v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    core_v1.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="child",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            )
        ),
    )
    core_v1.delete_namespaced_config_map("owner", namespace)
    wait_until(
        lambda: (
            "child"
            not in {c.metadata.name for c in core_v1.list_namespaced_config_map(namespace).items}
        ),
        timeout=60,
        what="owned ConfigMap removed by the garbage collector",
    )


def test_namespace_deletion_finishes(
    namespace_factory, core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api
) -> None:
    namespace = namespace_factory()
    _create_deployment(apps_v1, namespace, "doomed", replicas=2)
    wait_until(
        lambda: (
            len(
                [
                    p
                    for p in core_v1.list_namespaced_pod(namespace).items
                    if p.status.phase == "Running"
                ]
            )
            == 2
        ),
        timeout=90,
        what="2 running pods",
        describe=lambda: describe_pods(core_v1, namespace),
    )
    core_v1.delete_namespace(namespace)

    def gone() -> bool:
        try:
            core_v1.read_namespace(namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(
        gone,
        timeout=120,
        what=f"namespace {namespace} deleted",
        describe=lambda: core_v1.read_namespace(namespace).status,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie awaiting its reaper counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_second_control_plane_starts_and_stops_without_leftovers(
    control_plane: ControlPlane,
) -> None:
    # Independent ports and workdir: it runs beside the session's control plane.
    with ControlPlane(nodes=1, install_crds=False, provision_volumes=False) as plane:
        workdir = plane.workdir
        pids = plane.pids
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert plane.server != control_plane.server
        assert all(_pid_alive(pid) for pid in pids.values())
        nodes = plane.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert nodes == ["node/kwok-node-0"]
        assert set(plane.timings) >= {"certificates", "etcd", "kube-apiserver", "nodes", "total"}
    assert not any(_pid_alive(pid) for pid in pids.values())
    assert workdir is not None and not workdir.exists()
    assert control_plane.running()


def test_a_component_that_dies_at_startup_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "etcd"
    broken.write_text("#!/bin/sh\necho 'etcd: cannot open data dir: disk on fire' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("DRIFTWARDEN_TOOL_ETCD", str(broken))
    plane = ControlPlane(tmp_path / "work", install_crds=False)
    with pytest.raises(ControlPlaneError) as err:
        plane.start()
    message = str(err.value)
    assert "etcd exited with code 3 while waiting for etcd /health" in message
    assert "disk on fire" in message
    assert str(tmp_path / "work" / "logs" / "etcd.log") in message
    assert plane.pids == {}  # nothing was left running


def test_a_port_taken_during_startup_is_retried_on_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftwarden.testing import controlplane as module

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_port = module._free_port
    handed = iter([taken])  # the first port handed out (etcd's) is already bound
    monkeypatch.setattr(module, "_free_port", lambda: next(handed, None) or real_free_port())
    try:
        with ControlPlane(tmp_path, nodes=1, install_crds=False, provision_volumes=False) as plane:
            assert plane.ports["etcd"] != taken
            assert plane.kubectl("get", "nodes", "-o", "name").stdout.split() == [
                "node/kwok-node-0"
            ]
    finally:
        squatter.close()
    assert "address already in use" in (tmp_path / "logs.failed-1" / "etcd.log").read_text()


def test_developer_cli_up_and_down(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "driftwarden.testing.controlplane"]
    workdir = tmp_path / "cp"
    up = subprocess.run(
        [*cli, "up", "--workdir", str(workdir), "--nodes", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={workdir / 'kubeconfig'}" in up.stdout
        state = json.loads((workdir / "controlplane.json").read_text())
        assert all(_pid_alive(pid) for pid in state["pids"].values())
        nodes = subprocess.run(
            [
                str(tools.tool_path("kubectl")),
                "--kubeconfig",
                str(workdir / "kubeconfig"),
                "get",
                "nodes",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert nodes.stdout.split() == ["node/kwok-node-0"]
        again = subprocess.run(
            [*cli, "up", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert again.returncode == 1 and "already runs" in again.stderr
    finally:
        down = subprocess.run(
            [*cli, "down", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    assert not any(_pid_alive(pid) for pid in [state["supervisor"], *state["pids"].values()])
    assert not (workdir / "controlplane.json").exists()
