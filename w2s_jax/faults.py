"""A testing hook: kill the process at a named point, so crash-safety tests can interrupt a run exactly there.

Set `W2S_FAULT=kill:<point>:<key>` (several, comma-separated). The points are

* `after_step:<step>` or `after_step:<desc>:<step>`: a train step is done, before its checkpoint is written;
* `during_save:<step>` or `during_save:<desc>:<step>`: a checkpoint write has started and is in flight;
* `after_model:<role>`: a model of the experiment is trained and scored (between pipeline stages).

`kill` sends SIGKILL to this process (nothing is flushed or cleaned up, as when a cluster kills a job). Unset,
every point is a no-op. Never set this outside tests.
"""
from __future__ import annotations

import os
import signal


def point(name: str, *keys) -> None:
    """Called by the code at fault point `name`; `keys` say where (any one of them may match the spec)."""
    spec = os.environ.get("W2S_FAULT")
    if not spec:
        return
    for item in spec.split(","):
        action, _, rest = item.strip().partition(":")
        where, _, key = rest.partition(":")
        if where == name and key in {str(k) for k in keys} and action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
