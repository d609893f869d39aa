"""The DriftMonitor CustomResourceDefinition, generated from the pydantic spec models.

``structural_schema(model)`` turns a pydantic model's JSON schema into the
structural OpenAPI v3 subset the API server accepts: ``$ref`` inlined, ``Optional``
unwrapped, JSON-Schema-2020 exclusive bounds rewritten to OpenAPI 3.0 booleans,
enums kept, defaults filled (nested objects get their complete default)
and CEL rules carried over from ``json_schema_extra``.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from driftwarden.common import names
from driftwarden.common.spec import MAX_MONITOR_NAME, DriftMonitorSpec, DriftMonitorStatus

CRD_NAME = f"{names.PLURAL}.{names.API_GROUP}"
SHORT_NAMES = ["dm", "driftmon"]
CATEGORIES = ["driftwarden"]

# Keys the API server rejects or that carry no meaning in a structural schema.
_DROP = {"title", "additionalProperties", "$defs", "discriminator", "examples"}


class SchemaError(ValueError):
    """The pydantic model uses a construct the CRD schema cannot express."""


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = node["$ref"].rsplit("/", 1)[-1]
        merged = copy.deepcopy(defs[target])
        # Field-level keys (description, default, CEL) win over the model's own.
        for key, value in node.items():
            if key == "$ref":
                continue
            if key == "x-kubernetes-validations":
                merged[key] = merged.get(key, []) + value
            else:
                merged[key] = value
        return _resolve(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise SchemaError(f"only Optional[X] unions are supported, got {node['anyOf']}")
        merged = dict(variants[0])
        for key, value in node.items():
            if key == "anyOf":
                continue
            if key == "x-kubernetes-validations":
                merged[key] = merged.get(key, []) + value
            else:
                merged[key] = value
        return _resolve(merged, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _openapi(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _openapi(prop) for name, prop in value.items()}
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "default" and value is None:
            continue
        else:
            out[key] = _openapi(value)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "integer":
        out.setdefault("format", "int64")
    return out


def _fill_factory_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Give fields with a default_factory their default, which pydantic leaves out."""
    props = schema.get("properties", {})
    for field_name, field in model.model_fields.items():
        wire = field.alias or field_name
        prop = props.get(wire)
        if prop is None:
            continue
        annotation = field.annotation
        if field.default_factory is not None:
            # Nested objects get their filled-in defaults, not {}: the API server checks
            # CEL rules against the default as written, before nested defaulting.
            prop["default"] = _dump(field.default_factory())  # type: ignore[call-arg]
        nested = _model_of(annotation)
        if nested is not None:
            target = prop["items"] if prop.get("type") == "array" else prop
            _fill_factory_defaults(target, nested)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _dump(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="json", exclude_none=True)
    return value


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return the structural OpenAPI v3 schema of ``model`` for a CRD version."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _openapi(_resolve(raw, defs))
    _fill_factory_defaults(schema, model)
    return schema


_NAME_RULE = {
    "rule": (
        f"self.metadata.name.size() <= {MAX_MONITOR_NAME} && "
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ),
    "message": (
        f"metadata.name must be a DNS-1035 label of at most {MAX_MONITOR_NAME} characters "
        "(lowercase letters, digits and '-', starting with a letter): children are named "
        "<name>-workers-<ordinal>"
    ),
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Ready: every child applied and every pod ready.",
    },
    {
        "name": "Shards",
        "type": "integer",
        "jsonPath": ".spec.workers.shards",
        "description": "Shards: drift-worker shards requested.",
    },
    {
        "name": "Drifting",
        "type": "integer",
        "jsonPath": ".status.driftingStreams",
        "description": "Drifting: streams currently drifting.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Bundle",
        "type": "string",
        "jsonPath": ".spec.model.bundle",
        "priority": 1,
        "description": "Bundle: the model bundle under watch.",
    },
    {
        "name": "Ready-Shards",
        "type": "integer",
        "jsonPath": ".status.readyShards",
        "priority": 1,
        "description": "Ready-Shards: drift-worker pods ready.",
    },
    {
        "name": "Epoch",
        "type": "integer",
        "jsonPath": ".status.shardEpoch",
        "priority": 1,
        "description": "Epoch: shard-map epoch.",
    },
    {
        "name": "Last-Drift",
        "type": "date",
        "jsonPath": ".status.lastDriftTime",
        "priority": 1,
        "description": "Last-Drift: when a stream last started drifting.",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "priority": 1,
        "description": "Reason: why the monitor is (not) ready.",
    },
]


def build_crd() -> dict[str, Any]:
    """Return the DriftMonitor CustomResourceDefinition as a plain dict."""
    spec_schema = structural_schema(DriftMonitorSpec)
    spec_schema["description"] = (
        "spec: what to watch and how. See docs/operator.md for every field."
    )
    status_schema = structural_schema(DriftMonitorStatus)
    status_schema["description"] = "status: observed state, written by the operator."
    root = {
        "type": "object",
        "description": (
            "DriftMonitor watches one deployed model for data drift, concept drift and serving "
            "health: a model server, sharded drift workers, alerts and a dashboard."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "apiVersion: driftwarden.io/v1alpha1."},
            "kind": {"type": "string", "description": "kind: DriftMonitor."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "x-kubernetes-validations": [_NAME_RULE],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "driftwarden",
                "app.kubernetes.io/part-of": "driftwarden",
                "app.kubernetes.io/component": "crd",
            },
        },
        "spec": {
            "group": names.API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": names.API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.workers.shards",
                            "statusReplicasPath": ".status.shards",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }
