"""Shared Grafana panel factories: every Driftwarden dashboard is assembled from these.

One function per visual idiom (time series, stat, state timeline, distribution bars,
row), each taking titles and PromQL and returning a grafana-foundation-sdk builder.
All panels read the dashboard's ``datasource`` variable, so one JSON works with
whatever the Prometheus data source is called in the user's Grafana.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE_VARIABLE = "datasource"
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel: expression, legend, and how Grafana runs it."""

    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False  # cumulative ``le`` buckets -> per-bucket values


def _target(query: Query, ref_id: str) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(query.expr).ref_id(ref_id).datasource(DATASOURCE)
    if query.legend:
        target = target.legend_format(query.legend)
    target = target.instant() if query.instant else target.range()
    if query.heatmap:
        target = target.format(PromQueryFormat.HEATMAP)
    return target


def _targets(panel: Any, queries: list[Query]) -> Any:
    for i, query in enumerate(queries):
        panel = panel.with_target(_target(query, chr(ord("A") + i)))
    return panel.datasource(DATASOURCE)


def _thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=v, color=c) for v, c in steps])
    )


def _legend(as_table: bool = False) -> common_b.VizLegendOptions:
    legend = (
        common_b.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE if as_table else common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )
    if as_table:
        legend = legend.calcs(["lastNotNull", "max"])
    return legend


def row(title: str) -> dash_b.Row:
    """Return a dashboard row (section header)."""
    return dash_b.Row(title)


def time_series(
    title: str,
    description: str,
    queries: list[Query],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    min_: float | None = None,
    max_: float | None = None,
    log_scale: bool = False,
    threshold: float | None = None,
    stacked: bool = False,
) -> timeseries.Panel:
    """Return a time-series panel; ``threshold`` draws a red dashed line at that value."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10)
        .legend(_legend(as_table=len(queries) > 1 or stacked))
    )
    if min_ is not None:
        panel = panel.min(min_)
    if max_ is not None:
        panel = panel.max(max_)
    if log_scale:
        panel = panel.scale_distribution(
            common_b.ScaleDistributionConfig().type(common.ScaleDistribution.LOG).log(10)
        )
    if threshold is not None:
        panel = panel.thresholds(_thresholds((None, "green"), (threshold, "red"))).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    return _targets(panel, queries)


def stat_panel(
    title: str,
    description: str,
    query: Query,
    *,
    unit: str = "short",
    width: int = 6,
    height: int = 4,
    warn_at: float | None = None,
    red_below: float | None = None,
) -> stat.Panel:
    """Return a single-value stat; ``warn_at`` turns it red at or above, ``red_below`` below."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(width)
        .height(height)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
    )
    if warn_at is not None:
        panel = panel.thresholds(_thresholds((None, "green"), (warn_at, "red")))
    elif red_below is not None:
        panel = panel.thresholds(_thresholds((None, "red"), (red_below, "green")))
    else:
        panel = panel.thresholds(_thresholds((None, "blue")))
    return _targets(panel, [query])


def state_timeline(
    title: str,
    description: str,
    query: Query,
    *,
    states: dict[str, tuple[str, str]],
    width: int = 24,
    height: int = 8,
) -> statetimeline.Panel:
    """Return a state timeline; ``states`` maps a value to (text, colour)."""
    mapping = dashboard.ValueMap(
        options={
            value: dashboard.ValueMappingResult(text=text, color=color, index=i)
            for i, (value, (text, color)) in enumerate(states.items())
        }
    )
    panel = (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .span(width)
        .height(height)
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .mappings([mapping])
        .legend(_legend())
    )
    return _targets(panel, [query])


def distribution(
    title: str,
    description: str,
    queries: list[Query],
    *,
    width: int = 12,
    height: int = 8,
    repeat: str | None = None,
) -> bargauge.Panel:
    """Return bars per histogram bucket (one series per query), e.g. reference vs live."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .unit("percentunit")
        .min(0)
        .span(width)
        .height(height)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.VERTICAL)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds((None, "blue")))
    )
    if repeat:
        panel = panel.repeat(repeat).repeat_direction("h").max_per_row(3)
    return _targets(panel, queries)


def query_variable(
    name: str, label: str, query: str, *, multi: bool = False, include_all: bool = False
) -> dash_b.QueryVariable:
    """Return a variable whose options are a Prometheus ``label_values(...)`` query."""
    variable = (
        dash_b.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
    )
    if include_all:
        variable = variable.all_value(".*")
    return variable


def datasource_variable() -> dash_b.DatasourceVariable:
    """Return the ``datasource`` variable (any Prometheus data source)."""
    return dash_b.DatasourceVariable(DATASOURCE_VARIABLE).label("Data source").type("prometheus")
