"""Discrete view for classic RL (DESIGN §2.4): ``Discrete(n)`` actions, an action mask, a numeric observation.

The text task runs in the real :class:`~rao_envs.tree.TreeEngine`: a ``delegate`` action opens
a real child node, the child acts next (one node acts per step, fair round-robin order, as in
the Gymnasium view) and its result returns to its parent. Only the interface changes: a
task-specific :class:`DiscreteAdapter`, named when the task is registered
(``register_task(..., discrete="module:AdapterClass")``), names the admissible actions of the
active node as integers and summarises the node as a fixed-size ``float32`` vector, so a small
PPO policy (CleanRL, Stable-Baselines3 ``MaskablePPO``) can learn *when to delegate* on a CPU::

    import gymnasium as gym, numpy as np, rao_envs
    env = gym.make("rao_envs/<Name>Discrete-v0", difficulty="medium")      # delegate=False: flat baseline
    obs, info = env.reset(seed=0)
    mask = info["action_mask"]                                            # int8, 1 = admissible
    obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(mask)[0]))

or ``DiscreteRaoEnv(task_id, ...)``. Keyword arguments that the adapter's ``__init__`` accepts
go to the adapter; the rest go to the task and engine, as in ``make``. This module knows no task.

An inadmissible action is an agent mistake, as in the text views: it costs the node one step,
does nothing else, and sets ``info["invalid_action"]``.

Rewards (``reward_mode``), for a learner that sees one stream of steps (Stable-Baselines3,
CleanRL's ``ppo.py``), whose return from a step sums every reward after it, children's included:

- ``"tree"`` (default): the root's score when the episode ends, ``- fail_cost`` (default 0.5)
  when a sub-agent ends without success (at that sub-agent's last step, so the blame lands near
  the steps that earned it) and ``- delegate_cost`` per delegating turn (the adapter's
  ``default_delegate_cost`` unless given). No node is paid for another node's success, so a
  stream's return counts no child twice: an episode returns ``root score - fail_cost x failed
  sub-agents - delegate_cost x delegating turns``.
- ``"root"``: the root's score when the episode ends, nothing else.
- ``"node"``: the local reward R of every node that ended this step, like
  :class:`~rao_envs.views.gym.RaoEnv` (a parent's stream return then counts every child's
  reward, which pays for spawning more children).
- ``"own"``: the acting node its own local reward R when it ends, minus ``delegate_cost`` for
  each of its delegating turns (plus ``progress_reward`` per unit of task progress the adapter
  reports, if set); in one stream it pays for children too, per-node credit does not.

Whatever the mode, ``info["acted"]``, ``info["node_done"]`` and ``info["node_reward"]`` (the
``"own"`` reward) carry the per-node signal, so a trainer can run RAO-style credit: one
trajectory per node, each with its own reward (``examples/cleanrl_ppo_delegation.py`` does GAE
per node). An adapter may also set engine defaults that fit its task
(:meth:`DiscreteAdapter.engine_defaults`, e.g. a tree-size cap per difficulty); the caller's
keyword arguments always win.

``action_masks()`` (booleans, sb3-contrib's name) is a method of the env, so
``ActionMasker(gym.make(id), lambda e: e.action_masks())`` and sb3-contrib's
``get_action_masks`` on a ``make_vec_env`` vector env work as they are; under further wrappers,
``env.get_wrapper_attr("action_masks")()`` reaches it (the Gymnasium 1.x way).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rao_envs.errors import ActionTypeError, ConfigError, ResetNeededError
from rao_envs.registration import make_engine, task_spec
from rao_envs.render import RENDER_MODES
from rao_envs.seeding import check_seed, fresh_seed
from rao_envs.tree import TreeEngine
from rao_envs.types import Action, EpisodeTree, NodeStatus

REWARD_MODES = ("tree", "root", "node", "own")


def action_index(action: Any, n: int) -> int:
    """``action`` as an int if it is exactly an integer (Python or numpy, also a 0-d integer array).

    Anything else (floats, strings, bools, None, lists) is a caller bug: :class:`ActionTypeError`.
    An integer outside ``0..n-1`` is returned as is: the view treats it as an inadmissible action.
    """
    if isinstance(action, np.ndarray) and action.ndim == 0:
        action = action[()]
    if isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_)):
        return int(action)
    raise ActionTypeError(
        f"the discrete view takes an integer action in 0..{n - 1} (an int or numpy integer), "
        f"got {type(action).__name__} {str(action)[:40]!r}"
    )


class DiscreteAdapter:
    """Task-specific half of the discrete view: action names, features, mask and decoding.

    Subclasses set :attr:`action_names` and :attr:`feature_names` in ``__init__`` and
    implement :meth:`features`, :meth:`mask` and :meth:`decode`; :meth:`on_reset`,
    :meth:`after_step` keep any per-node bookkeeping.
    """

    action_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()
    default_delegate_cost: ClassVar[float] = 0.0
    """The view's ``delegate_cost`` when the caller gives none."""

    def __init__(self, engine: TreeEngine, delegate: bool = True) -> None:
        self.engine, self.delegate = engine, delegate

    @classmethod
    def engine_defaults(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Task and engine keyword defaults for these ``kwargs`` (the caller's own values win); none here."""
        return {}

    def on_reset(self) -> None:
        """Called after every ``engine.reset``."""

    def features(self, node_id: str) -> np.ndarray:
        """The observation vector of ``node_id`` (float32, every entry in [0, 1])."""
        raise NotImplementedError

    def mask(self, node_id: str) -> np.ndarray:
        """int8 vector over :attr:`action_names`: 1 where the action is admissible now."""
        raise NotImplementedError

    def decode(self, node_id: str, action: int) -> str | Action:
        """The engine action (text or :class:`Action`) for an admissible ``action``."""
        raise NotImplementedError

    def after_step(self, node_id: str, action: int, ended: list[str]) -> None:
        """Called after the engine applied ``action`` of ``node_id``; ``ended`` lists nodes that ended."""

    def progress(self, node_id: str) -> float:
        """Task progress made by the last step of ``node_id`` (for the optional ``progress_reward``)."""
        return 0.0

    def delegated(self, node_id: str) -> bool:
        """True when the last step of ``node_id`` opened children (for the optional ``delegate_cost``)."""
        return False


class DiscreteRaoEnv(gym.Env):
    """A recursive task with ``Discrete(n)`` actions and a ``Box`` observation (see module docstring).

    ``info["action_mask"]`` (int8) marks the admissible actions of the node that acts next;
    ``info["node"]`` is its id and ``info["depth"]`` its depth. When the episode ends,
    ``info["root_score"]``, ``info["nodes"]`` and ``info["tree_depth"]`` summarise the tree,
    and :attr:`tree` holds it.

    Arguments: ``delegate`` (False: no delegate actions, the flat baseline), ``reward_mode``
    (``"tree"``, ``"root"``, ``"node"``, ``"own"``: module docstring), ``delegate_cost`` (per
    delegating turn; None: the adapter's ``default_delegate_cost``), ``fail_cost`` (per failed
    sub-agent, ``"tree"`` mode), ``progress_reward`` (``"own"`` mode shaping), ``render_mode``;
    the rest go to the adapter or the task and engine.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4}

    def __init__(
        self,
        task_id: str,
        delegate: bool = True,
        reward_mode: str = "tree",
        render_mode: str | None = None,
        progress_reward: float = 0.0,
        delegate_cost: float | None = None,
        fail_cost: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if reward_mode not in REWARD_MODES:
            raise ConfigError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        self.task_id, self.render_mode, self.reward_mode, self.delegate = task_id, render_mode, reward_mode, delegate
        adapter_cls = task_spec(task_id).load_discrete()
        if delegate_cost is None:
            delegate_cost = adapter_cls.default_delegate_cost
        self.progress_reward, self.delegate_cost, self.fail_cost = float(progress_reward), float(delegate_cost), float(fail_cost)
        params = inspect.signature(adapter_cls.__init__).parameters
        adapter_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in params and k not in ("self", "engine", "delegate")}
        kwargs = {**adapter_cls.engine_defaults(kwargs), **kwargs}  # e.g. a tree-size cap that fits the difficulty
        self.engine = make_engine(task_id, **kwargs)
        self.adapter = adapter_cls(self.engine, delegate=delegate, **adapter_kw)
        n_feat = len(self.adapter.feature_names)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(n_feat,), dtype=np.float32)
        self.action_space = spaces.Discrete(len(self.adapter.action_names))
        self._node: str | None = None

    @property
    def action_names(self) -> tuple[str, ...]:
        """The meaning of each integer action."""
        return self.adapter.action_names

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The meaning of each observation entry."""
        return self.adapter.feature_names

    @property
    def tree(self) -> EpisodeTree | None:
        """The episode tree so far (complete once the episode ended)."""
        return self.engine.tree

    @property
    def task(self):
        """The task object (its world, generator and oracles)."""
        return self.engine.task

    def action_masks(self) -> np.ndarray:
        """The admissible actions of the acting node as booleans (``MaskablePPO`` convention)."""
        if self._node is None:
            raise ResetNeededError("call env.reset() first")
        return self.adapter.mask(self._node).astype(bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a new tree; ``seed`` fixes the task instance (as in the text views)."""
        super().reset(seed=None if seed is None else check_seed(seed))
        index = (options or {}).get("task_index")  # a task with a fixed instance list: play that one
        self.engine.reset(fresh_seed(self.np_random) if seed is None else seed, task_index=index)
        self.adapter.on_reset()
        self._node = self.engine.selection
        return self.adapter.features(self._node), self._info(self._node, [], False)

    def step(self, action: int):
        """Act for the active node; return the next active node's observation."""
        if self._node is None or self.engine.done:
            raise ResetNeededError("the episode is over (or never started); call env.reset()")
        node, a = self._node, action_index(action, self.action_space.n)
        invalid = not (0 <= a < self.action_space.n) or not self.adapter.mask(node)[a]
        # an inadmissible action is an agent mistake: an empty turn (the engine's parse-error feedback, one step)
        out = self.engine.act("" if invalid else self.adapter.decode(node, a))
        self.adapter.after_step(node, -1 if invalid else a, out.ended)
        tree = self.engine.tree
        acted = tree.nodes[node]
        node_done = node in out.ended
        # every delegating turn costs, however many children it opens
        delegate_charge = self.delegate_cost if not invalid and self.delegate_cost and self.adapter.delegated(node) else 0.0
        node_reward = 0.0 - delegate_charge  # the acting node's own RAO local reward, when it ended this step
        if node_done:
            node_reward += acted.reward or 0.0
        if self.progress_reward and not invalid:
            node_reward += self.progress_reward * self.adapter.progress(node)
        root_reward = float(tree.root.score or 0.0) if out.done else 0.0
        if self.reward_mode == "tree":
            failed = sum(1 for nid in out.ended if tree.nodes[nid].parent is not None and tree.nodes[nid].score != 1.0)
            reward = -self.fail_cost * failed - delegate_charge + root_reward
        elif self.reward_mode == "own":
            reward = node_reward
        elif self.reward_mode == "node":
            reward = sum(r or 0.0 for r in out.rewards.values())
        else:
            reward = root_reward
        if out.done:
            finished = tree.root.status is NodeStatus.FINISHED
            terminated, truncated, nxt = finished, not finished, "0"
        else:
            terminated = truncated = False
            nxt = out.next
        self._node = nxt
        info = self._info(nxt, out.ended, invalid)
        info.update(acted=node, node_done=node_done, node_reward=float(node_reward))
        if out.done:
            stats = tree.stats()
            info.update(root_score=float(tree.root.score or 0.0), nodes=stats["nodes"], tree_depth=stats["max_depth"])
        return self.adapter.features(nxt), float(reward), terminated, truncated, info

    def _info(self, node_id: str, ended: list[str], invalid: bool) -> dict[str, Any]:
        node = self.engine.tree.nodes[node_id]
        return {
            "action_mask": self.adapter.mask(node_id),
            "node": node_id,
            "depth": node.depth,
            "ended": list(ended),
            "invalid_action": invalid,
            "acted": "",
            "node_done": False,
            "node_reward": 0.0,
        }

    def render(self) -> str | None:
        """``"ansi"``: the tree as text; ``"rgb_array"``: it as an image; ``"human"``: print it with rich."""
        from rao_envs.render import render_for_mode

        return render_for_mode(self.engine.tree, self.render_mode)
