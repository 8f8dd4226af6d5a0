"""Generic scripted policies usable on any task: random tool calls and a replay of texts.

Task-specific oracles live with their task (``task.oracle()``). A policy is any callable
``policy(observation, info) -> action`` where ``observation`` is the Gymnasium observation
dict and ``info`` the step info (``info["node"]`` is the acting node's id).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rao_envs.task import Task


class RandomPolicy:
    """Uniformly random tool calls with crude random arguments (a weak baseline)."""

    def __init__(self, task: Task, seed: int = 0, finish_prob: float = 0.1, delegate_prob: float = 0.1) -> None:
        self.task, self.rng = task, np.random.default_rng(seed)
        self.finish_prob, self.delegate_prob = finish_prob, delegate_prob
        self.names = list(task.tools)

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        r = self.rng.random()
        if r < self.finish_prob or not self.names:
            return _tool("finish", result="done")
        if r < self.finish_prob + self.delegate_prob:
            return _tool("delegate", goal=info.get("goal", "help"), **dict(info.get("node_args") or {}))
        name = self.names[int(self.rng.integers(len(self.names)))]
        args = {}
        for field, spec in self.task.tools[name].model.model_fields.items():
            args[field] = self._value(spec.annotation, info)
        return _tool(name, **args)

    def _value(self, annotation: Any, info: dict[str, Any]) -> Any:
        text = str(annotation)
        if "int" in text:
            return int(self.rng.integers(1, 4))
        if "dict" in text:
            return dict(info.get("node_args", {}).get("targets", {})) or {}
        if "list" in text or "tuple" in text:
            return [str(k) for k in list(info.get("node_args", {}).get("targets", {}))] or ["x", 1]
        return "x"


def _tool(name: str, **args: Any) -> str:
    return "<tool>" + json.dumps({"name": name, "args": args}) + "</tool>"


def run_episode(env, policy, seed: int | None = None, max_steps: int = 100_000):
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
