"""The ``driftwarden`` command: one entry point, one sub-command per component.

Each sub-command lives in its component's module and takes its own ``argv``;
this file only dispatches, so importing it never pulls in torch or kopf.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("driftwarden.bundles.cli", "Train model bundles from package-shipped data."),
    "bundle": (
        "driftwarden.bundles.bundle_cli",
        "Print or verify a bundle's digest; create a model-free bundle.",
    ),
    "serve": ("driftwarden.model_server.__main__", "Run the FastAPI model server."),
    "worker": ("driftwarden.drift_worker.__main__", "Run one drift-worker shard."),
    "operator": ("driftwarden.operator.__main__", "Run the kopf operator."),
    "generate": ("driftwarden.operator.generate", "Regenerate the CRD, chart CRD and manifests."),
    "demo": ("driftwarden.demo.__main__", "Run the local end-to-end demo."),
    "load": (
        "driftwarden.load.__main__",
        "Send a bundle's rows to a /predict URL; report latency.",
    ),
}


def _usage() -> str:
    lines = ["usage: driftwarden <command> [args...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"driftwarden: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
