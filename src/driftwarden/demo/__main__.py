"""``driftwarden demo``: the whole pipeline on this machine, with traffic that drifts halfway.

Trains the diamonds bundle (first run only), starts the model server, three drift-worker
shards, Prometheus, Alertmanager and a webhook receiver as local processes, streams
traffic whose second half comes from a shifted world, and prints which features
drifted, when the detectors flagged them, when the alert fired and when it reached
the webhook, and where to look: Prometheus, Alertmanager and a drift report page.

Without ``--short`` (or ``--exit``) the pipeline keeps running after the summary so
Prometheus can be explored; Ctrl-C stops everything and leaves nothing running.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from urllib.parse import quote

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from driftwarden.alerts.rules import R_FEATURE_DRIFT_SHARE
from driftwarden.bundles.bundle import BundleError
from driftwarden.bundles.scenarios import SCENARIOS
from driftwarden.demo.plan import MONITOR_NAME, DemoPlan, full_plan, short_plan
from driftwarden.demo.run import (
    DemoSummary,
    PipelineWatch,
    Traffic,
    build_report,
    prepare_bundle,
    stream_traffic,
    wait_for_alert,
)
from driftwarden.testing.local.processes import ProcessError
from driftwarden.testing.local.stack import LocalStack
from driftwarden.testing.tools import ToolNotInstalledError

SUMMARY_FILE = "summary.json"
EXIT_FAILED = 1
EXIT_NO_ALERT = 3
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden demo",
        description="Run Driftwarden end to end on this machine (no cluster): model server, "
        "3 drift-worker shards, Prometheus, Alertmanager, a webhook receiver, and traffic "
        "that drifts halfway. Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="a ~30 s run (4,000 rows) that exits after the summary (used by the e2e test)",
    )
    parser.add_argument(
        "--exit",
        action="store_true",
        help="exit after the summary instead of keeping the pipeline up for exploring",
    )
    diamonds = sorted(
        s for s, info in SCENARIOS.items() if info.bundle == "diamonds" and info.kind == "data"
    )
    parser.add_argument(
        "--scenario",
        default=None,
        choices=diamonds,
        help="which drift to inject (default: diamonds:carat-shift)",
    )
    parser.add_argument("--seed", type=int, default=None, help="traffic seed (default: 7)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".run/demo"),
        help="where the report page and summary.json go (default: .run/demo)",
    )
    parser.add_argument(
        "--model-url",
        default=None,
        metavar="URL",
        help="only send the drifting traffic to an existing model server (e.g. one "
        "port-forwarded from a cluster: http://127.0.0.1:8000); starts nothing locally",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the demo does")
    return parser


def _plan(args: argparse.Namespace) -> DemoPlan:
    overrides = {}
    if args.scenario:
        overrides["scenario"] = args.scenario
    if args.seed is not None:
        overrides["seed"] = args.seed
    return short_plan(**overrides) if args.short else full_plan(**overrides)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} s"


def print_summary(console: Console, summary: DemoSummary, *, stays_up: bool) -> None:
    """Print what happened, in the order it happened, and where to look."""
    drift_at = summary.drift_started_at
    console.rule("[bold]Driftwarden demo: summary")
    console.print(
        f"Scenario [bold]{summary.scenario}[/bold]: {summary.scenario_description}\n"
        f"Traffic: {summary.rows_sent} rows; drift injected from row {summary.drift_at_row}."
    )
    drifted = ", ".join(summary.drifted_features) or "none"
    console.print(
        f"Features that drifted ({len(summary.drifted_features)} of {len(summary.features)}): "
        f"[bold red]{drifted}[/bold red]"
    )
    table = Table(
        title="When the detectors flagged each stream (times relative to the drift point)"
    )
    for column in ("stream", "first flagged", "rows sent by then"):
        table.add_column(column)
    for event in sorted(summary.stream_events, key=lambda e: e.at):
        table.add_row(event.stream, _seconds(event.seconds_after_drift), str(event.rows_sent))
    console.print(table)
    alert = summary.alert

    def rel(t: float | None) -> str:
        return "never" if t is None else _seconds(t - drift_at if drift_at else None)

    console.print(
        f"Alert [bold]{alert.name}[/bold]: pending {rel(alert.pending_at)}, "
        f"firing {rel(alert.firing_at)}, received by the webhook {rel(alert.received_at)}"
        + (f" ({alert.receiver})" if alert.receiver else "")
    )
    console.print(
        "Where to look:\n"
        f"  Prometheus     {summary.prometheus_url}/graph?g0.expr={quote(R_FEATURE_DRIFT_SHARE)}\n"
        f"  Alertmanager   {summary.alertmanager_url}\n"
        f"  Drift report   {summary.report_path}\n"
        f"  Process logs   {summary.logs_dir}"
    )
    if not stays_up:
        console.print(
            "[dim]Prometheus, Alertmanager and the logs go away when the demo exits (now); "
            "run without --short/--exit to keep them up, DRIFTWARDEN_KEEP_RUN_DIR=1 to keep "
            "the logs.[/dim]"
        )


def run_traffic_only(args: argparse.Namespace, console: Console) -> int:
    """Send the plan's drifting traffic to ``--model-url``; return 0 once it is all sent."""
    plan = _plan(args)
    console.print(
        f"Sending {plan.rows} rows of {plan.scenario} traffic to {args.model_url} at "
        f"{plan.rows_per_second:g} rows/s; drift from row {plan.drift_at}. Ctrl-C stops."
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rows"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("traffic", total=plan.rows)
        traffic = stream_traffic(
            args.model_url,
            plan,
            lambda t: progress.update(
                task,
                completed=t.rows_sent,
                description="traffic (drifting)"
                if t.rows_sent > plan.drift_at
                else "traffic (reference)",
            ),
        )
    console.print(
        f"Sent {traffic.rows_sent} rows in {time.time() - traffic.started_at:.0f} s; the drift "
        "started at row " + str(plan.drift_at) + ". Watch the monitor's Grafana dashboard and "
        "`kubectl get driftmonitors`."
    )
    return 0


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the demo; return its exit status (0: alert received, 3: it never arrived)."""
    plan = _plan(args)
    out_dir = args.out.expanduser().resolve()
    stay_up = not (args.short or args.exit)
    console.print(
        f"[bold]Driftwarden demo[/bold]: {plan.rows} rows of {plan.bundle} traffic at "
        f"{plan.rows_per_second:g} rows/s; drift ({plan.scenario}) from row {plan.drift_at}."
    )
    bundle = prepare_bundle(plan.bundle, lambda msg: console.print(f"  {msg}"))
    spec = plan.monitor_spec()
    console.print(
        f"  starting the pipeline: model server, {plan.shards} drift-worker shards, "
        "Prometheus, Alertmanager, webhook receiver"
    )
    started = time.monotonic()
    with LocalStack(name=MONITOR_NAME, spec=spec) as stack:
        console.print(
            f"  pipeline up in {time.monotonic() - started:.1f} s "
            f"(Prometheus {stack.prometheus_url}, logs {stack.log_dir})"
        )
        watch = PipelineWatch(stack, plan)
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} rows"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        ) as progress:
            task = progress.add_task("traffic", total=plan.rows, status="")

            def phase(rows: int) -> str:
                return "traffic (drifting)" if rows > plan.drift_at else "traffic (reference)"

            def on_batch(traffic: Traffic) -> None:
                watch.rows_sent = traffic.rows_sent
                watch.drift_started_at = traffic.drift_started_at
                progress.update(
                    task, completed=traffic.rows_sent, description=phase(traffic.rows_sent)
                )

            def on_wait(traffic: Traffic) -> None:
                watch.poll()
                progress.update(task, status=watch.status_line())

            traffic = stream_traffic(stack.model_url, plan, on_batch, on_wait)
            traffic_ended = time.time()
            progress.update(task, description="waiting for the alert")
            received = wait_for_alert(
                watch,
                plan.alert_timeout_seconds,
                lambda status: progress.update(task, status=status),
            )
        report = build_report(
            stack, bundle, plan, watch, traffic.features, traffic.started_at, out_dir
        )
        summary = DemoSummary(
            scenario=plan.scenario,
            scenario_description=SCENARIOS[plan.scenario].description,
            rows_sent=watch.rows_sent,
            drift_at_row=plan.drift_at,
            traffic_started_at=traffic.started_at,
            drift_started_at=traffic.drift_started_at,
            traffic_ended_at=traffic_ended,
            drifted_features=watch.drifting_features(),
            features=list(bundle.feature_names),
            stream_events=sorted(watch.events.values(), key=lambda e: e.at),
            alert=watch.alert,
            prometheus_url=stack.prometheus_url,
            alertmanager_url=stack.alertmanager_url,
            model_url=stack.model_url,
            report_path=str(report),
            logs_dir=str(stack.log_dir),
        )
        (out_dir / SUMMARY_FILE).write_text(summary.to_json(), encoding="utf-8")
        print_summary(console, summary, stays_up=stay_up)
        if not received:
            console.print(
                f"[red]The {watch.alert.name} alert did not reach the webhook within "
                f"{plan.alert_timeout_seconds:.0f} s after the traffic ended.[/red] "
                f"Look at the process logs in {stack.log_dir} (they are deleted on exit; "
                "set DRIFTWARDEN_KEEP_RUN_DIR=1 to keep them)."
            )
        if stay_up:
            console.print(
                "\nThe pipeline stays up for exploring. [bold]Ctrl-C[/bold] stops everything."
            )
            while True:
                time.sleep(3600)
    console.print("Stopped: every process the demo started has exited.")
    return 0 if received else EXIT_NO_ALERT


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``driftwarden demo``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    console = Console()
    try:
        if args.model_url:
            return run_traffic_only(args, console)
        return run(args, console)
    except KeyboardInterrupt:
        # LocalStack.__exit__ has already stopped every process by the time we get here.
        console.print("\nInterrupted: every process the demo started has been stopped.")
        return EXIT_INTERRUPTED
    except (ProcessError, ToolNotInstalledError, BundleError, RuntimeError) as exc:
        # Everything started is stopped already; say what broke and how to dig further.
        console.print(f"[red]driftwarden demo failed:[/red] {exc}")
        console.print(
            "Every process the demo started has been stopped. To keep their logs for a "
            "look, re-run with DRIFTWARDEN_KEEP_RUN_DIR=1 (and -v for the demo's own log)."
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
