"""Gymnasium view (DESIGN §2.1): one active node at a time, text in, text out.

``gymnasium.make("rao_envs/<Name>-v0", difficulty="medium", max_depth=6)``. Each step
acts for the active node; the next observation is the next node's *new* message (its id
and depth are in the observation; its full chat history is ``info["messages"]``). Parallel
children are served one turn at a time in a fair round-robin order.

``info`` is the node's :class:`~rao_envs.policies.base.NodeInfo` (depth and its limit, steps
left, children's results, refusals: all a scripted policy needs) plus ``messages``, ``ended``,
``rewards`` and ``tree``. Rewards (``reward_mode``): ``"node"`` (default) gives the local reward R of every node that
ended this step (summed; per-node values in ``info["rewards"]``); ``"root"`` gives only the
root's score when the episode ends. ``terminated`` when the root finished, ``truncated``
when it ran out of budget or failed.

Vector envs: ``gym.make_vec(id, n)`` (sync) works as is; ``vectorization_mode="async"`` needs
``vector_kwargs={"shared_memory": False}`` (Gymnasium's shared memory cannot carry ``Text``
observations; our spaces refuse it with an error that says so, see
:class:`rao_envs.spaces.RaoText`). A vector env's ``info`` is batched key by key, nested dicts
included (``node_args["targets"]`` becomes ``{item: array, "_item": mask}``);
:func:`unbatch_info` gives back one plain ``info`` dict per sub-env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from rao_envs.errors import ConfigError, ResetNeededError
from rao_envs.policies.base import Completion
from rao_envs.registration import make_engine
from rao_envs.render import RENDER_MODES
from rao_envs.seeding import check_seed, fresh_seed
from rao_envs.spaces import observation_space, text_observation, text_space
from rao_envs.types import Action, EpisodeTree, NodeStatus

REWARD_MODES = ("node", "root")


def unbatch_info(info: dict[str, Any], num_envs: int | None = None) -> list[dict[str, Any]]:
    """Split a Gymnasium vector env's batched ``info`` into one dict per sub-env.

    Undoes ``VectorEnv``'s batching: a key is kept for sub-env ``i`` only where its ``"_key"``
    mask is true, nested dicts are unbatched recursively, and numpy scalars become Python
    values. ``num_envs`` defaults to the length of the first mask. ::

        import gymnasium as gym
        from rao_envs.views.gym import unbatch_info

        envs = gym.make_vec("rao_envs/TextCraft-v0", num_envs=4)
        obs, info = envs.reset(seed=0)
        per_env = unbatch_info(info)          # per_env[i]["node_args"]["targets"] == {item: count}
    """
    if num_envs is None:
        masks = [v for k, v in info.items() if k.startswith("_") and k[1:] in info]
        if not masks:
            return []
        num_envs = len(masks[0])
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in info.items():
        if key.startswith("_") and key[1:] in info:
            continue
        mask = info.get(f"_{key}")
        per_env = unbatch_info(value, num_envs) if isinstance(value, dict) else None
        for i in range(num_envs):
            if mask is not None and not mask[i]:
                continue
            item = per_env[i] if per_env is not None else value[i]
            out[i][key] = item.item() if hasattr(item, "item") and getattr(item, "ndim", None) == 0 else item
    return out


class RaoEnv(gym.Env):
    """A recursive task as a single-agent Gymnasium env (see module docstring)."""

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4}

    def __init__(self, task_id: str, render_mode: str | None = None, reward_mode: str = "node", **kwargs: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if reward_mode not in REWARD_MODES:
            raise ConfigError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        self.task_id, self.render_mode, self.reward_mode = task_id, render_mode, reward_mode
        self.engine = make_engine(task_id, **kwargs)
        lim = self.engine.limits
        self.observation_space = observation_space(
            lim.max_obs_chars, lim.max_depth, lim.max_steps_per_node, lim.tree_step_budget, lim.max_nodes
        )
        self.action_space = text_space(lim.max_action_chars)
        self._node: str | None = None

    @property
    def task(self):
        """The task object (its world, generator and oracle)."""
        return self.engine.task

    @property
    def tree(self) -> EpisodeTree | None:
        """The episode tree so far (complete once the episode ended)."""
        return self.engine.tree

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new tree; ``seed`` fixes the task instance and every node's RNG."""
        super().reset(seed=None if seed is None else check_seed(seed))
        index = (options or {}).get("task_index")  # a task with a fixed instance list: play that one
        self.engine.reset(fresh_seed(self.np_random) if seed is None else seed, task_index=index)
        self._node = self.engine.selection
        return self._obs(self._node), self._info(self._node, [], {})

    def step(self, action: str | Action | Completion):
        """Act for the active node; returns the next active node's observation."""
        if self._node is None or self.engine.done:
            raise ResetNeededError("the episode is over (or never started); call env.reset()")
        out = self.engine.act(action)
        ended = out.ended
        if self.reward_mode == "node":
            reward = float(sum(r or 0.0 for r in out.rewards.values())) if ended else 0.0
        else:
            reward = float(self.engine.tree.root.score or 0.0) if out.done else 0.0
        if out.done:
            finished = self.engine.tree.root.status is NodeStatus.FINISHED
            terminated, truncated, node = finished, not finished, "0"
        else:
            terminated = truncated = False
            node = out.next
        self._node = node
        return self._obs(node), reward, terminated, truncated, self._info(node, ended, out.rewards)

    def _obs(self, node_id: str) -> dict[str, Any]:
        engine = self.engine
        transcript = engine.commit(node_id)  # the observation is handed to the agent: it joins the node's transcript
        running = engine.tree.nodes[node_id].status is NodeStatus.RUNNING
        return text_observation(engine, node_id, transcript[-1]["content"] if running else None)

    def _info(self, node_id: str, ended: list[str], rewards: dict[str, float | None]) -> dict[str, Any]:
        engine = self.engine
        info: dict[str, Any] = engine.node_info(node_id)
        args = info["node_args"]
        info["node_args"] = _copy_dicts(args) if args else {}
        info["messages"] = engine.tree.nodes[node_id].transcript  # the live chat history of this node (a list: not copied)
        info["ended"] = ended
        info["rewards"] = dict(rewards) if rewards else {}
        info["tree"] = engine.tree
        return info

    def render(self) -> str | None:
        """``"ansi"``: the tree as text; ``"rgb_array"``: it as an image; ``"human"``: print it with rich."""
        from rao_envs.render import render_for_mode

        return render_for_mode(self.engine.tree, self.render_mode)

    def close(self) -> None:
        """Release the engine's sandbox REPLs (code mode); the tree stays readable."""
        self.engine.close()


def _copy_dicts(value: dict[str, Any]) -> dict[str, Any]:
    """Copy nested dicts (Gymnasium requires fresh info dicts on every call); cheap for small args."""
    # hot path (every step): recurse only into dict values, never call for leaves
    return {k: (_copy_dicts(v) if type(v) is dict else v) for k, v in value.items()}
