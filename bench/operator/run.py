"""Operator benchmark on the kwok control plane: time to Ready, writes per idle resync, memory.

For each size N (default 10, 100, 500; ``DRIFTWARDEN_BENCH_OPERATOR_SIZES`` overrides)
the benchmark creates N DriftMonitors in a fresh namespace while the operator runs
and measures:

- seconds from the first create until every monitor reports Ready (children applied,
  kwok pods Running and Ready, PVCs bound by the test provisioner);
- API writes per monitor during one idle resync period (goal 0);
- operator memory per monitor (growth of the process's RSS over all monitors).

Baseline, measured in the same run: the same operator with the input-hash skip turned
off (``DRIFTWARDEN_OPERATOR__INPUT_HASH_SKIP=false``), which re-applies every child on
every pass, as an operator without change detection does. It watches the N=100
namespace only (a resync of every monitor would not fit in one period on 2 cores), and
its writes per monitor per idle resync are compared with ours.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "operator.json"
GROUP, VERSION, PLURAL = "driftwarden.io", "v1alpha1", "driftmonitors"
RESYNC_SECONDS = 15.0
READY_TIMEOUT = 600.0


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _monitor(name: str) -> dict[str, Any]:
    # One model replica and one shard: 2 pods and 1 PVC per monitor keep 500 monitors
    # within what kwok, the scheduler and etcd do on 2 cores; the operator's work per
    # monitor (9 children, status) does not depend on the counts.
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DriftMonitor",
        "metadata": {"name": name},
        "spec": {
            "model": {"bundle": "builtin://diamonds", "replicas": 1},
            "workers": {"shards": 1, "storage": "64Mi"},
        },
    }


def _create_monitors(custom: Any, namespace: str, n: int) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, _monitor(f"m{i:04d}")
                ),
                range(n),
            )
        )


def _counts(custom: Any, namespace: str) -> tuple[int, int]:
    """Return (monitors whose children are applied, monitors Ready)."""
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    applied = sum(bool((o.get("status") or {}).get("observedGeneration")) for o in items)
    ready = sum(
        any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (o.get("status") or {}).get("conditions", [])
        )
        for o in items
    )
    return applied, ready


class NotReady(RuntimeError):
    """Not every monitor became Ready within READY_TIMEOUT."""

    def __init__(self, ready: int, applied: int) -> None:
        super().__init__(f"{ready} monitors Ready ({applied} applied) after {READY_TIMEOUT:.0f} s")
        self.ready, self.applied = ready, applied


def _wait_ready(custom: Any, namespace: str, n: int, started: float) -> tuple[float, float]:
    """Return seconds until every monitor's children were applied, and until all Ready."""
    applied_at = None
    while True:
        applied, ready = _counts(custom, namespace)
        now = time.perf_counter() - started
        if applied >= n and applied_at is None:
            applied_at = now
        if ready >= n:
            return applied_at or now, now
        if now > READY_TIMEOUT:
            raise NotReady(ready, applied)
        # Listing hundreds of monitors costs CPU in this very process (the operator's).
        time.sleep(max(0.5, n / 200))


def _idle_writes(settle: float = 3.0) -> int:
    """Return API writes during one resync period, after writes have stopped for ``settle`` s."""
    from driftwarden.testing.operator import operator_writes

    last, quiet_since = operator_writes(), time.monotonic()
    deadline = time.monotonic() + 120
    while time.monotonic() - quiet_since < settle and time.monotonic() < deadline:
        time.sleep(0.5)
        now = operator_writes()
        if now != last:
            last, quiet_since = now, time.monotonic()
    start = operator_writes()
    time.sleep(RESYNC_SECONDS + 5)  # every daemon passes at least once
    return operator_writes() - start


def _write_partial(rows: list[dict[str, Any]]) -> None:
    # The operator runs in this process under click's CliRunner, which captures stdout
    # until it stops; partial results go to the results file as they come.
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"benchmark": "operator", "partial": True, "sizes": rows}, indent=2) + "\n"
    )


def main() -> dict:
    from kubernetes import client

    from driftwarden.testing.controlplane import ControlPlane
    from driftwarden.testing.operator import install_crd, run_operator

    sizes = [
        int(s) for s in os.environ.get("DRIFTWARDEN_BENCH_OPERATOR_SIZES", "10,100,500").split(",")
    ]
    env = {
        # kwok pods run no worker process: drift status probing is off in the benchmark.
        "DRIFTWARDEN_OPERATOR__WORKER_STATUS_URL": "",
        "DRIFTWARDEN_OPERATOR__RESYNC_SECONDS": str(RESYNC_SECONDS),
        "DRIFTWARDEN_OPERATOR__LOG_LEVEL": "warning",
    }
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="dw-bench-operator-") as tmp,
        ControlPlane(Path(tmp) / "cp", nodes=3) as plane,
    ):
        api = plane.api_client()
        install_crd(api)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        namespaces = {}
        for n in sizes:
            namespaces[n] = f"bench-{n}"
            core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=namespaces[n]))
            )
        time.sleep(2)  # default ServiceAccounts
        rss_before = _rss_bytes()
        total = 0
        with run_operator(env, kubeconfig=plane.kubeconfig, timeout=120, quiet=True) as runner:
            for n in sizes:
                started = time.perf_counter()
                _create_monitors(custom, namespaces[n], n)
                try:
                    applied_seconds, seconds = _wait_ready(custom, namespaces[n], n, started)
                except NotReady as exc:
                    rows.append(
                        {
                            "monitors": n,
                            "timeout_seconds": READY_TIMEOUT,
                            "ready_at_timeout": exc.ready,
                            "applied_at_timeout": exc.applied,
                        }
                    )
                    _write_partial(rows)
                    break
                total += n
                writes = _idle_writes()
                rss = _rss_bytes()
                rows.append(
                    {
                        "monitors": n,
                        "seconds_to_ready": round(seconds, 2),
                        "seconds_to_children_applied": round(applied_seconds, 2),
                        "monitors_per_second": round(n / seconds, 2),
                        "idle_resync_writes": writes,
                        "writes_per_monitor_per_resync": round(writes / total, 4),
                        "monitors_running": total,
                        "rss_mib": round(rss / 2**20, 1),
                        "rss_per_monitor_kib": round((rss - rss_before) / total / 1024, 1),
                    }
                )
                _write_partial(rows)
                print(
                    f"  {n:>4} monitors applied in {applied_seconds:6.1f} s, Ready in "
                    f"{seconds:6.1f} s; idle resync writes "
                    f"{writes}; RSS {rss / 2**20:.0f} MiB",
                    flush=True,
                )
        assert runner.exit_code == 0 and runner.exception is None, runner.output[-2000:]

        # Baseline: the same operator without the input-hash skip, on one namespace.
        baseline_n = min(sizes, key=lambda n: abs(n - 100))
        baseline_env = {**env, "DRIFTWARDEN_OPERATOR__INPUT_HASH_SKIP": "false"}
        with run_operator(
            baseline_env,
            kubeconfig=plane.kubeconfig,
            timeout=120,
            quiet=True,
            namespaces=[namespaces[baseline_n]],
        ) as runner:
            baseline_writes = _idle_writes()
        assert runner.exit_code == 0 and runner.exception is None, runner.output[-2000:]
        api.close()

    done = [r for r in rows if "seconds_to_ready" in r]
    ours = done[-1]["writes_per_monitor_per_resync"] if done else None
    baseline = round(baseline_writes / baseline_n, 4)
    result = {
        "benchmark": "operator",
        "control_plane": "etcd + kube-apiserver + controller-manager + scheduler + kwok "
        "(3 fake nodes), pinned in versions.env",
        "cpu_count": os.cpu_count(),
        "resync_seconds": RESYNC_SECONDS,
        "monitor_shape": "1 model replica, 1 shard, 9 children each",
        "sizes": rows,
        "baseline": {
            "name": "same operator, input-hash skip off (DRIFTWARDEN_OPERATOR__INPUT_HASH_SKIP"
            "=false): every pass re-applies every child",
            "monitors_running": baseline_n,
            "idle_resync_writes": baseline_writes,
            "writes_per_monitor_per_resync": baseline,
        },
        "ratios": {
            "idle_writes_ours_over_baseline": (
                round(ours / baseline, 4) if baseline and ours is not None else None
            ),
            "largest_n_seconds_per_100_monitors": (
                round(done[-1]["seconds_to_ready"] / done[-1]["monitors"] * 100, 2)
                if done
                else None
            ),
        },
        "goals": {"seconds_to_ready_1000": 120, "writes_per_idle_resync": 0},
    }
    print()
    print(
        f"{'monitors':>8} {'applied s':>10} {'ready s':>8} {'mon/s':>7} {'idle writes':>12} "
        f"{'RSS/monitor KiB':>16}"
    )
    for row in rows:
        if "seconds_to_ready" not in row:
            print(
                f"{row['monitors']:>8} timed out: {row['ready_at_timeout']} Ready after "
                f"{row['timeout_seconds']:.0f} s"
            )
            continue
        print(
            f"{row['monitors']:>8} {row['seconds_to_children_applied']:>10} "
            f"{row['seconds_to_ready']:>8} "
            f"{row['monitors_per_second']:>7} {row['idle_resync_writes']:>12} "
            f"{row['rss_per_monitor_kib']:>16}"
        )
    print(
        f"baseline (hash skip off): {baseline_writes} writes per idle resync over {baseline_n} "
        f"monitors = {baseline} per monitor; ours {ours}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
