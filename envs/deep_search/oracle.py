"""Scripted policies for DeepSearchSynth-v0: a delegating oracle and a flat one.

Both act as a careful researcher who knows the world: each hop is a ``search`` for
``"<name> <keyword>"`` (:func:`~rao_envs.envs.deep_search.world.hop_query`), then ``open`` of
the page that states the fact, following the page's continuation offset while the fact is not
in view. The page must appear among the search results and the fact must appear in the text
read; :attr:`DeepSearchOracle.stats` counts any miss (the tests require none). Policies read
the node's structured ``info`` (its question id and plan, depth, refusals, child results) and
the task's own tool output, never the engine's prose.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any

from rao_envs.types import Action

from rao_envs.envs.deep_search.questions import combine
from rao_envs.envs.deep_search.world import LOOKUPS, RELATIONS, World, hop_query

_CONTINUE = re.compile(r'\[page continues: open\(doc_id="(d\d+)", offset=(\d+)\)')
Step = Generator[str, tuple[str, dict[str, Any]], str]


class DeepSearchOracle:
    """``policy(observation, info) -> action text`` for DeepSearchSynth-v0.

    Delegating (default): an aggregate node delegates all its parts in one turn (they run in
    parallel) and combines their answers; a chain node of two or more hops delegates its
    prefix, waits, and does the last hop itself. A node at the maximum depth, or whose
    delegation was refused, does its whole question itself. Flat (``delegate=False``): every
    node does every hop itself, so a question with more hops than its steps allow fails.
    """

    def __init__(self, task: Any, delegate: bool = True) -> None:
        self.task, self.delegate = task, delegate
        self.jobs: dict[str, Step] = {}
        self.stats = {"nodes": 0, "hops": 0, "searches": 0, "opens": 0, "not_listed": 0, "not_read": 0}

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        """The next action of the node ``info`` describes."""
        text = obs["text"] if isinstance(obs, dict) else str(obs)
        node = info["node"]
        if info["turn"] == 0:  # a node's first turn (a new episode when it is the root)
            if node == "0":
                self.jobs.clear()
            self.stats["nodes"] += 1
            job = self._solve(info)
            self.jobs[node] = job
            return next(job)
        try:
            return self.jobs[node].send((text, info))
        except StopIteration as done:
            return Action.finish(done.value).to_text()

    # ------------------------------------------------------------------ jobs (generators)
    def _solve(self, info: dict[str, Any]) -> Generator[str, Any, None]:
        plan = info["node_args"]["plan"]
        world = self.task.world(info["node_args"]["world"])
        answer = yield from (self._aggregate(world, plan, info) if "op" in plan else self._chain(world, plan, info))
        yield Action.finish(answer).to_text()

    def _can_delegate(self, info: dict[str, Any]) -> bool:
        return self.delegate and info["depth"] < info["max_depth"]

    def _aggregate(self, world: World, plan: dict[str, Any], info: dict[str, Any]) -> Step:
        parts = plan["parts"]
        answers: dict[str, str] = {}
        if self._can_delegate(info):
            first = len(info["children"])
            ids = {p["id"]: f"{info['node']}.{first + i}" for i, p in enumerate(parts)}
            _text, info = yield "\n".join(Action.delegate(p["id"], question=p["id"]).to_text() for p in parts)
            if not info["refused"]:
                for pid, cid in ids.items():
                    res = info["child_results"].get(cid)
                    if res is not None and res["status"] == "finished":
                        answers[pid] = str(res["result"])
        for p in parts:  # any part not answered by a sub-agent: do it here
            if p["id"] not in answers:
                answers[p["id"]] = yield from self._hops(world, p["start"], p["steps"])
        return combine(plan["op"], [answers[p["id"]] for p in parts], plan.get("target"))

    def _chain(self, world: World, plan: dict[str, Any], info: dict[str, Any]) -> Step:
        start, steps = plan["start"], plan["steps"]
        if len(steps) >= 2 and self._can_delegate(info):
            cid = f"{info['node']}.{len(info['children'])}"
            part = f"{plan['id']}.1"
            _text, info = yield Action.delegate(part, question=part).to_text()
            res = info["child_results"].get(cid)
            if not info["refused"] and res is not None and res["status"] == "finished":
                return (yield from self._hops(world, str(res["result"]), steps[-1:]))
        return (yield from self._hops(world, start, steps))

    def _hops(self, world: World, start: str, steps: list[str]) -> Step:
        """Look up ``steps`` one hop at a time from the entity named ``start``; the final answer text."""
        cur, answer = world.by_name.get(start), start
        for lookup in steps:
            if cur is None:
                return "unknown"
            answer = yield from self._hop(world, cur, lookup)
            if lookup in RELATIONS:
                cur = world.lookup(cur, lookup)
        return answer

    def _hop(self, world: World, e: int, lookup: str) -> Step:
        """search, then open the page stating the fact (reading on while it is not in view)."""
        self.stats["hops"] += 1
        doc, answer, name = world.fact_doc(e, lookup), world.answer_text(e, lookup), world.names[e]
        self.stats["searches"] += 1
        text, _info = yield Action.tool("search", query=hop_query(name, lookup)).to_text()
        if f"{doc} | " not in text:
            self.stats["not_listed"] += 1
        offset = 0
        while True:
            self.stats["opens"] += 1
            text, _info = yield Action.tool("open", doc_id=doc, offset=offset).to_text()
            if _states(text, (name, world.short_name(e)), answer, LOOKUPS[lookup].keyword):
                return answer
            more = _CONTINUE.search(text)
            if more is None:
                self.stats["not_read"] += 1
                return answer
            offset = int(more.group(2))


def _states(text: str, names: tuple[str, ...], answer: str, keyword: str) -> bool:
    """True when one sentence of ``text`` names the entity (in full or short), the lookup's keyword and the answer."""
    for sentence in re.split(r"(?<=\.) ", text):
        if any(n in sentence for n in names) and answer in sentence and keyword in sentence.lower():
            return True
    return False
