"""The TextCraft recipe world: items, tiers, recipes, the train/val split (built once per process).

:func:`get_world` builds the world from a fixed seed: five domains with meaningless names
(metal ``m``, crystal ``c``, organic ``o``, arcane ``a``, tech ``t``), base items at tier 0
(``m0_ore``, ``raw_o0``, ...) and craftable items ``{domain}{k}_i{tier}`` at tiers 1-12, plus
cross-domain items (``x10_mc``, ``x11_mct``, ``x12_all``) at tiers 10-12. Every item has
exactly one recipe, and an item's recipe depth equals its tier. Craftable items are split
80/20 by item between ``train`` and ``val``. :meth:`World.expand` is the one expansion of
targets into crafts: the task, its oracle and the discrete view plan with it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


@dataclass(frozen=True)
class Recipe:
    """One recipe: ``ingredients`` (item -> count per execution) make ``result_count`` items."""

    ingredients: tuple[tuple[str, int], ...]
    result_count: int

    def as_dict(self, executions: int = 1) -> dict[str, int]:
        """Ingredients for ``executions`` crafts, as a plain dict."""
        return {item: q * executions for item, q in self.ingredients}

    def executions(self, count: int) -> int:
        """Crafts needed for at least ``count`` items: ``count / result_count``, rounded up."""
        return -(-count // self.result_count)


@dataclass
class World:
    """The procedural recipe world: items, tiers, recipes, depths and the train/val split.

    Planning: :meth:`expand` walks the recipe tree of some targets (consumers first, summed
    needs, optional stock or own set); :meth:`plan` is its crafting order; :meth:`base_needs`
    is the per-branch upper bound that sizes starting inventories.
    """

    seed: int
    base: tuple[str, ...]
    tier: dict[str, int]
    domain: dict[str, str]
    recipes: dict[str, Recipe]
    depth: dict[str, int] = field(default_factory=dict)
    by_tier: dict[int, tuple[str, ...]] = field(default_factory=dict)
    val_items: frozenset[str] = frozenset()
    _needs: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict, repr=False)
    _closures: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

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
