"""Grafana dashboards for DriftMonitors, generated with grafana-foundation-sdk."""

from driftwarden.dashboards.monitor import (
    OVERVIEW_UID,
    build_dashboard,
    build_overview_dashboard,
    dashboard_uid,
)
from driftwarden.dashboards.queries import panel_queries

__all__ = [
    "OVERVIEW_UID",
    "build_dashboard",
    "build_overview_dashboard",
    "dashboard_uid",
    "panel_queries",
]
