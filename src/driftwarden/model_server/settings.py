"""Model-server configuration: environment (``DRIFTWARDEN_*``, nested ``__``) and flags.

What a pod spec sets (the operator renders the first three)::

    DRIFTWARDEN_MONITOR_CONFIG=/etc/driftwarden/monitor.json   # bundle URI + monitor name
    DRIFTWARDEN_SHARD_MAP=/etc/driftwarden/shardmap.json       # enables emission to workers
    DRIFTWARDEN_SENDER__URL_TEMPLATE=http://m-workers-{ordinal}.m-workers.ns.svc:8080
    DRIFTWARDEN_CREDENTIAL_FILE=/etc/driftwarden-credential/sender.json   # signs ingest calls
    DRIFTWARDEN_BUNDLE=builtin://diamonds                      # overrides the monitor's bundle
    DRIFTWARDEN_BUNDLE_DIGEST=sha256:...                       # overrides spec.model.digest
    DRIFTWARDEN_SERVER__MAX_BATCH_ROWS=256                     # and the other SERVER__ fields

Without a shard map the server serves and emits nothing (no worker configured).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftwarden.common.durations import parse_duration
from driftwarden.common.errors import ConfigError
from driftwarden.common.spec import DEFAULT_MAX_INFLIGHT_REQUESTS
from driftwarden.ingest.sender import SenderSettings
from driftwarden.model_server.validation import (
    DEFAULT_JOIN_KEY,
    DEFAULT_LABEL_MAX_AGE_S,
    DEFAULT_LABEL_MAX_FUTURE_S,
)


class ServerOptions(BaseModel):
    """``DRIFTWARDEN_SERVER__*``: HTTP, request limits and micro-batching."""

    model_config = ConfigDict(extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    max_records: int = Field(
        1000, ge=1, description="Most records one /predict or /feedback request may carry."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    max_batch_rows: int = Field(
        256, ge=1, description="Most rows gathered from concurrent requests into one model call."
    )
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        description="Longest a request waits for others to share its model call; only spent "
        "while fewer requests than the last batch held have arrived, so a lone client never "
        "waits.",
    )
    model_threads: int = Field(
        1,
        ge=1,
        description="Native threads (OpenMP, BLAS, torch) a model call may use. One suits a "
        "pod with about one CPU, where extra threads only contend with the event loop; "
        "scale with replicas.",
    )
    max_inflight_requests: int = Field(
        DEFAULT_MAX_INFLIGHT_REQUESTS,
        ge=1,
        description="Most /predict and /feedback requests served at once (reading, queued for "
        "the model, or awaiting it); beyond it the server answers 503 with Retry-After "
        "without reading the body, so request memory stays below this times MAX_BODY_BYTES. "
        "The operator renders it from spec.model.maxInflightRequests.",
    )
    retry_after_s: int = Field(
        1,
        ge=1,
        le=3600,
        description="Seconds a refused client is told to wait (Retry-After on every 503).",
    )
    max_label_future_s: float = Field(
        DEFAULT_LABEL_MAX_FUTURE_S,
        ge=0,
        description="How far in the future a /feedback timestamp may lie (clock skew); the "
        "past bound is the monitor's spec.labelJoin.maxDelay.",
    )
    drain_timeout_s: float = Field(
        5.0, ge=0, description="On shutdown, how long the sender may flush buffered values."
    )
    log_level: str = "info"


class Settings(BaseSettings):
    """All model-server settings."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTWARDEN_", env_nested_delimiter="__", extra="ignore"
    )

    bundle: str | None = Field(
        None, description="Bundle URI; default: spec.model.bundle of the monitor config."
    )
    bundle_digest: str | None = Field(
        None,
        description="Digest the bundle must have (sha256:<64 hex>); default: "
        "spec.model.digest of the monitor config when the bundle is the monitor's.",
    )
    monitor_config: Path | None = None
    shard_map: Path | None = None
    credential_file: Path | None = Field(
        None,
        description="The monitor's sender credential (sender.json of the "
        "<monitor>-driftwarden-credential Secret); drift workers refuse batches without it.",
    )
    server: ServerOptions = Field(default_factory=ServerOptions)
    sender: SenderSettings = Field(default_factory=SenderSettings)

    def monitor(self) -> tuple[str | None, str | None]:
        """Return ``(monitor key 'namespace/name', bundle URI)`` from the monitor config."""
        doc = self._monitor_doc()
        if doc is None:
            return None, None
        try:
            key = f"{doc['namespace']}/{doc['name']}"
            return key, doc["spec"]["model"]["bundle"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"monitor config {self.monitor_config} is invalid: missing or bad {exc}"
            ) from None

    def pinned_digest(self) -> str | None:
        """Return the digest the served bundle must have, or None when none is pinned.

        DRIFTWARDEN_BUNDLE_DIGEST if set; else the monitor's spec.model.digest, unless
        DRIFTWARDEN_BUNDLE names another bundle than the monitor's.
        """
        if self.bundle_digest:
            return self.bundle_digest
        doc = self._monitor_doc()
        if doc is None:
            return None
        model = doc.get("spec", {}).get("model", {})
        if not isinstance(model, dict) or (self.bundle and self.bundle != model.get("bundle")):
            return None
        digest = model.get("digest")
        return str(digest) if digest else None

    def label_max_age_s(self) -> float:
        """Return the oldest a /feedback timestamp may be: the monitor's labelJoin.maxDelay."""
        doc = self._monitor_doc()
        if doc is None:
            return DEFAULT_LABEL_MAX_AGE_S
        try:
            delay = doc.get("spec", {}).get("labelJoin", {}).get("maxDelay")
            return DEFAULT_LABEL_MAX_AGE_S if delay is None else parse_duration(delay)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"monitor config {self.monitor_config} is invalid: bad labelJoin.maxDelay ({exc})"
            ) from None

    def label_join_key(self) -> str:
        """Return the monitor's spec.labelJoin.key (default ``prediction_id``: server ids)."""
        doc = self._monitor_doc()
        if doc is None:
            return DEFAULT_JOIN_KEY
        try:
            key = doc.get("spec", {}).get("labelJoin", {}).get("key")
        except AttributeError as exc:
            raise ConfigError(
                f"monitor config {self.monitor_config} is invalid: bad labelJoin ({exc})"
            ) from None
        if key is None:
            return DEFAULT_JOIN_KEY
        if not isinstance(key, str) or not 1 <= len(key) <= 63:
            raise ConfigError(
                f"monitor config {self.monitor_config} is invalid: labelJoin.key must be a "
                f"string of 1 to 63 characters, got {key!r}"
            )
        return key

    def _monitor_doc(self) -> dict[str, Any] | None:
        if self.monitor_config is None:
            return None
        try:
            doc = json.loads(self.monitor_config.read_bytes())
            if not isinstance(doc, dict):
                raise ValueError("content: not a JSON object")
            return doc
        except FileNotFoundError:
            raise ConfigError(
                f"monitor config {self.monitor_config} does not exist; mount the "
                "'<monitor>-driftwarden' ConfigMap there or unset DRIFTWARDEN_MONITOR_CONFIG"
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"monitor config {self.monitor_config} is invalid: missing or bad {exc}"
            ) from None

    def bundle_uri(self) -> str:
        """Return the bundle to serve: DRIFTWARDEN_BUNDLE, else the monitor's bundle."""
        if self.bundle:
            return self.bundle
        _, uri = self.monitor()
        if uri:
            return uri
        raise ConfigError(
            "no model bundle configured: set DRIFTWARDEN_BUNDLE (e.g. builtin://diamonds), "
            "pass --bundle, or point DRIFTWARDEN_MONITOR_CONFIG at a monitor.json"
        )
