"""PromQL text helpers shared by the alert rules and the dashboards.

Every query Driftwarden generates is scoped to one monitor: worker metrics by the
``namespace`` target label and the exported ``monitor`` label, model-server metrics by
``namespace`` and the scrape ``job`` (the Service name, as a ServiceMonitor sets it).
"""

from __future__ import annotations

from driftwarden.common import names


def quote(value: str) -> str:
    """Return ``value`` as a double-quoted PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(metric: str, *matchers: str, **equals: str) -> str:
    """Return ``metric{k="v",...}`` with equality matchers first, then raw ``matchers``.

    >>> selector("up", 'job=~"a|b"', namespace="ml")
    'up{namespace="ml",job=~"a|b"}'
    """
    parts = [f"{key}={quote(value)}" for key, value in equals.items()]
    parts += list(matchers)
    return f"{metric}{{{','.join(parts)}}}"


def monitor_matcher(name: str, namespace: str) -> str:
    """Return the matcher selecting a monitor's worker series by their ``monitor`` label.

    Workers export the monitor's name (``names.monitor_name``); the scrape's
    ``namespace`` label carries the namespace, which every query also selects.
    """
    return f"{names.LABEL_MONITOR}={quote(name)}"


def model_job(name: str) -> str:
    """Return the scrape job (Service name) of a monitor's model server."""
    return names.model_service(name)


def workers_job(name: str) -> str:
    """Return the scrape job (headless Service name) of a monitor's drift workers."""
    return names.workers_service(name)


def feature_streams() -> str:
    """Return the matcher selecting every feature stream."""
    return f"{names.LABEL_STREAM}=~{quote(names.feature_stream('.+'))}"
