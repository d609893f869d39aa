"""Errors shared by the components."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """Configuration that cannot work; the message names the setting and the fix."""
