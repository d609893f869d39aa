"""Worker configuration: environment (``DRIFTWARDEN_*``, nested ``__``) and flags.

Everything a pod spec needs to set is here, e.g.::

    DRIFTWARDEN_MONITOR_CONFIG=/etc/driftwarden/monitor.json
    DRIFTWARDEN_SHARD_MAP=/etc/driftwarden/shardmap.json
    DRIFTWARDEN_WORKER__DATA_DIR=/var/lib/driftwarden
    DRIFTWARDEN_WORKER__FSYNC=always
    DRIFTWARDEN_WORKER__PEER_URL_TEMPLATE=http://m-workers-{ordinal}.m-workers.ns.svc:8080
    DRIFTWARDEN_CREDENTIAL_FILE=/etc/driftwarden-credential/worker.json

The ordinal comes from ``DRIFTWARDEN_WORKER__ORDINAL`` or ``--ordinal``, else from
the pod name's ``-<n>`` suffix (``POD_NAME`` or ``HOSTNAME``), as a StatefulSet
names its pods.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftwarden.common import auth
from driftwarden.common.contracts import MonitorConfig
from driftwarden.common.errors import ConfigError
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.drift_worker.plan import (
    MonitorPlan,
    parse_duration,
    plan_from_bundle,
    spec_factory,
)
from driftwarden.drift_worker.streams import JoinConfig, StreamSpec

_POD_SUFFIX = re.compile(r"^(?P<set>.+)-(?P<ordinal>[0-9]+)$")


class WorkerOptions(BaseModel):
    """``DRIFTWARDEN_WORKER__*``: one shard's process settings."""

    model_config = ConfigDict(extra="forbid")

    ordinal: int | None = Field(
        None, ge=0, description="Shard ordinal; default: the pod name's suffix."
    )
    data_dir: Path = Field(
        Path("/var/lib/driftwarden"), description="WAL and snapshots (the shard's PVC)."
    )
    wal_enabled: bool = Field(
        True,
        description="False keeps no WAL and no snapshots: state is lost on restart (benchmarks only).",
    )
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    fsync: Literal["always", "interval", "never"] = Field(
        "always",
        description="always: fsync before every ack (group commit); interval: every fsync_interval s.",
    )
    fsync_interval: float = Field(0.05, gt=0)
    wal_segment_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    snapshot_interval_s: float = Field(
        60.0, gt=0, description="Seconds between snapshots while values arrive."
    )
    snapshot_every_values: int = Field(
        5_000_000, ge=1, description="Values between snapshots, whichever comes first."
    )
    handoff_timeout_s: float = Field(
        600.0, gt=0, description="Wait this long for a stream's state before starting it empty."
    )
    peer_url_template: str | None = Field(
        None,
        description="Peer shard URL with '{ordinal}' ('{port}' = base_port + ordinal for local runs); "
        "default: http://<set>-{ordinal}.<set>:8080 from the pod name.",
    )
    base_port: int = Field(8080, ge=1, le=65535)
    map_poll_interval_s: float = Field(1.0, gt=0)
    evidence_poll_interval_s: float = Field(
        1.0,
        gt=0,
        description="Seconds between fetches of the peers' p-values (GET /v1/evidence) for "
        "monitor-wide multiple-testing control.",
    )
    evidence_stale_s: float = Field(
        5.0,
        gt=0,
        description="A peer's p-values older than this count as missing: its tests count as p = 1.",
    )
    streams_file: Path | None = Field(
        None,
        description="JSON list of streams and references, instead of the model bundle's schema.",
    )
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    shutdown_drain_s: float = Field(
        45.0,
        ge=0,
        description="On SIGTERM, seconds to keep handing off streams this shard no longer owns.",
    )
    storage_failure_exit_s: float = Field(
        30.0,
        ge=0,
        description="After a failed fsync, seconds to answer 503 (and be scraped) before exiting "
        "so the pod restarts and recovers from disk.",
    )


class Settings(BaseSettings):
    """All worker settings: ``DRIFTWARDEN_MONITOR_CONFIG``, ``DRIFTWARDEN_SHARD_MAP``, ``DRIFTWARDEN_WORKER__*``."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTWARDEN_", env_nested_delimiter="__", extra="ignore"
    )

    monitor_config: Path = Path("/etc/driftwarden/monitor.json")
    shard_map: Path = Path("/etc/driftwarden/shardmap.json")
    credential_file: Path | None = Field(
        None,
        description="The monitor credential (worker.json of the <monitor>-driftwarden-credential "
        "Secret); every state-changing call must carry a token signed with it.",
    )
    insecure_no_auth: bool = Field(
        False,
        description="Serve without a credential: anyone who reaches the shard can change its "
        "state. Only for debugging on a private machine.",
    )
    worker: WorkerOptions = Field(default_factory=WorkerOptions)
    log_level: str = "INFO"

    def resolve_ordinal(self) -> int:
        """Return the shard ordinal from the settings or the pod name."""
        if self.worker.ordinal is not None:
            return self.worker.ordinal
        pod = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or ""
        m = _POD_SUFFIX.match(pod)
        if not m:
            raise ConfigError(
                f"cannot tell this shard's ordinal: pod name {pod!r} has no '-<n>' suffix; set "
                "DRIFTWARDEN_WORKER__ORDINAL or pass --ordinal"
            )
        return int(m.group("ordinal"))

    def resolve_peer_template(self) -> str:
        """Return the URL template of peer shards (for handoffs)."""
        if self.worker.peer_url_template:
            return self.worker.peer_url_template
        pod = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or ""
        m = _POD_SUFFIX.match(pod)
        if not m:
            raise ConfigError(
                "cannot tell how to reach peer shards: set DRIFTWARDEN_WORKER__PEER_URL_TEMPLATE "
                "(e.g. http://<monitor>-workers-{ordinal}.<monitor>-workers.<ns>.svc:8080)"
            )
        name = m.group("set")
        return f"http://{name}-{{ordinal}}.{name}:{self.worker.port}"


def read_monitor_config(path: Path) -> tuple[str, DriftMonitorSpec]:
    """Return ``(monitor key, spec)`` from ``monitor.json``."""
    config = MonitorConfig.read(path)
    return config.key, config.spec


def read_streams_file(path: Path) -> list[StreamSpec]:
    """Return the streams listed in a streams file (see docs/workers.md)."""
    try:
        doc = json.loads(path.read_bytes())
        out = []
        for entry in doc["streams"]:
            kind = entry["kind"]
            ref: Any = entry.get("reference")
            if ref is not None and kind in ("numeric", "performance", "embedding"):
                ref = np.asarray(ref, dtype=np.float64)
            cats = entry.get("categories")
            out.append(
                StreamSpec(
                    name=entry["name"],
                    kind=kind,
                    reference=ref,
                    categories=tuple(cats) if cats else None,
                    task=entry.get("task"),
                    dim=entry.get("dim"),
                )
            )
        return out
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"streams file {path} is invalid: {exc}") from None


def write_streams_file(path: Path, streams: list[StreamSpec]) -> None:
    """Write ``streams`` in the format :func:`read_streams_file` reads."""

    def ref(v: Any) -> Any:
        return v.tolist() if isinstance(v, np.ndarray) else (list(v) if v is not None else None)

    doc = {
        "streams": [
            {
                "name": s.name,
                "kind": s.kind,
                "reference": ref(s.reference),
                "categories": list(s.categories) if s.categories else None,
                "task": s.task,
                "dim": s.dim,
            }
            for s in streams
        ]
    }
    path.write_text(json.dumps(doc))


def build_plan(settings: Settings) -> MonitorPlan:
    """Return the monitor plan from the monitor config and the bundle (or a streams file)."""
    monitor, spec = read_monitor_config(settings.monitor_config)
    if settings.worker.streams_file is not None:
        streams = read_streams_file(settings.worker.streams_file)
        return MonitorPlan(
            monitor=monitor,
            streams={s.name: s for s in streams},
            factory=spec_factory(spec),
            join=JoinConfig(max_delay_s=parse_duration(spec.label_join.max_delay)),
            min_samples=spec.detectors.min_samples,
            fdr=spec.detectors.fdr,
            multiple_testing=spec.detectors.multiple_testing.value,
        )
    from driftwarden.bundles import load_bundle  # torch-free import; only when a bundle is used

    try:
        bundle = load_bundle(spec.model.bundle, digest=spec.model.digest)
    except Exception as exc:
        raise ConfigError(f"cannot load model bundle {spec.model.bundle!r}: {exc}") from exc
    return plan_from_bundle(monitor, spec, bundle)


def check_plan(plan: MonitorPlan) -> None:
    """Build every stream's detectors once; raise :class:`ConfigError` naming a bad one."""
    for stream in plan.streams.values():
        try:
            plan.factory(stream)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"stream {stream.name!r} ({stream.kind}): its detectors cannot be built: {exc}. "
                "Fix spec.detectors of the DriftMonitor."
            ) from None


def load_credential(settings: Settings, monitor: str) -> auth.CredentialFile | None:
    """Return the monitor credential to verify calls with, or None when explicitly insecure."""
    if settings.credential_file is None:
        if settings.insecure_no_auth:
            return None
        raise ConfigError(
            "no monitor credential: set DRIFTWARDEN_CREDENTIAL_FILE (or --credential-file) to the "
            "worker.json of the <monitor>-driftwarden-credential Secret; "
            "DRIFTWARDEN_INSECURE_NO_AUTH=true serves without one (debugging only)"
        )
    try:
        return auth.CredentialFile(settings.credential_file, monitor=monitor)
    except auth.CredentialError as exc:
        raise ConfigError(str(exc)) from None
