"""PettingZoo view (DESIGN §2.2): the live nodes of the tree are the agents.

Agents are named by spawn slot (``node_0`` is the root, ``node_k`` the k-th node spawned)
so ``possible_agents`` lists every agent that can ever appear; the tree path id (``0.1.2``)
is in ``infos[agent]["node_id"]``. A node joins ``agents`` when spawned and leaves when it
ends. A parent waiting on its children stays an agent: its observation says it is waiting
and its actions are ignored until a child returns. Actions of one ``step`` are applied in
slot order, so the same seed and actions give the same tree.
"""

from __future__ import annotations

from typing import Any

from pettingzoo import ParallelEnv

from rao_envs.errors import ActionTypeError, ResetNeededError
from rao_envs.registration import make_engine
from rao_envs.seeding import fresh_seed
from rao_envs.spaces import observation_space, text_observation, text_space
from rao_envs.types import NodeStatus

RUNNING = NodeStatus.RUNNING


class RaoParallelEnv(ParallelEnv):
    """A recursive task as a PettingZoo ``ParallelEnv`` whose agents are tree nodes."""

    metadata = {"render_modes": ["ansi", "human"], "name": "rao_envs_parallel_v0", "is_parallelizable": True}

    def __init__(self, task_id: str, render_mode: str | None = None, **kwargs: Any) -> None:
        self.task_id, self.render_mode = task_id, render_mode
        self.engine = make_engine(task_id, **kwargs)
        lim = self.engine.limits
        self.possible_agents = [f"node_{i}" for i in range(lim.max_nodes)]
        self._obs_space = observation_space(
            lim.max_obs_chars, lim.max_depth, lim.max_steps_per_node, lim.tree_step_budget, lim.max_nodes
        )
        self._act_space = text_space(lim.max_action_chars)
        # one cached space object per agent (PettingZoo seeds them one by one)
        self._obs_spaces: dict[str, Any] = {}
        self._act_spaces: dict[str, Any] = {}
        self.agents: list[str] = []
        self._slot_to_node: dict[str, str] = {}

    def observation_space(self, agent: str):
        """The (cached) observation space of ``agent``."""
        if agent not in self._obs_spaces:
            self._obs_spaces[agent] = self._obs_space if not self._obs_spaces else _clone(self._obs_space)
        return self._obs_spaces[agent]

    def action_space(self, agent: str):
        """The (cached) action space of ``agent``: free text."""
        if agent not in self._act_spaces:
            self._act_spaces[agent] = self._act_space if not self._act_spaces else _clone(self._act_space)
        return self._act_spaces[agent]

    @property
    def tree(self):
        """The episode tree so far."""
        return self.engine.tree

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start a new tree; only the root (``node_0``) is an agent at first."""
        self.engine.reset(fresh_seed() if seed is None else seed)
        self._slot_to_node = {"node_0": "0"}
        self.agents = ["node_0"]
        return {"node_0": self._obs("0")}, {"node_0": self._info("0")}

    def step(self, actions: dict[str, Any]):
        """Apply the actions of every agent that can act (slot order); others are no-ops."""
        if not self.agents:
            raise ResetNeededError("the episode is over; call reset()")
        if not isinstance(actions, dict):
            raise ActionTypeError(
                f"step takes a dict {{agent: action}} (e.g. {{'node_0': '<tool>...</tool>'}}), got {type(actions).__name__}"
            )
        engine, tree = self.engine, self.engine.tree
        before, n_known = list(self.agents), len(self._slot_to_node)
        ended: set[str] = set()
        for agent in before:
            nid = self._slot_to_node[agent]
            if agent in actions and tree.nodes[nid].status is RUNNING and not engine.done:
                ended.update(engine.step(nid, actions[agent]).ended)
        new = []
        for node in list(tree.nodes.values())[n_known:]:
            self._slot_to_node[f"node_{node.slot}"] = node.id
            new.append(f"node_{node.slot}")
        obs, rew, term, trunc, infos = {}, {}, {}, {}, {}
        for agent in before + new:
            node = tree.nodes[self._slot_to_node[agent]]
            st = node.status
            obs[agent] = self._obs(node.id)
            rew[agent] = float(node.reward or 0.0) if node.id in ended else 0.0
            term[agent] = st is NodeStatus.FINISHED
            trunc[agent] = st.ended and st is not NodeStatus.FINISHED
            infos[agent] = self._info(node.id)
        self.agents = [a for a in obs if not (term[a] or trunc[a])]
        return obs, rew, term, trunc, infos

    def _obs(self, nid: str) -> dict[str, Any]:
        self.engine.commit(nid)  # handed to the agent: it joins the node's transcript (running nodes only)
        return text_observation(self.engine, nid)

    def _info(self, nid: str) -> dict[str, Any]:
        node = self.engine.tree.nodes[nid]
        return {"node_id": nid, "parent": node.parent, "depth": node.depth, "status": node.status.value, "goal": node.goal}

    def render(self) -> str | None:
        """``"ansi"``: the tree as text; ``"human"``: print it with rich."""
        from rao_envs.render import render_for_mode

        return render_for_mode(self.engine.tree, self.render_mode or "ansi")

    def close(self) -> None:
        """Release the engine's sandbox REPLs (code mode); the tree stays readable."""
        self.engine.close()


def _clone(space):
    import copy

    return copy.deepcopy(space)
