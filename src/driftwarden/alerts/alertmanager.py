"""AlertmanagerConfig ``spec`` for one DriftMonitor: its route and receivers.

The spec follows prometheus-operator's ``monitoring.coreos.com/v1alpha1``
AlertmanagerConfig: receiver URLs are never inlined, they are Secret key references
(``apiURL`` for Discord and Slack, ``urlSecret`` for webhooks) that the
prometheus-operator resolves in the monitor's namespace. The operator also scopes the
route to that namespace; our route adds the ``monitor`` matcher so each monitor's
alerts reach only its own receivers.
"""

from __future__ import annotations

from typing import Any

from driftwarden.common import names
from driftwarden.common.spec import DriftMonitorSpec, Receiver

# Receiver used when a monitor names none: alerts stay visible in Alertmanager's UI
# and API, and nothing is sent.
NULL_RECEIVER = "null"

# Grouping per alert and monitor: one notification lists every firing alert of that
# kind (e.g. all shards down) instead of one message per series.
GROUP_BY = ("alertname", "namespace", names.LABEL_MONITOR)

SLACK_TITLE = "[{{ .Status | toUpper }}] {{ .CommonAnnotations.summary }}"
SLACK_TEXT = (
    "{{ range .Alerts }}*{{ .Annotations.summary }}*\n{{ .Annotations.description }}\n"
    "Runbook: {{ .Annotations.runbook_url }}\n{{ end }}"
)


def build_config_spec(
    name: str,
    namespace: str,
    spec: DriftMonitorSpec,
    *,
    group_wait: str = "30s",
    group_interval: str = "5m",
    repeat_interval: str = "4h",
) -> dict[str, Any]:
    """Return the AlertmanagerConfig ``spec`` (route + receivers) of a monitor.

    Every receiver of ``spec.alerts.receivers`` gets every alert of the monitor
    (one child route each, ``continue: true``). The timing keywords exist for the
    e2e tier and the demo, which need notifications within seconds.
    """
    del namespace  # AlertmanagerConfig objects are namespaced; the operator scopes them
    receivers = [_receiver(r) for r in spec.alerts.receivers]
    route: dict[str, Any] = {
        "receiver": receivers[0]["name"] if receivers else NULL_RECEIVER,
        "groupBy": list(GROUP_BY),
        "groupWait": group_wait,
        "groupInterval": group_interval,
        "repeatInterval": repeat_interval,
        "matchers": [{"name": names.LABEL_MONITOR, "value": name, "matchType": "="}],
    }
    if len(receivers) > 1:
        route["routes"] = [{"receiver": r["name"], "continue": True} for r in receivers]
    return {"route": route, "receivers": receivers or [{"name": NULL_RECEIVER}]}


def _receiver(receiver: Receiver) -> dict[str, Any]:
    out: dict[str, Any] = {"name": receiver.name}
    if receiver.discord is not None:
        out["discordConfigs"] = [
            {"apiURL": _secret(receiver.discord.webhook_secret_ref), "sendResolved": True}
        ]
    if receiver.slack is not None:
        slack: dict[str, Any] = {
            "apiURL": _secret(receiver.slack.api_url_secret_ref),
            "sendResolved": True,
            "title": SLACK_TITLE,
            "text": SLACK_TEXT,
        }
        if receiver.slack.channel:
            slack["channel"] = receiver.slack.channel
        out["slackConfigs"] = [slack]
    if receiver.webhook is not None:
        out["webhookConfigs"] = [
            {"urlSecret": _secret(receiver.webhook.url_secret_ref), "sendResolved": True}
        ]
    if len(out) == 1:
        raise ValueError(
            f"receiver {receiver.name!r} names no destination: set one of discord, slack "
            "or webhook in spec.alerts.receivers"
        )
    return out


def _secret(ref: Any) -> dict[str, str]:
    return {"name": ref.name, "key": ref.key}
