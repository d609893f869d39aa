"""A DriftMonitor parsed once, at the edge, into typed fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from driftwarden.common import names
from driftwarden.common.spec import DriftMonitorSpec


class InvalidMonitor(ValueError):
    """The resource's spec does not parse; the message says which field and why."""


@dataclasses.dataclass(frozen=True)
class Monitor:
    """The identity and parsed spec of one DriftMonitor."""

    name: str
    namespace: str
    uid: str
    generation: int
    labels: Mapping[str, str]
    spec: DriftMonitorSpec

    @property
    def key(self) -> str:
        return names.monitor_key(self.namespace, self.name)

    def owner_body(self) -> dict[str, Any]:
        """Return the minimal body kopf.adopt needs to build an owner reference."""
        return {
            "apiVersion": f"{names.API_GROUP}/{names.API_VERSION}",
            "kind": names.KIND,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "labels": dict(self.labels),
            },
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Monitor:
        """Return the monitor parsed from a DriftMonitor body; raises InvalidMonitor."""
        meta = body.get("metadata", {})
        where = f"DriftMonitor {meta.get('namespace')}/{meta.get('name')}"
        try:
            spec = DriftMonitorSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidMonitor(
                f"{where}: {problems}. Fix the resource (kubectl edit driftmonitor "
                f"{meta.get('name')}); the CRD should have rejected it, so check that the "
                "installed CRD matches this operator version."
            ) from exc
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            labels=dict(meta.get("labels") or {}),
            spec=spec,
        )
