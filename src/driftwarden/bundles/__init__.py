"""Model bundles: a model, its feature schema, a reference sample and training metrics.

``load_bundle(uri)`` is the entry point; ``scenario(...)`` draws drift streams.
"""

from driftwarden.bundles.bundle import Bundle, bundles_dir, load_bundle
from driftwarden.bundles.errors import BundleError, BundleIntegrityError
from driftwarden.bundles.manifest import BundleManifest, FeatureSpec
from driftwarden.bundles.scenarios import SCENARIOS, scenario

__all__ = [
    "SCENARIOS",
    "Bundle",
    "BundleError",
    "BundleIntegrityError",
    "BundleManifest",
    "FeatureSpec",
    "bundles_dir",
    "load_bundle",
    "scenario",
]
