"""Local stand-ins for what the prometheus-operator renders in a cluster.

- :func:`render_prometheus_config`: ``prometheus.yml`` whose static scrape jobs
  replace the two ServiceMonitors of a monitor, with the same job names
  (``<monitor>-model``, ``<monitor>-workers``) and the ``namespace``/``pod``/``service``
  target labels a ServiceMonitor adds, so the rule groups select the same series.
- :func:`render_alertmanager_config`: ``alertmanager.yml`` from the AlertmanagerConfig
  ``spec`` (:func:`driftwarden.alerts.alertmanager.build_config_spec`), translated as
  the prometheus-operator does (namespace matcher added, receivers prefixed with
  ``<namespace>/<config>/``), with Secret key references resolved locally.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftwarden.alerts.promql import model_job, workers_job


class SecretNotFoundError(LookupError):
    """A Secret key referenced by a receiver could not be resolved locally."""


@dataclass(frozen=True)
class LocalSecrets:
    """Resolves ``{name, key}`` Secret references without a cluster.

    Looked up in order: ``values[name][key]``; the environment variable
    ``DRIFTWARDEN_SECRET_<NAME>_<KEY>`` (upper-case, non-alphanumerics as ``_``); the
    file ``<directory>/<name>/<key>`` (the layout of a mounted Secret).
    """

    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    directory: Path | None = None
    environ: Mapping[str, str] | None = None

    @staticmethod
    def env_name(name: str, key: str) -> str:
        """Return the environment variable that holds Secret ``name``'s ``key``."""
        return "DRIFTWARDEN_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{name}_{key}").upper()

    def resolve(self, ref: Mapping[str, str]) -> str:
        """Return the value of Secret key reference ``ref`` ({"name", "key"})."""
        name, key = ref["name"], ref["key"]
        if key in self.values.get(name, {}):
            return self.values[name][key]
        env = os.environ if self.environ is None else self.environ
        variable = self.env_name(name, key)
        if env.get(variable):
            return env[variable]
        if self.directory is not None and (self.directory / name / key).is_file():
            return (self.directory / name / key).read_text(encoding="utf-8").strip()
        where = f" or the file {self.directory / name / key}" if self.directory else ""
        raise SecretNotFoundError(
            f"Secret {name!r} key {key!r} (a receiver URL) is not available locally: pass it "
            f"in LocalSecrets.values, set {variable}{where}"
        )


@dataclass(frozen=True)
class ScrapeTarget:
    """One local process that Prometheus scrapes."""

    address: str  # host:port
    pod: str


def render_prometheus_config(
    *,
    name: str,
    namespace: str,
    model_targets: Sequence[ScrapeTarget],
    worker_targets: Sequence[ScrapeTarget],
    alertmanager: str,
    rule_files: Sequence[str],
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    metrics_path: str = "/metrics",
) -> dict[str, Any]:
    """Return a ``prometheus.yml`` (as data) scraping one monitor's processes."""

    def job(job_name: str, targets: Sequence[ScrapeTarget]) -> dict[str, Any]:
        return {
            "job_name": job_name,
            "metrics_path": metrics_path,
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "static_configs": [
                {
                    "targets": [t.address],
                    # What a ServiceMonitor attaches to every target it discovers.
                    "labels": {"namespace": namespace, "pod": t.pod, "service": job_name},
                }
                for t in targets
            ],
        }

    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": list(rule_files),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            job(model_job(name), model_targets),
            job(workers_job(name), worker_targets),
        ],
    }


_CONFIG_KEYS = {
    # AlertmanagerConfig (camelCase) -> alertmanager.yml (snake_case), per receiver kind.
    "discordConfigs": ("discord_configs", {"apiURL": "webhook_url"}),
    "slackConfigs": ("slack_configs", {"apiURL": "api_url"}),
    "webhookConfigs": ("webhook_configs", {"urlSecret": "url", "url": "url"}),
}
_PLAIN_KEYS = {
    "sendResolved": "send_resolved",
    "title": "title",
    "text": "text",
    "message": "message",
    "channel": "channel",
    "maxAlerts": "max_alerts",
}
_ROUTE_KEYS = {
    "groupBy": "group_by",
    "groupWait": "group_wait",
    "groupInterval": "group_interval",
    "repeatInterval": "repeat_interval",
    "continue": "continue",
}


def render_alertmanager_config(
    configs: Sequence[tuple[str, str, Mapping[str, Any]]],
    secrets: LocalSecrets,
    *,
    resolve_timeout: str = "5m",
) -> dict[str, Any]:
    """Return an ``alertmanager.yml`` (as data) from AlertmanagerConfig specs.

    ``configs`` holds ``(namespace, config_name, spec)`` triples. As the
    prometheus-operator does, each config's route only sees alerts of its namespace,
    and its receivers are named ``<namespace>/<config_name>/<receiver>``.
    """
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    routes: list[dict[str, Any]] = []
    for namespace, config_name, spec in configs:
        prefix = f"{namespace}/{config_name}/"
        for receiver in spec.get("receivers", []):
            receivers.append(_receiver(receiver, prefix, secrets))
        route = _route(spec["route"], prefix)
        route["matchers"] = [f'namespace="{namespace}"', *route.get("matchers", [])]
        # Later configs must still see alerts this one matched (operator behaviour).
        route["continue"] = True
        routes.append(route)
    return {
        "global": {"resolve_timeout": resolve_timeout},
        "route": {"receiver": "null", "group_by": ["alertname", "namespace"], "routes": routes},
        "receivers": receivers,
    }


def _route(route: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {"receiver": prefix + route["receiver"]}
    for camel, snake in _ROUTE_KEYS.items():
        if camel in route:
            out[snake] = route[camel]
    matchers = [
        f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in route.get("matchers", [])
    ]
    if matchers:
        out["matchers"] = matchers
    if route.get("routes"):
        out["routes"] = [_route(child, prefix) for child in route["routes"]]
    return out


def _receiver(receiver: Mapping[str, Any], prefix: str, secrets: LocalSecrets) -> dict[str, Any]:
    out: dict[str, Any] = {"name": prefix + receiver["name"]}
    for camel, (snake, secret_keys) in _CONFIG_KEYS.items():
        for config in receiver.get(camel, []):
            rendered: dict[str, Any] = {}
            for key, value in config.items():
                if key in secret_keys:
                    rendered[secret_keys[key]] = (
                        secrets.resolve(value) if isinstance(value, Mapping) else value
                    )
                elif key in _PLAIN_KEYS:
                    rendered[_PLAIN_KEYS[key]] = value
                else:
                    raise ValueError(
                        f"receiver {receiver['name']!r}: {camel} field {key!r} has no local "
                        "translation; add it to driftwarden.testing.local.config"
                    )
            out.setdefault(snake, []).append(rendered)
    return out
