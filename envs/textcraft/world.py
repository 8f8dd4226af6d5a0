"""The TextCraft-Synth recipe world of the RAO paper, built draw for draw as the authors' generator.

:func:`get_world` builds the reference world (``textcraft_synth_reference.md`` §1, seed 42,
25 items per domain and tier): five domains with meaningless names (metal ``m``, crystal
``c``, organic ``o``, arcane ``a``, tech ``t``), 10 base items per domain at tier 0
(``m0_ore``, ``raw_o3``, ...), ``25 - tier // 3`` craftable items per domain at each tier
1-12 (``m0_i1``, ``m0_i1_10``, ``m0_i6_6``, ...) and 12 cross-domain items (``x10_mc`` ...
``x12_all``) at tiers 10-12: 1,452 items, 1,402 recipes, every item exactly one recipe.

**Tier and depth.** An item's *tier* is the label it was generated at (what the reference's
``get_info`` reports as ``crafting_depth``); its *depth* (:attr:`World.depth`, callable:
``world.depth(item)``) is the true recursive depth (base 0, else 1 + the deepest
ingredient). 164 of the 1,402 craftable items are shallower than their label (none is
deeper): 152 by one level (recipes without a tier ``t-1`` ingredient, and their consumers)
and the 12 cross-domain items by two (their ingredients are from ``t-3``).
:data:`LABEL_DEPTH_MISMATCH` counts them per tier.

Craftable items are split 80/20 by item between ``train`` and ``val`` exactly as the
reference's task generator splits them (:attr:`World.split`, in its shuffled order).
:meth:`World.expand` is the one expansion of targets into crafts: the task, its oracles and
the discrete view plan with it. The generator uses CPython's Mersenne Twister through a
pinned port of its integer draws, so the world is the same on every Python and for every
``PYTHONHASHSEED``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

WORLD_SEED = 42
DOMAINS = ("m", "c", "o", "a", "t")
MAX_TIER = 12
BASE_PER_DOMAIN = 10
ITEMS_PER_TIER = 25
VAL_FRACTION = 0.2
_RESULT_COUNT = {1: (2, 4), 2: (2, 3), 3: (1, 2), 4: (1, 2), 5: (1, 2)}  # tiers 6-12: 1
#: cross-domain items, in generation order: name -> (tier, domains it draws one tier t-3 ingredient from)
CROSS_ITEMS: dict[str, tuple[int, str]] = {
    "x10_mc": (10, "mc"),
    "x10_ot": (10, "ot"),
    "x10_am": (10, "am"),
    "x10_ct": (10, "ct"),
    "x11_mct": (11, "mct"),
    "x11_oam": (11, "oam"),
    "x11_act": (11, "act"),
    "x11_tca": (11, "tca"),
    "x12_mcat": (12, "mcat"),
    "x12_oacm": (12, "oacm"),
    "x12_tcoa": (12, "tcoa"),
    "x12_all": (12, "mcoat"),
}
#: per tier label, how many craftable items are shallower than their label (measured, spec §1.7)
LABEL_DEPTH_MISMATCH = {2: 19, 3: 18, 4: 25, 5: 23, 6: 19, 7: 16, 8: 9, 9: 5, 10: 8, 11: 15, 12: 7}


class Depths(dict):
    """Item -> true recursive depth; also callable, ``world.depth(item)``."""

    def __call__(self, item: str) -> int:
        """The true depth of ``item`` (0 for base items)."""
        return self[item]


@dataclass(frozen=True)
class Recipe:
    """One recipe: ``ingredients`` (item -> count per execution, in recipe order) make ``result_count`` items.

    ``tier`` is the label of the item it makes (the reference's ``crafting_depth``).
    """

    ingredients: tuple[tuple[str, int], ...]
    result_count: int
    tier: int = 0

    def as_dict(self, executions: int = 1) -> dict[str, int]:
        """Ingredients for ``executions`` crafts, as a plain dict."""
        return {item: q * executions for item, q in self.ingredients}

    def executions(self, count: int) -> int:
        """Crafts needed for at least ``count`` items: ``count / result_count``, rounded up."""
        return -(-count // self.result_count)


@dataclass
class World:
    """The recipe world: items, tier labels, recipes, true depths and the train/val split.

    ``by_tier`` lists each tier's craftable items in generation order; ``split[split][tier]``
    the split's items in the reference's shuffled order.

    Planning: :meth:`expand` walks the recipe tree of some targets (consumers first, summed
    needs, optional stock or own set); :meth:`plan` is its crafting order; :meth:`base_needs`
    is the per-branch upper bound that sizes starting inventories.
    """

    seed: int
    base: tuple[str, ...]
    tier: dict[str, int]
    domain: dict[str, str]
    recipes: dict[str, Recipe]
    depth: Depths = field(default_factory=Depths)
    by_tier: dict[int, tuple[str, ...]] = field(default_factory=dict)
    val_items: frozenset[str] = frozenset()
    split: dict[str, dict[int, tuple[str, ...]]] = field(default_factory=dict)
    _needs: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict, repr=False)
    _closures: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)
    _expansions: dict[tuple[Any, ...], tuple[tuple[tuple[str, int], ...], dict[str, int]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    # -- queries --------------------------------------------------------------------------
    def exists(self, item: str) -> bool:
        """True for every base or craftable item of the world."""
        return item in self.tier

    def is_base(self, item: str) -> bool:
        """True for tier-0 items (they cannot be crafted)."""
        return item in self.tier and item not in self.recipes

    def split_items(self, split: str, tiers: Iterable[int]) -> list[str]:
        """The craftable items of tier labels ``tiers`` in ``split`` (``train`` or ``val``), in the split's order."""
        return [item for t in tiers for item in self.split[split].get(t, ())]

    def close_matches(self, item: str, n: int = 3) -> list[str]:
        """Known item names that look like ``item`` (for error messages)."""
        import difflib

        return difflib.get_close_matches(str(item), list(self.tier), n=n, cutoff=0.6)

    # -- planning ---------------------------------------------------------------------------
    def closure(self, items: Iterable[str], own: Collection[str] | None = None) -> tuple[str, ...]:
        """The craftable items in the expansion of ``items``, consumers first (depth descending, then name).

        With ``own``, only the items in ``own`` are expanded: the closure then also holds the
        ingredients they need that are not in ``own`` (the frontier), but nothing below them.
        """
        if own is not None:
            return self._walk_closure(items, own)
        key = tuple(sorted(set(items)))
        out = self._closures.get(key)
        if out is None:
            if len(self._closures) >= 4096:  # a bounded cache: plans repeat within and across trees
                self._closures.clear()
            out = self._closures[key] = self._walk_closure(key, None)
        return out

    def _walk_closure(self, items: Iterable[str], own: Collection[str] | None) -> tuple[str, ...]:
        recipes = self.recipes
        stack = [i for i in items if i in recipes]
        seen = set(stack)
        while stack:
            item = stack.pop()
            if own is not None and item not in own:
                continue
            for ing, _ in recipes[item].ingredients:
                if ing in recipes and ing not in seen:
                    seen.add(ing)
                    stack.append(ing)
        return tuple(sorted(seen, key=lambda i: (-self.depth[i], i)))

    def expand(
        self, targets: Mapping[str, int], stock: Mapping[str, int] | None = None, own: Collection[str] | None = None
    ) -> tuple[list[tuple[str, int]], dict[str, int]]:
        """The walk of the recipe tree behind every plan: ``(crafts, frontier)``.

        ``crafts`` lists ``(item, total)`` consumers first (depth descending, then name): each
        craftable item of the expansion of ``targets`` is crafted once, with the summed need
        of all its consumers, less what ``stock`` already holds of it, rounded up to a
        multiple of its result count (an item the stock covers is not crafted, nor expanded).
        With ``own``, only the items in ``own`` are crafted and expanded; ``frontier`` holds
        the summed needs of the craftable items reached but not in ``own``, in the order they
        were first needed (empty without ``own``).
        """
        if stock:
            return self._expand(targets, stock, own)
        # memoised without stock: the oracles plan the same (targets, own) in many nodes of a tree
        key = (tuple(targets.items()), None if own is None else frozenset(own))
        hit = self._expansions.get(key)
        if hit is None:
            if len(self._expansions) >= 16384:  # bounded (a few tens of MB), like the closure cache
                self._expansions.clear()
            crafts, frontier = self._expand(targets, None, own)
            hit = self._expansions[key] = (tuple(crafts), frontier)
        return list(hit[0]), dict(hit[1])

    def _expand(
        self, targets: Mapping[str, int], stock: Mapping[str, int] | None, own: Collection[str] | None
    ) -> tuple[list[tuple[str, int]], dict[str, int]]:
        recipes = self.recipes
        need = {i: int(n) for i, n in targets.items() if i in recipes}
        crafts: list[tuple[str, int]] = []
        for item in self.closure(need, own):
            if own is not None and item not in own:
                continue
            n = need.get(item, 0)
            if stock:
                n -= max(0, stock.get(item, 0))
            if n <= 0:
                continue
            recipe = recipes[item]
            execs = recipe.executions(n)
            crafts.append((item, execs * recipe.result_count))
            for ing, q in recipe.ingredients:
                if ing in recipes:
                    need[ing] = need.get(ing, 0) + q * execs
        frontier = {} if own is None else {i: n for i, n in need.items() if i not in own}
        return crafts, frontier

    def plan(self, targets: Mapping[str, int], stock: Mapping[str, int] | None = None) -> list[tuple[str, int]]:
        """The flat crafting plan for ``targets``: ``(item, total)`` in a valid order, lowest depth first.

        Each non-base item of the expansion is crafted once, with the summed need of all
        its consumers rounded up to a multiple of its result count (:meth:`expand`, reversed).
        Existing inventory is ignored (the plan never relies on it) unless ``stock`` names
        what the caller holds for this job: those items are crafted only for the rest.
        """
        crafts, _ = self.expand(targets, stock)
        crafts.reverse()
        return crafts

    def base_needs(self, item: str, count: int) -> dict[str, int]:
        """Base items needed for ``count`` x ``item``, per branch of the expansion tree.

        Unlike :meth:`expand`, every occurrence of an intermediate is crafted on its own with
        ``ceil(need / result_count)`` executions, so this is an upper bound for any crafting
        strategy (crafting a shared intermediate once with the summed total never needs more).
        """
        if item not in self.recipes:
            return {item: count}
        key = (item, count)
        if key not in self._needs:
            recipe = self.recipes[item]
            execs = recipe.executions(count)
            total: dict[str, int] = {}
            for ing, q in recipe.ingredients:
                for base, n in self.base_needs(ing, q * execs).items():
                    total[base] = total.get(base, 0) + n
            self._needs[key] = total
        return dict(self._needs[key])

    def canonical_digest(self) -> str:
        """sha256 of the craftable items' recipes in the spec's canonical JSON (§1.6)."""
        import hashlib
        import json

        canon = {
            item: {"ingredients": sorted([i, q] for i, q in r.ingredients), "result_count": r.result_count, "tier": self.tier[item]}
            for item, r in self.recipes.items()
        }
        return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def generation_digest(self) -> str:
        """sha256 of ``[item, result_count, [[ingredient, qty], ...]]`` over tiers 1-12 in generation order (§1.6)."""
        import hashlib
        import json

        rows = [[i, self.recipes[i].result_count, [list(p) for p in self.recipes[i].ingredients]]
                for t in range(1, MAX_TIER + 1) for i in self.by_tier[t]]
        return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()

    def info(self, item: str, inventory: Mapping[str, int], label: bool = False) -> dict[str, Any]:
        """What ``get_info`` reports about one item; ``crafting_depth`` is the tier label if ``label``, else the true depth."""
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
            "crafting_depth": self.tier[item] if label else self.depth[item],
            "recipes": [] if recipe is None else [
                {"ingredients": recipe.as_dict(), "result_count": recipe.result_count}
            ],
        }


class _CPythonRandom:
    """The draws of CPython's ``random.Random`` the reference generator makes, pinned in our code.

    ``random()`` (53 bits) and ``getrandbits`` come from CPython's MT19937 (stable across
    versions); ``randint``/``choice``/``shuffle`` use the rejection sampling of CPython 3.11's
    ``_randbelow`` (``getrandbits(n.bit_length())``, drawing even when ``n == 1``), written
    out here so a later Python that changes ``_randbelow`` still builds the same world.
    """

    def __init__(self, seed: int) -> None:
        import random

        self._r = random.Random(seed)

    def below(self, n: int) -> int:
        """A uniform int in ``[0, n)``."""
        k, bits = n.bit_length(), self._r.getrandbits
        r = bits(k)
        while r >= n:
            r = bits(k)
        return r

    def random(self) -> float:
        """A float in ``[0, 1)``."""
        return self._r.random()

    def randint(self, a: int, b: int) -> int:
        """A uniform int in ``[a, b]``."""
        return a + self.below(b - a + 1)

    def choice(self, seq: Sequence[Any]) -> Any:
        """A uniform element of ``seq``."""
        return seq[self.below(len(seq))]

    def shuffle(self, x: list[Any]) -> None:
        """Shuffle ``x`` in place (Fisher-Yates from the end, as CPython)."""
        for i in reversed(range(1, len(x))):
            j = self.below(i + 1)
            x[i], x[j] = x[j], x[i]


def _base_name(domain: str, k: int) -> str:
    return f"{domain}{k}_ore" if domain in ("m", "c") else f"raw_{domain}{k}"


def _k_base(tier: int) -> int:
    """B(t), the least number of ingredients of an ordinary recipe of ``tier``."""
    return 1 if tier == 1 else 2 if tier <= 7 else 3 if tier <= 11 else 4


def _build_world(seed: int = WORLD_SEED, items_per_tier: int = ITEMS_PER_TIER) -> World:
    """The reference generator (spec ``textcraft_synth_reference.md`` §1), draw for draw."""
    rng = _CPythonRandom(seed)
    n = items_per_tier
    tier: dict[str, int] = {}
    domain: dict[str, str] = {}
    recipes: dict[str, Recipe] = {}
    lists: dict[tuple[str, int], list[str]] = {}
    global_tiers: dict[int, list[str]] = {t: [] for t in range(MAX_TIER + 1)}
    names: set[str] = set()
    for d in DOMAINS:
        lists[(d, 0)] = [_base_name(d, i % BASE_PER_DOMAIN) for i in range(n)]  # duplicates kept
        for b in lists[(d, 0)]:
            tier[b], domain[b] = 0, d
        global_tiers[0] += lists[(d, 0)]
        for t in range(1, MAX_TIER + 1):
            lists[(d, t)] = []
            for i in range(max(1, n - t // 3)):
                prefix = f"{d}{i % 10}"
                name = f"{prefix}_i{t}" if t <= 5 else f"{prefix}_i{t}_{t}"
                if name in names:
                    name += f"_{i}"
                names.add(name)
                if t == 1:
                    cands = [(x, 1) for x in lists[(d, 0)]]
                else:
                    cands = [(x, 2) for x in lists[(d, t - 2)]] + [(x, 1) for x in lists[(d, t - 1)]]
                if t >= 4:  # one cross-tier candidate from t-4 or t-3
                    s = rng.choice([t - 4, t - 3])
                    cands.append((rng.choice(lists[(d, s)]), t - s))
                k = min(_k_base(t) + rng.randint(0, min(2, t // 3)), len(cands), 6)
                weights = [1.0 / (dist + 1) for _, dist in cands]
                left = list(range(len(cands)))
                picks = []
                for _ in range(k):
                    r = rng.random() * sum(weights[j] for j in left)
                    acc, chosen = 0.0, left[-1]
                    for j in left:
                        acc += weights[j]
                        if acc >= r:
                            chosen = j
                            break
                    left.remove(chosen)
                    picks.append(cands[chosen][0])
                ings: dict[str, int] = {}
                for item in picks:  # a repeated name overwrites its quantity, keeps its place
                    ings[item] = rng.randint(1, 2) if t <= 4 else rng.randint(1, 1)
                lo, hi = _RESULT_COUNT.get(t, (1, 1))
                recipes[name] = Recipe(tuple(ings.items()), rng.randint(lo, hi), t)
                tier[name], domain[name] = t, d
                lists[(d, t)].append(name)
                global_tiers[t].append(name)
    for name, (t, doms) in CROSS_ITEMS.items():
        ings = {}
        for d in doms:
            src = next(lists[(d, s)] for s in (t - 3, t - 2, t - 1) if lists[(d, s)])
            pick = rng.choice(src)  # a separate statement: in `d[f()] = g()` Python calls g first
            ings[pick] = rng.randint(1, 2)
        recipes[name] = Recipe(tuple(ings.items()), 1, t)
        tier[name], domain[name] = t, "x"
        global_tiers[t].append(name)

    base = tuple(dict.fromkeys(global_tiers[0]))
    world = World(seed=seed, base=base, tier=tier, domain=domain, recipes=recipes)
    depth = Depths()
    for t in range(MAX_TIER + 1):
        for item in global_tiers[t]:
            r = recipes.get(item)
            depth[item] = 0 if r is None else 1 + max(depth[i] for i, _ in r.ingredients)
    world.depth = depth
    world.by_tier = {t: tuple(global_tiers[t]) for t in range(1, MAX_TIER + 1)}
    # the train/val split: its own Random(seed), per tier a shuffled copy, the first 80% to train
    split_rng = _CPythonRandom(seed)
    split: dict[str, dict[int, tuple[str, ...]]] = {"train": {}, "val": {}}
    for t in range(1, MAX_TIER + 1):
        items = list(global_tiers[t])
        split_rng.shuffle(items)
        cut = int(len(items) * (1 - VAL_FRACTION))
        split["train"][t], split["val"][t] = tuple(items[:cut]), tuple(items[cut:])
    world.split = split
    world.val_items = frozenset(i for v in split["val"].values() for i in v)
    return world


@functools.lru_cache(maxsize=8)
def get_world(seed: int = WORLD_SEED, items_per_tier: int = ITEMS_PER_TIER) -> World:
    """The recipe world for ``seed`` (default: the paper's; built once per process, then cached)."""
    return _build_world(seed, items_per_tier)
