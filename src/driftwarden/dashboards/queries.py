"""Reading the PromQL back out of generated dashboard JSON (tests, the demo, linting)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel: where it is and what it asks."""

    panel: str
    ref_id: str
    expr: str
    instant: bool


def _panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        # Collapsed rows carry their panels inside the row.
        yield from panel.get("panels", [])


def panel_queries(
    dashboard: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> list[PanelQuery]:
    """Return every Prometheus query of ``dashboard``, with ``$name`` variables substituted.

    ``variables`` maps a variable name (without ``$``) to the text that replaces
    ``$name`` and ``${name}``; longer names are replaced first so ``$stream`` never
    clobbers ``$streams``.
    """
    variables = dict(variables or {})
    out: list[PanelQuery] = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            for name in sorted(variables, key=len, reverse=True):
                expr = expr.replace("${" + name + "}", variables[name]).replace(
                    "$" + name, variables[name]
                )
            out.append(
                PanelQuery(
                    panel=panel.get("title", ""),
                    ref_id=target.get("refId", ""),
                    expr=expr,
                    instant=bool(target.get("instant")),
                )
            )
    return out
