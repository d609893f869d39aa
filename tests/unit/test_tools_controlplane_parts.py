"""Control-plane building blocks that need no Kubernetes binaries: PKI, processes, provisioner, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from driftwarden.testing._pki import make_pki
from driftwarden.testing._provisioner import (
    PROVISIONER_NAME,
    HostPathProvisioner,
    storage_class_manifest,
)
from driftwarden.testing.controlplane import ControlPlane, _Component
from driftwarden.testing.waiting import WaitTimeout, wait_until


def _openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_pki_issues_verifiable_server_and_admin_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", dns_names=("localhost", "kubernetes.default.svc"))
    for cert in (pki.serving_cert, pki.admin_cert):
        assert _openssl("verify", "-CAfile", str(pki.ca_cert), str(cert)).strip().endswith("OK")
    server = _openssl("x509", "-in", str(pki.serving_cert), "-noout", "-text")
    assert "IP Address:127.0.0.1" in server and "DNS:kubernetes.default.svc" in server
    assert "TLS Web Server Authentication" in server
    admin = _openssl(
        "x509", "-in", str(pki.admin_cert), "-noout", "-subject", "-ext", "extendedKeyUsage"
    )
    assert "O = system:masters" in admin and "TLS Web Client Authentication" in admin
    # The service-account public key matches the signing key.
    derived = _openssl("pkey", "-in", str(pki.service_account_key), "-pubout")
    assert derived == pki.service_account_pub.read_text()
    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.service_account_key):
        assert key.stat().st_mode & 0o077 == 0, key


def test_pki_rejects_a_malformed_ip(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_pki(tmp_path, ip_addresses=("127.0.0.300",))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_component_stop_kills_its_whole_process_group(tmp_path: Path) -> None:
    # A shell that forks a grandchild and ignores SIGTERM: stop() must escalate to
    # SIGKILL for the group, leaving neither behind.
    pid_file = tmp_path / "child.pid"
    script = f"trap '' TERM; sleep 300 & echo $! > {pid_file}; wait"
    component = _Component("stubborn", ["sh", "-c", script], tmp_path / "logs" / "s.log")
    component.start(os.environ)
    child_pid = int(
        wait_until(
            lambda: pid_file.read_text().strip(),
            timeout=10,
            what="grandchild started",
        )
    )
    started = time.monotonic()
    component.stop(grace=0.5)
    assert time.monotonic() - started < 10
    assert component.exit_code() == -signal.SIGKILL
    wait_until(lambda: not _alive(child_pid), timeout=5, what="grandchild gone")


def test_component_log_tail_shows_the_last_lines(tmp_path: Path) -> None:
    component = _Component(
        "talker", [sys.executable, "-c", "for i in range(50): print(i)"], tmp_path / "t.log"
    )
    component.start(os.environ)
    assert component.popen is not None
    component.popen.wait(10)
    assert component.log_tail(3).splitlines() == ["47", "48", "49"]
    assert _Component("silent", ["true"], tmp_path / "none.log").log_tail() == "(no log written)"


def test_unstarted_control_plane_reports_clearly() -> None:
    plane = ControlPlane()
    assert plane.pids == {} and not plane.running()
    plane.stop()  # idempotent on a plane that never started
    with pytest.raises(RuntimeError, match="has not been started"):
        _ = plane.kubeconfig
    with pytest.raises(ValueError, match="nodes must be >= 0"):
        ControlPlane(nodes=-1)


class _FakeCore:
    """Records the PV calls the provisioner makes."""

    def __init__(
        self,
        claims: list[client.V1PersistentVolumeClaim],
        volumes: list[client.V1PersistentVolume] = (),
    ) -> None:
        self.claims = claims
        self.volumes = list(volumes)
        self.created: list[client.V1PersistentVolume] = []
        self.deleted: list[str] = []

    def list_persistent_volume_claim_for_all_namespaces(self, **_: Any) -> Any:
        return SimpleNamespace(items=self.claims, metadata=SimpleNamespace(resource_version="7"))

    def list_persistent_volume(self) -> Any:
        return SimpleNamespace(items=self.volumes)

    def create_persistent_volume(self, volume: client.V1PersistentVolume) -> None:
        if any(v.metadata.name == volume.metadata.name for v in self.created):
            raise ApiException(status=409)
        self.created.append(volume)

    def delete_persistent_volume(self, name: str) -> None:
        self.deleted.append(name)


def _claim(
    name: str,
    *,
    storage_class: str | None = "standard",
    volume: str | None = None,
    phase: str = "Pending",
    size: str = "2Gi",
) -> client.V1PersistentVolumeClaim:
    return client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name=name, namespace="ns", uid=f"uid-{name}"),
        spec=client.V1PersistentVolumeClaimSpec(
            storage_class_name=storage_class,
            volume_name=volume,
            access_modes=["ReadWriteOnce"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": size}),
        ),
        status=client.V1PersistentVolumeClaimStatus(phase=phase),
    )


def _volume(name: str, phase: str, provisioner: str | None) -> client.V1PersistentVolume:
    annotations = {"pv.kubernetes.io/provisioned-by": provisioner} if provisioner else None
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        status=client.V1PersistentVolumeStatus(phase=phase),
    )


def test_provisioner_prebinds_a_volume_to_each_pending_claim_of_its_class(tmp_path: Path) -> None:
    core = _FakeCore(
        claims=[
            _claim("wanted"),
            _claim("other-class", storage_class="fast"),
            _claim("already", volume="pv-1", phase="Bound"),
            _claim("no-class", storage_class=None),
        ],
        volumes=[
            _volume("released-ours", "Released", PROVISIONER_NAME),
            _volume("released-theirs", "Released", "ebs.csi.aws.com"),
            _volume("bound-ours", "Bound", PROVISIONER_NAME),
        ],
    )
    provisioner = HostPathProvisioner(core, "standard", tmp_path)  # type: ignore[arg-type]
    assert provisioner.resync() == "7"
    assert [v.metadata.name for v in core.created] == ["pvc-uid-wanted"]
    volume = core.created[0]
    assert volume.spec.claim_ref.uid == "uid-wanted" and volume.spec.claim_ref.namespace == "ns"
    assert volume.spec.capacity == {"storage": "2Gi"}
    assert volume.spec.storage_class_name == "standard"
    assert volume.spec.persistent_volume_reclaim_policy == "Delete"
    assert volume.metadata.annotations["pv.kubernetes.io/provisioned-by"] == PROVISIONER_NAME
    assert volume.spec.host_path.path == str(tmp_path / "ns" / "wanted")
    assert core.deleted == ["released-ours"]
    # A second pass is idempotent: the 409 of an existing volume is not an error.
    provisioner.resync()
    assert len(core.created) == 1 and provisioner.provisioned == 1


def test_storage_class_is_the_default_and_binds_immediately() -> None:
    manifest = storage_class_manifest("standard")
    assert manifest["metadata"]["annotations"] == {
        "storageclass.kubernetes.io/is-default-class": "true"
    }
    assert manifest["provisioner"] == PROVISIONER_NAME
    assert manifest["volumeBindingMode"] == "Immediate"


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "ready"])
    assert wait_until(lambda: next(values), timeout=5, interval=0) == "ready"


def test_wait_until_timeout_names_what_and_the_last_state() -> None:
    def probe() -> None:
        raise KeyError("pod-0")

    with pytest.raises(WaitTimeout) as err:
        wait_until(
            probe, timeout=0.2, interval=0.05, what="pod-0 Ready", describe=lambda: "phase=Pending"
        )
    message = str(err.value)
    assert message.startswith("pod-0 Ready did not hold within 0 s")
    assert "KeyError('pod-0')" in message and "current state: phase=Pending" in message
    assert isinstance(err.value, AssertionError)
