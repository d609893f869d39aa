"""A local webhook receiver that records what Alertmanager sends.

It stands in for Discord, Slack and generic webhooks in the e2e tier and the demo:
``POST /discord/<receiver>`` (Discord's execute-webhook format: ``content`` plus
``embeds`` with ``title``/``description``), ``POST /slack/<receiver>`` (Slack's
incoming-webhook format) and ``POST /webhook/<receiver>`` (Alertmanager's webhook
format). Every accepted post is kept as a :class:`Notification`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

log = logging.getLogger("driftwarden.testing.local.receiver")

KINDS = ("discord", "slack", "webhook")
MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True)
class Notification:
    """One post received: which kind of endpoint, which receiver, when, and its body."""

    kind: str
    receiver: str
    received_at: float  # time.time()
    payload: Mapping[str, Any]

    @property
    def text(self) -> str:
        """Return every human-readable string of the post, joined by newlines."""
        if self.kind == "discord":
            parts = [self.payload.get("content") or ""]
            for embed in self.payload.get("embeds") or []:
                parts += [embed.get("title") or "", embed.get("description") or ""]
        elif self.kind == "slack":
            parts = [self.payload.get("text") or ""]
            for attachment in self.payload.get("attachments") or []:
                parts += [attachment.get("title") or "", attachment.get("text") or ""]
        else:
            parts = []
            for alert in self.payload.get("alerts") or []:
                parts += [f"{k}={v}" for k, v in (alert.get("labels") or {}).items()]
                parts += list((alert.get("annotations") or {}).values())
        return "\n".join(p for p in parts if p)

    @property
    def resolved(self) -> bool:
        """Return whether the post announces resolved alerts (every format says so)."""
        if self.kind == "webhook":
            return self.payload.get("status") == "resolved"
        return "RESOLVED" in self.text.upper()


class AlertReceiver:
    """Threaded HTTP server on 127.0.0.1 recording Discord/Slack/webhook posts.

    Use as a context manager, or ``start()``/``stop()``. ``url(kind, receiver)`` is
    what goes into the receiver's Secret.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._notifications: list[Notification] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def do_GET(self) -> None:
                # Health endpoint, so the stack can wait on it like on any process.
                if self.path == "/healthz":
                    _reply(self, HTTPStatus.OK, b"ok\n")
                else:
                    _reply(self, HTTPStatus.NOT_FOUND, b"not found\n")

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("receiver: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, kind: str, receiver: str) -> str:
        """Return the URL to configure for a receiver of ``kind`` (discord|slack|webhook)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return f"{self.base_url}/{kind}/{receiver}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="alert-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        # shutdown() waits for serve_forever() to return: only call it if that runs.
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def notifications(self, kind: str | None = None) -> list[Notification]:
        """Return the posts received so far (of one ``kind`` if given), oldest first."""
        with self._lock:
            return [n for n in self._notifications if kind is None or n.kind == kind]

    def wait_for(
        self,
        predicate: Callable[[Notification], bool],
        timeout: float,
        *,
        what: str = "a notification",
    ) -> Notification:
        """Return the first post matching ``predicate``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for notification in self._notifications[seen:]:
                    if predicate(notification):
                        return notification
                seen = len(self._notifications)
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [f"{n.kind}/{n.receiver}: {n.text[:200]!r}" for n in self._notifications]
                    raise TimeoutError(
                        f"{what} did not arrive at the receiver within {timeout:.0f} s; "
                        f"received so far: {got or 'nothing'}"
                    )
                self._changed.wait(left)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in KINDS or not parts[1]:
            _reply(
                request,
                HTTPStatus.NOT_FOUND,
                b"use /discord/<name>, /slack/<name> or /webhook/<name>\n",
            )
            return
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            _reply(request, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"too large\n")
            return
        try:
            payload = json.loads(request.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            _reply(request, HTTPStatus.BAD_REQUEST, f"invalid JSON: {exc}\n".encode())
            return
        if parts[0] == "discord" and not (payload.get("content") or payload.get("embeds")):
            # Discord itself refuses an empty message with 400.
            _reply(request, HTTPStatus.BAD_REQUEST, b"Cannot send an empty message\n")
            return
        notification = Notification(parts[0], parts[1], time.time(), payload)
        with self._changed:
            self._notifications.append(notification)
            self._changed.notify_all()
        log.info("received %s notification for %s", parts[0], parts[1])
        # Discord answers 204 to execute-webhook without ?wait=true.
        status = HTTPStatus.NO_CONTENT if parts[0] == "discord" else HTTPStatus.OK
        _reply(request, status, b"" if status == HTTPStatus.NO_CONTENT else b"ok")


def _reply(request: BaseHTTPRequestHandler, status: HTTPStatus, body: bytes) -> None:
    request.send_response(status)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)
