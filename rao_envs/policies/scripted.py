"""Scripted policies for any task: random tool calls, an episode runner, and agent → chat adapters.

Task-specific oracles live with their task (``task.oracle()``); they are agent policies
``(observation, info) -> action`` whose ``info`` is a :class:`~rao_envs.policies.base.NodeInfo`.
:class:`OraclePolicy` turns one into a chat policy for the rollout driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rao_envs.policies.base import AgentPolicy, NodeInfo
from rao_envs.task import Task
from rao_envs.types import Action


class RandomPolicy:
    """Uniformly random tool calls with crude random arguments (a weak baseline)."""

    def __init__(self, task: Task, seed: int = 0, finish_prob: float = 0.1, delegate_prob: float = 0.1) -> None:
        self.task, self.rng = task, np.random.default_rng(seed)
        self.finish_prob, self.delegate_prob = finish_prob, delegate_prob
        self.names = list(task.tools)

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        """One random tool call (as ``tool`` protocol text) for the node described by ``info``."""
        r = self.rng.random()
        if r < self.finish_prob or not self.names:
            return Action.finish("done").to_text()
        if r < self.finish_prob + self.delegate_prob:
            return Action.delegate(info.get("goal", "help"), **dict(info.get("node_args") or {})).to_text()
        name = self.names[int(self.rng.integers(len(self.names)))]
        args = {}
        for field, spec in self.task.tools[name].model.model_fields.items():
            args[field] = self._value(spec.annotation, info)
        return Action.tool(name, **args).to_text()

    def _value(self, annotation: Any, info: dict[str, Any]) -> Any:
        """A crude value of the annotated type, borrowed from the node's own args where one fits."""
        text = str(annotation)
        mapping = next((v for v in (info.get("node_args") or {}).values() if isinstance(v, dict)), {})
        if "int" in text:
            return int(self.rng.integers(1, 4))
        if "dict" in text:
            return dict(mapping)
        if "list" in text or "tuple" in text:
            return [str(k) for k in mapping] or ["x", 1]
        return "x"


def run_episode(env, policy: AgentPolicy, seed: int | None = None, max_steps: int = 100_000):
    """Run one Gymnasium episode of ``policy``; return ``(tree, total_reward, steps)``."""
    obs, info = env.reset(seed=seed)
    total, steps = 0.0, 0
    while steps < max_steps:
        obs, reward, terminated, truncated, info = env.step(policy(obs, info))
        total += reward
        steps += 1
        if terminated or truncated:
            break
    return env.unwrapped.tree, total, steps


class OraclePolicy:
    """A task's scripted ``(obs, info) -> text`` oracle as an async chat policy, one oracle per tree.

    ``OraclePolicy(lambda: task.oracle())``; the oracle sees the node's newest message as
    ``obs["text"]`` and the driver's :class:`~rao_envs.policies.base.NodeInfo` as ``info``.
    """

    def __init__(self, factory: Callable[[], AgentPolicy]) -> None:
        self.factory = factory
        self._oracles: dict[str, AgentPolicy] = {}

    async def __call__(self, messages: list[dict[str, str]], info: NodeInfo) -> str:
        """The oracle's action for the node described by ``info``."""
        oracle = self._oracles.get(info["tree_id"])
        if oracle is None:
            oracle = self._oracles[info["tree_id"]] = self.factory()
        obs = {"text": messages[-1]["content"], "node": info["node"], "depth": info["depth"]}
        return oracle(obs, info)
