"""values.yaml documents every key and values.schema.json describes exactly those keys, strictly."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = Path(os.environ.get("DRIFTWARDEN_CHART_DIR", ROOT / "charts" / "driftwarden"))
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# Values whose content is a Kubernetes object or a free-form map handed through as is:
# their inner keys belong to the Kubernetes API (or the user), not to this chart.
PASSTHROUGH = {
    "podSecurityContext",
    "containerSecurityContext",
    "resources",
    "affinity",
    "nodeSelector",
    "tolerations",
    "topologySpreadConstraints",
    "commonLabels",
    "podAnnotations",
    "podLabels",
    "imagePullSecrets",
    "operator.extraEnv",
    "networkPolicy.prometheus",
    "monitoring.additionalLabels",
    "monitoring.grafanaDashboards.labels",
    "monitoring.grafanaDashboards.annotations",
    "metrics.serviceMonitor.additionalLabels",
    "serviceAccount.annotations",
    "childResources.modelServer.requests",
    "childResources.modelServer.limits",
    "childResources.driftWorker.requests",
    "childResources.driftWorker.limits",
}
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(\s|$)")


def commented_keys(text: str) -> dict[str, bool]:
    """Return every key path of a values file and whether a comment sits right above it.

    A comment block above a key documents it; a blank line between them does not.
    Keys inside PASSTHROUGH values are skipped (they are Kubernetes' fields).
    """
    result: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([k for _, k in stack] + [match["key"]])
            if not any(path.startswith(p + ".") for p in PASSTHROUGH):
                result[path] = previous.lstrip().startswith("#")
            stack.append((indent, match["key"]))
        if line.strip() and not line.lstrip().startswith("- "):
            previous = line
        elif not line.strip():
            previous = ""
    return result


def schema_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Return every property path the schema declares, not descending into PASSTHROUGH values."""
    out = {}
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        out[path] = sub
        if sub.get("type") == "object" and "properties" in sub and path not in PASSTHROUGH:
            out.update(schema_paths(sub, path + "."))
    return out


def value_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Return every key path of a values mapping, not descending into PASSTHROUGH values."""
    out = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict) and path not in PASSTHROUGH:
            out |= value_paths(value, path + ".")
    return out


def test_comment_checker_catches_an_undocumented_key():
    text = "# -- documented\na: 1\n\nb: 2\nc:\n  # -- inner\n  d: 1\n  e: 2\n"
    assert commented_keys(text) == {"a": True, "b": False, "c": False, "c.d": True, "c.e": False}


def test_every_values_key_is_commented():
    undocumented = [path for path, ok in commented_keys(VALUES_TEXT).items() if not ok]
    # A mapping key whose children are all commented may go without its own comment
    # (e.g. `image:` above repository/tag/digest/pullPolicy), like cert-manager's chart.
    parents = {p.rsplit(".", 1)[0] for p in commented_keys(VALUES_TEXT) if "." in p}
    leaf_gaps = [p for p in undocumented if p not in parents]
    assert leaf_gaps == [], f"values.yaml keys without a comment right above them: {leaf_gaps}"


def test_schema_and_values_declare_the_same_keys():
    declared = {p for p in schema_paths(SCHEMA) if p != "global"}
    present = value_paths(VALUES)
    assert present - declared == set(), "keys in values.yaml the schema does not describe"
    assert declared - present == set(), "schema keys without a default in values.yaml"


def test_schema_is_strict_everywhere_but_passthrough_values():
    assert SCHEMA["additionalProperties"] is False
    for path, sub in schema_paths(SCHEMA).items():
        if sub.get("type") != "object" or path in PASSTHROUGH or path == "global":
            continue
        assert sub.get("additionalProperties") is False, f"{path} accepts unknown keys"
    for path in PASSTHROUGH:
        assert path in schema_paths(SCHEMA), f"PASSTHROUGH names {path}, which the schema lacks"


def test_every_schema_property_is_typed():
    for path, sub in schema_paths(SCHEMA).items():
        assert "type" in sub, f"{path} has no type"


def test_defaults_validate_against_the_schema():
    jsonschema.validate(VALUES, SCHEMA, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize(
    "override",
    [
        {"replicas": 1},
        {"image": {"registry": "registry.example"}},
        {"metrics": {"serviceMonitor": {"labels": {}}}},
        {"monitoring": {"grafanaDashboards": {"label": "grafana_dashboard"}}},
        {"health": {"livenessProbe": {"initialDelaySeconds": 5}}},
    ],
)
def test_schema_rejects_misspelt_or_unknown_keys(override):
    merged = json.loads(json.dumps(VALUES))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(merged, SCHEMA, cls=jsonschema.Draft7Validator)


def test_values_are_camel_case():
    for path in value_paths(VALUES):
        last = path.rsplit(".", 1)[-1]
        if any(path.startswith(p + ".") for p in PASSTHROUGH):
            continue
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", last), f"{path} is not camelCase"


README = CHART / "README.md"
TABLE_START = "<!-- values table: generated from values.yaml by tests/unit/test_chart_values.py -->"
TABLE_END = "<!-- end of values table -->"


def values_table(text: str) -> str:
    """Return the README's values table: every documented key, its default and its comment."""
    rows = ["| key | default | description |", "|---|---|---|"]
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            comment.append(body.removeprefix("-- "))
            continue
        match = _KEY_LINE.match(line)
        if not match:
            if not stripped:
                comment = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [match["key"]])
        stack.append((indent, match["key"]))
        inside_passthrough = any(path.startswith(p + ".") for p in PASSTHROUGH)
        if comment and comment[0] and not inside_passthrough:
            node: Any = VALUES
            for part in path.split("."):
                node = node[part]
            is_group = isinstance(node, dict) and path not in PASSTHROUGH and node
            if not is_group:
                default = json.dumps(node, separators=(", ", ": "))
                text_ = " ".join(comment).replace("|", "\\|")
                rows.append(f"| `{path}` | `{default}` | {text_} |")
        comment = []
    return "\n".join(rows)


def test_readme_values_table_is_up_to_date():
    expected = values_table(VALUES_TEXT)
    text = README.read_text()
    assert TABLE_START in text and TABLE_END in text, f"{README} lacks the table markers"
    current = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert current == expected, (
        f"{README}'s values table is stale; replace the block between the markers with:\n\n"
        f"{expected}\n"
    )
