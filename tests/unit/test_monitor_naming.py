"""One monitor naming (issue 13, item 8): metrics say monitor="<name>", rules do not rename.

The namespace is the scrape target's label; the worker, the sender and the credential
check export the monitor's name, and the generated rules select it as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from driftwarden.alerts.rules import build_rule_groups
from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DetectorConfig, DetectorType, DriftMonitorSpec
from driftwarden.detectors.factory import make_detector
from driftwarden.drift_worker.metrics import WorkerCollector
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec

pytestmark = pytest.mark.unit


def test_the_worker_exports_the_monitor_name_not_its_key(tmp_path: Path) -> None:
    key, stream = "shop/diamonds", names.feature_stream("carat")
    config = DetectorConfig(type=DetectorType.MIXTURE_CUSUM)
    ref = np.random.default_rng(0).normal(size=300)
    plan = MonitorPlan(
        key,
        {stream: StreamSpec(stream, "numeric", ref)},
        lambda s: {"mixtureCusum": make_detector(config, reference=s.reference)},
    )
    worker = ShardWorker(
        plan, 0, shard_map=ShardMap(monitor=key, epoch=1, shards=1), data_dir=tmp_path
    )
    labels = {
        sample.labels[names.LABEL_MONITOR]
        for family in WorkerCollector(worker, {"": 1}).collect()
        for sample in family.samples
        if names.LABEL_MONITOR in sample.labels
    }
    worker.close()
    assert labels == {"diamonds"}
    assert names.monitor_name(key) == "diamonds" and names.monitor_name("diamonds") == "diamonds"


def test_rules_select_the_name_and_rename_nothing() -> None:
    spec = DriftMonitorSpec.model_validate({"model": {"bundle": "builtin://diamonds"}})
    text = json.dumps(build_rule_groups("diamonds", "shop", spec))
    assert "label_replace" not in text
    assert "monitor=~" not in text and '\\"shop/diamonds\\"' not in text
    assert 'monitor=\\"diamonds\\"' in text
