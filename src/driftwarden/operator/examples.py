"""Example DriftMonitors, one per built-in bundle, written to manifests/examples/."""

from __future__ import annotations

from typing import Any

from driftwarden.common import names

API_VERSION = f"{names.API_GROUP}/{names.API_VERSION}"


def _monitor(name: str, spec: dict[str, Any], comment: str) -> tuple[str, list[dict[str, Any]]]:
    return comment, [
        {
            "apiVersion": API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": name},
            "spec": spec,
        }
    ]


def _secret(name: str, key: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {key: value},
    }


def examples() -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Return file name -> (header comment, objects) of every example manifest."""
    out = {
        "diamonds.yaml": _monitor(
            "diamonds",
            {
                "model": {"bundle": "builtin://diamonds", "replicas": 2},
                "workers": {"shards": 3, "window": 1000, "storage": "1Gi"},
                "detectors": {
                    "numeric": [{"type": "ks", "alpha": 0.01}, {"type": "psi", "bins": 10}],
                    "categorical": [{"type": "chi2"}, {"type": "psi"}],
                    "concept": [{"type": "relativeMse"}, {"type": "pageHinkley", "delta": 0.1}],
                },
                "alerts": {"dataDriftShare": 0.3, "for": "5m"},
            },
            "Diamond price regression (random forest): numeric and categorical features, "
            "relative-MSE concept drift.",
        ),
        "diabetes.yaml": _monitor(
            "diabetes",
            {
                "model": {"bundle": "builtin://diabetes", "replicas": 1},
                "workers": {"shards": 2, "window": 500, "evaluateEvery": 50},
                "detectors": {"numeric": [{"type": "ks"}, {"type": "pageHinkley"}]},
            },
            "Diabetes progression (linear regression): ten numeric features.",
        ),
        "iris.yaml": _monitor(
            "iris",
            {
                "model": {"bundle": "builtin://iris", "replicas": 1},
                "workers": {"shards": 1, "window": 200, "evaluateEvery": 20},
                "detectors": {
                    "numeric": [{"type": "iks", "alpha": 0.01}],
                    "minSamples": 50,
                    "concept": [{"type": "errorRate"}, {"type": "ddm"}],
                },
            },
            "Iris species (logistic regression): small windows, incremental KS.",
        ),
        "digits.yaml": _monitor(
            "digits",
            {
                "model": {"bundle": "builtin://digits", "replicas": 2},
                "workers": {"shards": 3, "window": 2000, "evaluateEvery": 200, "storage": "2Gi"},
                "detectors": {
                    "numeric": [{"type": "ks"}],
                    "embedding": [{"type": "mmd", "permutations": 200, "alpha": 0.01}],
                    "concept": [{"type": "errorRate"}, {"type": "adwin"}],
                },
            },
            "8x8 digit images (torch CNN): pixel features plus MMD on the penultimate-layer "
            "embedding.",
        ),
        "insurance.yaml": _monitor(
            "insurance",
            {
                "model": {"bundle": "builtin://insurance", "replicas": 2},
                "workers": {"shards": 3},
                "detectors": {
                    "numeric": [{"type": "ks"}],
                    "categorical": [{"type": "chi2"}, {"type": "js", "threshold": 0.1}],
                    "concept": [{"type": "errorRate"}, {"type": "hddmA"}],
                    "multipleTesting": "benjaminiHochberg",
                    "fdr": 0.05,
                },
                "alerts": {"dataDriftShare": 0.25, "for": "10m", "severity": "critical"},
                "labelJoin": {"key": "prediction_id", "maxDelay": "24h"},
            },
            "Insurance risk classification on a shiftable synthetic generator; labels may "
            "arrive a day late.",
        ),
    }
    _, receivers_monitor = _monitor(
        "diamonds-alerting",
        {
            "model": {"bundle": "builtin://diamonds"},
            "alerts": {
                "dataDriftShare": 0.3,
                "for": "5m",
                "receivers": [
                    {
                        "name": "discord",
                        "discord": {
                            "webhookSecretRef": {
                                "name": "driftwarden-discord",
                                "key": "webhook-url",
                            }
                        },
                    },
                    {
                        "name": "slack",
                        "slack": {
                            "apiUrlSecretRef": {"name": "driftwarden-slack", "key": "api-url"},
                            "channel": "#ml-alerts",
                        },
                    },
                    {
                        "name": "oncall",
                        "webhook": {"urlSecretRef": {"name": "driftwarden-webhook", "key": "url"}},
                    },
                ],
            },
        },
        "",
    )
    out["receivers.yaml"] = (
        (
            "Alerts to Discord, Slack and a generic webhook; the URLs live in Secrets (replace "
            "the placeholder values). The operator renders an AlertmanagerConfig routing this "
            "monitor's alerts to all three."
        ),
        [
            _secret(
                "driftwarden-discord", "webhook-url", "https://discord.com/api/webhooks/REPLACE/ME"
            ),
            _secret("driftwarden-slack", "api-url", "https://hooks.slack.com/services/REPLACE/ME"),
            _secret("driftwarden-webhook", "url", "https://alerts.example.com/driftwarden"),
            *receivers_monitor,
        ],
    )
    return out
