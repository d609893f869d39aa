"""A small async Kubernetes client: get, server-side apply, merge-patch status, delete.

kopf watches; this client writes. It reuses the kubernetes package's config loaders
(kubeconfig or in-cluster service account) for credentials, and httpx for async
HTTP with a bounded connection pool. Every write goes through ``apply`` (one field
manager, server-side apply) or ``patch_status``, and is counted in ``writes`` so
tests and benchmarks can assert "an idle resync writes nothing".
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import ssl
import time
from typing import Any

import httpx

FIELD_MANAGER = "driftwarden-operator"
# Holds the model server's replicas while they pass from the operator to an autoscaler
# (docs/operator.md, "The autoscaler hand-over"); never applies anything else.
HANDOVER_FIELD_MANAGER = "driftwarden-replicas-handover"


@dataclasses.dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str

    @property
    def base(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"

    def path(self, namespace: str, name: str | None = None) -> str:
        path = f"{self.base}/namespaces/{namespace}/{self.plural}"
        return f"{path}/{name}" if name else path


CHILD_KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Service", "services"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("apps/v1", "StatefulSet", "statefulsets"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
        Kind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules"),
        Kind("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig", "alertmanagerconfigs"),
    )
}


# The monitor credential: created once and read back, never applied, watched or pruned
# (the operator may not list Secrets; garbage collection deletes it with its monitor).
SECRET_KIND = Kind("v1", "Secret", "secrets")
KNOWN_KINDS: dict[tuple[str, str], Kind] = {**CHILD_KINDS, ("v1", "Secret"): SECRET_KIND}


def kind_of(obj: dict[str, Any]) -> Kind:
    """Return the Kind of a manifest; KeyError names kinds this client does not know."""
    try:
        return KNOWN_KINDS[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise KeyError(f"unknown child kind {obj.get('apiVersion')}/{obj.get('kind')}") from None


class ApiError(RuntimeError):
    """A Kubernetes API call failed; carries the status code and the server's reason."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        try:
            parsed = json.loads(body)
            self.reason = parsed.get("reason", "")
            self.message = parsed.get("message", body)
        except ValueError:
            self.reason, self.message = "", body[:500]
        super().__init__(f"{method} {path} -> HTTP {status} {self.reason}: {self.message}")


@dataclasses.dataclass
class _Credentials:
    host: str
    ssl_context: ssl.SSLContext | bool
    headers: dict[str, str]
    config: Any


def load_configuration() -> Any:
    """Return a kubernetes client Configuration: in-cluster, else $KUBECONFIG (read now).

    The kubernetes package reads KUBECONFIG once, at import; reading it at call time
    lets tests and tools point the operator at a cluster started later.
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg
        )
    return cfg


def authorization_header(cfg: Any) -> str | None:
    """Return the Authorization header value a kubernetes Configuration carries, if any.

    The key holding it changed across client versions ('authorization', 'BearerToken');
    ``auth_settings()`` names the header either way.
    """
    for setting in (cfg.auth_settings() or {}).values():
        if (
            setting.get("in") == "header"
            and setting.get("value")
            and setting.get("key", "").lower() == "authorization"
        ):
            return str(setting["value"])
    return cfg.get_api_key_with_prefix("authorization") or None


def _load_credentials() -> _Credentials:
    cfg = load_configuration()
    if cfg.verify_ssl:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if cfg.cert_file and cfg.key_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    creds = _Credentials(cfg.host.rstrip("/"), ctx, {}, cfg)
    _refresh_token(creds)
    return creds


def _refresh_token(creds: _Credentials) -> None:
    cfg = creds.config
    if cfg.refresh_api_key_hook is not None:
        # In-cluster: re-reads the projected service-account token when it rotates.
        cfg.refresh_api_key_hook(cfg)
    token = authorization_header(cfg)
    if token:
        creds.headers["Authorization"] = token


class KubeApi:
    """Async access to the API server for the operator's writes and point reads."""

    def __init__(self, *, timeout: float = 30.0, max_connections: int = 32) -> None:
        self._creds = _load_credentials()
        self._client = httpx.AsyncClient(
            base_url=self._creds.host,
            verify=self._creds.ssl_context,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._token_checked = time.monotonic()
        # (verb, kind) -> count; "an idle resync writes nothing" is read from here.
        self.writes: collections.Counter[tuple[str, str]] = collections.Counter()

    async def close(self) -> None:
        await self._client.aclose()

    def total_writes(self) -> int:
        return sum(self.writes.values())

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if time.monotonic() - self._token_checked > 60:
            _refresh_token(self._creds)
            self._token_checked = time.monotonic()
        headers = {**self._creds.headers, **kwargs.pop("headers", {})}
        return await self._client.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str) -> dict[str, Any] | None:
        """Return the object at ``path``, or None when it does not exist."""
        resp = await self._request("GET", path)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise ApiError("GET", path, resp.status_code, resp.text)
        return resp.json()

    async def apply(
        self, obj: dict[str, Any], *, force: bool = True, field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` with the operator's field manager; return the result."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        path = kind.path(meta["namespace"], meta["name"])
        resp = await self._request(
            "PATCH",
            path,
            params={"fieldManager": field_manager, "force": "true" if force else "false"},
            headers={"Content-Type": "application/apply-patch+yaml"},
            # JSON is YAML; no YAML serialiser on the hot path.
            content=json.dumps(obj).encode(),
        )
        self.writes[("apply", kind.kind)] += 1
        if resp.status_code >= 400:
            raise ApiError("PATCH(apply)", path, resp.status_code, resp.text)
        return resp.json()

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST ``obj``; an existing object of that name raises ApiError with status 409."""
        kind = kind_of(obj)
        path = kind.path(obj["metadata"]["namespace"])
        resp = await self._request(
            "POST",
            path,
            params={"fieldManager": FIELD_MANAGER},
            content=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json"},
        )
        self.writes[("create", kind.kind)] += 1
        if resp.status_code >= 400:
            raise ApiError("POST", path, resp.status_code, resp.text)
        return resp.json()

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT ``obj`` (with its resourceVersion, so a concurrent change fails with 409)."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        path = kind.path(meta["namespace"], meta["name"])
        resp = await self._request(
            "PUT",
            path,
            params={"fieldManager": FIELD_MANAGER},
            content=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json"},
        )
        self.writes[("replace", kind.kind)] += 1
        if resp.status_code >= 400:
            raise ApiError("PUT", path, resp.status_code, resp.text)
        return resp.json()

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete a child (foreground-free, background propagation); False if already gone."""
        k = CHILD_KINDS[(api_version, kind)]
        path = k.path(namespace, name)
        resp = await self._request(
            "DELETE",
            path,
            json={"propagationPolicy": "Background"},
        )
        self.writes[("delete", kind)] += 1
        if resp.status_code == 404:
            return False
        if resp.status_code >= 400:
            raise ApiError("DELETE", path, resp.status_code, resp.text)
        return True

    async def patch_status(
        self,
        group_version: str,
        plural: str,
        namespace: str,
        name: str,
        status_patch: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None if the object is gone."""
        path = f"/apis/{group_version}/namespaces/{namespace}/{plural}/{name}/status"
        resp = await self._request(
            "PATCH",
            path,
            headers={"Content-Type": "application/merge-patch+json"},
            content=json.dumps({"status": status_patch}).encode(),
        )
        self.writes[("patch-status", plural)] += 1
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise ApiError("PATCH(status)", path, resp.status_code, resp.text)
        return resp.json()
