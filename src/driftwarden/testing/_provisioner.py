"""A minimal volume provisioner so PersistentVolumeClaims bind on a kubelet-less control plane.

No storage driver exists on the test control plane, so this thread plays the part of an
external provisioner for one StorageClass: for every pending claim of that class it
creates a hostPath PersistentVolume pre-bound to the claim (``claimRef``), and the
controller-manager's PV binder completes the binding exactly as with a real driver.
Released volumes it made are deleted, as a ``Delete`` reclaim policy promises.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

__all__ = ["PROVISIONER_NAME", "HostPathProvisioner", "storage_class_manifest"]

log = logging.getLogger(__name__)

PROVISIONER_NAME = "driftwarden.io/test-hostpath"
# The annotation external provisioners set; the PV controller then leaves deletion of a
# released volume to us instead of looking for an in-tree deleter.
_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def storage_class_manifest(name: str) -> dict[str, Any]:
    """Return the default StorageClass served by HostPathProvisioner."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": name,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER_NAME,
        "reclaimPolicy": "Delete",
        # Immediate: the claim binds before scheduling, so the scheduler never waits on
        # topology that fake nodes cannot report.
        "volumeBindingMode": "Immediate",
    }


class HostPathProvisioner:
    """Creates a pre-bound hostPath PV for each pending PVC of one StorageClass, in a thread."""

    def __init__(
        self,
        core_v1: client.CoreV1Api,
        storage_class: str,
        root: Path,
        *,
        watch_seconds: int = 3,
    ) -> None:
        self._core = core_v1
        self.storage_class = storage_class
        self.root = root
        self._watch_seconds = watch_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.provisioned = 0
        self.deleted = 0

    def start(self) -> None:
        """Start the provisioning thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pv-provisioner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (at most one watch period)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                resource_version = self.resync()
                self._watch(resource_version)
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("PV provisioner: %s; retrying in 1 s", exc)
                self._stopping.wait(1.0)

    def resync(self) -> str:
        """Provision every pending claim and delete released volumes; return the claims' list version."""
        claims = self._core.list_persistent_volume_claim_for_all_namespaces()
        for claim in claims.items:
            self._ensure_volume(claim)
        for volume in self._core.list_persistent_volume().items:
            if (
                volume.status is not None
                and volume.status.phase == "Released"
                and _meta(volume).deletion_timestamp is None
                and (_meta(volume).annotations or {}).get(_PROVISIONED_BY) == PROVISIONER_NAME
            ):
                self._delete_volume(str(_meta(volume).name))
        return str(claims.metadata.resource_version if claims.metadata else "")

    def _watch(self, resource_version: str) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self._core.list_persistent_volume_claim_for_all_namespaces,
            resource_version=resource_version,
            timeout_seconds=self._watch_seconds,
        ):
            if self._stopping.is_set():
                stream.stop()
                return
            if event["type"] in ("ADDED", "MODIFIED"):
                self._ensure_volume(event["object"])

    def _ensure_volume(self, claim: client.V1PersistentVolumeClaim) -> None:
        spec = claim.spec
        if (
            spec is None
            or spec.storage_class_name != self.storage_class
            or spec.volume_name
            or _meta(claim).deletion_timestamp is not None
            or (claim.status is not None and claim.status.phase not in (None, "Pending"))
        ):
            return
        meta = _meta(claim)
        namespace, name = str(meta.namespace), str(meta.name)
        requests = (spec.resources.requests if spec.resources else None) or {}
        volume = client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(
                # The claim's UID makes the name unique and the create idempotent.
                name=f"pvc-{meta.uid}",
                annotations={_PROVISIONED_BY: PROVISIONER_NAME},
            ),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": requests.get("storage", "1Gi")},
                access_modes=spec.access_modes or ["ReadWriteOnce"],
                volume_mode=spec.volume_mode or "Filesystem",
                storage_class_name=self.storage_class,
                persistent_volume_reclaim_policy="Delete",
                claim_ref=client.V1ObjectReference(
                    api_version="v1",
                    kind="PersistentVolumeClaim",
                    namespace=namespace,
                    name=name,
                    uid=meta.uid,
                ),
                # Nothing mounts it (the nodes are fake); the path just names the volume.
                host_path=client.V1HostPathVolumeSource(
                    path=str(self.root / namespace / name), type="DirectoryOrCreate"
                ),
            ),
        )
        try:
            self._core.create_persistent_volume(volume)
        except ApiException as exc:
            if exc.status == 409:
                return
            raise
        self.provisioned += 1
        log.debug("PV provisioner: created %s for %s/%s", _meta(volume).name, namespace, name)

    def _delete_volume(self, name: str) -> None:
        try:
            self._core.delete_persistent_volume(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        self.deleted += 1


def _meta(obj: Any) -> client.V1ObjectMeta:
    """Return an API object's metadata (always set on objects the API server returns)."""
    meta = obj.metadata
    if meta is None:
        raise ValueError(f"{type(obj).__name__} without metadata from the API server")
    return meta
