"""Documents exchanged between processes, as pydantic models both sides import.

``WorkerStatus`` is the drift worker's ``GET /status`` answer: the worker builds
it and serialises it with ``model_dump_json``; the operator, the local stack and the
tests parse it with :func:`parse_worker_status`, never by hand. Wire names are
snake_case (the document predates the models; the names did not change).

Readers ignore fields they do not know, so an operator one version ahead of or
behind its workers (during a rolling upgrade) still reads their status; a field the
reader needs that is missing or has the wrong type is an error naming that field.

``MonitorConfig`` is the monitor ConfigMap's ``monitor.json``: the operator writes it
(:meth:`MonitorConfig.to_json`), the drift workers read it with
:meth:`MonitorConfig.read`, which validates the spec as a ``DriftMonitorSpec`` and
names the file and the bad field. (The model server reads only a few fields of the
same file, leniently, in ``model_server.settings``.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftwarden.common.errors import ConfigError
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DriftMonitorSpec


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DetectorStatus(_Doc):
    """One detector's latest result on one stream."""

    statistic: float | None = Field(description="Latest statistic; None before it evaluated.")
    p_value: float | None = Field(description="Latest p-value; None for tests without one.")
    alarm: bool = Field(description="The detector's own alarm, before the monitor-wide decision.")
    drift: bool = Field(description="The monitor-wide verdict for this stream and detector.")
    n_seen: int = Field(ge=0, description="Values the detector had accepted when it evaluated.")
    threshold: float | None = Field(
        description="What the statistic (or p-value) is compared with; None if not finite."
    )
    false_alarm_budget: float | None = Field(
        description="Values between false alarms the threshold was set for (ARL0), if any."
    )


class StreamStatus(_Doc):
    """One stream held by the shard (live, frozen for handoff, or awaited)."""

    drift: bool = Field(description="Any of the stream's detectors reports drift.")
    last_drift_time: float | None = Field(
        description=(
            "Unix seconds of the latest alarm of a detector whose verdict is drift now (after "
            "the min-sample gate and multiple testing); None while no verdict is drift."
        )
    )
    status: str | None = Field(description="live, frozen or awaiting.")
    values: int = Field(ge=0, description="Values the stream has accepted.")
    window_fill: float = Field(ge=0, description="Share of the window filled, 0 to 1.")
    generation: int | None = Field(description="Handoff generation of the stream's state.")
    detectors: dict[str, DetectorStatus] = Field(
        default_factory=dict, description="Detector name -> latest result (live streams)."
    )


class OutgoingHandoff(_Doc):
    stream: str
    to: int
    generation: int


class HandoffStatus(_Doc):
    """Handoffs in flight and their counters since the process started."""

    outgoing: list[OutgoingHandoff] = Field(default_factory=list)
    awaiting: list[str] = Field(default_factory=list)
    in_: int = Field(0, alias="in")
    out: int = 0
    timeouts: int = 0
    superseded: int = 0
    dropped: int = 0
    lost_values: int = 0
    pause_seconds: dict[str, float] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True)


class Rebaseline(_Doc):
    stream: str
    detector: str
    change: str
    count: int


class BatchCounts(_Doc):
    accepted: int = 0
    duplicate: int = 0
    refused: int = 0
    malformed: int = 0


class WalStatus(_Doc):
    written_lsn: int
    durable_lsn: int
    fsync: str
    bytes: int
    failed: bool
    last_error: str | None = None


class RecoveryStatus(_Doc):
    records: int = 0
    seconds: float = 0.0


class WorkerStatus(_Doc):
    """A drift-worker shard's ``GET /status`` document."""

    monitor: str = Field(description="Monitor key, '<namespace>/<name>'.")
    shard: int = Field(ge=0, description="The shard's ordinal.")
    epoch: int = Field(ge=0, description="Epoch of the shard map the shard runs.")
    shards: int = Field(ge=1, description="Shards in that map.")
    shard_map: ShardMap
    streams: dict[str, StreamStatus] = Field(description="Stream name -> its state here.")
    handoff: HandoffStatus = Field(default_factory=HandoffStatus)
    rebaselines: list[Rebaseline] = Field(default_factory=list)
    batches: BatchCounts = Field(default_factory=BatchCounts)
    wal: WalStatus | None = None
    storage_errors: dict[str, int] = Field(default_factory=dict)
    recovery: RecoveryStatus = Field(default_factory=RecoveryStatus)
    snapshots: int = 0

    def drifting(self) -> list[str]:
        """Return the streams whose monitor-wide verdict is drift, sorted."""
        return sorted(name for name, s in self.streams.items() if s.drift)

    def last_drift_time(self) -> float | None:
        """Return the latest confirmed alarm time over the shard's streams (Unix seconds)."""
        return max(
            (s.last_drift_time for s in self.streams.values() if s.last_drift_time is not None),
            default=None,
        )

    def to_json(self) -> str:
        """Return the document as sent on the wire."""
        return self.model_dump_json(by_alias=True)


def validation_summary(exc: ValidationError, limit: int = 3) -> str:
    """Return ``field.path: message`` for the first errors of ``exc``, one line."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(document)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_worker_status(raw: str | bytes) -> WorkerStatus:
    """Return the validated ``/status`` document; ``ValueError`` names the bad field."""
    try:
        return WorkerStatus.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"bad worker /status: {validation_summary(exc)}") from None


def spec_dump(spec: DriftMonitorSpec) -> dict[str, Any]:
    """Return the spec as the wire dict with defaults filled (what monitor.json carries)."""
    return spec.model_dump(by_alias=True, mode="json", exclude_none=True)


class MonitorConfig(_Doc):
    """The monitor ConfigMap's ``monitor.json``: ``{"name", "namespace", "spec"}``."""

    name: str = Field(description="The DriftMonitor's name.")
    namespace: str = Field(description="The DriftMonitor's namespace.")
    spec: DriftMonitorSpec = Field(description="The monitor's spec, defaults filled.")

    @property
    def key(self) -> str:
        """Return the monitor key, ``'<namespace>/<name>'``."""
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> str:
        """Return the file's content: sorted keys, indented, with a final newline."""
        doc = {"name": self.name, "namespace": self.namespace, "spec": spec_dump(self.spec)}
        return json.dumps(doc, sort_keys=True, indent=2) + "\n"

    def write(self, path: Path) -> None:
        """Write the file to ``path``."""
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> MonitorConfig:
        """Return the validated file at ``path``; ``ConfigError`` names the file and field."""
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(
                f"monitor config {path} does not exist; mount the '<monitor>-driftwarden' "
                "ConfigMap there or set DRIFTWARDEN_MONITOR_CONFIG"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"monitor config {path} is invalid: {exc}") from None
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise ConfigError(
                f"monitor config {path} is invalid: {validation_summary(exc)}"
            ) from None
