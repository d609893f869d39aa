"""``driftwarden serve``: run the model server with uvicorn (one process per pod)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from driftwarden.bundles.bundle import BundleError, read_manifest, resolve_uri
from driftwarden.bundles.integrity import bundle_digest, check_digest_format, verify_digest
from driftwarden.model_server.settings import ConfigError, Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden serve",
        description="Serve a model bundle over HTTP (/predict, /feedback, /metrics). "
        "Settings come from DRIFTWARDEN_* environment variables; flags override them.",
    )
    parser.add_argument(
        "--bundle", help="bundle URI (default: DRIFTWARDEN_BUNDLE or the monitor's)"
    )
    parser.add_argument(
        "--host", help="listen address (default: DRIFTWARDEN_SERVER__HOST or 0.0.0.0)"
    )
    parser.add_argument(
        "--port", type=int, help="listen port (default: DRIFTWARDEN_SERVER__PORT or 8000)"
    )
    parser.add_argument(
        "--max-inflight-requests",
        type=int,
        help="requests served at once before 503 + Retry-After "
        "(default: DRIFTWARDEN_SERVER__MAX_INFLIGHT_REQUESTS or 256)",
    )
    parser.add_argument("--log-level", help="uvicorn log level (default: info)")
    return parser


def limit_native_threads(threads: int) -> None:
    """Cap the native thread pools (OpenMP, BLAS, torch) of this process to ``threads``.

    Process-wide, so only the server's entry point calls it: libraries already loaded
    are capped now, the ones the bundle loads later read the environment.
    """
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; return 2 on a configuration error."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        if args.bundle:
            settings.bundle = args.bundle
        if args.host:
            settings.server.host = args.host
        if args.port is not None:
            settings.server.port = args.port
        if args.log_level:
            settings.server.log_level = args.log_level
        if args.max_inflight_requests is not None:
            if args.max_inflight_requests < 1:
                raise ConfigError("--max-inflight-requests must be at least 1")
            settings.server.max_inflight_requests = args.max_inflight_requests
        # Fail now with one line, not with a traceback from inside the lifespan.
        uri, digest = settings.bundle_uri(), settings.pinned_digest()
        directory, builtin = resolve_uri(uri)
        if digest is not None:
            check_digest_format(digest)
        if builtin is None:
            manifest = read_manifest(directory)
            actual = bundle_digest(directory, manifest)  # refuses files outside the bundle
            if digest is not None:
                verify_digest(uri, actual, digest)
    except (ConfigError, BundleError, ValueError) as exc:
        print(f"driftwarden serve: {exc}", file=sys.stderr)
        return 2

    limit_native_threads(settings.server.model_threads)
    import uvicorn

    from driftwarden.model_server.app import create_app

    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # /metrics counts requests; a log line per prediction costs CPU
        log_level=settings.server.log_level.lower(),
        timeout_graceful_shutdown=int(settings.server.drain_timeout_s) + 5,
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn exits normally on a failed startup too; tell the caller.
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
