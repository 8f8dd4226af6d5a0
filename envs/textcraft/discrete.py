"""TextCraft-v0 in the discrete view: actions over each node's own crafting plan, and a rule policy.

``gymnasium.make("rao_envs/TextCraftDiscrete-v0", difficulty="medium")`` (registered in
``rao_envs.envs``). Actions, for a node with targets ``T``: ``finish``, ``get_info`` (of T),
``view_inventory``, ``craft_k`` (k-th item of the node's remaining crafting plan, lowest depth
first, with the total the plan needs), ``delegate_k`` (one child for the k-th non-base
ingredient of T, deepest first, waiting for it) and ``delegate_all`` (one child per
ingredient, in parallel). ``delegate=False`` removes the delegate actions (the flat baseline
under the same per-node step budget). ``delegate_each=False`` (default) keeps only
``delegate_all``: with ``delegate_k`` a policy trained on medium learns "delegate one
ingredient, craft the rest", which runs out of steps on hard; ``delegate_each=True`` offers both.

Defaults for stock RL (``examples/sb3_maskable_ppo.py``): the view's ``reward_mode="tree"`` with
``delegate_cost`` 0.05 (:attr:`TextCraftAdapter.default_delegate_cost`) and ``fail_cost`` 0.5,
and ``max_nodes`` per difficulty (:attr:`TextCraftAdapter.MAX_NODES`: easy 16, medium 64, hard
512, extreme 8,192), each overridable by keyword.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from rao_envs.envs.textcraft.task import goal_text
from rao_envs.tree import TreeEngine
from rao_envs.types import Action, NodeStatus
from rao_envs.views.discrete import DiscreteAdapter, DiscreteRaoEnv


class TextCraftAdapter(DiscreteAdapter):
    """TextCraft-v0 as discrete actions over each node's own crafting plan (module docstring).

    Depth never enters the observation: no node level, root flag, distance to the depth limit
    (``can_delegate`` says whether delegating is possible now) or item depth, so a policy
    trained on shallow medium trees (where nodes near the limit and deep items never occur)
    meets familiar inputs deep inside hard and extreme ones. Sizes are relative to the step
    budget (``plan_per_step``, ``plan_fits``, a delegate slot's ``job`` and ``fits``) and
    clipped, for the same reason.

    Every node keeps a ledger of the items it made itself or received from its children
    (``made``); its *remaining plan* is the flat crafting plan of its targets net of that
    ledger. A craft is admissible when the ingredients are in the inventory and every
    intermediate ingredient is the node's own (so parallel siblings never consume each
    other's items, as the task's prompt advises). When a child ends, its ledger passes to
    its parent.
    """

    N_CRAFT: ClassVar[int] = 8
    N_DELEGATE: ClassVar[int] = 6
    NODE_FEATURES: ClassVar[tuple[str, ...]] = (
        "bias", "can_delegate", "steps_left_frac",
        "plan_len", "plan_per_step", "plan_fits", "targets_done", "children", "children_ok_frac",
        "last_child_failed", "last_action_error", "candidates", "candidates_fit", "max_candidate_job",
    )

    MAX_NODES: ClassVar[dict[str, int]] = {"easy": 16, "medium": 64, "hard": 512, "extreme": 8192, "mixed": 8192}
    """Default ``max_nodes`` per difficulty: about 3x the delegating oracle's largest tree on the task sets
    (medium 11, hard 195; extreme keeps the task's 8,192), so an untrained or over-delegating policy
    ends its episode after a few hundred steps on medium instead of filling 8,192 nodes."""
    default_delegate_cost: ClassVar[float] = 0.05

    @classmethod
    def engine_defaults(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``max_nodes`` for the difficulty (:attr:`MAX_NODES`)."""
        return {"max_nodes": cls.MAX_NODES.get(kwargs.get("difficulty", "medium"), 8192)}

    def __init__(self, engine: TreeEngine, delegate: bool = True, delegate_each: bool = False) -> None:
        super().__init__(engine, delegate)
        self.delegate_each = delegate_each
        self.world = engine.task.world
        names = ["finish", "get_info", "view_inventory"] + [f"craft_{k}" for k in range(self.N_CRAFT)]
        if delegate:
            names += [f"delegate_{k}" for k in range(self.N_DELEGATE)] * delegate_each + ["delegate_all"]
        self.action_names = tuple(names)
        self.i_craft = 3
        self.i_delegate = 3 + self.N_CRAFT
        self.i_all = self.i_delegate + self.N_DELEGATE * delegate_each
        feats = list(self.NODE_FEATURES)
        for k in range(self.N_CRAFT):
            feats += [f"craft_{k}_{f}" for f in ("exists", "admissible", "is_target")]
        for k in range(self.N_DELEGATE):
            feats += [f"delegate_{k}_{f}" for f in ("exists", "admissible", "job", "fits")]
        self.feature_names = tuple(feats)
        self.budget = engine.limits.max_steps_per_node
        self._job = functools.lru_cache(maxsize=8192)(self._job_uncached)
        self.on_reset()

    # -- bookkeeping -------------------------------------------------------------------------
    def on_reset(self) -> None:
        """Fresh ledgers for a new tree."""
        self.made: dict[str, dict[str, int]] = {}
        self.flags: dict[str, dict[str, int]] = {}
        self._cache: tuple[str, int, int] | None = None
        self._view: dict[str, Any] = {}
        self._pending: tuple[str, str, int, int] | None = None
        self._progress, self._delegated = 0.0, False

    def after_step(self, node_id: str, action: int, ended: list[str]) -> None:
        """Update the acting node's ledger after a craft; hand ended children's ledgers up."""
        flags = self.flags.setdefault(node_id, {"error": 0, "child_failed": 0})
        flags["error"] = int(action < 0)
        self._progress = 0.0
        self._delegated = self.delegate and action >= self.i_delegate
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == node_id:
            _, item, total, before = pending
            if self.engine.context(node_id).state.get(item, 0) == before + total:  # the craft went through
                self._progress = 1.0
                recipe = self.world.recipes[item]
                made = self.made.setdefault(node_id, {})
                made[item] = made.get(item, 0) + total
                for ing, q in recipe.ingredients:
                    if ing in self.world.recipes:
                        made[ing] = made.get(ing, 0) - q * (total // recipe.result_count)
        nodes = self.engine.tree.nodes
        for nid in ended:
            parent = nodes[nid].parent
            if parent is None:
                continue
            mine = self.made.pop(nid, {})
            pm = self.made.setdefault(parent, {})
            for item, n in mine.items():
                if n > 0:
                    pm[item] = pm.get(item, 0) + n
            pf = self.flags.setdefault(parent, {"error": 0, "child_failed": 0})
            pf["child_failed"] = int(nodes[nid].score != 1.0)
        self._cache = None

    def progress(self, node_id: str) -> float:
        """1.0 when the node's last step was a craft of its plan (it always is useful), else 0."""
        return self._progress

    def delegated(self, node_id: str) -> bool:
        """True when the node's last step was a delegate action."""
        return self._delegated

    # -- planning ------------------------------------------------------------------------------
    def remaining_plan(self, targets: dict[str, int], stock: dict[str, int]) -> list[tuple[str, int]]:
        """``(item, total)`` crafts still needed for ``targets`` given the node's own ``stock``,
        lowest depth first (a valid crafting order): :meth:`World.plan` net of the stock."""
        return self.world.plan(targets, stock)

    def _job_uncached(self, item: str, count: int) -> int:
        return len(self.remaining_plan({item: count}, {}))

    def _compute(self, node_id: str) -> dict[str, Any]:
        key = (node_id, self.engine.tree.clock, id(self.engine.tree))
        if self._cache == key:
            return self._view
        eng, world = self.engine, self.world
        node = eng.tree.nodes[node_id]
        targets = {k: int(v) for k, v in (node.args.get("targets") or {}).items()}
        stock = self.made.get(node_id, {})
        plan = self.remaining_plan(targets, stock)
        inv = eng.context(node_id).state
        craft_ok = []
        for item, total in plan[: self.N_CRAFT]:
            recipe = world.recipes[item]
            execs = total // recipe.result_count
            ok = True
            for ing, q in recipe.ingredients:
                n = q * execs
                if inv.get(ing, 0) < n or (ing in world.recipes and stock.get(ing, 0) < n):
                    ok = False
                    break
            craft_ok.append(ok)
        planned = dict(plan)
        direct: dict[str, int] = {}  # what the targets' own recipes consume (not the deeper plan's share)
        for t in targets:
            if t in planned:
                recipe = world.recipes[t]
                for ing, q in recipe.ingredients:
                    if ing in world.recipes and ing not in targets:
                        direct[ing] = direct.get(ing, 0) + q * (planned[t] // recipe.result_count)
        cands = [(i, n - max(0, stock.get(i, 0))) for i, n in direct.items() if n > stock.get(i, 0)]
        cands.sort(key=lambda c: (-world.depth[c[0]], c[0]))
        cands = cands[: self.N_DELEGATE]
        lim = eng.limits
        room = len(eng.tree.nodes) < lim.max_nodes
        can_delegate = self.delegate and node.depth < lim.max_depth and room
        jobs = [self._job(i, n) for i, n in cands]
        deleg_ok = [can_delegate and n <= 100 for _, n in cands]
        all_ok = can_delegate and bool(cands) and len(eng.tree.nodes) + len(cands) <= lim.max_nodes
        if all_ok and lim.max_children_per_turn is not None:
            all_ok = len(cands) <= lim.max_children_per_turn
        self._view = dict(
            node=node, targets=targets, plan=plan, craft_ok=craft_ok, cands=cands, jobs=jobs,
            deleg_ok=deleg_ok, all_ok=all_ok and all(deleg_ok), can_delegate=can_delegate,
        )
        self._cache = key
        return self._view

    # -- the adapter interface -------------------------------------------------------------
    def features(self, node_id: str) -> np.ndarray:
        """Node summary (see :attr:`NODE_FEATURES`), then per craft slot and per delegate slot."""
        v = self._compute(node_id)
        node, plan, B = v["node"], v["plan"], float(self.budget)
        steps_left = max(node.steps_left, 0)
        kids = [self.engine.tree.nodes[c] for c in node.children]
        kids_done = [c for c in kids if c.status.ended]
        flags = self.flags.get(node_id, {"error": 0, "child_failed": 0})
        jobs = v["jobs"]
        x = np.zeros(len(self.feature_names), dtype=np.float32)
        n = len(self.NODE_FEATURES)
        x[:n] = (
            1.0,
            float(v["can_delegate"]),
            steps_left / max(1, node.budget),
            min(len(plan), 2 * B) / (2 * B),
            min(len(plan) / max(steps_left, 1), 2.0) / 2.0,
            float(len(plan) + 1 <= steps_left),
            float(not plan),
            min(len(kids), 8) / 8.0,
            (sum(c.score == 1.0 for c in kids_done) / len(kids_done)) if kids_done else 0.0,
            float(flags["child_failed"]),
            float(flags["error"]),
            len(v["cands"]) / self.N_DELEGATE,
            float(bool(jobs) and max(jobs) + 1 <= B),
            min(max(jobs, default=0), 2 * B) / (2 * B),
        )
        i = n
        for k, (item, _) in enumerate(plan[: self.N_CRAFT]):
            x[i + 3 * k: i + 3 * k + 3] = (1.0, float(v["craft_ok"][k]), float(item in v["targets"]))
        i += 3 * self.N_CRAFT
        for k in range(len(v["cands"])):
            job = jobs[k]
            x[i + 4 * k: i + 4 * k + 4] = (1.0, float(v["deleg_ok"][k]), min(job, 2 * B) / (2 * B), float(job + 1 <= B))
        return x

    def mask(self, node_id: str) -> np.ndarray:
        """finish, get_info and view_inventory always; crafts and delegates as described above."""
        v = self._compute(node_id)
        m = np.zeros(len(self.action_names), dtype=np.int8)
        m[:3] = 1
        if v["node"].status is not NodeStatus.RUNNING:  # the episode is over: nothing acts
            return m
        for k, ok in enumerate(v["craft_ok"]):
            m[self.i_craft + k] = ok
        if self.delegate:
            for k, ok in enumerate(v["deleg_ok"] if self.delegate_each else []):
                m[self.i_delegate + k] = ok
            m[self.i_all] = v["all_ok"]
        return m

    def decode(self, node_id: str, action: int) -> str | Action:
        """The tool call of an admissible action."""
        v = self._compute(node_id)
        if action == 0:
            return Action.finish(result="done")
        if action == 1:
            return Action.tool("get_info", items=list(v["targets"]) or ["m0_ore"])
        if action == 2:
            return Action.tool("view_inventory")
        if action < self.i_delegate:
            item, total = v["plan"][action - self.i_craft]
            recipe = self.world.recipes[item]
            self._pending = (node_id, item, total, self.engine.context(node_id).state.get(item, 0))
            return Action.tool("craft", ingredients=recipe.as_dict(total // recipe.result_count), target=[item, total])
        chosen = v["cands"] if action == self.i_all else [v["cands"][action - self.i_delegate]]
        return "\n".join(Action.delegate(goal_text({i: n}), targets={i: n}).to_text() for i, n in chosen)


def rule_policy(env: DiscreteRaoEnv) -> Callable[[np.ndarray, dict[str, Any]], int]:
    """A scripted discrete policy (the delegating oracle's rule) for tests and baselines.

    Finish when the targets are done; craft the first plan item when the remaining plan
    fits the steps left (or delegation is impossible); otherwise delegate all ingredients.
    """
    names = env.action_names
    f = {n: i for i, n in enumerate(env.feature_names)}
    i_all = names.index("delegate_all") if "delegate_all" in names else None

    def act(obs: np.ndarray, info: dict[str, Any]) -> int:
        mask = info["action_mask"]
        if obs[f["targets_done"]] > 0.5:
            return 0
        if i_all is not None and mask[i_all] and obs[f["plan_fits"]] < 0.5:
            return i_all
        for k in range(TextCraftAdapter.N_CRAFT):
            if mask[3 + k]:
                return 3 + k
        return 0

    return act
