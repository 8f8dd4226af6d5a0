"""TextCraft-v0's task class, :class:`TextCraftSynth`: instances, prompt, tools and verifier.

Described, in the fixed sections of every task (tools, delegation, state scope, rewards,
termination, difficulties, registered ids), in the package docstring
(``rao_envs.envs.textcraft``). Also here: the limits of a delegation and of a craft call,
and :func:`goal_text` / :func:`parse_targets`, the goal format shared by the oracle and the
discrete view.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rao_envs.envs.textcraft.world import get_world
from rao_envs.errors import ToolError
from rao_envs.task import NodeContext, Task, TaskInstance, tool
from rao_envs.types import StateScope

if TYPE_CHECKING:
    from rao_envs.envs.textcraft.oracle import TextCraftOracle

# ------------------------------------------------------------------------------ limits and helpers
DEPTHS = {"easy": (2, 3), "medium": (4, 6), "hard": (7, 9), "extreme": (10, 12)}
MAX_COUNT = {"easy": 3, "medium": 3, "hard": 2, "extreme": 2}
MAX_TARGET_COUNT = 1000  # largest count a delegate may ask for one target
MAX_TARGETS = 10  # most distinct targets one delegate may ask for
MAX_CRAFT_COUNT = 10_000  # largest total a single craft call may produce

_TARGET = re.compile(r"(\d+)\s*[xX*]\s*([A-Za-z][A-Za-z0-9_]*)")


def goal_text(targets: Mapping[str, int]) -> str:
    """``Craft the following items: 2x m3_i4, 1x c2_i2``."""
    return "Craft the following items: " + ", ".join(f"{n}x {item}" for item, n in targets.items())


def parse_targets(text: str) -> dict[str, int]:
    """Targets written in a goal such as ``Craft the following items: 2x m3_i4, 1x c2_i2``."""
    out: dict[str, int] = {}
    for n, item in _TARGET.findall(text or ""):
        out[item] = out.get(item, 0) + int(n)
    return out


def _as_count(value: Any) -> int | None:
    """``value`` as a Python int if it is an integral number (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return None


def _fmt(d: Mapping[str, int]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"


# ------------------------------------------------------------------------------ the task
SYSTEM_PROMPT = """You are a crafting agent in a synthetic crafting world. Item names are meaningless codes: \
base items (such as m0_ore or raw_o3) cannot be crafted; every other item has exactly one recipe.

# Crafting
- Use get_info to see an item's recipe, crafting depth and how many you hold; view_inventory lists \
everything you hold.
- A recipe turns a fixed set of ingredients into a fixed quantity (result_count) of the item. \
craft(ingredients, target=[item, total_count]) runs the recipe total_count / result_count times: \
total_count must be a multiple of result_count, and ingredients must be exactly the recipe's \
ingredients times that number of executions.
- Intermediate items must be crafted before the items that need them (lowest depth first). \
One craft call can make any multiple, so craft each intermediate once with the total you need.
- The inventory is shared with every sub-agent of this task: what one agent crafts or uses \
changes what everyone holds. You are judged on how much your target items grew since you \
started, so if an item is already in the inventory, craft the requested amount on top of it; \
do not count on items you did not make yourself.
- When your targets are crafted, call finish with a short summary.
Example (a recipe {m0_ore: 2, m1_ore: 1} -> 2x m1_i1, crafted twice):
<tool>{"name": "craft", "args": {"ingredients": {"m0_ore": 4, "m1_ore": 2}, "target": ["m1_i1", 4]}}</tool>

# Delegation strategy
A deep item needs many crafts, more than your step budget allows. Delegate independent \
intermediates (for example each ingredient of your target) to sub-agents with \
delegate(goal=..., targets={item: count}); write several delegate calls in one turn so they \
run in parallel. Keep enough steps for the final assembly: after the sub-agents finish, craft \
your own targets from what they made, then finish. Craft small, shallow items yourself: a \
sub-agent costs you a step too. Example:
<tool>{"name": "delegate", "args": {"goal": "Craft 2x m3_i4", "targets": {"m3_i4": 2}}}</tool>"""


class TextCraftSynth(Task):
    """Craft target items in a procedural recipe world; delegate sub-items to sub-agents."""

    name = "TextCraft"
    version = 0
    state_scope = StateScope.SHARED
    difficulties = ("easy", "medium", "hard", "extreme")
    default_difficulty = "medium"
    default_limits = {"max_depth": 6, "max_steps_per_node": 25, "max_nodes": 1024}
    #: the max_depth at which the delegating oracle solves every instance of a difficulty
    #: (measured by benchmarks/textcraft_depth.py; the paper's default of 6 is not enough for extreme)
    recommended_max_depth = {"easy": 6, "medium": 6, "hard": 6, "extreme": 7}
    delegate_args_doc = ", targets: dict[str, int]"
    system_prompt = SYSTEM_PROMPT

    def __init__(self, difficulty: str | None = None, split: str = "train") -> None:
        super().__init__(difficulty, split)
        self.world = get_world()

    # -- instances ----------------------------------------------------------------------------
    def generate(self, rng: np.random.Generator) -> TaskInstance:
        """One target item of the difficulty's depth range from this split, and its inventory."""
        world = self.world
        lo, hi = DEPTHS[self.difficulty]
        for _ in range(100):
            tier = int(rng.integers(lo, hi + 1))
            items = world.split_items(self.split, [tier])
            target = items[int(rng.integers(len(items)))]
            count = int(rng.integers(1, MAX_COUNT[self.difficulty] + 1))
            targets = {target: count}
            inventory = self.start_inventory(targets, rng)
            if self.solvable(targets, inventory):
                return TaskInstance(goal=goal_text(targets), args={"targets": targets}, data={"inventory": inventory})
        raise RuntimeError("TextCraft: could not generate a solvable instance")  # pragma: no cover

    def start_inventory(self, targets: Mapping[str, int], rng: np.random.Generator) -> dict[str, int]:
        """Exact base needs + a 0-50% buffer per base item + 1-3 unneeded distractor base items."""
        world = self.world
        need: dict[str, int] = {}
        for item, n in targets.items():
            for base, k in world.base_needs(item, n).items():
                need[base] = need.get(base, 0) + k
        inventory = {b: k + int(rng.integers(0, k // 2 + 1)) for b, k in sorted(need.items())}
        spare = [b for b in world.base if b not in need]
        n_distract = min(len(spare), int(rng.integers(1, 4)))
        for b in rng.choice(spare, size=n_distract, replace=False):
            inventory[str(b)] = int(rng.integers(1, 6))
        return dict(sorted(inventory.items()))

    def solvable(self, targets: Mapping[str, int], inventory: Mapping[str, int]) -> bool:
        """True when the flat plan can be crafted from ``inventory`` (simulated on a copy)."""
        inv = dict(inventory)
        for item, total in self.world.plan(targets):
            recipe = self.world.recipes[item]
            execs = total // recipe.result_count
            for ing, q in recipe.ingredients:
                inv[ing] = inv.get(ing, 0) - q * execs
                if inv[ing] < 0:
                    return False
            inv[item] = inv.get(item, 0) + total
        return all(inv.get(item, 0) >= n for item, n in targets.items())

    def initial_state(self, instance: TaskInstance) -> dict[str, int]:
        """The shared inventory (item -> count) at the start of the episode."""
        return {str(k): int(v) for k, v in instance.data["inventory"].items()}

    def snapshot(self, state: dict[str, int]) -> dict[str, int]:
        """A plain copy of the inventory, taken when a node is spawned."""
        return {k: v for k, v in state.items() if v}

    def node_prompt(self, ctx: NodeContext) -> str:
        """The node's goal, its targets and how many of each it already holds."""
        text = super().node_prompt(ctx)
        targets = ctx.node.args.get("targets") or {}
        if targets:
            held = ", ".join(f"{item}: {int(ctx.state.get(item, 0))}" for item in targets)
            text += (
                f"\n\nTargets (judged as the increase since you started): "
                f"{', '.join(f'{n}x {item}' for item, n in targets.items())}. "
                f"In the inventory now: {held}."
            )
        return text

    # -- delegation and verification -----------------------------------------------------------
    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A child needs ``targets`` ({item: count}); read them from the goal text if missing."""
        extra = sorted(set(args) - {"targets"})
        if extra:
            raise ToolError(
                f"unknown delegate argument(s) {extra[:5]}; TextCraft takes targets={{item: count}} "
                '(e.g. targets={"m3_i4": 2}) besides goal, context, budget and wait'
            )
        targets = args.get("targets")
        if targets is None:
            targets = parse_targets(goal)
            if not targets:
                raise ToolError(
                    'give the sub-agent its targets, e.g. delegate(goal="Craft 2x m3_i4", targets={"m3_i4": 2})'
                )
        if not isinstance(targets, dict) or not targets:
            raise ToolError('targets must be a non-empty object {item: count}, e.g. {"m3_i4": 2}')
        if len(targets) > MAX_TARGETS:
            raise ToolError(f"at most {MAX_TARGETS} targets per sub-agent; you gave {len(targets)}")
        clean: dict[str, int] = {}
        for item, n in targets.items():
            count = _as_count(n)
            if not isinstance(item, str) or not self.world.exists(item):
                close = self.world.close_matches(str(item))
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ToolError(f"target {str(item)[:60]!r} is not an item of this world{hint}")
            if self.world.is_base(item):
                raise ToolError(f"target {item} is a base item: it cannot be crafted, only used")
            if count is None or not 1 <= count <= MAX_TARGET_COUNT:
                raise ToolError(f"target count for {item} must be an integer from 1 to {MAX_TARGET_COUNT}, got {n!r}")
            clean[item] = count
        return (goal or goal_text(clean)), {"targets": clean}

    def score(self, ctx: NodeContext) -> float:
        """1.0 iff each of the node's targets grew by at least its count since the node spawned."""
        snap = ctx.node.spawn_snapshot or {}
        targets = ctx.node.args.get("targets") or {}
        ok = all(ctx.state.get(t, 0) - snap.get(t, 0) >= n for t, n in targets.items())
        return float(bool(targets) and ok)

    # -- tools ---------------------------------------------------------------------------------
    @tool
    def get_info(self, ctx: NodeContext, items: list[str]) -> str:
        """Recipe, crafting depth and inventory count of each item (JSON).

        For each item: can_craft, is_base, in_inventory, crafting_depth and recipes
        ([{ingredients, result_count}]).
        """
        if not items:
            raise ToolError('get_info needs a non-empty list of item names, e.g. {"items": ["m3_i4"]}')
        if len(items) > 50:
            raise ToolError(f"ask about at most 50 items at a time; you asked about {len(items)}")
        return json.dumps([self.world.info(i, ctx.state) for i in items])

    @tool
    def view_inventory(self, ctx: NodeContext) -> str:
        """The shared inventory of this task (you and every sub-agent): each item and its count (JSON)."""
        return json.dumps({k: v for k, v in sorted(ctx.state.items()) if v > 0})

    @tool
    def craft(self, ctx: NodeContext, ingredients: dict[str, int], target: list | tuple) -> str:
        """Craft target=[item, total_count] from exactly the recipe's ingredients times the executions.

        total_count must be a positive multiple of the recipe's result_count; ingredients must
        equal the recipe's ingredients times total_count / result_count.
        """
        world, inv = self.world, ctx.state
        if len(target) != 2 or not isinstance(target[0], str):
            raise ToolError(f'target must be [item, total_count], e.g. ["m3_i4", 2]; got {str(target)[:80]}')
        item, total = target[0], _as_count(target[1])
        if not world.exists(item):
            close = world.close_matches(item)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ToolError(f"unknown item {item[:60]!r}.{hint}")
        if world.is_base(item):
            raise ToolError(f"{item} is a base item: it cannot be crafted")
        recipe = world.recipes[item]
        per = f"{item} is made from {_fmt(recipe.as_dict())} and each craft yields {recipe.result_count}"
        if total is None or total < 1:
            raise ToolError(f"total_count must be a positive integer, got {str(target[1])[:40]}; {per}")
        if total > MAX_CRAFT_COUNT:
            raise ToolError(f"total_count {total} is too large (at most {MAX_CRAFT_COUNT} per craft call)")
        if total % recipe.result_count:
            lo = total - total % recipe.result_count
            options = f"{lo} or {lo + recipe.result_count}" if lo else f"{recipe.result_count}"
            raise ToolError(
                f"total_count {total} is not a multiple of the result count {recipe.result_count}; "
                f"{per}. Try {options}."
            )
        execs = total // recipe.result_count
        want = recipe.as_dict(execs)
        given = dict(ingredients)
        if given != want:
            problems = []
            for k in sorted(set(given) | set(want)):
                if k not in want:
                    problems.append(f"{k} is not an ingredient")
                elif k not in given:
                    problems.append(f"{k} is missing")
                elif given[k] != want[k]:
                    problems.append(f"{k}: gave {given[k]}, need {want[k]}")
            raise ToolError(
                f"wrong ingredients for {total}x {item} ({'; '.join(problems[:6])}). {per}, so {total}x "
                f"needs {execs} craft(s): ingredients={_fmt(want)}"
            )
        short = {k: (n, inv.get(k, 0)) for k, n in want.items() if inv.get(k, 0) < n}
        if short:
            lack = ", ".join(f"{k} (need {n}, have {h})" for k, (n, h) in short.items())
            raise ToolError(f"not enough ingredients to craft {total}x {item}: {lack}")
        for k, n in want.items():
            inv[k] -= n
        inv[item] = inv.get(item, 0) + total
        return f"Crafted {total}x {item} (used {_fmt(want)}). You now hold {inv[item]}x {item}."

    # -- oracles -------------------------------------------------------------------------------
    def oracle(self, delegate: bool = True) -> TextCraftOracle:
        """Scripted policy: delegating (default) or flat (``delegate=False``).

        It reads the depth limit, the turn and refusals from ``info`` (a ``NodeInfo``).
        """
        from rao_envs.envs.textcraft.oracle import TextCraftOracle  # oracle.py imports this module

        return TextCraftOracle(self.world, delegate=delegate)
