"""TextCraft-v0 (TextCraft-Synth, RAO paper section 4.1): craft items in a procedural recipe world.

The task's parts, one file each: ``world.py`` (the recipe world and its expansion of targets
into crafts), ``task.py`` (:class:`TextCraftSynth`: instances, prompt, tools, verifier),
``oracle.py`` (:class:`TextCraftOracle`) and ``discrete.py`` (the discrete-view adapter and
its rule policy).

## Description
The world is built once per process from a fixed seed (:func:`get_world`): five domains with
meaningless names (metal ``m``, crystal ``c``, organic ``o``, arcane ``a``, tech ``t``), base
items at tier 0 (``m0_ore``, ``raw_o0``, ...) and craftable items ``{domain}{k}_i{tier}`` at
tiers 1-12, plus cross-domain items (``x10_mc``, ``x11_mct``, ``x12_all``) at tiers 10-12.
Every item has exactly one recipe, and an item's recipe depth equals its tier. An instance
asks for one target item (``args={"targets": {"m5_i3": 2}}``, 1-3 of it on easy and medium,
1-2 on hard and extreme). Targets are split 80/20 by item between ``train`` and ``val``.
The starting inventory holds exactly the base materials the target needs (an upper bound
for any crafting order) plus a 0-50% buffer and 1-3 distractors. Two oracles: the
delegating one (default) solves every instance when the depth limit leaves room; the flat
one (``delegate=False``) runs out of steps on deep instances.

## Tools
``get_info(items)`` (recipe, crafting depth and count held of each item), ``view_inventory()``
and ``craft(ingredients, target=[item, total_count])`` (``total_count`` a multiple of the
recipe's result count, ``ingredients`` exactly the recipe's times the executions).

## Delegation
``delegate(goal=..., targets={item: count})``: at most 10 craftable targets, counts 1-1000
(targets missing from the arguments are read from a goal such as "Craft 2x m3_i4").

## State scope
``shared``: one inventory dict, shared by reference by every node of the tree.

## Rewards
A node scores 1.0 when, at its ``finish``, each of its targets grew by at least the asked
count since the node was spawned (its ``spawn_snapshot``), else 0.0. Each node's reward is
the engine's local reward ``score + lam * mean(children's scores)``.

## Termination
A node ends when it calls ``finish`` or runs out of its 25 steps (truncated, score 0); the
episode ends when the root does. Limits: ``max_depth`` 6, ``max_steps_per_node`` 25,
``max_nodes`` 1024.

## Difficulties
The target's depth: ``easy`` 2-3, ``medium`` 4-6 (default), ``hard`` 7-9, ``extreme``
10-12. Measured (``benchmarks/textcraft_depth.py``, 50 seeds per difficulty, 25 steps per
node): the delegating oracle needs ``max_depth`` 0 (easy), 1 (medium), 4 (hard) and 7
(extreme) to solve every seed (extreme: 58% at the default 6, so
``TextCraftSynth.max_depth_for("extreme")`` is 7); the flat oracle solves 100% of easy, 88%
of medium and none of hard or extreme. Extreme trees have 170 nodes on average, at most 494.

## Registered ids
``rao_envs/TextCraft-v0`` (the text view; also ``rao_envs.parallel_env("TextCraft-v0")``)
and ``rao_envs/TextCraftDiscrete-v0`` (the discrete view, :class:`TextCraftAdapter`;
``delegate=False`` and ``delegate_each=False`` go to the adapter), registered in
``rao_envs.envs``.
"""

from rao_envs.envs.textcraft.discrete import TextCraftAdapter, rule_policy
from rao_envs.envs.textcraft.oracle import TextCraftOracle
from rao_envs.envs.textcraft.task import (
    DEPTHS,
    MAX_COUNT,
    MAX_CRAFT_COUNT,
    MAX_TARGET_COUNT,
    MAX_TARGETS,
    SYSTEM_PROMPT,
    TextCraftSynth,
    goal_text,
    parse_targets,
)
from rao_envs.envs.textcraft.world import (
    BASE_PER_DOMAIN,
    CROSS_ITEMS,
    DOMAINS,
    LABEL_DEPTH_MISMATCH,
    ITEMS_PER_TIER,
    MAX_TIER,
    VAL_FRACTION,
    WORLD_SEED,
    Recipe,
    World,
    _build_world,  # not public: tests build worlds of other sizes
    get_world,
)

__all__ = [
    "BASE_PER_DOMAIN",
    "CROSS_ITEMS",
    "DEPTHS",
    "DOMAINS",
    "LABEL_DEPTH_MISMATCH",
    "ITEMS_PER_TIER",
    "MAX_COUNT",
    "MAX_CRAFT_COUNT",
    "MAX_TARGETS",
    "MAX_TARGET_COUNT",
    "MAX_TIER",
    "SYSTEM_PROMPT",
    "VAL_FRACTION",
    "WORLD_SEED",
    "Recipe",
    "TextCraftAdapter",
    "TextCraftOracle",
    "TextCraftSynth",
    "World",
    "get_world",
    "goal_text",
    "parse_targets",
    "rule_policy",
]
