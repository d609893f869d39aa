"""kopf wiring: settings set once at startup, shared credentials, wake-ups, the CLI parser."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import kopf
import pytest
import yaml

from driftwarden.operator import handlers
from driftwarden.operator.__main__ import _parser
from driftwarden.operator.builders import MANAGED_BY
from driftwarden.operator.kube import CHILD_KINDS


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "s3cret"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    return path


def test_login_shares_the_kubeconfig_read_at_call_time(kubeconfig: Path) -> None:
    info = handlers.login()
    assert info.server == "https://127.0.0.1:6443"
    assert (info.scheme, info.token) == ("Bearer", "s3cret")
    assert info.insecure is True


def test_startup_sets_prefixes_selectors_and_standalone_peering(
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTWARDEN_OPERATOR__RESYNC_SECONDS", "7")
    settings, memo = kopf.OperatorSettings(), kopf.Memo()

    async def go() -> None:
        await handlers.configure(settings=settings, memo=memo, logger=logging.getLogger("t"))
        await handlers.close_clients(memo=memo)

    asyncio.run(go())
    assert settings.persistence.finalizer == "driftwarden.io/finalizer"
    assert settings.posting.level == logging.WARNING
    assert settings.peering.standalone is True
    selectors = dict(settings.watching.label_selectors.items())
    assert len(selectors) == len(CHILD_KINDS)  # one per child kind
    assert set(selectors.values()) == {f"app.kubernetes.io/managed-by={MANAGED_BY}"}
    assert memo.settings.resync_seconds == 7
    assert memo.reconciler.settings is memo.settings


def test_startup_joins_a_named_peering(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTWARDEN_OPERATOR__PEERING_NAME", "dw")
    monkeypatch.setenv("DRIFTWARDEN_OPERATOR__PEERING_PRIORITY", "5")
    settings, memo = kopf.OperatorSettings(), kopf.Memo()

    async def go() -> None:
        await handlers.configure(settings=settings, memo=memo, logger=logging.getLogger("t"))
        await handlers.close_clients(memo=memo)

    asyncio.run(go())
    assert (settings.peering.name, settings.peering.priority) == ("dw", 5)
    assert settings.peering.mandatory is True and settings.peering.standalone is False


def test_wakers_wake_only_registered_monitors_on_real_changes() -> None:
    async def go() -> None:
        wakers = handlers.Wakers()
        event = wakers.register("u1")
        wakers.wake("other")
        wakers.wake(None)
        assert not event.is_set()
        assert not wakers.changed("u1", (1, ()))  # the first sighting is not a change
        assert not wakers.changed("u1", (1, ()))  # a status-only event
        assert wakers.changed("u1", (2, ()))  # the spec moved on
        wakers.wake("u1")
        assert event.is_set()
        wakers.unregister("u1")
        assert not wakers.changed("u1", (3, ()))

    asyncio.run(go())


def test_cli_parser_scopes() -> None:
    assert _parser().parse_args([]).namespace == []
    args = _parser().parse_args(["-n", "ml", "-n", "team-*", "--standalone"])
    assert args.namespace == ["ml", "team-*"] and args.standalone
    with pytest.raises(SystemExit):
        _parser().parse_args(["-n", "ml", "-A"])
