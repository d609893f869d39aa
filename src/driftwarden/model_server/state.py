"""The server's runtime state: the bundle, the parser, the batcher and the emitter.

Created empty with the app; :meth:`ServerState.open` fills it in the lifespan (the
model loads there, in a thread, possibly training a built-in bundle first) and
:meth:`ServerState.close` drains it on shutdown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, Request

from driftwarden.bundles import Bundle, load_bundle
from driftwarden.model_server.batching import BatchOutput, MicroBatcher
from driftwarden.model_server.emission import Emitter, NullEmitter, build_emitter
from driftwarden.model_server.metrics import ServerMetrics
from driftwarden.model_server.settings import Settings
from driftwarden.model_server.validation import RequestParser

log = logging.getLogger("driftwarden.model_server")


class ServerState:
    """Everything a request handler needs, set up once per process."""

    def __init__(self, settings: Settings, metrics: ServerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bundle: Bundle | None = None
        self.parser: RequestParser | None = None
        self.batcher: MicroBatcher | None = None
        self.emitter: Emitter = NullEmitter()
        self.emitting = False
        self.ready = False
        self.stopping = False
        self.active_requests = 0  # /predict and /feedback requests admitted, not yet answered

    def admit(self) -> bool:
        """Count one more request in, or return False when MAX_INFLIGHT_REQUESTS are in."""
        # One event loop: the check and the increment cannot interleave with another request.
        if self.active_requests >= self.settings.server.max_inflight_requests:
            return False
        self.active_requests += 1
        return True

    def release(self) -> None:
        """Count an admitted request out."""
        self.active_requests -= 1

    async def open(self, bundle: Bundle | None = None, emitter: Emitter | None = None) -> None:
        """Load the model, build validators and metrics, start the batcher and the sender."""
        if bundle is None:
            uri = self.settings.bundle_uri()
            digest = self.settings.pinned_digest()
            log.info("loading model bundle %s (pinned digest: %s)", uri, digest or "none")
            bundle = await asyncio.to_thread(functools.partial(load_bundle, uri, digest=digest))
        self.bundle = bundle
        self.parser = RequestParser(
            bundle.manifest,
            self.settings.server.max_records,
            label_max_age_s=self.settings.label_max_age_s(),
            label_max_future_s=self.settings.server.max_label_future_s,
            join_key=self.settings.label_join_key(),
        )
        self.metrics.bind_bundle(bundle)
        if emitter is None:
            emitter = build_emitter(self.settings, bundle, self.metrics.registry)
        self.emitting = emitter is not None
        self.emitter = emitter or NullEmitter()
        self.metrics.emission.set(1 if self.emitting else 0)
        await self.emitter.start()
        options = self.settings.server
        self.batcher = MicroBatcher(
            self._run_model,
            bundle.feature_names,
            max_rows=options.max_batch_rows,
            max_wait=options.max_wait_ms / 1000.0,
            on_batch=self._after_batch,
        )
        await self.batcher.start()
        self.ready = True
        log.info(
            "serving bundle %s (%s, %d features, digest %s); emission to drift workers %s",
            bundle.name,
            bundle.task if bundle.has_model else f"model-free, prediction: {bundle.task}",
            len(bundle.feature_names),
            bundle.digest or "not computed",
            "on" if self.emitting else "off (no shard map configured)",
        )

    async def close(self) -> None:
        """Stop taking requests, answer what is queued, flush the sender."""
        self.ready = False
        self.stopping = True
        if self.batcher is not None:
            await self.batcher.stop()
        await self.emitter.stop(self.settings.server.drain_timeout_s)

    def _run_model(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        assert self.bundle is not None
        if self.emitting and self.bundle.has_embedding:
            return self.bundle.predict_and_embed(frame)
        return self.bundle.predict(frame), None

    def _after_batch(self, columns: dict[str, list[Any]], out: BatchOutput, requests: int) -> None:
        self.metrics.batch_rows.observe(len(out.ids))
        self.metrics.batch_requests.observe(requests)
        self.metrics.observe_predictions(out.predictions)
        self.metrics.observe_inputs(columns)
        if not self.emitting:
            return
        self.emitter.emit_features(columns)
        self.emitter.emit_predictions(out.ids, out.predictions)
        embedding = self.bundle.manifest.embedding if self.bundle is not None else None
        if out.embeddings is not None and embedding is not None:
            self.emitter.emit_embeddings(embedding.group, out.embeddings)


async def get_state(request: Request) -> ServerState:
    """Return the app's :class:`ServerState` (a FastAPI dependency)."""
    # async on purpose: FastAPI runs sync dependencies in a worker thread, two thread
    # hops per request for an attribute read.
    return request.app.state.driftwarden


StateDep = Annotated[ServerState, Depends(get_state)]
