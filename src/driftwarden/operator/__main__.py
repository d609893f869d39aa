"""``driftwarden operator``: run the kopf operator for DriftMonitors."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from driftwarden.operator.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden operator",
        description="Reconcile DriftMonitor resources into model servers, drift workers, "
        "alerts and dashboards. Settings come from DRIFTWARDEN_OPERATOR__* "
        "variables (docs/operator.md).",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="ignore peering even if DRIFTWARDEN_OPERATOR__PEERING_NAME is set",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the operator until SIGINT/SIGTERM; return the exit status."""
    args = _parser().parse_args(argv)
    settings = load_settings()
    kopf.configure(
        debug=args.verbose or settings.log_level == "debug",
        verbose=args.verbose or settings.log_level == "debug",
        quiet=settings.log_level in ("warning", "error"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Importing registers the handlers with kopf's default registry.
    import driftwarden.operator.handlers  # noqa: F401

    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=tuple(args.namespace),
            standalone=True if args.standalone else None,
            liveness_endpoint=liveness,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
