"""The demo's drift report page renders in headless Chromium, with every plot drawn.

Chromium comes from hack/install-chromium.sh (run by `make tools`). The screenshot is
saved under the test's tmp path and its location printed (pytest -s shows it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from driftwarden.demo.report import FeatureVerdict, ReportInput, Timeline, write_report

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


def synthetic_report(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {"carat": rng.gamma(2.0, 0.4, 2000), "cut": rng.choice(["Fair", "Good", "Ideal"], 2000)}
    )
    before = pd.DataFrame(
        {"carat": rng.gamma(2.0, 0.4, 500), "cut": rng.choice(["Fair", "Good", "Ideal"], 500)}
    )
    after = pd.DataFrame(
        {
            "carat": rng.gamma(2.0, 0.6, 500),
            "cut": rng.choice(["Fair", "Good", "Ideal"], 500, p=[0.6, 0.3, 0.1]),
        }
    )
    times = [1000.0 + i for i in range(60)]
    share = [0.0] * 30 + [0.5] * 30
    return write_report(
        ReportInput(
            title="Driftwarden demo: test",
            scenario="diamonds:carat-shift",
            scenario_description="stones resampled toward larger carats",
            reference=reference,
            before=before,
            after=after,
            verdicts=[
                FeatureVerdict("carat", "numeric", True, "ks", 1e-9, 2300, 4.2),
                FeatureVerdict("cut", "categorical", False, "chi2", 0.4),
            ],
            timeline=Timeline(times, share, 1030.0, 1036.0, 1038.0, 0.3),
            links=[("Prometheus", "http://127.0.0.1:9090")],
        ),
        directory,
    )


def test_report_page_is_self_contained(tmp_path):
    page = synthetic_report(tmp_path / "report")
    text = page.read_text()
    assert "http://" not in text.replace("http://127.0.0.1:9090", ""), "the page must load nothing"
    assert text.count('src="data:image/png;base64,') == 3  # two features and the timeline
    assert "Features that drifted (1 of 2)" in text and "<b>carat</b>" in text


def test_report_page_renders_in_headless_chromium(tmp_path):
    page = synthetic_report(tmp_path / "report")
    rendered = dom(page)
    assert 'data-feature="carat"' in rendered and 'data-feature="cut"' in rendered
    assert (
        "DRIFT, first flagged 4.2 s after the drift point (row 2300), last ks p=1e-09" in rendered
    )
    assert "no drift detected (last chi2 p=0.4)" in rendered
    png = screenshot(page, tmp_path / "report.png")
    assert_drawn(png)
