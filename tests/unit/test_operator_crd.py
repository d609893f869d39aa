"""The DriftMonitor CRD generated from the spec models, and `driftwarden generate`."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from driftwarden.common.spec import (
    CATEGORICAL_DETECTORS,
    CONCEPT_DETECTORS,
    EMBEDDING_DETECTORS,
    NUMERIC_DETECTORS,
    DetectorType,
    DriftMonitorSpec,
)
from driftwarden.operator import generate
from driftwarden.operator.crd import build_crd, structural_schema
from driftwarden.operator.examples import examples

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def root_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_schema_is_structural(root_schema: dict[str, Any]) -> None:
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "$defs", "additionalProperties", "title"}
    for path, node in _walk(root_schema):
        assert "type" in node, f"{path} has no type (not structural)"
        assert not forbidden & node.keys(), f"{path} uses {forbidden & node.keys()}"
        if node["type"] == "array":
            assert "items" in node, path
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                assert node[key] is True, f"{path}.{key} must be an OpenAPI 3.0 boolean"


def test_every_field_is_documented_starting_with_its_name(root_schema: dict[str, Any]) -> None:
    for section in ("spec", "status"):
        for path, node in _walk(root_schema["properties"][section], section):
            name = path.rsplit(".", 1)[-1]
            if name.endswith("[]"):
                continue  # list items are described by their list field
            assert node.get("description", "").startswith(f"{name}:"), (
                f"{path}: description must start with '{name}:', got {node.get('description')!r}"
            )


def test_defaults_are_filled_for_nested_objects(root_schema: dict[str, Any]) -> None:
    spec = root_schema["properties"]["spec"]["properties"]
    assert spec["workers"]["default"] == {
        "shards": 3,
        "window": 1000,
        "evaluateEvery": 100,
        "storage": "1Gi",
    }
    assert spec["workers"]["properties"]["shards"]["default"] == 3
    assert spec["workers"]["properties"]["storage"]["default"] == "1Gi"
    # No default: an explicit replicas next to autoscaling is refused, a defaulted one would be
    # indistinguishable from it.
    assert "default" not in spec["model"]["properties"]["replicas"]
    assert spec["model"]["properties"]["autoscaling"]["properties"]["minReplicas"]["default"] == 2
    assert spec["detectors"]["properties"]["numeric"]["default"] == [{"type": "mixtureCusum"}]
    assert spec["detectors"]["properties"]["valuesPerFalseAlarm"]["default"] == 1_000_000
    assert spec["alerts"]["properties"]["for"]["default"] == "5m"
    assert spec["alerts"]["properties"]["receivers"]["x-kubernetes-list-map-keys"] == ["name"]
    assert root_schema["required"] == ["spec"]
    assert spec["model"]["required"] == ["bundle"]


def test_enums_and_ranges(root_schema: dict[str, Any]) -> None:
    spec = root_schema["properties"]["spec"]["properties"]
    detector = spec["detectors"]["properties"]["numeric"]["items"]["properties"]
    assert detector["type"]["enum"] == [t.value for t in DetectorType]
    shards = spec["workers"]["properties"]["shards"]
    assert (shards["minimum"], shards["maximum"]) == (1, 64)
    share = spec["alerts"]["properties"]["dataDriftShare"]
    assert share == {**share, "minimum": 0, "exclusiveMinimum": True, "maximum": 1}


def test_cel_rules_cover_streams_receivers_and_durations(root_schema: dict[str, Any]) -> None:
    rules = [
        rule for _, node in _walk(root_schema) for rule in node.get("x-kubernetes-validations", [])
    ]
    messages = " | ".join(r["message"] for r in rules)
    for stream in ("numeric", "categorical", "prediction", "concept", "embedding"):
        assert f"{stream} detectors must be of type" in messages
    assert "exactly one of discord, slack, webhook" in messages
    assert "alerts.for must be at most 24h" in messages
    assert "labelJoin.maxDelay" in messages
    assert "evaluateEvery must not exceed" in messages
    assert "workers.storage is immutable" in messages
    assert "metadata.name must be a DNS-1035 label" in messages
    for rule in rules:
        assert rule["rule"] and rule["message"]


def test_subresources_and_printer_columns(crd: dict[str, Any]) -> None:
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.workers.shards",
        "statusReplicasPath": ".status.shards",
        "labelSelectorPath": ".status.selector",
    }
    always = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert always == ["Ready", "Shards", "Drifting", "Age"]
    wide = [c for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide and all(c["priority"] == 1 for c in wide)
    assert crd["metadata"]["name"] == "driftmonitors.driftwarden.io"
    assert crd["spec"]["scope"] == "Namespaced"


def _openapi_validator(root_schema: dict[str, Any]) -> jsonschema.Draft4Validator:
    # OpenAPI 3.0's boolean exclusiveMinimum is draft-4 JSON Schema; x-kubernetes-* keys
    # are ignored by jsonschema (CEL is checked by the API server in the cluster tier).
    return jsonschema.Draft4Validator(root_schema["properties"]["spec"])


def test_examples_validate_against_both_the_schema_and_the_models(
    root_schema: dict[str, Any],
) -> None:
    validator = _openapi_validator(root_schema)
    monitors = [o for _, objs in examples().values() for o in objs if o["kind"] == "DriftMonitor"]
    assert {m["spec"]["model"]["bundle"] for m in monitors} >= {
        f"builtin://{n}" for n in ("diamonds", "diabetes", "iris", "digits", "insurance")
    }
    for monitor in monitors:
        validator.validate(monitor["spec"])
        DriftMonitorSpec.model_validate(monitor["spec"])
    receivers = examples()["receivers.yaml"][1]
    assert [o["kind"] for o in receivers].count("Secret") == 3
    digits = next(m for m in monitors if m["metadata"]["name"] == "digits")
    assert digits["spec"]["detectors"]["embedding"][0]["type"] == "mmd"


def _base() -> dict[str, Any]:
    return {"model": {"bundle": "builtin://diamonds"}}


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("zero shards", {"workers": {"shards": 0}}, "shards"),
    ("share above one", {"alerts": {"dataDriftShare": 1.5}}, "dataDriftShare"),
    ("negative share", {"alerts": {"dataDriftShare": -0.1}}, "dataDriftShare"),
    ("fdr of one", {"detectors": {"fdr": 1.0}}, "fdr"),
    ("alpha of zero", {"detectors": {"numeric": [{"type": "ks", "alpha": 0}]}}, "alpha"),
    ("unknown detector", {"detectors": {"numeric": [{"type": "magic"}]}}, "type"),
    ("bad duration", {"alerts": {"for": "5 minutes"}}, "for"),
    ("bad bundle scheme", {"model": {"bundle": "s3://bucket/model"}}, "bundle"),
    ("short digest", {"model": {"digest": "sha256:abc"}}, "digest"),
    ("digest of another hash", {"model": {"digest": "md5:" + "0" * 32}}, "digest"),
    ("uppercase digest", {"model": {"digest": "sha256:" + "A" * 64}}, "digest"),
]


@pytest.mark.parametrize(("case", "patch", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_fail_the_openapi_schema_and_the_models(
    root_schema: dict[str, Any],
    case: str,
    patch: dict[str, Any],
    field: str,
) -> None:
    spec = _base()
    for key, value in patch.items():
        spec[key] = {**spec.get(key, {}), **value}
    errors = list(_openapi_validator(root_schema).iter_errors(spec))
    assert errors, f"{case}: the OpenAPI schema accepted {spec}"
    with pytest.raises(ValidationError) as excinfo:
        DriftMonitorSpec.model_validate(spec)
    assert field in str(excinfo.value)


def test_a_well_formed_digest_is_accepted(root_schema: dict[str, Any]) -> None:
    spec = {"model": {"bundle": "builtin://diamonds", "digest": "sha256:" + "0a" * 32}}
    assert not list(_openapi_validator(root_schema).iter_errors(spec))
    assert DriftMonitorSpec.model_validate(spec).model.digest == "sha256:" + "0a" * 32


def test_missing_bundle_is_rejected(root_schema: dict[str, Any]) -> None:
    assert list(_openapi_validator(root_schema).iter_errors({"model": {}}))
    with pytest.raises(ValidationError, match="bundle"):
        DriftMonitorSpec.model_validate({"model": {}})


@pytest.mark.parametrize(
    ("stream", "allowed"),
    [
        ("numeric", NUMERIC_DETECTORS),
        ("categorical", CATEGORICAL_DETECTORS),
        ("concept", CONCEPT_DETECTORS),
        ("embedding", EMBEDDING_DETECTORS),
    ],
)
def test_models_enforce_the_cel_stream_rules(stream: str, allowed: tuple) -> None:
    for detector in DetectorType:
        spec = {**_base(), "detectors": {stream: [{"type": detector.value}]}}
        if detector in allowed:
            DriftMonitorSpec.model_validate(spec)
        else:
            with pytest.raises(ValidationError, match=f"{stream} detectors must be of type"):
                DriftMonitorSpec.model_validate(spec)


def test_models_enforce_receiver_and_parameter_rules() -> None:
    ref = {"name": "s", "key": "k"}
    two = {"name": "x", "discord": {"webhookSecretRef": ref}, "webhook": {"urlSecretRef": ref}}
    with pytest.raises(ValidationError, match="exactly one of discord, slack, webhook"):
        DriftMonitorSpec.model_validate({**_base(), "alerts": {"receivers": [two]}})
    with pytest.raises(ValidationError, match="exactly one"):
        DriftMonitorSpec.model_validate({**_base(), "alerts": {"receivers": [{"name": "x"}]}})
    dup = {"name": "x", "webhook": {"urlSecretRef": ref}}
    with pytest.raises(ValidationError, match="unique"):
        DriftMonitorSpec.model_validate({**_base(), "alerts": {"receivers": [dup, dup]}})
    with pytest.raises(ValidationError, match="bins applies only"):
        DriftMonitorSpec.model_validate(
            {**_base(), "detectors": {"numeric": [{"type": "ks", "bins": 10}]}}
        )
    with pytest.raises(ValidationError, match="evaluateEvery must not exceed"):
        DriftMonitorSpec.model_validate(
            {**_base(), "workers": {"window": 100, "evaluateEvery": 200}}
        )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"autoscaling": {"minReplicas": 4, "maxReplicas": 3}},
            "minReplicas must not exceed model.autoscaling.maxReplicas",
        ),
        ({"replicas": 2, "autoscaling": {"maxReplicas": 3}}, "are exclusive"),
        (
            {"autoscaling": {"maxReplicas": 3, "targetRequestsPerSecond": 50}},
            "needs a custom-metrics adapter",
        ),
    ],
)
def test_models_enforce_the_autoscaling_rules(model: dict[str, Any], message: str) -> None:
    spec = {"model": {"bundle": "builtin://diamonds", **model}}
    with pytest.raises(ValidationError, match=message):
        DriftMonitorSpec.model_validate(spec)


def test_autoscaling_cel_rules_match_the_models(root_schema: dict[str, Any]) -> None:
    model = root_schema["properties"]["spec"]["properties"]["model"]
    rules = [r["rule"] for r in model["x-kubernetes-validations"]]
    assert rules == ["!has(self.replicas) || !has(self.autoscaling)"]
    autoscaling = model["properties"]["autoscaling"]
    assert [r["rule"] for r in autoscaling["x-kubernetes-validations"]] == [
        "self.minReplicas <= self.maxReplicas"
    ]
    refused = autoscaling["properties"]["targetRequestsPerSecond"]["x-kubernetes-validations"]
    assert refused[0]["rule"] == "false" and "prometheus-adapter" in refused[0]["message"]
    assert autoscaling["required"] == ["maxReplicas"]


def test_optional_union_with_two_types_is_refused() -> None:
    from pydantic import BaseModel

    from driftwarden.operator.crd import SchemaError

    class Bad(BaseModel):
        value: int | str

    with pytest.raises(SchemaError, match="Optional"):
        structural_schema(Bad)


def test_chart_crd_is_the_manifest_crd_behind_crds_enabled(crd: dict[str, Any]) -> None:
    outputs = generate.outputs(REPO)
    chart = outputs[REPO / generate.CHART_CRD_PATH]
    assert chart.startswith("{{- if .Values.crds.enabled }}\n")
    assert chart.rstrip().endswith("{{- end }}")
    assert "helm.sh/resource-policy: keep" in chart
    # Strip the template lines: what is left is the manifest CRD plus the annotation.
    plain = "\n".join(line for line in chart.splitlines() if "{{" not in line)
    parsed = yaml.safe_load(plain)
    assert parsed["spec"] == crd["spec"]
    assert parsed["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    manifest = yaml.safe_load(outputs[REPO / generate.CRD_PATH])
    assert manifest == crd


def test_generated_files_in_the_repository_are_up_to_date(capsys) -> None:
    assert generate.main(["--check", "--root", str(REPO)]) == 0, capsys.readouterr().err


def test_check_fails_on_a_stale_copy_and_generate_repairs_it(tmp_path: Path, capsys) -> None:
    for rel in (
        generate.CRD_PATH,
        generate.CHART_CRD_PATH,
        generate.RBAC_PATH,
        generate.OVERVIEW_DASHBOARD_PATH,
        generate.DOC_PATH,
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    shutil.copytree(REPO / generate.EXAMPLES_DIR, tmp_path / generate.EXAMPLES_DIR)
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0

    crd_file = tmp_path / generate.CRD_PATH
    crd_file.write_text(crd_file.read_text().replace("maximum: 64", "maximum: 65"))
    (tmp_path / generate.EXAMPLES_DIR / "handmade.yaml").write_text("kind: DriftMonitor\n")
    capsys.readouterr()
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stale: manifests/crd/driftmonitors.yaml" in err
    assert "handmade.yaml" in err and "make generate" in err

    assert generate.main(["--root", str(tmp_path)]) == 0
    assert crd_file.read_text() == (REPO / generate.CRD_PATH).read_text()


def test_generate_refuses_a_doc_without_markers(tmp_path: Path, capsys) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / generate.DOC_PATH).write_text("# no markers here\n")
    assert generate.main(["--root", str(tmp_path)]) == 1
    assert "markers" in capsys.readouterr().err


def test_schema_round_trips_every_default(root_schema: dict[str, Any]) -> None:
    """Defaults in the CRD equal what the models fill in, so API server and Python agree."""
    filled = DriftMonitorSpec.model_validate(_base()).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )

    def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
        if schema.get("type") == "object" and isinstance(value, dict):
            out = copy.deepcopy(value)
            for name, prop in schema.get("properties", {}).items():
                if name not in out and "default" in prop:
                    out[name] = copy.deepcopy(prop["default"])
                if name in out:
                    out[name] = apply_defaults(prop, out[name])
            return out
        if schema.get("type") == "array" and isinstance(value, list):
            return [apply_defaults(schema["items"], v) for v in value]
        return value

    assert apply_defaults(root_schema["properties"]["spec"], _base()) == filled
