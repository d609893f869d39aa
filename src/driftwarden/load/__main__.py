"""``driftwarden load``: send a bundle's rows to any /predict URL and report how it coped.

    driftwarden load http://127.0.0.1:8000/predict --bundle builtin://diamonds --clients 16
    driftwarden load URL --bundle builtin://diamonds --scenario diamonds:carat-shift --rate 200

Rows are the bundle's reference sample, or a drift scenario's stream
(:mod:`driftwarden.bundles.scenarios`: reference rows until ``--drift-at``, shifted rows
after), one record per request, in order and cycled. Closed loop (``--clients`` each
waiting for its answer) by default; ``--rate`` starts requests on a fixed schedule
instead. Prints throughput, latency percentiles and the answers by status; ``--json``
prints the same as one JSON object. Exit status 1 if any request was not answered 200.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from driftwarden.bundles import SCENARIOS, load_bundle, scenario
from driftwarden.bundles.bundle import BundleError
from driftwarden.load.generator import LoadResult, run_load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden load",
        description="Send a bundle's rows (optionally drifted) to a /predict URL; print "
        "throughput and latency percentiles.",
    )
    parser.add_argument("url", help="the /predict URL, e.g. http://127.0.0.1:8000/predict")
    parser.add_argument("--bundle", required=True, help="bundle URI, e.g. builtin://diamonds")
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        metavar="NAME",
        help="drift scenario of the bundle, e.g. diamonds:carat-shift (default: reference rows)",
    )
    parser.add_argument("--rows", type=int, default=2000, help="distinct rows to cycle (2000)")
    parser.add_argument(
        "--drift-at", type=int, default=0, help="scenario rows before the shift starts (0)"
    )
    parser.add_argument("--severity", type=float, default=1.0, help="scenario shift scale (1)")
    parser.add_argument("--seed", type=int, default=0, help="scenario seed (0)")
    parser.add_argument(
        "--clients", type=int, default=8, help="connections; closed-loop clients (8)"
    )
    parser.add_argument(
        "--rate", type=float, help="open loop: requests per second over --clients connections"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to send (10)")
    parser.add_argument(
        "--max-requests", type=int, default=1_000_000, help="stop after this many requests"
    )
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def records(
    bundle_uri: str, scenario_name: str | None, rows: int, drift_at: int, severity: float, seed: int
) -> list[dict[str, Any]]:
    """Return ``rows`` JSON records: reference rows, or the scenario's stream."""
    bundle = load_bundle(bundle_uri)
    if scenario_name is None:
        frame = bundle.reference_features
        frame = frame.iloc[[i % len(frame) for i in range(rows)]]
    else:
        if SCENARIOS[scenario_name].bundle != bundle.name:
            raise ValueError(
                f"scenario {scenario_name!r} drifts bundle {SCENARIOS[scenario_name].bundle!r}, "
                f"not {bundle.name!r}"
            )
        frame, _ = scenario(
            scenario_name, n=rows, drift_at=min(drift_at, rows), seed=seed, severity=severity
        )
    out = []
    specs = bundle.manifest.features
    for row in frame[bundle.feature_names].itertuples(index=False):
        out.append(
            {
                spec.name: float(value) if spec.type == "numeric" else str(value)
                for spec, value in zip(specs, row, strict=True)
            }
        )
    return out


def describe(result: LoadResult, url: str) -> str:
    """Return the human-readable report of one run."""
    s = result.summary()
    shape = (
        f"open loop at {result.rate:g} req/s over {result.clients} connections"
        if result.rate
        else f"{result.clients} closed-loop clients"
    )
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(result.statuses.items())) or "none"
    return "\n".join(
        [
            f"{url}: {shape}, {s['seconds']:.1f} s",
            f"  served (200)   {s['requests']} requests, {s['throughput_rps']} req/s",
            f"  latency ms     p50 {s['p50_ms']}  p90 {s['p90_ms']}  p99 {s['p99_ms']}  "
            f"max {s['max_ms']}",
            f"  answers        {answers}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.clients < 1 or args.rows < 1 or args.duration <= 0 or (args.rate or 1) <= 0:
        print(
            "driftwarden load: --clients, --rows, --duration and --rate must be positive",
            file=sys.stderr,
        )
        return 2
    try:
        rows = records(
            args.bundle, args.scenario, args.rows, args.drift_at, args.severity, args.seed
        )
    except (BundleError, ValueError) as exc:
        print(f"driftwarden load: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_load(
            args.url,
            rows,
            args.clients,
            duration=args.duration,
            max_requests=args.max_requests,
            warmup=args.warmup,
            rate=args.rate,
        )
    except ValueError as exc:
        print(f"driftwarden load: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"driftwarden load: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**result.summary(), "statuses": result.statuses, "rate": args.rate}))
    else:
        print(describe(result, args.url))
    return 0 if result.errors == 0 and result.requests > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
