"""The errors of loading a bundle (one module, so every bundle module can raise them)."""

from __future__ import annotations


class BundleError(Exception):
    """A bundle URI or directory that cannot be used; the message says why and what to do."""


class BundleIntegrityError(BundleError):
    """A bundle that must not be loaded: a file outside it, or a digest that differs."""


class BundleDigestMismatch(BundleIntegrityError):
    """A bundle whose digest differs from the pinned one (the message names both)."""
