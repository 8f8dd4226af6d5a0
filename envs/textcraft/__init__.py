"""TextCraft-v0 (TextCraft-Synth, RAO paper section 4.1): craft items in a procedural recipe world.

The task's parts, one file each: ``world.py`` (the recipe world and its expansion of targets
into crafts), ``task.py`` (:class:`TextCraftSynth`: instances, prompt, tools, verifier),
``oracle.py`` (:class:`TextCraftOracle`) and ``discrete.py`` (the discrete-view adapter and
its rule policy).

## Description
The paper's TextCraft-Synth world, built once per process draw for draw as the authors'
generator (:func:`get_world`, ``world.py``; spec ``textcraft_synth_reference.md`` §1): five
domains with meaningless names (metal ``m``, crystal ``c``, organic ``o``, arcane ``a``, tech
``t``), 10 base items per domain (``m0_ore``, ``raw_o3``, ...), ``25 - tier // 3`` craftable
items per domain at tiers 1-12 (``m0_i1``, ``m0_i1_10``, ``m0_i6_6``, ...) and 12 cross-domain
items (``x10_mc`` ... ``x12_all``): 1,452 items, 1,402 recipes. An item's *tier* is its label;
its *depth* (``world.depth(item)``) the true recursive depth: 164 items are shallower than
their label (152 by one level, the 12 cross-domain items by two).

Instances come from the paper's fixed task sets (``task_sets.py``, spec §3):
:meth:`TextCraftSynth.tasks` lists them (2,522 train / 632 val; every (target, count) pair of
the split's pool, one target, 1-3 of it on easy and medium, 1-2 on hard and extreme), with
the reference's inventories (per-unit need ignoring result counts, a buffer up to half of
it, 1-3 distractor picks). ``reset(seed=i)`` plays task ``i mod N`` of the split and
difficulty (``options={"task_index": i}`` too); ``difficulty="mixed"`` is the whole split.

Two variants, side by side:

============================  =======================================  =====================================
                              ``variant="paper"`` (default)            ``variant="guided"``
============================  =======================================  =====================================
system prompt                 the reference's, paraphrased, in order   ours: crafting rules, delegate in
                              (crafting tips; delegate one group of    parallel, craft shallow items yourself
                              related items at a time)
first message                 goal and the budget, stated once         goal, targets and counts held
status line (depth, steps)    never shown                              after every observation
``get_info`` crafting_depth   the tier label (as the reference)        the true depth
craft errors                  one reason, never the answer             the exact ingredient dict
success                       targets grown and a non-empty finish     targets grown
============================  =======================================  =====================================

``delegate=False`` (or ``max_depth=0``) is the paper's single-agent control: no delegation
section and no ``delegate`` verb in the prompt and the action space; same tasks, limits and
scorer. Oracles: the delegating one (default, ``strategy="lean"``: a node takes over as many
items as its steps allow before delegating the rest; ``"per_ingredient"``: one child per
ingredient) and the flat one (``delegate=False``), which runs out of steps on deep tasks.

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
count since the node was spawned (its ``spawn_snapshot``), else 0.0; in the paper variant the
``finish`` message must also be non-empty. Each node's reward is
the engine's local reward ``score + lam * mean(children's scores)``.

## Termination
A node ends when it calls ``finish`` or runs out of its 25 steps (truncated, score 0); the
episode ends when the root does. Limits: ``max_depth`` 6, ``max_steps_per_node`` 25,
``max_nodes`` 8192.

## Difficulties
The target's tier label: ``easy`` 2-3, ``medium`` 4-6 (default), ``hard`` 7-9, ``extreme``
10-12 (``mixed``: the whole split). Measured with ``benchmarks/textcraft_depth.py`` on the
full val set (see the README): the lean delegating oracle solves easy to hard at the
paper's ``max_depth`` 6; extreme needs 7 (``TextCraftSynth.max_depth_for("extreme")``); the
flat oracle fails hard and extreme.

## Registered ids
``rao_envs/TextCraft-v0`` (the text view; also ``rao_envs.parallel_env("TextCraft-v0")``)
and ``rao_envs/TextCraftDiscrete-v0`` (the discrete view, :class:`TextCraftAdapter`;
``delegate=False`` and ``delegate_each=True`` go to the adapter; its defaults for stock RL,
``reward_mode="tree"``, a 0.05 delegate cost and ``max_nodes`` per difficulty, are in
``discrete.py``), registered in ``rao_envs.envs``.
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
