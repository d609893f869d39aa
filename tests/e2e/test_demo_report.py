"""The demo's drift report page renders in headless Chromium, with every plot drawn.

Chromium comes from hack/install-chromium.sh (run by `make tools`). The screenshot is
saved under the test's tmp path and its location printed (pytest -s shows it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from driftwarden.demo.report import FeatureVerdict, ReportInput, Timeline, write_report
from support.chromium import assert_drawn, dom, screenshot


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
