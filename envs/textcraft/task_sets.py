"""TextCraft-Synth's fixed task sets, built by the reference rules (spec ``textcraft_synth_reference.md`` §3).

:func:`task_sets` returns, per split, the full list of tasks in the reference's file order:
every (target, count) pair of the split's target pool per difficulty (2,522 train, 632 val;
val 147 easy / 213 medium / 136 hard / 136 extreme), each with the reference's starting
inventory (the per-unit need rule, which ignores result counts, a buffer of up to half the
need per base, and 1-3 distractor picks). The generator replays the reference's draws with
its own ``Random(seed)`` (the split's shuffles first) and a second ``Random(seed + 1)`` for
the final shuffle; the distractor list is the sorted base names (the spec's canonical,
``PYTHONHASHSEED``-independent order), so :func:`task_set_digest` is reproducible.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from rao_envs.envs.textcraft.world import MAX_TIER, VAL_FRACTION, World, _CPythonRandom, get_world

#: difficulty -> (lowest tier label, highest, most copies of the target, share of the quota)
BANDS: dict[str, tuple[int, int, int, float]] = {
    "easy": (2, 3, 3, 0.25),
    "medium": (4, 6, 3, 0.35),
    "hard": (7, 9, 2, 0.25),
    "extreme": (10, 12, 2, 0.15),
}
QUOTA = {"train": 10_000, "val": 1_000}  # the reference's requested sizes (the attempt cap ends each cell first)
ATTEMPTS_PER_QUOTA = 30


@dataclass(frozen=True)
class SynthTask:
    """One task of a fixed set: its goal text, ``targets`` {item: count}, starting inventory and difficulty."""

    index: int
    split: str
    difficulty: str
    goal: str
    targets: Mapping[str, int]
    inventory: Mapping[str, int]

    @property
    def task_id(self) -> str:
        """The reference's id, ``textcraft_synth.{split}.{index}``."""
        return f"textcraft_synth.{self.split}.{self.index}"


def unit_needs(world: World, item: str, _memo: dict | None = None) -> dict[str, int]:
    """Base units for ONE ``item`` under the reference's need rule (quantities multiplied, result counts ignored).

    Bases are in the order a depth-first walk over the ingredients (recipe order) first meets them.
    """
    memo = world.__dict__.setdefault("_unit_needs", {}) if _memo is None else _memo
    if item not in world.recipes:
        return {item: 1}
    out = memo.get(item)
    if out is None:
        out = {}
        for ing, q in world.recipes[item].ingredients:
            for b, n in unit_needs(world, ing, memo).items():
                out[b] = out.get(b, 0) + q * n
        memo[item] = out
    return out


def _generate(world: World) -> dict[str, list[SynthTask]]:
    rng = _CPythonRandom(world.seed)
    pools: dict[str, dict[int, list[str]]] = {"train": {}, "val": {}}
    for t in range(1, MAX_TIER + 1):  # replay the split's shuffles (they come first in this stream)
        items = list(world.by_tier[t])
        rng.shuffle(items)
        cut = int(len(items) * (1 - VAL_FRACTION))
        pools["train"][t], pools["val"][t] = items[:cut], items[cut:]
    bases = sorted(world.base)
    out: dict[str, list[tuple[str, str, dict[str, int], dict[str, int]]]] = {}
    for split in ("train", "val"):
        made_all = []
        for difficulty, (lo, hi, max_count, share) in BANDS.items():
            quota = int(QUOTA[split] * share)
            pool = [i for t in range(lo, hi + 1) for i in pools[split][t]]
            seen: set[tuple[str, int]] = set()
            made = attempts = 0
            while made < quota and attempts < ATTEMPTS_PER_QUOTA * quota:
                attempts += 1
                rng.randint(1, 1)  # the number of targets: always 1
                target = pool[rng.below(len(pool))]
                count = rng.randint(1, max_count)
                if (target, count) in seen:
                    continue
                seen.add((target, count))
                inventory: dict[str, int] = {}
                for b, q in unit_needs(world, target).items():
                    need = count * q
                    inventory[b] = need + rng.randint(0, max(1, need // 2))
                for _ in range(rng.randint(1, 3)):
                    b = rng.choice(bases)
                    if b not in inventory:
                        inventory[b] = rng.randint(1, 5)
                made_all.append((difficulty, target, count, inventory))
                made += 1
        out[split] = made_all
    final = _CPythonRandom(world.seed + 1)
    result: dict[str, list[SynthTask]] = {}
    for split in ("train", "val"):
        rows = out[split]
        final.shuffle(rows)
        result[split] = [
            SynthTask(i, split, d, f"Craft the following items: {c}x {t}", {t: c}, dict(sorted(inv.items())))
            for i, (d, t, c, inv) in enumerate(rows)
        ]
    return result


@functools.lru_cache(maxsize=4)
def task_sets(seed: int | None = None) -> dict[str, list[SynthTask]]:
    """``{"train": [...], "val": [...]}``: the fixed task sets of the world of ``seed`` (default: the paper's), cached."""
    world = get_world() if seed is None else get_world(seed)
    return _generate(world)


def task_set_digest(sets: Mapping[str, list[SynthTask]]) -> str:
    """sha256 of ``{"train": [[goal, sorted inventory pairs], ...], "val": [...]}`` in file order (spec §3.5)."""
    doc = {s: [[t.goal, sorted([k, v] for k, v in t.inventory.items())] for t in sets[s]] for s in ("train", "val")}
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()
