"""Scripted policies for OolongSynth-v0: the delegating oracle and the flat one.

Both label lines with the label oracle (:func:`.corpus.label_of`), as a perfect labeller
would, and read only what their node may read: the chunk shown in a child's first message
and the output of ``read``/``doc_info`` (the task's own text). Everything else comes from
the structured ``info`` (:class:`~rao_envs.policies.base.NodeInfo`): the node's args, depth
and depth limit, turn, refusals and the children's results.

* **Delegating** (default): a node whose lines fit its reading budget (and its steps) reads
  them and answers exactly. Otherwise it splits its range into chunks that fit a child's
  window (:attr:`~.task.OolongSynth.child_range_chars`), asks each child the partial question that
  combines exactly (``count`` → ``count``, ``compare``/``top_label`` → ``counts``,
  ``top_user`` → ``user_counts``, ``top_month`` → ``month_counts``, ``pairs`` →
  ``users_with``), delegates them in parallel in waves of ``max_children_per_turn``, and
  combines. With depth left it splits recursively (each child covers up to
  ``width ** (levels below it)`` chunks); at the last level it uses more waves. A refused
  wave (fewer children per turn allowed than ``width``, or the node limit) is planned again
  at half the width, which the rest of the episode keeps, and a node that cannot delegate
  at all falls back to the flat behaviour.
* **Flat** (``delegate=False``): reads as much of its range as its reading budget and steps
  allow (at the defaults one ``read`` of 4,096 characters), answers from those lines, and
  extrapolates counts by the share it read; exact when the budget covers the document.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

from rao_envs.envs.oolong_synth.corpus import label_of
from rao_envs.envs.oolong_synth.document import LINE_RE, MAX_LINE_CHARS
from rao_envs.envs.oolong_synth.questions import COMPARISONS, NONE, Question, parse_answer, parse_month
from rao_envs.envs.oolong_synth.task import CHUNK_HEADER, OolongSynth
from rao_envs.types import Action

_READ_HEADER = re.compile(r"^\[characters (\d+)-(\d+) of your range (\d+)-(\d+); (\d+) of (\d+) characters left to read\]")
_CHUNK = re.compile(re.escape(CHUNK_HEADER) + r": characters (\d+)-(\d+), (\d+) lines\n")

Row = tuple[str, int, str]  # (label, user id, month "Mar 2021")


def rows_of(text: str) -> list[Row]:
    """The complete lines in ``text`` as ``(label, user, month)`` (a cut last line is dropped)."""
    text = text[: text.rfind("\n") + 1]
    rows = []
    for date, user, instance in LINE_RE.findall(text):
        try:
            rows.append((label_of(instance), int(user), parse_month(date) or ""))
        except KeyError:  # not a corpus instance (a cut or altered line): skip it
            continue
    return rows


def partial(q: Question, rows: list[Row]) -> Any:
    """The partial answer (the kind children are asked, :meth:`Question.child`) over ``rows``."""
    kind, names = q.child().kind, q.labels
    if kind == "count":
        return sum(1 for r in rows if r[0] == names[0])
    if kind == "counts":
        counts = Counter(r[0] for r in rows)
        return {n: counts.get(n, 0) for n in names} if names else dict(counts)
    if kind == "user_counts":
        return dict(Counter(r[1] for r in rows if r[0] == names[0]))
    if kind == "month_counts":
        return dict(Counter(r[2] for r in rows if r[0] == names[0]))
    return {n: {r[1] for r in rows if r[0] == n} for n in names}  # users_with


def merge(q: Question, parts: list[Any]) -> Any:
    """Combine children's partial answers (already parsed) into one partial answer."""
    kind = q.child().kind
    if kind == "count":
        return sum(parts)
    if kind == "users_with":
        return {n: set().union(*(p.get(n, set()) for p in parts)) for n in q.labels}
    total: Counter = Counter()
    for p in parts:
        total.update(p)
    return dict(total)


def scale(q: Question, value: Any, factor: float) -> Any:
    """A partial answer extrapolated from a share of the lines: counts times ``factor``, when counts are the answer."""
    kind = q.child().kind
    if factor == 1.0 or q.kind not in ("count", "counts", "user_counts", "month_counts"):
        return value  # rankings, comparisons and user sets: the sample's own answer
    if kind == "count":
        return round(value * factor)
    return {k: round(v * factor) for k, v in value.items()}


def _argmax(counts: dict) -> Any:
    if not counts or max(counts.values()) <= 0:
        return NONE
    top = max(counts.values())
    return min(k for k, v in counts.items() if v == top)


def finalize(q: Question, value: Any) -> Any:
    """The answer to ``q`` (JSON-able, as ``finish`` takes it) from its partial answer."""
    kind = q.kind
    if kind == "compare":
        a, b = (value.get(n, 0) for n in q.labels)
        return COMPARISONS[0] if a > b else COMPARISONS[1] if a < b else COMPARISONS[2]
    if kind in ("top_label", "top_user", "top_month"):
        return _argmax(value)
    if kind == "pairs":
        return sorted(value[q.labels[0]] & value[q.labels[1]])
    if kind == "users_with":
        return {n: sorted(v) for n, v in value.items()}
    if kind == "user_counts":
        return {str(k): v for k, v in sorted(value.items()) if v}
    if kind == "month_counts":
        return {k: v for k, v in value.items() if v}
    return value  # count, counts


def plan(start: int, end: int, levels: int, chunk: int, width: int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into parts for children with ``levels`` levels of delegation below them.

    The range needs ``n`` chunks of ``chunk`` characters; a child with ``levels - 1`` levels
    under it covers ``width ** (levels - 1)`` chunks in single waves, so the node makes
    ``max(min(n, width), ceil(n / that))`` parts, each a whole number of chunks (so the tree
    has exactly ``n`` leaves).
    """
    n = math.ceil((end - start) / chunk)
    p = max(min(n, width), math.ceil(n / width ** max(levels - 1, 0)))
    per, extra = divmod(n, p)
    bounds, at = [start], start
    for j in range(p):
        at = min(end, at + (per + (j < extra)) * chunk)
        bounds.append(at)
    return [(bounds[j], bounds[j + 1]) for j in range(p)]


class OolongOracle:
    """Scripted policy ``(observation, info) -> action text`` for OolongSynth-v0 (module docstring)."""

    def __init__(self, task: OolongSynth, delegate: bool = True, width: int | None = None) -> None:
        self.task, self.delegate = task, delegate
        self.max_width = self.width = int(width or task.default_limits["max_children_per_turn"])
        self.memory: dict[str, dict[str, Any]] = {}

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        """The next action of the node described by ``info``."""
        text = obs["text"] if isinstance(obs, dict) else str(obs)
        node, args = info["node"], info["node_args"]
        if node == "0" and info["turn"] == 0:  # a new episode
            self.memory, self.width = {}, self.max_width
        mem = self.memory.setdefault(node, {"phase": "start", "width": self.width})
        q = Question(**args["question"])
        phase = mem["phase"]
        if phase == "start":
            return self._start(mem, info, q, text)
        if phase == "info":
            return self._after_info(mem, info, q, text)
        if phase == "read":
            return self._after_read(mem, info, q, text)
        return self._next_wave(mem, info, q)

    # -- phases ---------------------------------------------------------------------------
    def _start(self, mem: dict[str, Any], info: dict[str, Any], q: Question, text: str) -> str:
        args, root = info["node_args"], info["parent"] is None
        start, end = int(args["start"]), int(args["end"])
        shown = _CHUNK.search(text)
        if shown:
            rows = rows_of(text[shown.end():])
            if len(rows) == int(shown.group(3)):  # the whole chunk arrived: answer exactly
                return Action.finish(finalize(q, partial(q, rows))).to_text()
        task = self.task
        view = end - start if root else end - start + MAX_LINE_CHARS - 1  # the most its lines can span
        steps = math.ceil(view / task.context_chars) + (1 if root else 2)  # reads (+ doc_info) + finish
        alone = view <= task.reading_budget and steps <= info["steps_left"]
        if self.delegate and not alone and not shown and info["depth"] < info["max_depth"]:
            levels = info["max_depth"] - info["depth"]
            mem["parts"] = plan(start, end, levels, task.child_range_chars, mem["width"])
            mem["phase"], mem["sent"] = "delegate", 0
            return self._next_wave(mem, info, q)
        return self._read_alone(mem, info)

    def _read_alone(self, mem: dict[str, Any], info: dict[str, Any]) -> str:
        """Start reading the node's own lines: the root from offset 0, a child after ``doc_info`` tells it where."""
        if info["parent"] is None:  # the root's range is the whole document
            mem["phase"], mem["lo"], mem["bodies"] = "read", 0, []
            return Action.tool("read", offset=0, length=int(info["node_args"]["end"])).to_text()
        mem["phase"] = "info"
        return Action.tool("doc_info").to_text()

    def _after_info(self, mem: dict[str, Any], info: dict[str, Any], q: Question, text: str) -> str:
        try:
            facts = json.loads(text[: text.rfind("}") + 1])
            lo, hi = facts["lines"]
            left = int(facts["reading_left"])
        except (ValueError, KeyError, TypeError):
            return Action.finish(finalize(q, partial(q, []))).to_text()
        if hi <= lo or left <= 0:  # nothing to read, or nothing left to read it with
            return Action.finish(finalize(q, partial(q, []))).to_text()
        mem["phase"], mem["lo"], mem["bodies"] = "read", lo, []
        return Action.tool("read", offset=lo, length=hi - lo).to_text()

    def _after_read(self, mem: dict[str, Any], info: dict[str, Any], q: Question, text: str) -> str:
        """Keep what a read showed; read on while the range, the budget and the steps allow, then answer."""
        head = _READ_HEADER.match(text)
        if head is not None:
            a, b, lo, hi, left = (int(x) for x in head.groups()[:5])
            mem["bodies"].append(text[head.end():].split("\n", 1)[1][: b - a])
            mem["hi"], mem["upto"] = hi, b
            if b < hi and left > 0 and info["steps_left"] > 1:
                return Action.tool("read", offset=b, length=hi - b).to_text()
        lo, hi = mem["lo"], mem.get("hi", mem["lo"])
        covered = mem.get("upto", lo) - lo
        rows = rows_of("".join(mem["bodies"]))
        factor = 1.0 if covered >= hi - lo else (hi - lo) / max(covered, 1)
        return Action.finish(finalize(q, scale(q, partial(q, rows), factor))).to_text()

    def _next_wave(self, mem: dict[str, Any], info: dict[str, Any], q: Question) -> str:
        if info["refused"]:  # the last wave was refused: fewer children per turn (for the rest of the episode)
            mem["sent"] -= mem.pop("last", 0)
            self.width = mem["width"] = mem["width"] // 2
            if mem["width"] < 1:  # cannot delegate at all: do it alone
                return self._read_alone(mem, info)
            if mem["sent"] == 0:  # nothing delegated yet: plan again for the smaller width
                args = info["node_args"]
                levels = info["max_depth"] - info["depth"]
                mem["parts"] = plan(int(args["start"]), int(args["end"]), levels, self.task.child_range_chars, mem["width"])
        parts, sent = mem["parts"], mem["sent"]
        if sent < len(parts):
            wave = parts[sent : sent + mem["width"]]
            mem["sent"], mem["last"] = sent + len(wave), len(wave)
            child = q.child().model_dump(mode="json")
            return "\n".join(Action.delegate("", start=a, end=b, question=child).to_text() for a, b in wave)
        results = info["child_results"]
        parsed = []
        for cid in info["children"]:
            r = results.get(cid)
            value = parse_answer(q.child(), r["result"], ()) if r and r["status"] == "finished" else None
            if value is not None:
                parsed.append(value)
        return Action.finish(finalize(q, merge(q, parsed))).to_text()
