"""Alert rules (PrometheusRule groups) and Alertmanager routing for DriftMonitors."""

from driftwarden.alerts.alertmanager import build_config_spec
from driftwarden.alerts.rules import ALERT_NAMES, build_rule_groups

__all__ = ["ALERT_NAMES", "build_config_spec", "build_rule_groups"]
