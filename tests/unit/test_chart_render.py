"""The Helm chart renders what the operator needs, labelled, least-privileged and restricted.

Renders charts/driftwarden with the pinned helm (`helm template`, no cluster) and checks
the objects; tests/cluster/test_helm_*.py installs the same chart into a real API server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftwarden.dashboards import build_overview_dashboard
from driftwarden.testing.tools import tool_path

ROOT = Path(__file__).resolve().parents[2]
# DRIFTWARDEN_CHART_DIR checks another copy of the chart (e.g. an unpacked release
# tarball); by default the tests check the one in this checkout.
CHART = Path(os.environ.get("DRIFTWARDEN_CHART_DIR", ROOT / "charts" / "driftwarden"))

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
SELECTOR_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
# Values that turn on every optional object, so label and security checks see them all.
EVERYTHING_ON = {
    "metrics": {"serviceMonitor": {"enabled": True}},
    "operator": {"peering": {"enabled": True}},
    "monitoring": {"additionalLabels": {"release": "kps"}},
}


class RenderError(AssertionError):
    """helm refused to render; the message is helm's stderr."""


@dataclass
class Rendered:
    """The objects one `helm template` produced, with lookups by kind."""

    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
        return found[0]

    def pod_spec(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]

    def container(self) -> dict[str, Any]:
        return next(c for c in self.pod_spec()["containers"] if c["name"] == "operator")

    def env(self) -> dict[str, str | None]:
        return {e["name"]: e.get("value") for e in self.container()["env"]}


def helm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; a private cache/config home keeps user repos out of the test."""
    home = Path("/tmp/driftwarden-helm-unit")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [str(tool_path("helm")), *args],
        input=stdin,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def render(
    values: dict[str, Any] | None = None, *, release: str = "dw", chart: Path = CHART
) -> Rendered:
    """Return the objects `helm template` renders for ``values`` (passed as JSON, valid YAML)."""
    proc = helm(
        "template",
        release,
        str(chart),
        "--namespace",
        "driftwarden-system",
        "--values",
        "-",
        stdin=json.dumps(values or {}),
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip())
    return Rendered([d for d in yaml.safe_load_all(proc.stdout) if d])


def render_error(values: dict[str, Any]) -> str:
    """Return helm's error for ``values``; fails the test if helm renders them."""
    try:
        render(values)
    except RenderError as exc:
        return str(exc)
    raise AssertionError(f"helm rendered values it must refuse: {values}")


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """Return how a pod spec breaks Pod Security "restricted" (empty when it complies)."""
    problems = []
    pod_ctx = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(f"{flag}=true")
    for volume in pod_spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"hostPath volume {volume['name']}")
    for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        ctx = c.get("securityContext") or {}
        name = c["name"]
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in (ctx.get("capabilities") or {}).get("drop", []):
            problems.append(f"{name}: capabilities.drop lacks ALL")
        if set((ctx.get("capabilities") or {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser=0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp!r}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


@pytest.fixture(scope="module")
def everything() -> Rendered:
    return render(EVERYTHING_ON)


# --- the checker itself can fail ---------------------------------------------------


def test_restricted_checker_flags_a_root_privileged_pod():
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": True, "runAsUser": 0}}],
    }
    found = restricted_violations(bad)
    for expected in (
        "hostNetwork",
        "hostPath",
        "privileged",
        "runAsUser=0",
        "seccompProfile",
        "capabilities.drop",
        "allowPrivilegeEscalation",
    ):
        assert any(expected in p for p in found), (expected, found)


# --- lint ----------------------------------------------------------------------------


def test_helm_lint_strict_passes_for_defaults_and_everything_on(tmp_path):
    for values in ({}, EVERYTHING_ON):
        path = tmp_path / "values.json"
        path.write_text(json.dumps(values))
        proc = helm("lint", "--strict", str(CHART), "--values", str(path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


# --- objects and labels ----------------------------------------------------------------


def test_default_render_has_the_operator_and_its_permissions(default):
    kinds = sorted(o["kind"] for o in default.objects)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "Service",
            "ServiceAccount",
        ]
    ), kinds
    assert not default.of_kind("ServiceMonitor"), "the operator ServiceMonitor is off by default"


def test_every_object_carries_every_recommended_label(everything):
    for obj in everything.objects:
        labels = obj["metadata"].get("labels") or {}
        missing = [k for k in RECOMMENDED_LABELS if k not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == "dw"
        assert labels["app.kubernetes.io/part-of"] == "driftwarden"


def test_selectors_use_only_name_and_instance(everything):
    deployment = everything.one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert set(selector) == SELECTOR_LABELS
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items(), "the Deployment must select its own pods"
    assert set(everything.one("Service")["spec"]["selector"]) == SELECTOR_LABELS
    sm = everything.one("ServiceMonitor")
    assert set(sm["spec"]["selector"]["matchLabels"]) == SELECTOR_LABELS
    assert (
        sm["spec"]["selector"]["matchLabels"].items()
        <= everything.one("Service")["metadata"]["labels"].items()
    )


def test_common_and_pod_labels_never_reach_selectors():
    rendered = render({"commonLabels": {"team": "ml"}, "podLabels": {"cost-centre": "42"}})
    deployment = rendered.one("Deployment")
    assert deployment["metadata"]["labels"]["team"] == "ml"
    assert deployment["spec"]["template"]["metadata"]["labels"]["cost-centre"] == "42"
    assert set(deployment["spec"]["selector"]["matchLabels"]) == SELECTOR_LABELS
    assert set(rendered.one("Service")["spec"]["selector"]) == SELECTOR_LABELS


def test_full_name_follows_release_and_overrides():
    assert render(release="driftwarden").one("Deployment")["metadata"]["name"] == "driftwarden"
    assert render(release="prod").one("Deployment")["metadata"]["name"] == "prod-driftwarden"
    named = render({"fullnameOverride": "dwop"})
    assert named.one("Deployment")["metadata"]["name"] == "dwop"
    assert named.one("ServiceAccount")["metadata"]["name"] == "dwop"


# --- the operator Deployment ------------------------------------------------------------


def test_operator_pod_meets_pod_security_restricted(everything):
    assert restricted_violations(everything.pod_spec()) == []
    assert everything.container()["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in everything.container()["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


def test_operator_has_probes_on_its_health_port(default):
    container = default.container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert default.env()["DRIFTWARDEN_OPERATOR__HEALTH_PORT"] == "8080"


def test_one_operator_at_a_time(default):
    spec = default.one("Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "a rolling update would run two operators"
    assert "replicaCount=2" in render_error({"replicaCount": 2})
    assert render({"replicaCount": 0}).one("Deployment")["spec"]["replicas"] == 0


def test_image_defaults_to_app_version_and_digest_pins(default):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    app_version = chart["appVersion"]
    assert default.container()["image"] == f"driftwarden/driftwarden-operator:{app_version}"
    digest = "sha256:" + "ab" * 32
    pinned = render(
        {"image": {"repository": "reg.example/dw-op", "tag": "1.2.3", "digest": digest}}
    )
    assert pinned.container()["image"] == f"reg.example/dw-op:1.2.3@{digest}"
    env = default.env()
    assert env["DRIFTWARDEN_OPERATOR__MODEL_SERVER_IMAGE"].endswith(
        f"driftwarden-model-server:{app_version}"
    )
    assert env["DRIFTWARDEN_OPERATOR__DRIFT_WORKER_IMAGE"].endswith(
        f"driftwarden-drift-worker:{app_version}"
    )


def test_kube_prometheus_stack_integration_reaches_the_operator_and_service_monitor():
    rendered = render(
        {
            "monitoring": {
                "additionalLabels": {"release": "kps"},
                "grafanaDashboards": {
                    "labels": {"grafana_dashboard": "1"},
                    "annotations": {"grafana_folder": "Driftwarden"},
                    "namespace": "monitoring",
                },
            },
            "metrics": {"serviceMonitor": {"enabled": True, "additionalLabels": {"extra": "yes"}}},
            "imagePullSecrets": [{"name": "regcred"}],
        }
    )
    env = rendered.env()
    assert json.loads(env["DRIFTWARDEN_OPERATOR__MONITORING_LABELS"]) == {"release": "kps"}
    assert json.loads(env["DRIFTWARDEN_OPERATOR__DASHBOARD_LABELS"]) == {"grafana_dashboard": "1"}
    assert json.loads(env["DRIFTWARDEN_OPERATOR__DASHBOARD_ANNOTATIONS"]) == {
        "grafana_folder": "Driftwarden"
    }
    assert env["DRIFTWARDEN_OPERATOR__DASHBOARD_NAMESPACE"] == "monitoring"
    assert json.loads(env["DRIFTWARDEN_OPERATOR__IMAGE_PULL_SECRETS"]) == [{"name": "regcred"}]
    sm_labels = rendered.one("ServiceMonitor")["metadata"]["labels"]
    assert sm_labels["release"] == "kps" and sm_labels["extra"] == "yes"
    assert rendered.pod_spec()["imagePullSecrets"] == [{"name": "regcred"}]


def test_extra_labels_cannot_override_the_chart_labels():
    rendered = render(
        {
            "metrics": {
                "serviceMonitor": {
                    "enabled": True,
                    "additionalLabels": {"app.kubernetes.io/name": "other"},
                }
            },
        }
    )
    assert (
        rendered.one("ServiceMonitor")["metadata"]["labels"]["app.kubernetes.io/name"]
        == "driftwarden"
    )


def test_peering_is_standalone_by_default_and_named_when_enabled(default, everything):
    assert default.env()["DRIFTWARDEN_OPERATOR__PEERING_NAME"] == ""
    assert not [o for o in default.objects if o["kind"] == "ClusterKopfPeering"]
    assert everything.env()["DRIFTWARDEN_OPERATOR__PEERING_NAME"] == "dw-driftwarden"
    peering = everything.one("ClusterKopfPeering")
    assert peering["metadata"]["name"] == "dw-driftwarden"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    crd_names = {c["metadata"]["name"] for c in everything.of_kind("CustomResourceDefinition")}
    assert "clusterkopfpeerings.kopf.dev" in crd_names
    assert everything.env()["POD_ID"] is None, "POD_ID comes from the pod name (fieldRef)"


def test_metrics_off_removes_service_and_port():
    rendered = render({"metrics": {"enabled": False}})
    assert not rendered.of_kind("Service")
    assert {p["name"] for p in rendered.container()["ports"]} == {"health"}
    assert rendered.env()["DRIFTWARDEN_OPERATOR__METRICS_PORT"] == "0"


# --- CRD ------------------------------------------------------------------------------


def test_crd_is_kept_on_uninstall_and_can_be_left_out(default):
    crd = next(
        o
        for o in default.of_kind("CustomResourceDefinition")
        if o["metadata"]["name"] == "driftmonitors.driftwarden.io"
    )
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"]["names"]["kind"] == "DriftMonitor"
    unkept = render({"crds": {"keep": False}})
    crd = unkept.one("CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    assert not render({"crds": {"enabled": False}}).of_kind("CustomResourceDefinition")


# --- RBAC -------------------------------------------------------------------------------


def _generated_rules() -> list[dict[str, Any]]:
    parsed = yaml.safe_load((CHART / "files" / "operator-rbac-rules.yaml").read_text())
    return parsed["rules"] if isinstance(parsed, dict) else parsed


def test_rbac_rules_come_from_the_generated_file_only(default):
    role = default.one("ClusterRole")
    assert role["rules"] == _generated_rules()
    binding = default.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": default.one("ServiceAccount")["metadata"]["name"],
            "namespace": "driftwarden-system",
        }
    ]
    assert (
        default.pod_spec()["serviceAccountName"]
        == default.one("ServiceAccount")["metadata"]["name"]
    )


def test_rbac_is_least_privilege(default):
    for rule in default.one("ClusterRole")["rules"]:
        assert "*" not in rule.get("verbs", []), rule
        assert "*" not in rule.get("resources", []), rule
        assert "*" not in rule.get("apiGroups", []), rule
        assert not rule.get("nonResourceURLs"), rule
        # Listing or watching Secrets cluster-wide would expose every webhook URL and token;
        # the operator only creates each monitor's credential Secret and reads it back by
        # name (docs/security.md), and never changes or deletes one.
        if "secrets" in rule.get("resources", []):
            assert set(rule["verbs"]) <= {"get", "create"} or rule.get("resourceNames"), rule


def test_rbac_off_and_existing_service_account():
    rendered = render(
        {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "preexisting"}}
    )
    assert not rendered.of_kind("ClusterRole") and not rendered.of_kind("ServiceAccount")
    assert rendered.pod_spec()["serviceAccountName"] == "preexisting"


def test_missing_rbac_rules_file_fails_with_the_fix(tmp_path):
    copy = tmp_path / "driftwarden"
    shutil.copytree(CHART, copy)
    (copy / "files" / "operator-rbac-rules.yaml").unlink()
    with pytest.raises(RenderError, match="make generate"):
        render(chart=copy)


# --- NetworkPolicy ----------------------------------------------------------------------


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_operator_network_policy_admits_prometheus_to_metrics_only(default):
    from driftwarden.operator import builders
    from driftwarden.operator.settings import OperatorSettings
    from support.operator import monitor

    policy = default.one("NetworkPolicy")
    spec = policy["spec"]
    pod_labels = default.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert _matches(spec["podSelector"], pod_labels)
    # A monitor named like the release has pods with the same name and instance labels.
    monitor_pod = {**pod_labels, "app.kubernetes.io/component": "drift-worker"}
    assert not _matches(spec["podSelector"], monitor_pod)
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    metrics_port = next(p for p in default.container()["ports"] if p["name"] == "metrics")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert spec["ingress"] == [
        {
            "from": [values["networkPolicy"]["prometheus"]],
            "ports": [{"protocol": "TCP", "port": metrics_port["containerPort"]}],
        }
    ], "only Prometheus, only the metrics port (the kubelet's probes come from the node)"

    dns, api, workers = spec["egress"]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert api == {"ports": [{"protocol": "TCP", "port": p} for p in (443, 6443)]}
    # The workers' port and labels are the ones the operator renders for every monitor.
    sts = builders.build_worker_statefulset(
        monitor({"model": {"bundle": "builtin://d"}}), OperatorSettings()
    )
    worker_pods = sts["spec"]["template"]["metadata"]["labels"]
    (peer,) = workers["to"]
    assert peer["namespaceSelector"] == {}, "monitors live in any namespace"
    assert _matches(peer["podSelector"], worker_pods)
    assert not _matches(peer["podSelector"], {**worker_pods, "app.kubernetes.io/component": "x"})
    assert workers["ports"] == [{"protocol": "TCP", "port": builders.WORKER_PORT}]


def test_operator_network_policy_follows_its_values():
    off = render({"networkPolicy": {"enabled": False}})
    assert not off.of_kind("NetworkPolicy")
    no_metrics = render({"metrics": {"enabled": False}})
    assert no_metrics.one("NetworkPolicy")["spec"]["ingress"] == [], "nothing may connect"
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    custom = render(
        {
            "metrics": {"port": 9191},
            "networkPolicy": {
                "prometheus": {**peer, "podSelector": None},
                "apiServerPorts": [8443],
            },
        }
    )
    spec = custom.one("NetworkPolicy")["spec"]
    assert spec["ingress"] == [{"from": [peer], "ports": [{"protocol": "TCP", "port": 9191}]}]
    assert spec["egress"][1] == {"ports": [{"protocol": "TCP", "port": 8443}]}
    # The operator hands the same peer to every monitor's worker policy.
    assert json.loads(custom.env()["DRIFTWARDEN_OPERATOR__PROMETHEUS_PEER"] or "") == peer


# --- impossible values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"serviceAccount": {"create": False}},
            "serviceAccount.create=false needs serviceAccount.name",
        ),
        (
            {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
            "needs metrics.enabled=true",
        ),
        ({"metrics": {"port": 8080}}, "metrics.port and health.port are both 8080"),
        ({"podSecurityContext": {"runAsUser": 0}}, "podSecurityContext.runAsUser=0"),
        (
            {
                "podSecurityContext": {
                    "runAsNonRoot": False,
                    "seccompProfile": {"type": "RuntimeDefault"},
                }
            },
            "runAsNonRoot=false is not allowed",
        ),
        (
            {
                "containerSecurityContext": {
                    "allowPrivilegeEscalation": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                }
            },
            "allowPrivilegeEscalation must be false",
        ),
        # Helm merges maps into the defaults but replaces lists, so a drop list without ALL
        # replaces the default one.
        (
            {"containerSecurityContext": {"capabilities": {"drop": ["NET_RAW"]}}},
            "capabilities.drop must contain ALL",
        ),
        (
            {
                "containerSecurityContext": {
                    "allowPrivilegeEscalation": False,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
                }
            },
            "may only contain NET_BIND_SERVICE",
        ),
        (
            {
                "containerSecurityContext": {
                    "allowPrivilegeEscalation": False,
                    "runAsNonRoot": True,
                    "privileged": True,
                    "capabilities": {"drop": ["ALL"]},
                }
            },
            "privileged=true is not allowed",
        ),
        (
            {"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
            "seccompProfile.type must be RuntimeDefault or Localhost",
        ),
        (
            {"containerSecurityContext": {"seccompProfile": {"type": "Unconfined"}}},
            "seccompProfile.type must be RuntimeDefault or Localhost",
        ),
    ],
)
def test_impossible_values_fail_with_a_message_naming_the_value(values, message):
    assert message in render_error(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 1}, "additional properties 'replicas' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"image": {"digest": "sha256:short"}}, "digest"),
        ({"operator": {"logLevel": "verbose"}}, "logLevel"),
        ({"metrics": {"serviceMonitor": {"interval": "thirty seconds"}}}, "interval"),
        ({"monitoring": {"additionalLabels": {"release": "has spaces"}}}, "additionalLabels"),
        ({"crds": {"enabled": "yes"}}, "crds"),
        ({"childResources": {"modelServer": {"requests": {"memory": "lots"}}}}, "childResources"),
        (
            {"childResources": {"driftWorker": {"limits": {"gpus": "1"}}}},
            "invalid propertyName 'gpus'",
        ),
        ({"monitoring": {"scrapeInterval": "often"}}, "scrapeInterval"),
        (
            {"networkPolicy": {"prometheus": {"podselector": {}}}},
            "invalid propertyName 'podselector'",
        ),
        ({"networkPolicy": {"apiServerPorts": []}}, "apiServerPorts"),
        ({"networkPolicy": {"apiServerPorts": [0]}}, "apiServerPorts"),
    ],
)
def test_schema_rejects_unknown_keys_and_bad_values(values, message):
    assert message in render_error(values)


# --- NOTES.txt --------------------------------------------------------------------------


def _render_notes(tmp_path: Path, values: dict[str, Any]) -> str:
    # `helm template` never renders NOTES.txt and parses what it renders as YAML, so a
    # copy of the chart turns the notes into a named template embedded in a YAML string.
    copy = tmp_path / "driftwarden"
    shutil.copytree(CHART, copy)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "NOTES.txt").unlink()
    (copy / "templates" / "_notes_under_test.tpl").write_text(
        '{{- define "notes-under-test" -}}\n' + notes + "{{- end -}}\n"
    )
    (copy / "templates" / "notes-under-test.yaml").write_text(
        'kind: NotesUnderTest\nbody: |\n{{ include "notes-under-test" . | indent 2 }}\n'
    )
    proc = helm(
        "template",
        "dw",
        str(copy),
        "--namespace",
        "driftwarden-system",
        "--show-only",
        "templates/notes-under-test.yaml",
        "--values",
        "-",
        stdin=json.dumps(values),
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["body"]


def test_notes_tell_the_user_what_to_do_next(tmp_path):
    notes = _render_notes(tmp_path, {})
    assert "kubectl -n driftwarden-system rollout status deployment/dw-driftwarden" in notes
    assert "kubectl apply -f manifests/examples/diamonds.yaml" in notes
    assert "--set monitoring.additionalLabels.release=<kube-prometheus-stack release>" in notes
    assert "kubectl delete crd driftmonitors.driftwarden.io" in notes
    wired = _render_notes(
        tmp_path / "b",
        {
            "monitoring": {"additionalLabels": {"release": "kps"}},
            "operator": {"peering": {"enabled": True}},
        },
    )
    assert '{"release":"kps"}' in wired
    assert "kubectl delete clusterkopfpeering dw-driftwarden" in wired


# --- the operator reads what the chart sets ------------------------------------------------


def test_operator_settings_parse_every_variable_the_chart_sets(monkeypatch):
    from driftwarden.operator.settings import load_settings

    rendered = render(
        {
            **EVERYTHING_ON,
            "imagePullSecrets": [{"name": "regcred"}],
            "childImages": {"pullPolicy": "Always"},
            "monitoring": {
                "additionalLabels": {"release": "kps"},
                "grafanaDashboards": {"annotations": {"grafana_folder": "ML"}},
            },
        }
    )
    for key in [k for k in os.environ if k.startswith("DRIFTWARDEN_OPERATOR__")]:
        monkeypatch.delenv(key)
    for var in rendered.container()["env"]:
        if var["name"].startswith("DRIFTWARDEN_OPERATOR__"):
            # fieldRef values are filled in by the kubelet; use what it would give.
            monkeypatch.setenv(var["name"], var.get("value", "driftwarden-system"))
    settings = load_settings()  # extra="forbid": an unknown variable name would fail here
    assert settings.namespace == "driftwarden-system"
    assert settings.peering_name == "dw-driftwarden"
    assert settings.health_port == 8080 and settings.metrics_port == 9090
    assert settings.log_format == "json"
    assert settings.monitoring_labels == {"release": "kps"}
    assert settings.dashboard_labels == {"grafana_dashboard": "1"}
    assert settings.dashboard_annotations == {"grafana_folder": "ML"}
    assert settings.image_pull_secrets == [{"name": "regcred"}]
    assert settings.image_pull_policy == "Always"
    assert settings.scrape_interval == "30s"
    # The monitors' worker policies admit the operator by its pods' labels and namespace.
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert settings.operator_pod_labels.items() <= pod_labels.items()
    assert settings.operator_pod_labels == {
        "app.kubernetes.io/name": "driftwarden",
        "app.kubernetes.io/instance": "dw",
        "app.kubernetes.io/component": "operator",
    }
    assert (
        settings.operator_pod_labels
        == rendered.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    )
    assert (
        settings.prometheus_peer
        == yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]["prometheus"]
    )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert settings.model_server_resources.as_manifest() == values["childResources"]["modelServer"]
    assert settings.drift_worker_resources.as_manifest() == values["childResources"]["driftWorker"]
    assert settings.model_server_image.startswith("driftwarden/driftwarden-model-server:")
    assert (
        settings.run_as_user
        == yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]["runAsUser"]
    ), "children must run as the same UID as the images' USER"
    declared = {f.upper() for f in type(settings).model_fields}
    set_by_chart = {
        v["name"].removeprefix("DRIFTWARDEN_OPERATOR__")
        for v in rendered.container()["env"]
        if v["name"].startswith("DRIFTWARDEN_OPERATOR__")
    }
    assert set_by_chart <= declared, f"the operator does not read {set_by_chart - declared}"


def test_the_values_make_kind_install_sets_render():
    """hack/kind-install.sh's --set flags (with its defaults) pass the schema and land."""
    script = (ROOT / "hack" / "kind-install.sh").read_text()
    command = script[script.index('helm_kind upgrade --install "$DW_RELEASE"') :]
    command = command[: command.index("--wait")]
    defaults = {
        "$op_repo": "driftwarden/operator",
        "$op_tag": "dev",
        "$ms_repo": "driftwarden/model-server",
        "$ms_tag": "dev",
        "$dw_repo": "driftwarden/drift-worker",
        "$dw_tag": "dev",
        "$KPS_RELEASE": "kps",
    }
    flags = re.findall(r"(--set(?:-string)?) (\S+)", command)
    assert len(flags) >= 8, flags
    args = []
    for flag, assignment in flags:
        for variable, value in defaults.items():
            assignment = assignment.replace(f'"{variable}"', value)
        assert "$" not in assignment, f"unknown variable in {assignment}"
        args += [flag, assignment]
    proc = helm("template", "driftwarden", str(CHART), *args)
    assert proc.returncode == 0, proc.stderr
    rendered = Rendered([d for d in yaml.safe_load_all(proc.stdout) if d])
    assert rendered.container()["image"] == "driftwarden/operator:dev"
    env = rendered.env()
    assert env["DRIFTWARDEN_OPERATOR__MODEL_SERVER_IMAGE"] == "driftwarden/model-server:dev"
    assert env["DRIFTWARDEN_OPERATOR__DRIFT_WORKER_IMAGE"] == "driftwarden/drift-worker:dev"
    assert json.loads(env["DRIFTWARDEN_OPERATOR__MONITORING_LABELS"]) == {"release": "kps"}
    assert rendered.one("ServiceMonitor")["metadata"]["labels"]["release"] == "kps"


def test_the_overview_dashboard_ships_once_with_the_sidecar_label(default):
    overview = default.one("ConfigMap")
    assert overview["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = overview["data"].values()
    assert json.loads(text) == build_overview_dashboard()
    off = render({"monitoring": {"grafanaDashboards": {"enabled": False}}})
    assert not off.of_kind("ConfigMap")
    moved = render({"monitoring": {"grafanaDashboards": {"namespace": "grafana"}}})
    assert moved.one("ConfigMap")["metadata"]["namespace"] == "grafana"
