"""``driftwarden bundle digest URI`` and ``driftwarden bundle verify URI DIGEST``.

``digest`` prints the bundle's digest, the value to pin in ``spec.model.digest``
(:mod:`driftwarden.bundles.integrity` defines it); ``verify`` exits 0 only if the bundle
has the given digest. Neither loads the model: they read the manifest and hash the
files it names, refusing files outside the bundle as loading does. A ``builtin://``
bundle is trained first if it is missing or stale, as loading it would.
"""

from __future__ import annotations

import argparse
import sys

from driftwarden.bundles.bundle import ensure_bundle, read_manifest
from driftwarden.bundles.errors import BundleDigestMismatch, BundleError
from driftwarden.bundles.integrity import bundle_digest, verify_digest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftwarden bundle", description="Inspect model bundles: digests for pinning."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    digest = commands.add_parser(
        "digest", help="print a bundle's digest (sha256:<64 hex>), the value of spec.model.digest"
    )
    digest.add_argument("uri", help="builtin://<name>, file:///abs/path or a directory")
    verify = commands.add_parser("verify", help="exit 0 only if the bundle has DIGEST")
    verify.add_argument("uri", help="builtin://<name>, file:///abs/path or a directory")
    verify.add_argument("digest", help="sha256:<64 hex>")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the sub-command; 0 on success, 1 when ``verify`` finds another digest, 2 on errors."""
    args = _parser().parse_args(argv)
    try:
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
