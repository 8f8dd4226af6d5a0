"""TextCraft-v0 (TextCraft-Synth, RAO paper section 4.1): craft items in a procedural recipe world.

The world is built once per process from a fixed seed (:func:`get_world`): five domains with
meaningless names (metal ``m``, crystal ``c``, organic ``o``, arcane ``a``, tech ``t``), base
items at tier 0 (``m0_ore``, ``raw_o0``, ...) and craftable items ``{domain}{k}_i{tier}`` at
tiers 1-12, plus cross-domain items (``x10_mc``, ``x11_mct``, ``x12_all``) at tiers 10-12.
Every item has exactly one recipe, and an item's recipe depth equals its tier.

An instance asks for one target item (``args={"targets": {"m5_i3": 2}}``); its depth sets the
difficulty (easy 2-3, medium 4-6, hard 7-9, extreme 10-12). Targets are split 80/20 by item
between ``train`` and ``val``. The starting inventory holds exactly the base materials the
target needs (an upper bound for any crafting order) plus a 0-50% buffer and 1-3 distractors.

State scope is ``shared``: one inventory dict, shared by reference by every node of the tree.
A node succeeds when, at its ``finish``, each of its targets grew by at least the asked count
since the node was spawned (its ``spawn_snapshot``). Tools: ``get_info``, ``view_inventory``
and ``craft``. Two oracles: the delegating one (default) solves every instance when the depth
limit leaves room; the flat one (``delegate=False``) runs out of steps on deep instances.

Measured (``benchmarks/textcraft_depth.py``, 50 seeds per difficulty, 25 steps per node):
the delegating oracle needs ``max_depth`` 0 (easy), 1 (medium), 4 (hard) and 7 (extreme) to
solve every seed (extreme: 58% at the default 6); the flat oracle solves 100% of easy, 88% of
medium and none of hard or extreme. Extreme trees have 170 nodes on average, at most 494.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rao_envs.errors import ToolError
from rao_envs.task import NodeContext, Task, TaskInstance, tool
from rao_envs.types import StateScope

# ------------------------------------------------------------------------------ the world
WORLD_SEED = 42
DOMAINS = ("m", "c", "o", "a", "t")
MAX_TIER = 12
BASE_PER_DOMAIN = 6
ITEMS_PER_TIER = 8
VAL_FRACTION = 0.2
#: cross-domain items: name -> (tier, domains it draws one ingredient from)
CROSS_ITEMS: dict[str, tuple[int, str]] = {
    "x10_mc": (10, "mc"),
    "x10_ot": (10, "ot"),
    "x10_am": (10, "am"),
    "x10_ct": (10, "ct"),
    "x11_mct": (11, "mct"),
    "x11_oat": (11, "oat"),
    "x12_all": (12, "mcoat"),
}
DEPTHS = {"easy": (2, 3), "medium": (4, 6), "hard": (7, 9), "extreme": (10, 12)}
MAX_COUNT = {"easy": 3, "medium": 3, "hard": 2, "extreme": 2}
MAX_TARGET_COUNT = 1000  # largest count a delegate may ask for one target
MAX_TARGETS = 10  # most distinct targets one delegate may ask for
MAX_CRAFT_COUNT = 10_000  # largest total a single craft call may produce


@dataclass(frozen=True)
class Recipe:
    """One recipe: ``ingredients`` (item -> count per execution) make ``result_count`` items."""

    ingredients: tuple[tuple[str, int], ...]
    result_count: int

    def as_dict(self, executions: int = 1) -> dict[str, int]:
        """Ingredients for ``executions`` crafts, as a plain dict."""
        return {item: q * executions for item, q in self.ingredients}


@dataclass
class World:
    """The procedural recipe world: items, tiers, recipes, depths and the train/val split."""

    seed: int
    base: tuple[str, ...]
    tier: dict[str, int]
    domain: dict[str, str]
    recipes: dict[str, Recipe]
    depth: dict[str, int] = field(default_factory=dict)
    by_tier: dict[int, tuple[str, ...]] = field(default_factory=dict)
    val_items: frozenset[str] = frozenset()
    _needs: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict, repr=False)

    # -- queries --------------------------------------------------------------------------
    def exists(self, item: str) -> bool:
        """True for every base or craftable item of the world."""
        return item in self.tier

    def is_base(self, item: str) -> bool:
        """True for tier-0 items (they cannot be crafted)."""
        return item in self.tier and item not in self.recipes

    def split_items(self, split: str, tiers: Iterable[int]) -> list[str]:
        """The craftable items of ``tiers`` that belong to ``split`` (``train`` or ``val``)."""
        out = []
        for t in tiers:
            for item in self.by_tier.get(t, ()):
                if (item in self.val_items) == (split == "val"):
                    out.append(item)
        return out

    def close_matches(self, item: str, n: int = 3) -> list[str]:
        """Known item names that look like ``item`` (for error messages)."""
        import difflib

        return difflib.get_close_matches(str(item), list(self.tier), n=n, cutoff=0.6)

    # -- planning ---------------------------------------------------------------------------
    def base_needs(self, item: str, count: int) -> dict[str, int]:
        """Base items needed for ``count`` x ``item``, per branch of the expansion tree.

        Every occurrence of an intermediate is crafted on its own with ``ceil(need /
        result_count)`` executions, so this is an upper bound for any crafting strategy
        (crafting a shared intermediate once with the summed total never needs more).
        """
        if item not in self.recipes:
            return {item: count}
        key = (item, count)
        if key not in self._needs:
            recipe = self.recipes[item]
            execs = -(-count // recipe.result_count)
            total: dict[str, int] = {}
            for ing, q in recipe.ingredients:
                for base, n in self.base_needs(ing, q * execs).items():
                    total[base] = total.get(base, 0) + n
            self._needs[key] = total
        return dict(self._needs[key])

    def plan(self, targets: Mapping[str, int]) -> list[tuple[str, int]]:
        """The flat crafting plan for ``targets``: ``(item, total)`` in a valid order.

        Each non-base item of the expansion is crafted once, with the summed need of all
        its consumers rounded up to a multiple of its result count; lowest depth first.
        Existing inventory is ignored (the plan never relies on it).
        """
        need: dict[str, int] = {}
        for item, n in targets.items():
            if item in self.recipes:
                need[item] = need.get(item, 0) + int(n)
        closure = set(need)
        stack = list(need)
        while stack:
            for ing, _ in self.recipes[stack.pop()].ingredients:
                if ing in self.recipes and ing not in closure:
                    closure.add(ing)
                    stack.append(ing)
        order = sorted(closure, key=lambda i: (-self.depth[i], i))  # consumers first
        totals: dict[str, int] = {}
        for item in order:
            recipe = self.recipes[item]
            execs = -(-need[item] // recipe.result_count)
            totals[item] = execs * recipe.result_count
            for ing, q in recipe.ingredients:
                if ing in self.recipes:
                    need[ing] = need.get(ing, 0) + q * execs
        return [(item, totals[item]) for item in reversed(order)]

    def info(self, item: str, inventory: Mapping[str, int]) -> dict[str, Any]:
        """What ``get_info`` reports about one item."""
        if item not in self.tier:
            out: dict[str, Any] = {"item": item, "error": "unknown item"}
            close = self.close_matches(item)
            if close:
                out["did_you_mean"] = close
            return out
        recipe = self.recipes.get(item)
        return {
            "item": item,
            "can_craft": recipe is not None,
            "is_base": recipe is None,
            "in_inventory": int(inventory.get(item, 0)),
            "crafting_depth": self.depth[item],
            "recipes": [] if recipe is None else [
                {"ingredients": recipe.as_dict(), "result_count": recipe.result_count}
            ],
        }


def _base_name(domain: str, k: int) -> str:
    return f"{domain}{k}_ore" if domain in ("m", "c") else f"raw_{domain}{k}"


def _result_count(rng: np.random.Generator, tier: int) -> int:
    if tier == 1:
        return int(rng.integers(2, 5))
    if tier == 2:
        return int(rng.integers(2, 4))
    if tier <= 5:
        return int(rng.integers(1, 3))
    return 1


def _n_ingredients(rng: np.random.Generator, tier: int) -> int:
    """Ingredients per recipe: 1-2 (tier 1), 2 (tiers 2-7), 2-3 (tiers 8-11), 3-4 (tier 12)."""
    if tier == 1:
        return int(rng.integers(1, 3))
    if tier <= 7:
        return 2
    if tier <= 11:
        return int(rng.integers(2, 4))
    return int(rng.integers(3, 5))


def _qty(rng: np.random.Generator, tier: int) -> int:
    return int(rng.integers(1, 3)) if tier <= 4 else 1


def _build_world(seed: int, items_per_tier: int, base_per_domain: int) -> World:
    rng = np.random.default_rng(seed)
    tier: dict[str, int] = {}
    domain: dict[str, str] = {}
    pool: dict[tuple[str, int], list[str]] = {}
    for d in DOMAINS:
        pool[(d, 0)] = [_base_name(d, k) for k in range(base_per_domain)]
        for t in range(1, MAX_TIER + 1):
            pool[(d, t)] = [f"{d}{k}_i{t}" for k in range(items_per_tier)]
        for t in range(MAX_TIER + 1):
            for item in pool[(d, t)]:
                tier[item], domain[item] = t, d
    base = tuple(i for d in DOMAINS for i in pool[(d, 0)])
    recipes: dict[str, Recipe] = {}

    def pick(d: str, t: int, exclude: set[str]) -> str:
        options = [i for i in pool[(d, t)] if i not in exclude]
        return options[int(rng.integers(len(options)))]

    for t in range(1, MAX_TIER + 1):
        for d in DOMAINS:
            for item in pool[(d, t)]:
                chosen: list[str] = [pick(d, t - 1, set())]  # one from t-1: depth == tier
                n = _n_ingredients(rng, t)
                if n > 1 and t >= 4 and rng.random() < 0.3:  # one slot from another domain, tier t-3..t-1
                    other = [x for x in DOMAINS if x != d][int(rng.integers(len(DOMAINS) - 1))]
                    chosen.append(pick(other, int(rng.integers(t - 3, t)), set(chosen)))
                while len(chosen) < n:  # the rest from t-1 or t-2, weighted 1/(distance+1), i.e. 3:2
                    lower = t - 1 if (t < 2 or rng.random() < 0.6) else t - 2
                    chosen.append(pick(d, lower, set(chosen)))
                ings = tuple(sorted((i, _qty(rng, t)) for i in chosen))
                recipes[item] = Recipe(ings, _result_count(rng, t))
    for name, (t, doms) in CROSS_ITEMS.items():
        chosen = []
        for j, d in enumerate(doms):
            lower = t - 1 if j == 0 else t - int(rng.integers(2, 4))  # t-1 for the first, t-2/t-3 after
            chosen.append(pick(d, lower, set(chosen)))
        recipes[name] = Recipe(tuple(sorted((i, 1) for i in chosen)), 1)
        tier[name], domain[name] = t, "x"

    world = World(seed=seed, base=base, tier=tier, domain=domain, recipes=recipes)
    for item in sorted(tier, key=lambda i: tier[i]):
        r = recipes.get(item)
        world.depth[item] = 0 if r is None else 1 + max(world.depth[i] for i, _ in r.ingredients)
    by_tier: dict[int, list[str]] = {}
    for item in recipes:
        by_tier.setdefault(tier[item], []).append(item)
    split_rng = np.random.default_rng([seed, 1])
    val: set[str] = set()
    for t in sorted(by_tier):
        items = sorted(by_tier[t])
        by_tier[t] = items
        n_val = max(1, round(VAL_FRACTION * len(items)))
        val.update(str(x) for x in split_rng.choice(items, size=n_val, replace=False))
    world.by_tier = {t: tuple(v) for t, v in by_tier.items()}
    world.val_items = frozenset(val)
    return world


@functools.lru_cache(maxsize=8)
def get_world(
    seed: int = WORLD_SEED, items_per_tier: int = ITEMS_PER_TIER, base_per_domain: int = BASE_PER_DOMAIN
) -> World:
    """The recipe world for ``seed`` (built once per process, then cached)."""
    return _build_world(seed, items_per_tier, base_per_domain)


# ------------------------------------------------------------------------------ helpers
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


def _call(name: str, **args: Any) -> str:
    return f"<tool>{json.dumps({'name': name, 'args': args})}</tool>"


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
    def oracle(self, delegate: bool = True, max_depth: int | None = None) -> TextCraftOracle:
        """Scripted policy: delegating (default) or flat (``delegate=False``).

        The depth limit is read from each observation's status line; ``max_depth`` is only
        the fallback when an observation has none.
        """
        if max_depth is None:
            max_depth = int(self.default_limits["max_depth"])
        return TextCraftOracle(self.world, delegate=delegate, max_depth=max_depth)


class TextCraftOracle:
    """Scripted policy ``(observation, info) -> action text`` for TextCraft-v0.

    Flat (``delegate=False``): every node crafts each non-base item of its targets'
    expansion once (summed totals, lowest depth first), then finishes; it runs out of steps
    on deep targets. Delegating (default): a node whose whole job fits in its steps left, or
    that sits at the maximum depth, does the same; otherwise it delegates every non-base
    ingredient of its targets (one child each, all in one turn, in parallel), then crafts
    its targets and finishes. Crafting never relies on existing inventory, so parallel
    nodes never use each other's items.

    Shared-inventory race: a node is judged on how much its target grew since it spawned,
    so it fails if, at its spawn, another node (not its ancestor) already held some of that
    item for later use and consumes it before the child finishes. The policy is one object
    that issues every action of the tree, so it keeps a ledger of who holds what for later
    use, and (1) crafts such an ingredient itself instead of delegating it (delegating that
    ingredient's own ingredients), when its steps allow; otherwise (2) delegates it anyway
    but makes the holders wait (one ``view_inventory`` turn at a time, while they have spare
    steps) before consuming it until the child has finished.
    """

    _DEPTH = re.compile(r"\| depth (\d+)/(\d+) \|")

    def __init__(self, world: World, delegate: bool = True, max_depth: int = 6) -> None:
        self.world, self.delegate, self.max_depth = world, delegate, max_depth
        self._new_episode()

    def _new_episode(self) -> None:
        self.queue: dict[str, list[tuple[Any, ...]]] = {}  # node -> its remaining steps
        self.parent: dict[str, str | None] = {}
        self.target: dict[str, str] = {}  # delegated node -> the one item it was asked for
        self.live: set[str] = set()
        self.avail: dict[str, dict[str, int]] = {}  # items made for a node (by it or its children)
        self.future: dict[str, dict[str, int]] = {}  # items a node will still consume
        self.protect: dict[str, list[tuple[str, set[str]]]] = {}  # item -> [(child, holders to hold back)]
        self.stats = {"nodes": 0, "flattened": 0, "protected": 0, "waits": 0, "unsafe": 0}

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        text = obs["text"] if isinstance(obs, dict) else str(obs)
        node = info["node"]
        targets = {k: int(v) for k, v in (info.get("node_args") or {}).get("targets", {}).items()}
        steps_left = int(info["steps_left"])
        if node not in self.queue or text.startswith("# Task"):  # the node's first turn
            if node == "0":
                self._new_episode()
            m = self._DEPTH.search(text)
            max_depth = int(m.group(2)) if m else self.max_depth
            self.live.add(node)
            self.parent.setdefault(node, node.rpartition(".")[0] or None)
            self.stats["nodes"] += 1
            self._plan(node, targets, int(info["depth"]), steps_left, max_depth)
        elif text.startswith("Refused"):  # delegation refused (e.g. node limit): do it all yourself
            for child in [c for c in self.live if self.parent.get(c) == node]:
                self.live.discard(child)
            self._set_queue(node, self._flat_steps(targets))
        queue = self.queue[node]
        if not queue:
            queue.append(("finish", targets))
        if queue[0][0] == "craft" and steps_left > len(queue) and self._held_back(node, queue[0]):
            self.stats["waits"] += 1
            return _call("view_inventory")
        return self._emit(node, queue.pop(0))

    # -- planning -------------------------------------------------------------------------
    def _flat_steps(self, targets: Mapping[str, int]) -> list[tuple[Any, ...]]:
        return [("craft", item, total) for item, total in self.world.plan(targets)] + [("finish", dict(targets))]

    def _set_queue(self, node: str, steps: list[tuple[Any, ...]]) -> None:
        self.queue[node] = steps
        future: dict[str, int] = {}
        for step in steps:
            if step[0] == "craft":
                recipe = self.world.recipes[step[1]]
                for ing, q in recipe.as_dict(step[2] // recipe.result_count).items():
                    future[ing] = future.get(ing, 0) + q
        self.future[node] = future

    def _ancestors(self, node: str | None) -> set[str]:
        out = set()
        while node is not None:
            out.add(node)
            node = self.parent.get(node)
        return out

    def _holders(self, node: str, item: str) -> set[str]:
        """Live nodes, other than ``node`` and its ancestors, that will consume ``item`` already made."""
        safe, out = self._ancestors(node), set()
        for o in self.live - safe:
            held = self.avail.get(o, {}).get(item, 0)
            if held > 0 and self.future.get(o, {}).get(item, 0) > 0:
                out.add(o)  # o holds it and will consume it
            elif held > 0 and self.target.get(o) == item and self.parent.get(o) not in safe:
                out.add(self.parent[o])  # o made it for its parent, which will consume it
        return out

    def _held_back(self, node: str, step: tuple[Any, ...]) -> bool:
        """True while ``node`` must not consume an item a protected child is judged on."""
        recipe = self.world.recipes[step[1]]
        for ing, _ in recipe.ingredients:
            entries = self.protect.get(ing)
            if entries:
                entries[:] = [(c, h) for c, h in entries if c in self.live]
                if any(node in h for _, h in entries):
                    return True
        return False

    def _split(self, targets: Mapping[str, int], own: set[str]) -> tuple[dict[str, int], dict[str, int]]:
        """Totals of the items in ``own`` (crafted here) and needs of the items delegated."""
        world, need, totals = self.world, dict(targets), {}
        for item in sorted(own, key=lambda i: (-world.depth[i], i)):
            recipe = world.recipes[item]
            execs = -(-need[item] // recipe.result_count)
            totals[item] = execs * recipe.result_count
            for ing, q in recipe.ingredients:
                need[ing] = need.get(ing, 0) + q * execs
        return totals, {i: n for i, n in need.items() if i in world.recipes and i not in own}

    def _plan(self, node: str, targets: Mapping[str, int], depth: int, steps_left: int, max_depth: int) -> None:
        flat = self._flat_steps(targets)
        if not self.delegate or len(flat) <= steps_left or depth >= max_depth:
            return self._set_queue(node, flat)
        own = set(targets)  # items this node crafts itself
        totals, children = self._split(targets, own)
        wider, t2, c2 = own, totals, children
        while True:  # (1) craft risky ingredients here, delegating their ingredients instead
            risky = {i for i in c2 if self._holders(node, i)}
            if not risky:  # all risk removed: take it
                own, totals, children = wider, t2, c2
                break
            wider = wider | risky
            t2, c2 = self._split(targets, wider)
            if len(wider) + 2 > steps_left or not c2:
                break  # cannot remove the risk here: delegate as usual, see (2)
        self.stats["flattened"] += len(own) - len(targets)
        if not children:
            return self._set_queue(node, flat)
        crafts = [("craft", i, totals[i]) for i in sorted(own, key=lambda i: (self.world.depth[i], i))]
        self._set_queue(node, [("delegate", children), *crafts, ("finish", dict(targets))])

    # -- acting and bookkeeping ----------------------------------------------------------------
    def _emit(self, node: str, step: tuple[Any, ...]) -> str:
        kind = step[0]
        if kind == "delegate":
            calls = []
            for k, (item, n) in enumerate(step[1].items()):
                holders = self._holders(node, item)
                child = f"{node}.{k}"
                self.parent[child], self.target[child] = node, item
                self.live.add(child)
                if holders:  # (2) hold the holders back until the child has finished
                    self.stats["protected"] += 1
                    self.protect.setdefault(item, []).append((child, holders))
                calls.append(_call("delegate", goal=goal_text({item: n}), targets={item: n}))
            return "\n".join(calls)
        if kind == "craft":
            _, item, total = step
            recipe = self.world.recipes[item]
            ingredients = recipe.as_dict(total // recipe.result_count)
            avail, future = self.avail.setdefault(node, {}), self.future.setdefault(node, {})
            for ing, q in ingredients.items():
                if self.protect.get(ing) and self._held_back(node, step):
                    self.stats["unsafe"] += 1  # out of spare steps: consume anyway
                avail[ing] = avail.get(ing, 0) - q
                future[ing] = future.get(ing, 0) - q
            avail[item] = avail.get(item, 0) + total
            return _call("craft", ingredients=ingredients, target=[item, total])
        self.live.discard(node)
        parent, item = self.parent.get(node), self.target.get(node)
        if parent is not None and item is not None:
            made = max(0, self.avail.get(node, {}).get(item, 0))
            pav = self.avail.setdefault(parent, {})
            pav[item] = pav.get(item, 0) + made
        return _call("finish", result=goal_text(step[1]).replace("Craft", "Crafted", 1))
