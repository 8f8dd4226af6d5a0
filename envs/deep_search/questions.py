"""DeepSearch-Synth questions: walks over a world's relation graph, rendered as one question
with exactly answered sub-questions, and the answer normaliser that scores them.

A **chain** starts at a named entity and applies lookups in order (``founder``, then
``birthplace``, then ``population``): one lookup is one hop. Its one part (``<id>.1``) is the
chain without its last hop, so a node may delegate the prefix and do the last hop itself; a
1-hop chain has no parts. An **aggregate** has ``b`` independent chains as parts
(``<id>.1`` .. ``<id>.b``) and combines their answers:

* ``count``: how many parts end at a given entity (``How many of the following have Lumeo as
  their birthplace: (1) ...; (2) ...?``), a number;
* ``sum`` and ``max`` of numeric parts, a number;
* ``earliest`` and ``latest`` of dated parts (``the older of A's founder and B's founder``), a date.

Every sub-question has a text, an exact answer (from the walk) and a kind (``entity``,
``number``, ``date``). Its *plan* (start name, lookups, operation; no answers) is what a
scripted policy needs to act. :func:`answers_match` is the scorer: normalised exact match.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

import numpy as np

from rao_envs.envs.deep_search.world import ATTRIBUTES, LOOKUPS, MONTHS, RELATIONS, TYPES, World, format_date

OPS = ("count", "sum", "max", "earliest", "latest")
KIND_OF_OP = {"count": "number", "sum": "number", "max": "number", "earliest": "date", "latest": "date"}
_RELS_FROM = {t: [r.name for r in RELATIONS.values() if r.subject == t] for t in TYPES}
_RELS_TO = {t: [r.name for r in RELATIONS.values() if r.object == t] for t in TYPES}
_ATTRS_OF = {t: [a.name for a in ATTRIBUTES.values() if a.subject == t] for t in TYPES}
_COUNT_FINALS = tuple(r.name for r in RELATIONS.values() if r.object in ("place", "organisation"))


class NoQuestion(Exception):
    """A sampled walk could not be completed (the caller draws again)."""


# ---------------------------------------------------------------------------- rendering
def noun_phrase(start: str, steps: list[str]) -> str:
    """``the founder of the publisher of Sorian Velk`` for start ``Sorian Velk``, steps publisher, founder."""
    text = start
    for s in steps:
        text = f"the {LOOKUPS[s].noun} of {text}"
    return text


def chain_text(world: World, start: int, steps: list[str]) -> str:
    """The question a chain asks: ``Who is the founder of ...?`` / ``What is the population of ...?``."""
    last = steps[-1]
    who = last in RELATIONS and RELATIONS[last].object == "person"
    return f"{'Who' if who else 'What'} is {noun_phrase(world.names[start], steps)}?"


def _listing(world: World, parts: list[dict[str, Any]], drop_last: bool) -> str:
    items = []
    for i, p in enumerate(parts, 1):
        steps = p["steps"][:-1] if drop_last else p["steps"]
        items.append(f"({i}) {noun_phrase(p['start'], steps)}")
    return "; ".join(items)


def aggregate_text(world: World, op: str, parts: list[dict[str, Any]], target: str | None) -> str:
    """The question of an aggregate over chain ``parts`` (plans with ``start`` names and ``steps``)."""
    if op == "count":
        noun = LOOKUPS[parts[0]["steps"][-1]].noun
        return f"How many of the following have {target} as their {noun}: {_listing(world, parts, True)}?"
    if op in ("sum", "max"):
        word = "sum" if op == "sum" else "largest"
        return f"What is the {word} of these numbers: {_listing(world, parts, False)}? Answer with the number."
    word = "earliest" if op == "earliest" else "latest"
    return f"Which is the {word} of these dates: {_listing(world, parts, False)}? Answer with the date."


# ---------------------------------------------------------------------------- evaluation
def follow(world: World, start: int, steps: list[str]) -> int:
    """The entity id (or attribute value, for a final attribute) reached from ``start`` by ``steps``."""
    cur = start
    for s in steps:
        cur = world.lookup(cur, s)
    return cur


def chain_answer(world: World, start: int, steps: list[str]) -> tuple[str, str]:
    """The exact answer text and kind of a chain."""
    before = follow(world, start, steps[:-1])
    last = steps[-1]
    kind = "entity" if last in RELATIONS else ATTRIBUTES[last].kind
    return world.answer_text(before, last), kind


# ---------------------------------------------------------------------------- sampling
def _forward(world: World, rng: np.random.Generator, hops: int, end: str) -> tuple[int, list[str]]:
    """A random chain of ``hops`` lookups ending in ``end`` (``entity``, ``date`` or ``number``)."""
    for _ in range(200):
        cur = int(rng.integers(world.size))
        start, seen, steps = cur, {cur}, []
        n_rel = hops if end == "entity" else hops - 1
        for _ in range(n_rel):
            options = [r for r in _RELS_FROM[world.type_of(cur)] if world.lookup(cur, r) not in seen]
            if not options:
                break
            r = options[int(rng.integers(len(options)))]
            cur = world.lookup(cur, r)
            seen.add(cur)
            steps.append(r)
        if len(steps) < n_rel:
            continue
        if end != "entity":
            attrs = [a for a in _ATTRS_OF[world.type_of(cur)] if ATTRIBUTES[a].kind == end]
            if not attrs:
                continue
            steps.append(attrs[int(rng.integers(len(attrs)))])
        return start, steps
    raise NoQuestion(f"no {hops}-hop chain ending in a {end}")


def _backward(world: World, rng: np.random.Generator, hops: int, final: str, end: int) -> tuple[int, list[str]]:
    """A random chain of ``hops`` relations whose last relation ``final`` reaches entity ``end``."""
    for _ in range(50):
        subs = world.subjects(final, end)
        if len(subs) == 0:
            break
        cur = int(subs[int(rng.integers(len(subs)))])
        seen, steps = {end, cur}, [final]
        while len(steps) < hops:
            options = []
            for r in _RELS_TO[world.type_of(cur)]:
                cands = [int(s) for s in world.subjects(r, cur) if int(s) not in seen]
                if cands:
                    options.append((r, cands))
            if not options:
                break
            r, cands = options[int(rng.integers(len(options)))]
            cur = cands[int(rng.integers(len(cands)))]
            seen.add(cur)
            steps.insert(0, r)
        if len(steps) == hops:
            return cur, steps
    raise NoQuestion(f"no {hops}-hop chain into entity {end}")


def _plan(world: World, qid: str, start: int, steps: list[str]) -> dict[str, Any]:
    return {"id": qid, "start": world.names[start], "steps": list(steps)}


def _add_chain(world: World, out: dict[str, dict[str, Any]], qid: str, start: int, steps: list[str]) -> None:
    """Record a chain and all its prefixes (``qid``, ``qid.1``, ``qid.1.1`` ...)."""
    while steps:
        answer, kind = chain_answer(world, start, steps)
        out[qid] = {"text": chain_text(world, start, steps), "answer": answer, "kind": kind,
                    "hops": len(steps), "plan": _plan(world, qid, start, steps)}
        qid, steps = f"{qid}.1", steps[:-1]


def make_question(world: World, rng: np.random.Generator, hops: int, branches: int, qid: str = "q") -> dict[str, dict[str, Any]]:
    """One question of ``branches`` independent chains of ``hops`` hops each, with every sub-question.

    Returns ``{id: {text, answer, kind, hops, plan}}``; ``qid`` is the whole question. One
    branch is a plain chain; more are an aggregate (an operation of :data:`OPS`).
    """
    for _ in range(100):
        try:
            return _make_question(world, rng, hops, branches, qid)
        except NoQuestion:
            continue
    raise RuntimeError(f"DeepSearch: could not sample a {hops}-hop, {branches}-branch question")  # pragma: no cover


def _make_question(world: World, rng: np.random.Generator, hops: int, branches: int, qid: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if branches == 1:
        end = ("entity", "date", "number")[int(rng.integers(3))]
        start, steps = _forward(world, rng, hops, end)
        _add_chain(world, out, qid, start, steps)
        return out
    op = OPS[int(rng.integers(len(OPS)))]
    chains: list[tuple[int, list[str]]] = []
    target_name = None
    if op == "count":
        final = _COUNT_FINALS[int(rng.integers(len(_COUNT_FINALS)))]
        holders = np.flatnonzero(world.rel[final] >= 0)
        target = world.lookup(int(rng.choice(holders)), final)  # popular objects are likelier targets
        target_name = world.names[target]
        matching = int(rng.integers(1, branches))  # at least one part matches, at least one does not
        for i in range(branches):
            end = target
            while i >= matching and end == target:
                end = world.lookup(int(rng.choice(holders)), final)
            chains.append(_backward(world, rng, hops, final, end))
        order = rng.permutation(branches).tolist()
        chains = [chains[i] for i in order]
    else:
        kind = KIND_OF_OP[op]
        for _ in range(branches):
            chains.append(_forward(world, rng, hops, kind))
    starts = [c[0] for c in chains]
    if len(set(starts)) < branches:
        raise NoQuestion("two parts start at the same entity")
    values = [follow(world, s, st) for s, st in chains]
    if op in ("max", "earliest", "latest") and len(set(values)) < branches:
        raise NoQuestion("tied values")
    parts = []
    for i, (s, st) in enumerate(chains, 1):
        _add_chain(world, out, f"{qid}.{i}", s, st)
        parts.append(out[f"{qid}.{i}"]["plan"])
    if op == "count":
        answer = str(sum(1 for v in values if world.names[v] == target_name))
    elif op == "sum":
        answer = f"{sum(values):,}"
    elif op == "max":
        answer = f"{max(values):,}"
    else:
        answer = format_date(min(values) if op == "earliest" else max(values))
    plan: dict[str, Any] = {"id": qid, "op": op, "parts": parts}
    if target_name is not None:
        plan["target"] = target_name
    out[qid] = {"text": aggregate_text(world, op, parts, target_name), "answer": answer,
                "kind": KIND_OF_OP[op], "hops": hops, "plan": plan}
    return dict(sorted(out.items()))


def combine(op: str, values: list[str], target: str | None = None) -> str:
    """An aggregate's answer from its parts' answers (texts), as :func:`make_question` computes it."""
    if op == "count":
        want = normalize_text(target or "")
        return str(sum(1 for v in values if normalize_text(v) == want))
    if op in ("sum", "max"):
        nums = [parse_number(v) for v in values]
        if any(n is None for n in nums):
            return "unknown"
        return f"{sum(nums) if op == 'sum' else max(nums):,}"  # type: ignore[arg-type]
    dates = [parse_date(v) for v in values]
    if any(d is None for d in dates):
        return "unknown"
    best = min(dates) if op == "earliest" else max(dates)  # type: ignore[type-var]
    return format_date(best.toordinal())  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- scoring
_ARTICLE = re.compile(r"^(the|a|an)\s+")
_MONTH = {m.lower(): i + 1 for i, m in enumerate(MONTHS)} | {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)}
_NUMBER = re.compile(r"[+-]?\d{1,3}(?:[,\u202f\u00a0 _']\d{3})+(?:\.0+)?|[+-]?\d+(?:\.0+)?")


def normalize_text(value: Any) -> str:
    """Case, whitespace, surrounding quotes/punctuation and a leading article removed (NFKC)."""
    text = unicodedata.normalize("NFKC", value if isinstance(value, str) else str(value)).casefold()
    text = " ".join(text.split()).strip(" \"'`.,;:!?()[]{}")
    text = _ARTICLE.sub("", text)
    return " ".join(text.split())


def parse_number(value: Any) -> int | None:
    """An integer written with or without thousands separators (``12,345``, ``12 345``, ``12345.0``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e18 else None
    text = normalize_text(value)
    if not _NUMBER.fullmatch(text):
        return None
    digits = re.sub(r"[^\d+-]", "", text.split(".")[0])
    try:
        return int(digits)
    except ValueError:
        return None


def parse_date(value: Any) -> dt.date | None:
    """A date written as ``3 May 1723``, ``May 3, 1723``, ``3rd of May 1723`` or ``1723-05-03``."""
    text = normalize_text(value).replace(",", " ")
    if m := re.fullmatch(r"(\d{3,4})[-/.](\d{1,2})[-/.](\d{1,2})", text):
        y, mo, d = (int(x) for x in m.groups())
    else:
        words = [w for w in text.replace(".", " ").split() if w != "of"]
        if len(words) != 3:
            return None
        day = [w for w in words if re.fullmatch(r"\d{1,2}(st|nd|rd|th)?", w)]
        month = [w for w in words if w in _MONTH]
        year = [w for w in words if re.fullmatch(r"\d{3,4}", w)]
        if len(day) != 1 or len(month) != 1 or len(year) != 1:
            return None
        y, mo, d = int(year[0]), _MONTH[month[0]], int(re.match(r"\d+", day[0]).group(0))
    try:
        return dt.date(y, mo, d)
    except ValueError:
        return None


def answers_match(result: Any, answer: str, kind: str) -> bool:
    """Normalised exact match of a ``finish`` result against an exact answer of ``kind``.

    Entities: :func:`normalize_text` equality. Numbers: the same integer (``12,345`` =
    ``12345``). Dates: the same day in any format :func:`parse_date` reads.

    >>> answers_match("the  LUMEO.", "Lumeo", "entity"), answers_match("12 345", "12,345", "number")
    (True, True)
    >>> answers_match("1723-05-03", "3 May 1723", "date"), answers_match(12, "13", "number")
    (True, False)
    """
    if result is None:
        return False
    if kind == "number":
        got, want = parse_number(result), parse_number(answer)
        return got is not None and got == want
    if kind == "date":
        got_d = parse_date(result)
        return got_d is not None and got_d == parse_date(answer)
    return normalize_text(result) == normalize_text(answer) != ""
