"""Fixtures of the images tier: the three images, built by `make images` (cached by content).

The tier runs containers with podman (root, host network, 127.0.0.1 only), each as the
operator renders its pod: command, env, user, read-only root, dropped capabilities and
volumes come from the real builders' output (tests/support/podman_pods.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE_TAG = os.environ.get("IMAGE_TAG", "dev")
IMAGES = {
    c: f"localhost/driftwarden/{c}:{IMAGE_TAG}"
    for c in ("operator", "model-server", "drift-worker")
}


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """component -> image reference, after `hack/images.sh` (a no-op for an unchanged tree)."""
    for needed in ("podman", "buildah"):
        if shutil.which(needed) is None:
            pytest.fail(
                f"{needed} is not on PATH; the images tier needs it "
                "(Debian: apt-get install podman buildah mmdebstrap)"
            )
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "images.sh"), *IMAGES],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
        env={**os.environ, "DW_ENGINE": "podman", "IMAGE_TAG": IMAGE_TAG},
    )
    if proc.returncode != 0:
        pytest.fail(f"make images failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    print(f"\nimages ready in {time.monotonic() - started:.0f} s\n{proc.stdout}")
    return dict(IMAGES)
