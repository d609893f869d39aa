"""The generated rules pass `promtool check rules` and the `promtool test rules` suites.

The suites in tests/promtool/ fix the monitor they expect (see its README); this test
renders the rules for that monitor with the real builder and runs the pinned promtool,
so a change in an expression, a threshold or an annotation shows up as a failing case.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from driftwarden.alerts.rules import ALERT_NAMES, build_rule_groups
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.testing.tools import tool_path

PROMTOOL_DIR = Path(__file__).resolve().parents[1] / "promtool"
SUITES = sorted(PROMTOOL_DIR.glob("*.test.yml"))

# The monitor the suites are written for (tests/promtool/README.md).
SUITE_SPEC = DriftMonitorSpec.model_validate(
    {
        "model": {"bundle": "builtin://diamonds"},
        "workers": {"shards": 3},
        "detectors": {"minSamples": 200},
        "alerts": {"for": "5m", "dataDriftShare": 0.3, "severity": "warning"},
    }
)


def _write_rules(folder: Path, groups: list[dict]) -> Path:
    path = folder / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool_path("promtool")), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("promtool")
    _write_rules(folder, build_rule_groups("diamonds", "ml", SUITE_SPEC, interval="1m"))
    for suite in SUITES:
        shutil.copy(suite, folder / suite.name)
    return folder


def test_rules_pass_promtool_check(suite_dir: Path) -> None:
    result = _promtool("check", "rules", "rules.yml", cwd=suite_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("suite", [s.name for s in SUITES])
def test_promtool_suite(suite_dir: Path, suite: str) -> None:
    result = _promtool("test", "rules", suite, cwd=suite_dir)
    assert result.returncode == 0, (
        f"promtool test rules {suite} failed:\n{result.stdout}\n{result.stderr}"
    )


def test_every_alert_has_a_firing_case() -> None:
    fired: set[str] = set()
    for suite in SUITES:
        for case in yaml.safe_load(suite.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    assert set(ALERT_NAMES) <= fired, (
        f"alerts without a promtool firing case: {set(ALERT_NAMES) - fired}"
    )


def test_suites_fail_when_the_threshold_changes(tmp_path: Path) -> None:
    """The data-drift suite is sensitive to spec.alerts.dataDriftShare (guards against vacuous cases)."""
    strict = SUITE_SPEC.model_copy(
        update={"alerts": SUITE_SPEC.alerts.model_copy(update={"data_drift_share": 0.75})}
    )
    _write_rules(tmp_path, build_rule_groups("diamonds", "ml", strict, interval="1m"))
    shutil.copy(PROMTOOL_DIR / "data_drift.test.yml", tmp_path)
    result = _promtool("test", "rules", "data_drift.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "DriftwardenDataDrift" in result.stdout + result.stderr


def test_two_monitors_share_one_rule_file(tmp_path: Path) -> None:
    """Group names are unique per monitor, so one Prometheus can load every monitor's rules."""
    groups = (
        build_rule_groups("diamonds", "ml", SUITE_SPEC)
        + build_rule_groups("diamonds", "staging", SUITE_SPEC)
        + build_rule_groups("iris", "ml", SUITE_SPEC)
    )
    _write_rules(tmp_path, groups)
    result = _promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
