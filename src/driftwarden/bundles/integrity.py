"""Bundle integrity: the files a bundle is made of, confined to its directory, and its digest.

The digest of a bundle is ``sha256:`` followed by the hex SHA-256 of this listing::

    <hex sha256 of the file's bytes>  <relative path>\\n      (two spaces; one line per file)

with one line per file of the bundle, sorted by relative path (byte order): the manifest
``bundle.json`` and the files it names (``model.file``, ``reference.file``, and a
model-free bundle's ``schema`` instead of a model file). Nothing
else in the directory counts, and nothing else is loaded. It is what::

    cd BUNDLE && sha256sum $(printf '%s\\n' bundle.json model.joblib reference.csv | LC_ALL=C sort) | sha256sum

prints (the last line, with the bundle's own file names), so a digest can be checked
without Driftwarden.
``driftwarden bundle digest <uri>`` prints it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath

from driftwarden.bundles.errors import BundleDigestMismatch, BundleError, BundleIntegrityError
from driftwarden.bundles.manifest import MANIFEST_FILE, BundleManifest
from driftwarden.common.spec import BUNDLE_DIGEST_PATTERN

DIGEST_PATTERN = BUNDLE_DIGEST_PATTERN
# A bundle's file names: relative, plain characters, no '..' (checked apart): a name that
# sha256sum prints without escaping, so the digest listing is the same by hand.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
_CHUNK = 1 << 20


def confined(directory: Path, name: str, what: str) -> Path:
    """Return ``directory/name`` resolved; raise if ``name`` leaves the bundle directory.

    ``name`` must be a plain relative path (no absolute path, no ``..``), and what it
    resolves to, symbolic links followed, must lie inside ``directory``.
    """
    parts = PurePosixPath(name).parts
    if not _NAME.match(name) or ".." in parts:
        raise BundleIntegrityError(
            f"bundle {directory}: {what} {name!r} is not a plain relative path inside the "
            "bundle (letters, digits, '.', '_', '-' and '/'; no absolute path, no '..'); "
            "refusing to load it"
        )
    root = directory.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise BundleIntegrityError(
            f"bundle {directory}: {what} {name!r} resolves to {path}, outside the bundle "
            f"directory {root} (a symbolic link); refusing to load it"
        )
    return path


def bundle_files(directory: Path, manifest: BundleManifest) -> dict[str, str]:
    """Return ``{relative path: what it is}`` of the files that make the bundle, sorted."""
    names = {MANIFEST_FILE: "manifest", manifest.reference.file: "reference sample"}
    if manifest.model is not None:
        names[manifest.model.file] = "model file"
    if manifest.schema_file is not None:
        names[manifest.schema_file] = "feature schema"
    for name, what in names.items():
        confined(directory, name, what)
    return {name: names[name] for name in sorted(names, key=lambda n: n.encode())}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_digest(directory: Path, manifest: BundleManifest) -> str:
    """Return the bundle's digest, ``sha256:<64 hex>`` (module docstring)."""
    listing = []
    for name, what in bundle_files(directory, manifest).items():
        path = confined(directory, name, what)
        try:
            listing.append(f"{_file_sha256(path)}  {name}\n")
        except (FileNotFoundError, IsADirectoryError):
            raise BundleError(
                f"bundle {directory}: {what} {name!r} named in {MANIFEST_FILE} is missing; "
                "retrain the bundle (driftwarden train) or restore the file"
            ) from None
    return "sha256:" + hashlib.sha256("".join(listing).encode()).hexdigest()


def check_digest_format(digest: str) -> None:
    """Raise :class:`BundleIntegrityError` unless ``digest`` is ``sha256:<64 lowercase hex>``."""
    if not re.match(DIGEST_PATTERN, digest):
        raise BundleIntegrityError(
            f"bundle digest {digest!r} is malformed: expected 'sha256:' and 64 lowercase hex "
            "digits (print a bundle's with `driftwarden bundle digest <uri>`)"
        )


def verify_digest(uri: str, actual: str, expected: str) -> None:
    """Raise :class:`BundleIntegrityError` naming both digests unless they are equal."""
    check_digest_format(expected)
    if actual != expected:
        raise BundleDigestMismatch(
            f"bundle {uri} has digest {actual}, but {expected} is pinned "
            "(spec.model.digest); refusing to load it. If the bundle changed on purpose, pin "
            "the new digest (`driftwarden bundle digest <uri>` prints it); otherwise restore "
            "the bundle"
        )
