"""``driftwarden bundle digest|verify|create``: digests for pinning, model-free bundles.

``digest`` prints the bundle's digest, the value to pin in ``spec.model.digest``
(:mod:`driftwarden.bundles.integrity` defines it); ``verify`` exits 0 only if the bundle
has the given digest. Neither loads the model: they read the manifest and hash the
files it names, refusing files outside the bundle as loading does. A ``builtin://``
bundle is trained first if it is missing or stale, as loading it would.

``create --reference FILE --out DIR`` writes a model-free bundle (for a model served
elsewhere) with the schema inferred from the reference file, and prints its digest
(:mod:`driftwarden.bundles.create`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from driftwarden.bundles.bundle import ensure_bundle, load_bundle_dir, read_manifest
from driftwarden.bundles.create import create_model_free
from driftwarden.bundles.errors import BundleDigestMismatch, BundleError
from driftwarden.bundles.integrity import bundle_digest, verify_digest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden bundle",
        description="Inspect bundles (digests for pinning); create model-free bundles.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    digest = commands.add_parser(
        "digest", help="print a bundle's digest (sha256:<64 hex>), the value of spec.model.digest"
    )
    digest.add_argument("uri", help="builtin://<name>, file:///abs/path or a directory")
    verify = commands.add_parser("verify", help="exit 0 only if the bundle has DIGEST")
    verify.add_argument("uri", help="builtin://<name>, file:///abs/path or a directory")
    verify.add_argument("digest", help="sha256:<64 hex>")
    create = commands.add_parser(
        "create",
        help="write a model-free bundle (model served elsewhere) from a reference sample",
        description="Infer the feature schema of a reference sample and write a model-free "
        "bundle: bundle.json, schema.json (editable; checked again on load) and "
        "reference.csv. Prints the digest.",
    )
    create.add_argument(
        "--reference",
        type=Path,
        required=True,
        help="reference sample: .csv, or .parquet (needs pyarrow)",
    )
    create.add_argument("--out", type=Path, required=True, help="new (or empty) bundle directory")
    create.add_argument("--name", help="bundle name (default: from --out; [a-z0-9-])")
    create.add_argument(
        "--categorical",
        nargs="+",
        default=[],
        metavar="COL",
        help="treat these columns as categorical (non-numeric columns always are)",
    )
    create.add_argument(
        "--prediction", metavar="COL", help="column holding the model's predictions"
    )
    create.add_argument(
        "--prediction-type",
        choices=("regression", "classification"),
        help="numbers (regression) or class labels (classification); with --prediction",
    )
    create.add_argument(
        "--label", metavar="COL", help="column holding true labels (needs --prediction)"
    )
    create.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a training metric to record (repeatable), e.g. --metric rmse=0.31",
    )
    create.add_argument("--description", default="", help="what the bundle watches")
    return parser


def _metrics(pairs: list[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            metrics[key] = float(value)
        except ValueError:
            raise BundleError(f"--metric {pair!r}: expected NAME=NUMBER") from None
    return metrics


def _create(args: argparse.Namespace) -> int:
    created = create_model_free(
        args.reference,
        args.out,
        name=args.name,
        categorical=args.categorical,
        prediction=args.prediction,
        prediction_type=args.prediction_type,
        label=args.label,
        metrics=_metrics(args.metric),
        description=args.description,
    )
    load_bundle_dir(created.directory)  # what was written reads back
    kinds = [f"{f.name} ({f.type})" for f in created.manifest.features]
    print(
        f"wrote model-free bundle {created.manifest.name!r} to {created.directory}: "
        f"{len(kinds)} features: {', '.join(kinds)}",
        file=sys.stderr,
    )
    print(created.digest)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the sub-command; 0 on success, 1 when ``verify`` finds another digest, 2 on errors."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "create":
            return _create(args)
        directory = ensure_bundle(args.uri)
        actual = bundle_digest(directory, read_manifest(directory))
        if args.command == "digest":
            print(actual)
            return 0
        verify_digest(args.uri, actual, args.digest)
    except BundleError as exc:
        print(f"driftwarden bundle {args.command}: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, BundleDigestMismatch) else 2
    print(f"{args.uri}: {actual} (matches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
