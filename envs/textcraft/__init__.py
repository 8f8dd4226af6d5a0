"""TextCraft-v0 (TextCraft-Synth): craft items in a procedural recipe world, delegating sub-items.

The task's parts, one file each: ``world.py`` (the recipe world and its expansion of targets
into crafts), ``task.py`` (the task: instances, prompt, tools, verifier), ``oracle.py`` (the
scripted oracle) and ``discrete.py`` (the discrete-view adapter and its rule policy).
Registered in ``rao_envs.envs`` as ``TextCraft-v0`` and ``TextCraftDiscrete-v0``.
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
