"""The operator's RBAC rules: exactly the verbs and resources its code uses.

One source for the chart's ClusterRole (charts/driftwarden/files/operator-rbac-rules.yaml,
written by ``driftwarden generate``) and for the cluster tests, which run the
operator under these rules alone.
"""

from __future__ import annotations

from typing import Any

from driftwarden.common import names
from driftwarden.operator.kube import CHILD_KINDS

# What each verb is for:
#   get:    a child missing from the watch cache is read once (reconcile.observed)
#   list, watch: kopf's watch streams (children filtered by the managed-by label)
#   create, patch: server-side apply (the API server checks "create" when an apply
#           creates the object, "patch" when it changes one)
#   update: replacing a hand-edited child that server-side apply cannot restore
#   delete: pruning children the spec no longer asks for
_CHILD_VERBS = ["get", "list", "watch", "create", "patch", "update", "delete"]


def _child_rules() -> list[dict[str, Any]]:
    by_group: dict[str, list[str]] = {}
    for (api_version, _kind), kind in CHILD_KINDS.items():
        group = api_version.rpartition("/")[0]
        by_group.setdefault(group, []).append(kind.plural)
    return [
        {"apiGroups": [group], "resources": sorted(plurals), "verbs": list(_CHILD_VERBS)}
        for group, plurals in sorted(by_group.items())
    ]


def operator_rules() -> list[dict[str, Any]]:
    """Return the ClusterRole rules the operator needs, in a stable order."""
    return [
        # kopf watches monitors and patches its finalizer onto them.
        {
            "apiGroups": [names.API_GROUP],
            "resources": [names.PLURAL],
            "verbs": ["get", "list", "watch", "patch"],
        },
        # The reconciler writes status through the status subresource only.
        {
            "apiGroups": [names.API_GROUP],
            "resources": [f"{names.PLURAL}/status"],
            "verbs": ["get", "patch"],
        },
        *_child_rules(),
        # Each monitor's credential Secret: created once with a random key, read back to
        # sign shard-map pushes. No list/watch (that would expose every Secret's value in
        # the cluster), no update (the Secret is immutable), no delete (garbage collection
        # removes it with its monitor).
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
        # kopf posts warnings and errors about a monitor as Kubernetes Events.
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
        # kopf discovers resources and notices CRDs installed later (prometheus-operator).
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        # kopf lists namespaces when the operator is limited to namespace patterns.
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        # kopf peering (a standby replica pauses while a higher-priority one runs).
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["clusterkopfpeerings", "kopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"],
        },
    ]
