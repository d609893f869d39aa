"""``driftwarden worker``: run one drift-worker shard.

Settings come from the environment (see :mod:`driftwarden.drift_worker.settings`);
flags override them for local runs, e.g.::

    driftwarden worker --ordinal 0 --port 9100 --data-dir /tmp/w0 \\
        --monitor-config monitor.json --shard-map shardmap.json \\
        --peer-url-template 'http://127.0.0.1:{port}' --base-port 9100
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from driftwarden.common.sharding import ShardMap
from driftwarden.drift_worker.settings import (
    ConfigError,
    Settings,
    build_plan,
    check_plan,
    load_credential,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="driftwarden worker", description="Run one drift-worker shard."
    )
    p.add_argument("--ordinal", type=int, help="shard ordinal (default: pod name suffix)")
    p.add_argument("--host", help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="listen port (default 8080)")
    p.add_argument("--data-dir", type=Path, help="WAL and snapshot directory")
    p.add_argument("--monitor-config", type=Path, help="monitor.json")
    p.add_argument("--shard-map", type=Path, help="shardmap.json")
    p.add_argument("--credential-file", type=Path, help="the monitor credential (worker.json)")
    p.add_argument("--streams-file", type=Path, help="streams JSON instead of the bundle schema")
    p.add_argument("--fsync", choices=["always", "interval", "never"])
    p.add_argument(
        "--no-wal", action="store_true", help="keep no WAL or snapshots (benchmarks only)"
    )
    p.add_argument("--peer-url-template", help="peer URL with {ordinal} or {port}")
    p.add_argument("--base-port", type=int, help="port of shard 0 when the template uses {port}")
    p.add_argument("--snapshot-interval", type=float, help="seconds between snapshots")
    p.add_argument("--snapshot-every-values", type=int, help="values between snapshots")
    p.add_argument("--handoff-timeout", type=float, help="seconds to wait for a stream's state")
    p.add_argument(
        "--storage-failure-exit", type=float, help="seconds to answer 503 after a failed fsync"
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING")
    return p


def load_settings(argv: list[str]) -> Settings:
    """Return settings from the environment with command-line overrides applied."""
    args = _parser().parse_args(argv)
    settings = Settings()
    worker = settings.worker.model_dump()
    for flag, key in [
        ("ordinal", "ordinal"),
        ("host", "host"),
        ("port", "port"),
        ("data_dir", "data_dir"),
        ("streams_file", "streams_file"),
        ("fsync", "fsync"),
        ("peer_url_template", "peer_url_template"),
        ("base_port", "base_port"),
        ("snapshot_interval", "snapshot_interval_s"),
        ("snapshot_every_values", "snapshot_every_values"),
        ("handoff_timeout", "handoff_timeout_s"),
        ("storage_failure_exit", "storage_failure_exit_s"),
    ]:
        value = getattr(args, flag)
        if value is not None:
            worker[key] = value
    if args.no_wal:
        worker["wal_enabled"] = False
    top = settings.model_dump()
    top["worker"] = worker
    if args.monitor_config is not None:
        top["monitor_config"] = args.monitor_config
    if args.shard_map is not None:
        top["shard_map"] = args.shard_map
    if args.log_level is not None:
        top["log_level"] = args.log_level
    if args.credential_file is not None:
        top["credential_file"] = args.credential_file
    return Settings.model_validate(top)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from driftwarden.drift_worker.app import WorkerService, create_app
    from driftwarden.drift_worker.datadir import DataDirError
    from driftwarden.drift_worker.fileio import REAL
    from driftwarden.drift_worker.shard import ShardWorker
    from driftwarden.drift_worker.wal import WalError

    settings = load_settings(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("driftwarden.worker")
    try:
        ordinal = settings.resolve_ordinal()
        peers = settings.resolve_peer_template()
        plan = build_plan(settings)
        check_plan(plan)
        try:
            shard_map = ShardMap.model_validate_json(settings.shard_map.read_bytes())
        except FileNotFoundError:
            raise ConfigError(
                f"shard map {settings.shard_map} does not exist; mount the monitor ConfigMap or set "
                "DRIFTWARDEN_SHARD_MAP"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"shard map {settings.shard_map} is invalid: {exc}") from None
        if shard_map.monitor != plan.monitor:
            raise ConfigError(
                f"shard map is for {shard_map.monitor!r} but monitor.json describes {plan.monitor!r}"
            )
        credential = load_credential(settings, plan.monitor)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    from driftwarden.drift_worker.plan import warm_up

    log.info("detector kernels ready in %.1fs", warm_up(plan))
    w = settings.worker
    if not w.wal_enabled:
        log.warning(
            "WAL disabled: acknowledged values are lost if this shard restarts (benchmark mode)"
        )
    io = REAL
    if os.environ.get("DRIFTWARDEN_FAULT_INJECTION"):
        from driftwarden.testing.faults import from_environment

        io = from_environment() or REAL
        log.warning("STORAGE FAULT INJECTION is on (test harness): %s", io.rules_path)  # type: ignore[attr-defined]
    try:
        worker = ShardWorker(
            plan,
            ordinal,
            shard_map=shard_map,
            data_dir=w.data_dir if w.wal_enabled else None,
            fsync=w.fsync,
            fsync_interval=w.fsync_interval,
            wal_segment_bytes=w.wal_segment_bytes,
            handoff_timeout_s=w.handoff_timeout_s,
            io=io,
        )
    except (WalError, DataDirError) as exc:
        # Damage that would lose acknowledged data, or someone else's volume: refuse to
        # start, and say where and what to do (the pod shows it in CrashLoopBackOff).
        log.error("shard %d refuses to start: %s", ordinal, exc)
        return 2
    except OSError as exc:
        log.error("shard %d cannot start: storage error in %s: %s", ordinal, w.data_dir, exc)
        return 75
    service = WorkerService(
        worker,
        peer_url_template=peers,
        base_port=w.base_port,
        shard_map_path=settings.shard_map,
        map_poll_interval_s=w.map_poll_interval_s,
        snapshot_interval_s=w.snapshot_interval_s,
        snapshot_every_values=w.snapshot_every_values,
        max_body_bytes=w.max_body_bytes,
        shutdown_drain_s=w.shutdown_drain_s,
        storage_failure_exit_s=w.storage_failure_exit_s,
        credential=credential,
        evidence_poll_interval_s=w.evidence_poll_interval_s,
        evidence_stale_s=w.evidence_stale_s,
    )
    config = uvicorn.Config(
        create_app(service),
        host=w.host,
        port=w.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    service.on_fatal = lambda: setattr(server, "should_exit", True)
    server.run()
    return service.exit_code


if __name__ == "__main__":
    sys.exit(main())
