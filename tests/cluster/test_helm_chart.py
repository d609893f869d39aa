"""The Helm chart against a real API server: server-side validation, install, upgrade, uninstall.

The control plane is real (etcd, kube-apiserver, controller-manager, scheduler) with
kwok nodes: kwok fakes the kubelet, so "the operator is Ready" here means the
Deployment's pod was admitted (Pod Security "restricted" enforced on the namespace),
scheduled, and reported Running and Ready by kwok. No container image is pulled or
run; tests/cluster/test_operator_* run the operator's code itself against this API.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from driftwarden.testing.tools import tool_path
from driftwarden.testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "driftwarden"
RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}
CRD = "driftmonitors.driftwarden.io"


def helm(
    *args: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm against the session's control plane (KUBECONFIG is set)."""
    home = Path("/tmp/driftwarden-helm-cluster")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [str(tool_path("helm")), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args[1:4]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / f"values-{secrets.token_hex(3)}.json"
    path.write_text(json.dumps(values))
    return str(path)


@pytest.fixture
def restricted_namespace(namespace_factory: Callable[..., str]) -> str:
    """A namespace that enforces (and warns about) Pod Security "restricted"."""
    return namespace_factory(labels=RESTRICTED)


@pytest.fixture
def release(restricted_namespace: str) -> Iterator[str]:
    """A unique release name; the release (and its hook objects) are removed afterwards."""
    name = f"dw{secrets.token_hex(3)}"
    yield name
    helm("uninstall", name, "--namespace", restricted_namespace, "--wait", "--timeout", "2m")
    subprocess.run(
        [
            str(tool_path("kubectl")),
            "delete",
            "clusterkopfpeering",
            f"{name}-driftwarden",
            "--ignore-not-found",
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )


def operator_ready(apps: client.AppsV1Api, namespace: str, name: str, generation: int = 1) -> bool:
    deployment = apps.read_namespaced_deployment(name, namespace)
    status = deployment.status
    return bool(
        status.observed_generation is not None
        and status.observed_generation >= generation
        and status.updated_replicas == 1
        and status.ready_replicas == 1
        and status.available_replicas == 1
        and not status.unavailable_replicas
    )


def test_rendered_manifests_pass_server_side_validation(
    control_plane, restricted_namespace, tmp_path
):
    """Every object the chart renders (all options on) is accepted by the API server, strictly."""
    everything = {
        "metrics": {"serviceMonitor": {"enabled": True}},
        "monitoring": {"additionalLabels": {"release": "kps"}},
        "operator": {"peering": {"enabled": True}},
    }
    rendered = ok(
        helm(
            "template",
            "dryrun",
            str(CHART),
            "--namespace",
            restricted_namespace,
            "--values",
            values_file(tmp_path, everything),
        )
    )
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    # The peering object is a post-install hook: its CRD exists only once installed.
    plain = [d for d in docs if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]
    assert {d["kind"] for d in plain} >= {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceMonitor",
    }
    result = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "--server-side",
        "--field-manager=driftwarden-chart-test",
        "--force-conflicts",
        "--namespace",
        restricted_namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(plain),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    assert result.stdout.count("(server dry run)") == len(plain), result.stdout

    # The same check must be able to fail: the chart's Deployment without its security
    # contexts draws the API server's Pod Security warning in this namespace.
    unsafe = next(d for d in plain if d["kind"] == "Deployment")
    unsafe["metadata"]["name"] = "unsafe-copy"
    pod = unsafe["spec"]["template"]["spec"]
    pod.pop("securityContext")
    for container in pod["containers"]:
        container.pop("securityContext")
    result = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "--namespace",
        restricted_namespace,
        "-f",
        "-",
        input=yaml.safe_dump(unsafe),
        check=False,
    )
    assert 'would violate PodSecurity "restricted' in result.stderr, result.stderr


def test_install_upgrade_uninstall(
    control_plane, restricted_namespace, release, tmp_path, apps_v1, core_v1, k8s_api
):
    namespace = restricted_namespace
    rbac = client.RbacAuthorizationV1Api(k8s_api)
    extensions = client.ApiextensionsV1Api(k8s_api)
    fullname = f"{release}-driftwarden"

    # --- install: defaults; an existing CRD (another test's, or an earlier release's)
    # is adopted rather than refused.
    out = ok(
        helm(
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--take-ownership",
            "--wait",
            "--timeout",
            "3m",
        )
    )
    assert f"rollout status deployment/{fullname}" in out, "NOTES.txt must tell what to do next"
    wait_until(
        lambda: operator_ready(apps_v1, namespace, fullname),
        timeout=120,
        what=f"Deployment {fullname} Ready under kwok",
    )
    pods = core_v1.list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/instance={release}"
    ).items
    assert len(pods) == 1 and pods[0].status.phase == "Running"
    assert pods[0].spec.service_account_name == fullname
    assert pods[0].spec.security_context.run_as_non_root is True
    crd = extensions.read_custom_resource_definition(CRD)
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    role = rbac.read_cluster_role(f"{fullname}-operator")
    assert any("driftmonitors" in (r.resources or []) for r in role.rules)
    binding = rbac.read_cluster_role_binding(f"{fullname}-operator")
    assert binding.subjects[0].name == fullname and binding.subjects[0].namespace == namespace

    # --- upgrade: kube-prometheus-stack wiring, the operator's ServiceMonitor, peering.
    upgraded = {
        "operator": {"logLevel": "debug", "peering": {"enabled": True}},
        "monitoring": {"additionalLabels": {"release": "kps"}},
        "metrics": {"serviceMonitor": {"enabled": True}},
    }
    ok(
        helm(
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--values",
            values_file(tmp_path, upgraded),
            "--wait",
            "--timeout",
            "3m",
        )
    )
    wait_until(
        lambda: operator_ready(apps_v1, namespace, fullname, generation=2),
        timeout=120,
        what=f"Deployment {fullname} Ready again after the upgrade",
    )
    deployment = apps_v1.read_namespaced_deployment(fullname, namespace)
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["DRIFTWARDEN_OPERATOR__LOG_LEVEL"] == "debug"
    assert json.loads(env["DRIFTWARDEN_OPERATOR__MONITORING_LABELS"]) == {"release": "kps"}
    assert env["DRIFTWARDEN_OPERATOR__PEERING_NAME"] == fullname
    custom = client.CustomObjectsApi(k8s_api)
    monitor = custom.get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "servicemonitors", fullname
    )
    assert monitor["metadata"]["labels"]["release"] == "kps"
    peering = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", fullname)
    assert peering["metadata"]["name"] == fullname
    history = json.loads(ok(helm("history", release, "--namespace", namespace, "-o", "json")))
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    # --- uninstall: everything of the release goes, the CRD stays (helm.sh/resource-policy: keep).
    ok(helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "2m"))

    def gone(read: Callable[[], Any]) -> bool:
        try:
            read()
        except ApiException as exc:
            return exc.status == 404
        return False

    for what, read in {
        "Deployment": lambda: apps_v1.read_namespaced_deployment(fullname, namespace),
        "ServiceAccount": lambda: core_v1.read_namespaced_service_account(fullname, namespace),
        "Service": lambda: core_v1.read_namespaced_service(f"{fullname}-metrics", namespace),
        "ClusterRole": lambda: rbac.read_cluster_role(f"{fullname}-operator"),
        "ClusterRoleBinding": lambda: rbac.read_cluster_role_binding(f"{fullname}-operator"),
        "ServiceMonitor": lambda: custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, "servicemonitors", fullname
        ),
    }.items():
        wait_until(lambda read=read: gone(read), timeout=60, what=f"{what} of {release} deleted")
    assert extensions.read_custom_resource_definition(CRD).metadata.name == CRD
