"""Schemathesis hooks for the model server's fuzz test (``SCHEMATHESIS_HOOKS=<this file>``).

A ``/feedback`` item's optional ``timestamp`` must lie in a window that moves with the
clock (now minus labelJoin.maxDelay to now plus the allowed skew), which no static
schema bound can state, so the schema publishes it as a plain number and says the rule
in its description. Generated timestamps are moved to the present just before each call:
the fuzzer still exercises the field's type (a string, a boolean or null stay as
generated and must be refused), and the window itself is tested in
``tests/unit/test_server_limits.py``.
"""

from __future__ import annotations

import time
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.path != "/feedback":
        return
    body = case.body
    for item in body if isinstance(body, list) else [body]:
        stamp = item.get("timestamp") if isinstance(item, dict) else None
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            item["timestamp"] = time.time()
