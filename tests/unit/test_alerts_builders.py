"""Rule groups and the AlertmanagerConfig spec: valid against the real CRDs, scoped, mixin style."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftwarden.alerts import ALERT_NAMES, build_config_spec, build_rule_groups
from driftwarden.alerts.promql import quote, selector
from driftwarden.alerts.rules import RUNBOOK_BASE_URL
from driftwarden.common.durations import parse_duration
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.testing.tools import prometheus_operator_crds

DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


class _CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: 10x faster on CRDs
    """PyYAML reads a bare ``=`` as the obscure !!value tag; CRDs use it as a string."""


_CrdLoader.add_constructor(
    "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
)


def _strict(schema: Any) -> Any:
    """Return ``schema`` with unknown fields forbidden (the API server would prune them silently)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if k != "pattern" or _python_regex(v)}
        if "properties" in out and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _python_regex(pattern: Any) -> bool:
    # A few CRD patterns use Go-only syntax (a global flag mid-pattern); such fields are
    # never set by our builders, so dropping those patterns loses nothing.
    try:
        re.compile(pattern)
    except (re.error, TypeError):
        return False
    return True


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(instance), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def _crd_spec_schema(plural: str, version: str) -> dict[str, Any]:
    path = next(p for p in prometheus_operator_crds() if f"_{plural}.yaml" in p.name)
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=_CrdLoader)
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return _strict(served["schema"]["openAPIV3Schema"]["properties"]["spec"])


@pytest.fixture(scope="module")
def rule_schema() -> dict[str, Any]:
    return _crd_spec_schema("prometheusrules", "v1")


@pytest.fixture(scope="module")
def amconfig_schema() -> dict[str, Any]:
    return _crd_spec_schema("alertmanagerconfigs", "v1alpha1")


def _spec(**alerts: Any) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate(
        {"model": {"bundle": "builtin://diamonds"}, "alerts": {"for": "2m", **alerts}}
    )


RECEIVERS = [
    {"name": "discord", "discord": {"webhookSecretRef": {"name": "alerting", "key": "discord"}}},
    {
        "name": "slack",
        "slack": {"apiUrlSecretRef": {"name": "alerting", "key": "slack"}, "channel": "#ml"},
    },
    {"name": "hook", "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}}},
]


def _alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_rule_groups_validate_against_the_prometheusrule_crd(rule_schema: dict[str, Any]) -> None:
    groups = build_rule_groups("diamonds", "ml", _spec(), interval="30s")
    _validate({"groups": groups}, rule_schema)


def test_every_alert_is_mixin_style() -> None:
    spec = _spec(severity="critical", dataDriftShare=0.25)
    alerts = _alerts(build_rule_groups("diamonds", "ml", spec))
    assert sorted(a["alert"] for a in alerts) == sorted(ALERT_NAMES)
    for alert in alerts:
        assert alert["alert"].startswith("Driftwarden")
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
        assert alert["labels"]["monitor"] == "diamonds" and alert["labels"]["namespace"] == "ml"
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        assert "ml/diamonds" in annotations["summary"]
        assert "builtin://diamonds" in annotations["description"], alert["alert"]
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE_URL}#{alert['alert'].lower()}"
        # storage errors fire at once: acknowledgements stop at the first one
        unheld = alert["alert"] == "DriftwardenWorkerStorageErrors"
        assert alert.get("for") == (None if unheld else "2m")
    drift = {a["alert"]: a for a in alerts}
    assert drift["DriftwardenDataDrift"]["labels"]["severity"] == "critical"  # from the spec
    assert drift["DriftwardenDataDrift"]["expr"].endswith(">= 0.25")


def test_runbook_anchors_exist_in_docs() -> None:
    """Every runbook_url lands on a heading of docs/alerts.md (GitHub's anchor rule)."""
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in DOCS.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    for name in ALERT_NAMES:
        assert name.lower() in headings, f"docs/alerts.md lacks a '### {name}' runbook section"


def test_min_samples_and_shards_come_from_the_spec() -> None:
    spec = DriftMonitorSpec.model_validate(
        {
            "model": {"bundle": "file:///models/m"},
            "workers": {"shards": 7},
            "detectors": {"minSamples": 1234},
        }
    )
    groups = build_rule_groups("m", "ns", spec)
    text = yaml.safe_dump(groups)
    assert ">= bool 1234" in text
    missing = next(a for a in _alerts(groups) if a["alert"] == "DriftwardenWorkerShardsMissing")
    assert missing["expr"].endswith("< 7")


_DW_SELECTOR = re.compile(r"(driftwarden[_:][a-z_:]+|\bup)\{([^}]*)\}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    namespace=st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
)
def test_every_selector_is_scoped_to_the_monitor(name: str, namespace: str) -> None:
    """No rule reads another monitor's series: each selector pins namespace plus monitor or job."""
    groups = build_rule_groups(name, namespace, _spec())
    assert groups[0]["name"] == f"driftwarden.{namespace}.{name}"
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    exprs += [r["annotations"]["description"] for r in _alerts(groups)]
    for expr in exprs:
        for metric, matchers in _DW_SELECTOR.findall(expr):
            assert f"namespace={quote(namespace)}" in matchers, (metric, expr)
            scoped = {
                f"monitor={quote(name)}",
                f"monitor=~{quote(name + '|' + namespace + '/' + name)}",
                f"job={quote(name + '-model')}",
                f"job={quote(name + '-workers')}",
            }
            assert any(m in matchers for m in scoped), (metric, expr)


def test_promql_helpers() -> None:
    assert selector("m", 'a=~"x"', b='q"uote') == 'm{b="q\\"uote",a=~"x"}'
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("5 minutes")
    with pytest.raises(ValueError, match="invalid duration"):
        build_rule_groups("m", "ns", _spec(), rate_window="5x")


def test_alertmanager_spec_validates_against_the_crd(amconfig_schema: dict[str, Any]) -> None:
    spec = build_config_spec("diamonds", "ml", _spec(receivers=RECEIVERS))
    _validate(spec, amconfig_schema)
    receivers = {r["name"]: r for r in spec["receivers"]}
    assert receivers["discord"]["discordConfigs"] == [
        {"apiURL": {"name": "alerting", "key": "discord"}, "sendResolved": True}
    ]
    assert receivers["slack"]["slackConfigs"][0]["apiURL"] == {"name": "alerting", "key": "slack"}
    assert receivers["slack"]["slackConfigs"][0]["channel"] == "#ml"
    assert receivers["hook"]["webhookConfigs"][0]["urlSecret"] == {"name": "hooks", "key": "url"}
    # No URL is ever inlined: every destination is a Secret reference.
    assert "http" not in yaml.safe_dump(spec["receivers"])


def test_alertmanager_route_is_per_monitor_and_fans_out() -> None:
    spec = build_config_spec("diamonds", "ml", _spec(receivers=RECEIVERS))
    route = spec["route"]
    assert route["matchers"] == [{"name": "monitor", "value": "diamonds", "matchType": "="}]
    assert route["groupBy"] == ["alertname", "namespace", "monitor"]
    assert [r["receiver"] for r in route["routes"]] == ["discord", "slack", "hook"]
    assert all(r["continue"] for r in route["routes"])


def test_alertmanager_spec_without_receivers(amconfig_schema: dict[str, Any]) -> None:
    spec = build_config_spec("diamonds", "ml", _spec())
    _validate(spec, amconfig_schema)
    assert spec["route"]["receiver"] == "null" and spec["receivers"] == [{"name": "null"}]
    assert "routes" not in spec["route"]


def test_single_receiver_needs_no_child_routes() -> None:
    spec = build_config_spec("diamonds", "ml", _spec(receivers=RECEIVERS[:1]), group_wait="1s")
    assert spec["route"]["receiver"] == "discord"
    assert spec["route"]["groupWait"] == "1s"
    assert "routes" not in spec["route"]
