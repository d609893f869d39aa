"""The local stack: the Driftwarden pipeline as processes on 127.0.0.1, no cluster.

Used by the e2e tier and ``make demo``. See :class:`LocalStack`.
"""

from driftwarden.testing.local.config import (
    LocalSecrets,
    render_alertmanager_config,
    render_prometheus_config,
)
from driftwarden.testing.local.processes import (
    ManagedProcess,
    ProcessError,
    free_port,
    free_port_block,
)
from driftwarden.testing.local.receiver import AlertReceiver, Notification
from driftwarden.testing.local.stack import ActiveAlert, LocalStack, Timing, local_stack

__all__ = [
    "ActiveAlert",
    "AlertReceiver",
    "LocalSecrets",
    "LocalStack",
    "ManagedProcess",
    "Notification",
    "ProcessError",
    "Timing",
    "free_port",
    "free_port_block",
    "local_stack",
    "render_alertmanager_config",
    "render_prometheus_config",
]
