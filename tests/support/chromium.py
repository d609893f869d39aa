"""Headless Chromium for page tests: screenshots, the parsed DOM, and a check that plots drew.

Chromium comes from hack/install-chromium.sh (run by `make tools`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: run `bash hack/install-chromium.sh` (make tools does)"
        )
    return path


def _run_chromium(args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="driftwarden-chromium-") as profile:
        return subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1400, 2400)) -> Path:
    """Render ``page`` in headless Chromium and save a PNG screenshot at ``png``."""
    proc = _run_chromium(
        [f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", page.resolve().as_uri()]
    )
    assert proc.returncode == 0 and png.is_file(), (
        f"chromium could not screenshot {page}: rc={proc.returncode}\n{proc.stderr[-2000:]}"
    )
    print(f"\nscreenshot of {page.name}: {png}")
    return png


def dom(page: Path) -> str:
    """Return the DOM Chromium builds for ``page`` (after parsing and layout)."""
    proc = _run_chromium(["--dump-dom", page.resolve().as_uri()])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def assert_drawn(png: Path) -> None:
    """Fail unless the screenshot shows a real page: mostly white, with coloured plot lines."""
    image = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    assert image.shape[0] > 500 and image.shape[1] > 500, image.shape
    # The report's three series colours must appear: reference blue, before green, after red.
    for name, rgb in {
        "blue": (76, 114, 176),
        "green": (85, 168, 104),
        "red": (196, 78, 82),
    }.items():
        close = np.all(np.abs(image - np.array(rgb)) <= 30, axis=-1)
        assert close.sum() > 200, f"no {name} plot pixels in {png}: the plots did not render"
