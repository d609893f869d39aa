"""``driftwarden train [names...] [--out DIR] [--force]``: train the built-in bundles.

Trains from data shipped inside installed packages only, with fixed seeds, and
shows a progress display; prints a summary table of each bundle's held-out metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from driftwarden.bundles.bundle import bundles_dir, load_bundle_dir
from driftwarden.bundles.train import BUILTIN, train_bundle


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden train",
        description="Train built-in model bundles from package-shipped data (no downloads).",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"bundles to train (default: all of {', '.join(BUILTIN)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory to write <out>/<name>/ into (default: $DRIFTWARDEN_BUNDLES_DIR "
        "or ~/.cache/driftwarden/bundles)",
    )
    parser.add_argument(
        "--force", action="store_true", help="retrain bundles that already exist in --out"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train the requested bundles; return 0 on success, 2 on a usage error, 1 on failure."""
    args = _parser().parse_args(argv)
    names = args.names or list(BUILTIN)
    unknown = [n for n in names if n not in BUILTIN]
    console = Console(stderr=True)
    if unknown:
        console.print(
            f"[red]driftwarden train: unknown bundle(s) {unknown}; "
            f"choose from {', '.join(BUILTIN)}[/red]"
        )
        return 2
    out = (args.out or bundles_dir()).expanduser().resolve()
    summary = Table(title=f"bundles in {out}")
    for column in ("bundle", "task", "seconds", "held-out metrics"):
        summary.add_column(column)
    failed = False
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as progress:
        overall = progress.add_task("training", total=len(names))
        for name in names:
            progress.update(overall, description=f"training [bold]{name}[/bold]")
            started = time.perf_counter()
            try:
                directory = train_bundle(name, out, force=args.force)
                manifest = load_bundle_dir(directory).manifest
            except Exception as exc:
                failed = True
                progress.console.print(f"[red]{name}: training failed: {exc}[/red]")
                summary.add_row(name, "-", f"{time.perf_counter() - started:.1f}", "FAILED")
            else:
                metrics = ", ".join(f"{k}={v:.4g}" for k, v in manifest.metrics.items())
                summary.add_row(
                    name, manifest.task, f"{time.perf_counter() - started:.1f}", metrics
                )
            progress.advance(overall)
    Console().print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
