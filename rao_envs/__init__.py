"""rao_envs: gym-style environments for training recursive (self-delegating) LLM agents.

``import rao_envs`` registers every task with Gymnasium as ``rao_envs/<Name>-v<N>`` (and
``rao_envs/<Name>Discrete-v<N>`` for a task with a discrete adapter); ``rao-envs list`` shows them::

    import gymnasium as gym, rao_envs
    env = gym.make("rao_envs/<Name>-v0", difficulty="medium")
    par = rao_envs.parallel_env("<Name>-v0")   # PettingZoo view

The core (this package) knows no task: tasks live in ``rao_envs.envs`` (the ``envs/`` folder)
or in plugins of the ``rao_envs.tasks`` entry-point group.
"""

from __future__ import annotations

from typing import Any

from rao_envs.errors import ConfigError, InfraError, RaoEnvsError, ToolError, UnknownTaskError
from rao_envs.registration import make_engine, register_task, task_ids, task_spec
from rao_envs.task import NodeContext, Task, TaskInstance, tool
from rao_envs.tree import TreeEngine
from rao_envs.types import Action, EpisodeTree, Limits, Node, NodeStatus, StateScope

__version__ = "0.1.0"


def make(id: str, **kwargs: Any):
    """``gymnasium.make`` for a rao_envs task id (``Name-v0`` or ``rao_envs/Name-v0``)."""
    import gymnasium

    spec = task_spec(id)
    return gymnasium.make(f"rao_envs/{spec.id}", **kwargs)


def parallel_env(id: str, **kwargs: Any):
    """The PettingZoo ``ParallelEnv`` view of task ``id`` (kwargs as in ``make``)."""
    from rao_envs.views.parallel import RaoParallelEnv

    return RaoParallelEnv(task_spec(id).id, **kwargs)


import rao_envs.envs  # noqa: E402,F401  (registers the built-in tasks)
from rao_envs.registration import _load_plugins  # noqa: E402

_load_plugins()  # tasks from the `rao_envs.tasks` entry-point group, so gymnasium.make sees them

__all__ = [
    "Action", "ConfigError", "EpisodeTree", "InfraError", "Limits", "Node", "NodeContext", "NodeStatus",
    "RaoEnvsError", "StateScope", "Task", "TaskInstance", "ToolError", "TreeEngine", "UnknownTaskError",
    "make", "make_engine", "parallel_env", "register_task", "task_ids", "task_spec", "tool",
]
