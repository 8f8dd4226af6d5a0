"""Scale-out on Ray: distributed tree rollouts and sandbox pools (extra ``ray``).

* :class:`RayRolloutDriver` / :func:`ray_rollout` (also ``rollout(..., backend="ray", address=...)``
  and ``rao-envs rollout --ray ADDRESS``): rollout workers as Ray actors running the local async
  driver, one fair cluster-wide cap, trees streamed back as they finish, re-run when a worker or
  node dies (:mod:`rao_envs.distributed.driver`).
* :class:`BalancedPolicy`: one model behind several OpenAI-compatible base URLs; a dead endpoint
  leaves the balance and is probed until it is back (no Ray needed).
* :class:`RaySandboxPool`: sandbox pools as Ray actors placed by resources, a tree's sessions on
  one actor, a dead actor's nodes ``infra_error`` and the actor replaced.
* :class:`LocalCluster`: a real head + nodes on this machine (tests, benchmarks).

Importing this package does not import Ray; each entry point does when it is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BalancedPolicy", "LocalCluster", "RayRolloutDriver", "RaySandboxPool", "TreeResult", "connect", "ray_rollout",
           "require_ray"]

_WHERE = {
    "BalancedPolicy": "endpoints",
    "LocalCluster": "cluster",
    "RayRolloutDriver": "driver",
    "TreeResult": "driver",
    "connect": "driver",
    "ray_rollout": "driver",
    "require_ray": "driver",
    "RaySandboxPool": "sandbox",
}


def __getattr__(name: str) -> Any:
    """Load the public names lazily (none of these modules imports Ray at module level either)."""
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"rao_envs.distributed.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'rao_envs.distributed' has no attribute {name!r}")
