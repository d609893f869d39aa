"""Where served features, predictions, labels and embeddings go: the drift workers.

The server depends on :class:`Emitter`, the shape of
:class:`driftwarden.ingest.sender.Sender` (non-blocking, never raises), so a
server with no worker configured uses :class:`NullEmitter` and tests can record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry

from driftwarden.bundles import Bundle
from driftwarden.common import names
from driftwarden.model_server.settings import ConfigError, Settings

log = logging.getLogger("driftwarden.model_server")


class Emitter(Protocol):
    def emit_features(self, columns: Mapping[str, Sequence[Any]]) -> None: ...
    def emit_predictions(self, ids: Sequence[Any], values: Sequence[Any] | np.ndarray) -> None: ...
    def emit_labels(self, ids: Sequence[Any], labels: Sequence[Any] | np.ndarray) -> None: ...
    def emit_embeddings(self, group: str, matrix: np.ndarray) -> None: ...
    def has_room(self, values: int) -> bool: ...
    async def start(self) -> None: ...
    async def stop(self, drain_timeout: float = 5.0) -> None: ...


class NullEmitter:
    """Emits nothing: the server runs without drift workers."""

    def emit_features(self, columns: Mapping[str, Sequence[Any]]) -> None:
        pass

    def emit_predictions(self, ids: Sequence[Any], values: Sequence[Any] | np.ndarray) -> None:
        pass

    def emit_labels(self, ids: Sequence[Any], labels: Sequence[Any] | np.ndarray) -> None:
        pass

    def emit_embeddings(self, group: str, matrix: np.ndarray) -> None:
        pass

    def has_room(self, values: int) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def stop(self, drain_timeout: float = 5.0) -> None:
        pass


def bundle_streams(bundle: Bundle) -> set[str]:
    """Return the stream names the server emits for ``bundle``."""
    streams = {names.feature_stream(n) for n in bundle.feature_names}
    # A model-free bundle has these only if it declares a prediction (and labels).
    if bundle.has_prediction:
        streams.add(names.STREAM_PREDICTION)
    if bundle.has_prediction and bundle.has_labels:
        streams.add(names.STREAM_PERFORMANCE)
    if bundle.manifest.embedding is not None:
        streams.add(names.embedding_stream(bundle.manifest.embedding.group))
    return streams


def build_emitter(
    settings: Settings, bundle: Bundle, registry: CollectorRegistry
) -> Emitter | None:
    """Return the Sender to the drift workers, or None when no shard map is configured."""
    if settings.shard_map is None:
        return None
    if not settings.shard_map.is_file():
        raise ConfigError(
            f"shard map {settings.shard_map} does not exist; mount the '<monitor>-driftwarden' "
            "ConfigMap there or unset DRIFTWARDEN_SHARD_MAP to serve without drift workers"
        )
    from driftwarden.ingest.sender import Sender

    monitor, _ = settings.monitor()
    if monitor is None:
        raise ConfigError(
            "DRIFTWARDEN_SHARD_MAP is set but DRIFTWARDEN_MONITOR_CONFIG is not: the sender "
            "routes streams by monitor name; set both or neither"
        )
    from driftwarden.common.sharding import ShardMap

    try:
        # Parsed here too so a bad file fails at startup with its name; the sender then
        # keeps polling the path for newer epochs.
        shard_map = ShardMap.model_validate_json(settings.shard_map.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"shard map {settings.shard_map} is invalid: {exc}") from None
    from driftwarden.common import auth

    credential = None
    if settings.credential_file is not None:
        try:
            credential = auth.CredentialFile(settings.credential_file, monitor=monitor)
        except auth.CredentialError as exc:
            raise ConfigError(str(exc)) from None
    else:
        log.warning(
            "DRIFTWARDEN_CREDENTIAL_FILE is not set: drift workers that check credentials "
            "(every one the operator runs) will refuse this server's batches"
        )
    return Sender(
        monitor,
        shard_map=shard_map,
        shard_map_path=settings.shard_map,
        settings=settings.sender,
        streams=bundle_streams(bundle),
        registry=registry,
        credential=credential,
    )
