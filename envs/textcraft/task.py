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

from rao_envs.envs.textcraft.task_sets import SynthTask, task_sets
from rao_envs.envs.textcraft.world import get_world
from rao_envs.errors import ConfigError, ToolError
from rao_envs.task import TREE_VERBS, NodeContext, Task, TaskInstance, tool
from rao_envs.types import Limits, StateScope

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
GUIDED_PROMPT = """You are a crafting agent in a synthetic crafting world. Item names are meaningless codes: \
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


SYSTEM_PROMPT = GUIDED_PROMPT  # kept for callers of the earlier name

#: the paper's system prompt (spec §4.5), paraphrased in our words, item for item and in its order
PAPER_CRAFTING = """You are playing a crafting game: you make items by combining ingredients. Your inventory \
holds enough to make your target items, although some intermediate items may have to be crafted first.

If you already hold some of a target item, craft the amount you are asked for on top of what you hold. \
For example, if you hold 2 wooden pickaxes and your goal is 3 wooden pickaxes, you should end with 5.

<TIPS>
CRAFTING STRATEGY
- Each execution of a recipe yields a fixed number of items, so you can only make multiples of it \
(a recipe that makes 2 can make 2, 4, 6, ...).
- Ingredients scale with the executions: if 2 ore make 2 items, use 2 ore for one execution and 4 ore for two.
- Always check before you conclude that something cannot be done.
- Look at your inventory and at the recipe information to confirm what is available.
- Calculate carefully: if 2 ingredients make 2 items, exactly 2 ingredients are needed for 2 items.
"""

PAPER_DELEGATION = """DELEGATION STRATEGY
- Delegating the crafting of intermediate ingredients to sub-agents is **highly recommended**.
- Break the work into INDEPENDENT subtasks.
- When a task is complex enough, delegate recursively: sub-agents can delegate in turn.
- Delegate one group of related items at a time rather than everything at once.
- Items that do not depend on each other can be delegated in parallel.
- Sub-agents share your inventory, so what they craft is available to you at once.
- **IMPORTANT**: a sub-agent's result comes back to you when it finishes. One sub-agent: \
delegate(goal="Craft the following items: 4x m0_i2", targets={"m0_i2": 4}). Two in parallel: write \
two delegate calls in the same turn.
"""

PAPER_CLOSING = """</TIPS>

You act by calling tools, and you have several steps. In each step, first reason briefly \
(about 1-3 sentences), then give exactly one tool call; its output is shown to you."""

PAPER_TOOLS = {
    "craft": "craft(ingredients: dict[str, int], target: [item, total_count]): consumes items from your "
    "inventory. ingredients maps each ingredient to the count used; target is the item and the total "
    "to make, which must be a multiple of the recipe's result_count. Example (illustrative only): "
    '{"ingredients": {"m0_i1": 2, "m1_i1": 2}, "target": ["m2_i2", 2]}',
    "get_info": "get_info(items: list[str]): for each item a record with item, can_craft, is_base, "
    "in_inventory, crafting_depth (0 a base item, 1 crafted directly from base items, 2 or more needs "
    "intermediates) and recipes, a list of {ingredients: {name: count}, result_count}. Example: "
    '{"items": ["m0_ore"]}',
    "view_inventory": "view_inventory(): the counts of everything in your inventory, as a dict.",
}
PAPER_FINISH = "- finish(result: str): completes the task; give a short message, e.g. \"All target items crafted.\""
PAPER_DELEGATE = (
    "- delegate(goal: str, targets: dict[str, int], context: str = None): launches a sub-agent that shares "
    "your inventory, on the goal \"Craft the following items: 4x m0_i2\" with targets {\"m0_i2\": 4}. Several "
    "delegate calls in one turn run in parallel. You get back each sub-agent's finish message."
)
VARIANTS = ("paper", "guided")


class TextCraftSynth(Task):
    """Craft target items in a procedural recipe world; delegate sub-items to sub-agents."""

    name = "TextCraft"
    version = 0
    state_scope = StateScope.SHARED
    difficulties = ("easy", "medium", "hard", "extreme")
    default_difficulty = "medium"
    default_limits = {"max_depth": 6, "max_steps_per_node": 25, "max_nodes": 8192}
    #: the max_depth at which the delegating oracle solves every instance of a difficulty
    #: (measured by benchmarks/textcraft_depth.py; the paper's default of 6 is not enough for extreme)
    recommended_max_depth = {"easy": 6, "medium": 6, "hard": 6, "extreme": 7}
    delegate_args_doc = ", targets: dict[str, int]"
    examples = {
        "get_info": {"items": ["m0_i2"]},
        "craft": {"ingredients": {"m0_i0": 2, "m0_i1": 1}, "target": ["m0_i2", 1]},
        "delegate": {"goal": "Craft the following items: 4x m0_i2", "targets": {"m0_i2": 4}},
        "finish": {"result": "All target items crafted."},
    }
    def __init__(
        self, difficulty: str | None = None, split: str = "train", variant: str = "paper", delegate: bool = True
    ) -> None:
        mixed = difficulty == "mixed"
        super().__init__(None if mixed else difficulty, split)
        if mixed:
            self.difficulty = "mixed"
        if variant not in VARIANTS:
            raise ConfigError(f"TextCraft: variant must be one of {list(VARIANTS)}, got {variant!r}")
        self.world = get_world()
        self.variant, self.delegate = variant, bool(delegate)
        self.show_status = variant == "guided"
        self._tasks = self.tasks(split, None if mixed else self.difficulty)
        self._solo = not self.delegate  # set again by tree_verbs from the engine's limits (max_depth=0)

    @property
    def system_prompt(self) -> str:  # type: ignore[override]
        """Paper: the reference's prompt (its delegation section only when delegation is offered); guided: ours."""
        if self.variant != "paper":
            return GUIDED_PROMPT
        return PAPER_CRAFTING + ("" if self._solo else "\n" + PAPER_DELEGATION) + PAPER_CLOSING

    # -- instances ----------------------------------------------------------------------------
    @staticmethod
    def tasks(split: str, difficulty: str | None = None) -> list[SynthTask]:
        """The fixed task set of ``split`` (spec §3): the whole split in file order, or one difficulty's tasks."""
        sets = task_sets()
        if split not in sets:
            raise ConfigError(f"TextCraft: split must be 'train' or 'val', got {split!r}")
        if difficulty in (None, "mixed"):
            return list(sets[split])
        if difficulty not in DEPTHS:
            raise ConfigError(f"TextCraft: unknown difficulty {difficulty!r}; choose one of {[*DEPTHS, 'mixed']}")
        return [t for t in sets[split] if t.difficulty == difficulty]

    def num_instances(self) -> int:
        """How many tasks the chosen split and difficulty hold (``reset(seed=i)`` plays task ``i mod N``)."""
        return len(self._tasks)

    def instance(self, index: int) -> TaskInstance:
        """Task ``index`` of the chosen split and difficulty, as an instance."""
        t = self._tasks[index]
        return TaskInstance(
            goal=t.goal, args={"targets": dict(t.targets)}, data={"inventory": dict(t.inventory), "task_id": t.task_id}
        )

    def generate(self, rng: np.random.Generator) -> TaskInstance:
        """A uniformly drawn task of the fixed set (the engine selects by index instead)."""
        return self.instance(int(rng.integers(len(self._tasks))))

    def tree_verbs(self, limits: Limits) -> tuple[str, ...]:
        """All verbs; without ``delegate`` (nor wait/cancel) in the single-agent control or at ``max_depth=0``."""
        self._solo = not self.delegate or limits.max_depth == 0
        if self._solo:
            return ("finish",)
        return ("delegate", "finish") if self.variant == "paper" else TREE_VERBS

    def describe_verb(self, verb: str, default: str) -> str:
        """The paper variant's own wording of ``delegate`` and ``finish``."""
        if self.variant != "paper":
            return default
        return {"delegate": PAPER_DELEGATE, "finish": PAPER_FINISH}.get(verb, default)

    def describe_tools(self) -> str:
        """The paper variant lists the tools as the reference's action space does (§4.6)."""
        if self.variant != "paper":
            return super().describe_tools()
        return "\n".join(f"- {PAPER_TOOLS[name]}" for name in self.tools)

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
        """Paper: task heading, goal, the budget once, the request for a step. Guided: goal, targets, held counts."""
        if self.variant == "paper":
            goal = ctx.node.goal
            if ctx.node.context:
                goal += f"\n\nContext provided from parent agent: {ctx.node.context}"
            return (
                f"# Task\nYour Goal: {goal}\nBudget: you have a total budget of {ctx.node.budget} steps for this task.\n\n"
                "Think step by step, then give your next action: a short thought (1-3 sentences) followed by "
                "exactly one tool call."
            )
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
        """1.0 iff each of the node's targets grew by at least its count since the node spawned.

        The paper variant also requires a non-empty ``finish`` message, as the reference does.
        """
        if self.variant == "paper" and not str(ctx.node.result or "").strip():
            return 0.0
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
        label = self.variant == "paper"  # the reference reports the tier label as crafting_depth
        return json.dumps([self.world.info(i, ctx.state, label=label) for i in items])

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
        if self.variant == "paper":
            return self._craft_paper(ctx, ingredients, target)
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

    def _craft_paper(self, ctx: NodeContext, ingredients: dict[str, int], target: list | tuple) -> str:
        """The reference's craft checks and error contents (spec §4.2): one reason, never the answer."""
        world, inv = self.world, ctx.state
        if len(target) != 2 or not isinstance(target[0], str):
            raise ToolError(f"target must be a pair [item, count], got {str(target)[:80]}")
        item, total = target[0], _as_count(target[1])
        if total is None or total < 1:
            raise ToolError(f"target count must be a positive integer, got {str(target[1])[:40]}")
        for k, v in ingredients.items():
            n = _as_count(v)
            if n is None or n < 1:
                raise ToolError(f"ingredient count for {str(k)[:60]} must be a positive integer, got {str(v)[:40]}")
        recipe = world.recipes.get(item)
        if recipe is None:
            raise ToolError(f"no recipe found for {item[:60]}")
        head = f"all 1 recipe(s) failed for {item}\nRecipe 1: "
        if total > MAX_CRAFT_COUNT:
            raise ToolError(head + f"count {total} is too large (at most {MAX_CRAFT_COUNT} per craft call)")
        if total % recipe.result_count:
            raise ToolError(head + f"{total} is not divisible by the result count {recipe.result_count}")
        execs = total // recipe.result_count
        want = recipe.as_dict(execs)
        given = {k: _as_count(v) for k, v in ingredients.items()}
        for ing, n in want.items():
            if ing not in given:
                raise ToolError(head + f"missing ingredient {ing}")
            if given[ing] != n:
                raise ToolError(head + f"wrong amount of {ing}, need {n}, provided {given[ing]}")
        extra = sorted(set(given) - set(want))
        if extra:
            raise ToolError(head + f"extra ingredients {', '.join(str(e)[:60] for e in extra[:5])}")
        short = [f"{k} (need {n}, have {inv.get(k, 0)})" for k, n in want.items() if inv.get(k, 0) < n]
        if short:
            raise ToolError(head + f"insufficient inventory: {', '.join(short)}")
        for k, n in want.items():
            inv[k] -= n
            if not inv[k]:
                del inv[k]
        inv[item] = inv.get(item, 0) + total
        return f"Successfully crafted {total} {item}"

    # -- oracles -------------------------------------------------------------------------------
    def oracle(self, delegate: bool | None = None, strategy: str = "lean") -> TextCraftOracle:
        """Scripted policy: delegating (default; ``strategy`` "lean" or "per_ingredient") or flat (``delegate=False``).

        ``delegate`` defaults to the task's own (False in the single-agent control).

        It reads the depth limit, the turn and refusals from ``info`` (a ``NodeInfo``).
        """
        from rao_envs.envs.textcraft.oracle import TextCraftOracle  # oracle.py imports this module

        return TextCraftOracle(self.world, delegate=self.delegate if delegate is None else delegate, strategy=strategy)
