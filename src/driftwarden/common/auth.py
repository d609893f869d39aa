"""Per-monitor credentials and the signed bearer tokens every state-changing call carries.

Each DriftMonitor has one random 256-bit key, created by the operator as the Secret
``<monitor>-driftwarden-credential`` and mounted only into that monitor's pods (the
operator can read it too). Callers prove they hold it with a short-lived token::

    Authorization: Bearer dw1.<base64url(JSON {"mon", "role", "exp"})>.<base64url(HMAC-SHA256)>

The MAC key is derived per role, ``HMAC-SHA256(monitor key, "driftwarden/v1/role/<role>")``,
so the model server (the component that faces clients) is given the *sender* key
only: it can ingest, but cannot forge a handoff or push a shard map. Workers and the
operator hold the monitor key and derive every role's key. See docs/security.md for
why signed tokens rather than mTLS, and what this does and does not protect.

Files (the Secret's keys, or files the local stack writes) are JSON::

    {"monitor": "<namespace>/<name>", "role": "*" | "<role>", "key": "<hex>"}

``role: "*"`` is the monitor key itself; any other role is that role's derived key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from driftwarden.common import names

TOKEN_PREFIX = "dw1"
# Who calls: the role is signed into the token and each endpoint names the roles it admits.
ROLE_SENDER = "sender"  # model server, ingest gateway: POST /v1/ingest
ROLE_PEER = "peer"  # another shard of the same monitor: POST /v1/handoff, inter-shard reads
ROLE_OPERATOR = "operator"  # PUT /v1/shardmap, GET /v1/state
ROLES = (ROLE_SENDER, ROLE_PEER, ROLE_OPERATOR)
ALL_ROLES = "*"

KEY_BYTES = 32
# Tokens are minted for TOKEN_TTL_S and refreshed at half life; a verifier refuses one
# that claims to live longer than MAX_TOKEN_TTL_S, so a leaked token is useless soon.
TOKEN_TTL_S = 300
MAX_TOKEN_TTL_S = 900
CLOCK_SKEW_S = 60

# Refusal reasons: the bounded label set of names.M_AUTH_REFUSALS.
MISSING = "missing"
MALFORMED = "malformed"
WRONG_MONITOR = "wrong_monitor"
BAD_SIGNATURE = "bad_signature"
EXPIRED = "expired"
FORBIDDEN_ROLE = "forbidden_role"
REASONS = (MISSING, MALFORMED, WRONG_MONITOR, BAD_SIGNATURE, EXPIRED, FORBIDDEN_ROLE)

# Keys of the Secret (and names of the files in its mount).
WORKER_FILE = "worker.json"  # monitor key: drift workers (and the operator, from the API)
SENDER_FILE = "sender.json"  # sender role key only: model servers


class CredentialError(ValueError):
    """A credential file or key that cannot be used; the message names the file and the fix."""


class AuthRefused(Exception):
    """A request without a valid credential for the endpoint: 401 (who are you) or 403 (not you)."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_role_key(monitor_key: bytes, role: str) -> bytes:
    """Return the MAC key of ``role`` derived from a monitor key."""
    return hmac.new(monitor_key, f"driftwarden/v1/role/{role}".encode(), hashlib.sha256).digest()


@dataclasses.dataclass(frozen=True, repr=False)
class Credential:
    """A monitor's key (``role == "*"``) or one role's derived key; never printed."""

    monitor: str
    role: str
    key: bytes

    def __repr__(self) -> str:  # the key must never reach a log line
        return f"Credential(monitor={self.monitor!r}, role={self.role!r}, key=<redacted>)"

    @classmethod
    def generate(cls, monitor: str) -> Credential:
        """Return a new random monitor key for ``monitor``."""
        return cls(monitor, ALL_ROLES, secrets.token_bytes(KEY_BYTES))

    def role_key(self, role: str) -> bytes:
        if self.role == ALL_ROLES:
            return derive_role_key(self.key, role)
        if role != self.role:
            raise CredentialError(
                f"this credential of monitor {self.monitor!r} is for role {self.role!r} only, "
                f"not {role!r}"
            )
        return self.key

    def for_role(self, role: str) -> Credential:
        """Return the credential that holds only ``role``'s key (what a sender is given)."""
        return Credential(self.monitor, role, self.role_key(role))

    def token(self, role: str, *, ttl_s: float = TOKEN_TTL_S, now: float | None = None) -> str:
        """Return a bearer token for ``role`` valid for ``ttl_s`` seconds."""
        now = time.time() if now is None else now
        payload = json.dumps(
            {"mon": self.monitor, "role": role, "exp": int(now + ttl_s)},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        signed = f"{TOKEN_PREFIX}.{_b64(payload)}"
        mac = hmac.new(self.role_key(role), signed.encode("ascii"), hashlib.sha256).digest()
        return f"{signed}.{_b64(mac)}"

    def to_json(self) -> str:
        return json.dumps({"monitor": self.monitor, "role": self.role, "key": self.key.hex()})

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "credential") -> Credential:
        try:
            doc = json.loads(text)
            monitor, role, key = doc["monitor"], doc["role"], bytes.fromhex(doc["key"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CredentialError(
                f"{source} is not a Driftwarden credential ({type(exc).__name__}); it must be "
                'JSON {"monitor", "role", "key"} as the operator writes into the '
                "<monitor>-driftwarden-credential Secret"
            ) from None
        if not isinstance(monitor, str) or role not in (ALL_ROLES, *ROLES):
            raise CredentialError(f"{source}: unknown role {role!r}")
        if len(key) < KEY_BYTES:
            raise CredentialError(f"{source}: key shorter than {KEY_BYTES} bytes")
        return cls(monitor, role, key)


def write_credential_files(directory: Path, credential: Credential) -> dict[str, Path]:
    """Write the worker file (monitor key) and the sender file (derived key); return their paths.

    The same two files the operator puts into the Secret, for the local stack and tests.
    Mode 0600: only the user running the processes reads them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, cred in (
        (WORKER_FILE, credential),
        (SENDER_FILE, credential.for_role(ROLE_SENDER)),
    ):
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cred.to_json())
        out[name] = path
    return out


class CredentialFile:
    """A credential read from a mounted file, re-read when the file changes (Secret rotation)."""

    def __init__(self, path: Path, *, monitor: str | None = None, recheck_s: float = 5.0) -> None:
        self.path = Path(path)
        self.monitor = monitor
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self._credential = self._read()  # fails at start-up, with the file's name

    def _read(self) -> Credential:
        try:
            stat = self.path.stat()
            text = self.path.read_bytes()
        except OSError as exc:
            raise CredentialError(
                f"cannot read the monitor credential {self.path}: {exc.strerror}; mount the "
                "<monitor>-driftwarden-credential Secret there (the operator creates it)"
            ) from None
        cred = Credential.from_json(text, source=str(self.path))
        if self.monitor is not None and cred.monitor != self.monitor:
            raise CredentialError(
                f"credential {self.path} is for monitor {cred.monitor!r}, not {self.monitor!r}: "
                "another monitor's Secret is mounted"
            )
        self._stamp = (stat.st_mtime_ns, stat.st_ino)
        return cred

    def get(self) -> Credential:
        """Return the current credential; a changed file is re-read (bad content keeps the old one)."""
        now = time.monotonic()
        if now - self._checked < self.recheck_s:
            return self._credential
        with self._lock:
            self._checked = now
            try:
                stat = self.path.stat()
                if (stat.st_mtime_ns, stat.st_ino) != self._stamp:
                    self._credential = self._read()
            except (OSError, CredentialError):
                pass  # a Secret update in progress; keep the key we have
            return self._credential


CredentialSource = Credential | CredentialFile


def _current(source: CredentialSource) -> Credential:
    return source.get() if isinstance(source, CredentialFile) else source


class TokenSource:
    """Mints tokens for one role and caches each until half its life is gone."""

    def __init__(self, source: CredentialSource, role: str, *, ttl_s: float = TOKEN_TTL_S) -> None:
        self.source = source
        self.role = role
        self.ttl_s = ttl_s
        self._token = ""
        self._renew_at = float("-inf")
        self._key_id = 0

    def header(self) -> dict[str, str]:
        """Return the ``Authorization`` header to send."""
        now = time.time()
        cred = _current(self.source)
        if now >= self._renew_at or id(cred) != self._key_id:
            self._token = cred.token(self.role, ttl_s=self.ttl_s, now=now)
            self._renew_at = now + self.ttl_s / 2
            self._key_id = id(cred)
        return {"authorization": f"Bearer {self._token}"}


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a verified token says called: the monitor and the role."""

    monitor: str
    role: str


class Verifier:
    """Checks bearer tokens against one monitor's key and counts refusals."""

    def __init__(self, source: CredentialSource) -> None:
        cred = _current(source)
        if cred.role != ALL_ROLES:
            raise CredentialError(
                f"verifying calls needs the monitor key, but the credential of {cred.monitor!r} "
                f"holds role {cred.role!r} only; mount {WORKER_FILE}"
            )
        self.source = source
        self.monitor = cred.monitor
        self._refusals: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def verify(
        self, authorization: str | None, roles: Collection[str], *, now: float | None = None
    ) -> Principal:
        """Return the caller of a valid token whose role is in ``roles``; else raise AuthRefused."""
        if not authorization:
            raise AuthRefused(
                401,
                MISSING,
                f"this endpoint needs monitor {self.monitor!r}'s credential: send "
                "'Authorization: Bearer <token>'",
            )
        scheme, _, token = authorization.partition(" ")
        parts = token.strip().split(".")
        if scheme.lower() != "bearer" or len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise AuthRefused(401, MALFORMED, "authorization is not a Driftwarden bearer token")
        try:
            claims = json.loads(_unb64(parts[1]))
            mac = _unb64(parts[2])
            monitor, role, expires = claims["mon"], claims["role"], claims["exp"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise AuthRefused(401, MALFORMED, "bearer token cannot be decoded") from None
        if not isinstance(expires, int) or role not in ROLES:
            raise AuthRefused(401, MALFORMED, "bearer token has a bad role or expiry")
        if monitor != self.monitor:
            # The claim is unsigned as far as we can tell (another monitor's key signed it),
            # but naming the mismatch is what an operator debugging a mount needs.
            raise AuthRefused(
                403,
                WRONG_MONITOR,
                f"the token is for monitor {monitor!r}; this endpoint belongs to {self.monitor!r}",
            )
        key = _current(self.source).role_key(role)
        expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise AuthRefused(
                401, BAD_SIGNATURE, f"token signature does not match monitor {self.monitor!r}'s key"
            )
        now = time.time() if now is None else now
        if expires < now - CLOCK_SKEW_S:
            raise AuthRefused(401, EXPIRED, "token expired; mint a new one")
        if expires > now + MAX_TOKEN_TTL_S + CLOCK_SKEW_S:
            raise AuthRefused(
                401, EXPIRED, f"token lives longer than {MAX_TOKEN_TTL_S}s; mint a shorter one"
            )
        if role not in roles:
            raise AuthRefused(
                403,
                FORBIDDEN_ROLE,
                f"role {role!r} may not call this endpoint (allowed: {', '.join(sorted(roles))})",
            )
        return Principal(monitor, role)

    def count(self, endpoint: str, reason: str) -> None:
        with self._lock:
            self._refusals[(endpoint, reason)] = self._refusals.get((endpoint, reason), 0) + 1

    def refusals(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._refusals)

    def collect(self) -> Iterable[Any]:
        """prometheus_client collector: refused calls by endpoint and reason."""
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            names.M_AUTH_REFUSALS,
            "Calls refused for a missing, invalid or wrong-monitor credential; nothing changed.",
            labels=[names.LABEL_MONITOR, "endpoint", "reason"],
        )
        monitor = names.monitor_name(self.monitor)  # the name: namespace is the target's
        for (endpoint, reason), n in sorted(self.refusals().items()):
            family.add_metric([monitor, endpoint, reason], n)
        return [family]

    def describe(self) -> list[Any]:
        return []


Handler = Callable[[Any], Awaitable[Any]]


def protect(verifier: Verifier | None, roles: Collection[str], endpoint: str) -> Any:
    """Return a decorator for a Starlette endpoint that admits only ``roles`` of this monitor.

    The check runs before the body is read, so an unauthenticated caller cannot make the
    server buffer anything. ``verifier=None`` (in-process tests only) admits everyone.
    Refusals answer ``{"error": "unauthenticated"|"forbidden", "reason", "detail"}``.
    """
    from starlette.responses import JSONResponse

    allowed = frozenset(roles)

    def wrap(handler: Handler) -> Handler:
        if verifier is None:
            return handler

        async def guarded(request: Any) -> Any:
            try:
                request.state.principal = verifier.verify(
                    request.headers.get("authorization"), allowed
                )
            except AuthRefused as refused:
                verifier.count(endpoint, refused.reason)
                headers = {"www-authenticate": 'Bearer realm="driftwarden"'}
                return JSONResponse(
                    {
                        "error": "unauthenticated" if refused.status == 401 else "forbidden",
                        "reason": refused.reason,
                        "detail": refused.detail,
                    },
                    status_code=refused.status,
                    headers=headers if refused.status == 401 else None,
                )
            return await handler(request)

        guarded.__name__ = getattr(handler, "__name__", "guarded")
        guarded.__doc__ = handler.__doc__
        return guarded

    return wrap
