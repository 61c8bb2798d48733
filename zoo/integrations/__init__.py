"""Scale-out on existing engines: serving replicas on Ray Serve (``ray_serve``), batch scoring on Ray Data (``ray_data``).

Ray is an optional extra (``pip install 'obert-zoo[ray]'``) and is imported only inside these modules' functions,
so ``zoo --help`` and ``zoo list`` never pay for it. Both reuse what one machine does (the Starlette app and
batcher of ``zoo serve``, the ``Scorer`` of ``zoo.batch``), each worker loading its model through ``zoo.prepare``
with as many engine threads as Ray gave it CPUs.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from zoo.errors import ZooError

LOCAL = ("local", "")


def ray_module() -> Any:
    """``ray``, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ZooError("this needs Ray, which is not installed", "pip install 'obert-zoo[ray]'") from None
    return ray


def connect(address: str | None) -> Any:
    """Join the Ray cluster at ``address`` ("auto": the one this machine belongs to, as Ray finds it; host:port or
    ray://...: that one; None: the one in ``RAY_ADDRESS`` when set, else a new one in this process, as "local" does);
    a cluster that cannot be reached is a one-line error."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or "local"  # Ray's own variable; never a stale /tmp/ray/ray_current_cluster
    local = {"include_dashboard": False} if address in LOCAL else {}
    try:
        ray.init(address=address or "local", logging_level=logging.ERROR, log_to_driver=False, **local)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ZooError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0][:300]}",
                       "start one with `ray start --head`, or pass --ray local to run one in this process") from None
    return ray


def assigned_threads(default: int = 1) -> int:
    """The CPUs Ray gave this worker (actor or replica): the engine threads to use."""
    ray = ray_module()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    return max(1, int(cpus)) if cpus else default
