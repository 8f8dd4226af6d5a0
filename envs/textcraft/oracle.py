"""The scripted oracle of TextCraft-v0: delegating (default) or flat, one object per tree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rao_envs.envs.textcraft.task import goal_text
from rao_envs.envs.textcraft.world import World
from rao_envs.policies.base import NodeInfo
from rao_envs.types import Action


class TextCraftOracle:
    """Scripted policy ``(observation, info) -> action text`` for TextCraft-v0.

    ``strategy="lean"`` (default): a delegating node first takes over as many of the items it
    would delegate as its steps allow (each time the one that leaves the fewest sub-agents),
    so trees stay small; ``"per_ingredient"`` delegates every non-base ingredient of its
    targets, one child each (large trees on the paper's world).

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

    On the paper's extreme tasks (trees of about 1,000 nodes) the holders sometimes run out of
    spare steps before the protected child finishes (``stats["unsafe"]``): under the engine's
    own order and measured random orders the root still succeeds, but some inner nodes can
    lose their score; on easy to hard every node scores 1.0 under any order tested.

    It reads only the structured ``info`` (:class:`~rao_envs.policies.base.NodeInfo`):
    ``node``, ``node_args``, ``depth``, ``max_depth``, ``steps_left``, ``turn`` (0 on a
    node's first turn, when it plans) and ``refused`` (its delegation was refused: it then
    crafts everything itself), never the observation text.
    """

    def __init__(self, world: World, delegate: bool = True, strategy: str = "lean") -> None:
        if strategy not in ("lean", "per_ingredient"):
            raise ValueError(f"strategy must be 'lean' or 'per_ingredient', got {strategy!r}")
        self.world, self.delegate, self.strategy = world, delegate, strategy
        self._new_episode()

    def _new_episode(self) -> None:
        self.queue: dict[str, list[tuple[Any, ...]]] = {}  # node -> its remaining steps
        self.parent: dict[str, str | None] = {}
        self.target: dict[str, str] = {}  # delegated node -> the one item it was asked for
        self.live: set[str] = set()
        self.avail: dict[str, dict[str, int]] = {}  # items made for a node (by it or its children)
        self.keepers: dict[str, set[str]] = {}  # item -> nodes whose avail has ever counted it (an index of avail)
        self.future: dict[str, dict[str, int]] = {}  # items a node will still consume
        self.protect: dict[str, list[tuple[str, set[str]]]] = {}  # item -> [(child, holders to hold back)]
        self.stats = {"nodes": 0, "flattened": 0, "protected": 0, "waits": 0, "unsafe": 0}

    def __call__(self, obs: Any, info: NodeInfo) -> str:
        """The next tool call of the node ``info`` describes (``obs`` is not read)."""
        node = info["node"]
        targets = {k: int(v) for k, v in info["node_args"].get("targets", {}).items()}
        steps_left = int(info["steps_left"])
        if node not in self.queue or info["turn"] == 0:  # the node's first turn
            if node == "0":
                self._new_episode()
            self.live.add(node)
            self.parent.setdefault(node, node.rpartition(".")[0] or None)
            self.stats["nodes"] += 1
            self._plan(node, targets, int(info["depth"]), steps_left, int(info["max_depth"]))
        elif info["refused"]:  # delegation refused (e.g. node limit): do it all yourself
            for child in [c for c in self.live if self.parent.get(c) == node]:
                self.live.discard(child)
            self._set_queue(node, self._flat_steps(targets))
        queue = self.queue[node]
        if not queue:
            queue.append(("finish", targets))
        if queue[0][0] == "craft" and steps_left > len(queue) and self._held_back(node, queue[0]):
            self.stats["waits"] += 1
            return Action.tool("view_inventory").to_text()
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
        for o in self.keepers.get(item, ()):  # only nodes that ever held it can hold it now
            if o not in self.live or o in safe:
                continue
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
        crafts, delegated = self.world.expand(targets, own=own)
        return dict(crafts), delegated

    def _plan(self, node: str, targets: Mapping[str, int], depth: int, steps_left: int, max_depth: int) -> None:
        flat = self._flat_steps(targets)
        if not self.delegate or len(flat) <= steps_left or depth >= max_depth:
            return self._set_queue(node, flat)
        own = set(targets)  # items this node crafts itself
        totals, children = self._split(targets, own)
        if self.strategy == "lean":
            own, totals, children = self._lean(targets, own, totals, children, steps_left)
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

    def _lean(self, targets, own, totals, children, steps_left):
        """Own (craft here) as many delegated items as the steps allow, fewest sub-agents first."""
        while children:
            best = None
            for f in children:
                w2 = own | {f}
                t2, c2 = self._split(targets, w2)
                if len(w2) + 1 + (1 if c2 else 0) <= steps_left and (best is None or len(c2) < len(best[2])):
                    best = (w2, t2, c2)
            if best is None:
                break
            own, totals, children = best
        return own, totals, children

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
                calls.append(Action.delegate(goal_text({item: n}), targets={item: n}).to_text())
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
                self.keepers.setdefault(ing, set()).add(node)
            avail[item] = avail.get(item, 0) + total
            self.keepers.setdefault(item, set()).add(node)
            return Action.tool("craft", ingredients=ingredients, target=[item, total]).to_text()
        self.live.discard(node)
        parent, item = self.parent.get(node), self.target.get(node)
        if parent is not None and item is not None:
            made = max(0, self.avail.get(node, {}).get(item, 0))
            pav = self.avail.setdefault(parent, {})
            pav[item] = pav.get(item, 0) + made
            self.keepers.setdefault(item, set()).add(parent)
        return Action.finish(goal_text(step[1]).replace("Craft", "Crafted", 1)).to_text()
