"""Run benchmarks: ``python -m bench [name ...]``.

Every folder ``bench/<name>/`` with a ``run.py`` defining ``main() -> dict`` is a
benchmark. Each compares against a named baseline measured in the same run,
reports ratios, and writes ``bench/results/<name>.json`` itself.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.parent.name for p in HERE.glob("*/run.py"))


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== bench/{name}", flush=True)
        started = time.perf_counter()
        importlib.import_module(f"bench.{name}.run").main()
        print(f"== bench/{name} done in {time.perf_counter() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
