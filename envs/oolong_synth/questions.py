"""Oolong-style questions about a range of lines: their text, exact answers, and the scorer.

A :class:`Question` is a ``kind`` plus the labels it names. The six *root* kinds are
Oolong-synth's answer types; the four *partial* kinds are what a parent asks a child about
its chunk so that the answers add up exactly:

=============  ======  =====================================  ===============================
kind           labels  answer                                 score against the exact answer
=============  ======  =====================================  ===============================
count          1       integer                                ``0.75 ** abs(error)``
compare        2       "more common" / "less common" /         exact (phrases matched loosely)
                       "same frequency" (first vs second)
top_label      0       a label                                exact
top_user       1       a user id                              exact
top_month      1       a month, e.g. "Mar 2021"               exact (dates parsed)
pairs          2       users with both labels (a list)        ``|gold ∩ pred| / max(|gold|, |pred|)``
counts         0+      {label: count} (0 labels: all)         mean of ``0.75 ** abs(error)``
user_counts    1       {user id: count}                       mean of ``0.75 ** abs(error)``
month_counts   1       {"Mar 2021": count}                    mean of ``0.75 ** abs(error)``
users_with     1+      {label: [user ids]}                    mean set overlap
=============  ======  =====================================  ===============================

The scorer follows Oolong's own (``eval_helpers.py`` as copied into Platoon): a string
answer is read after its last ``":"`` (and inside ``\\boxed{}``), numbers get partial credit
``0.75 ** |error|``, comparison phrases match loosely, dates are parsed. One deliberate
change: Oolong-real scores a list by ``|gold ∩ pred| / |gold|``, which a policy maximises by
listing every user; here the denominator is ``max(|gold|, |pred|)``, so padding costs as much
as omission. On a sub-range, a ``top_*`` question may have ties: any of the tied answers
scores 1, and ``"none"`` is the answer when the label does not occur at all.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rao_envs.envs.oolong_synth.document import MONTH_NAMES, MONTHS, Document, month_name

ROOT_KINDS = ("count", "compare", "top_label", "top_user", "top_month", "pairs")
PARTIAL_KINDS = ("counts", "user_counts", "month_counts", "users_with")
KINDS = ROOT_KINDS + PARTIAL_KINDS
#: kind -> (fewest, most) labels it names (None: up to every label of the set)
ARITY: dict[str, tuple[int, int | None]] = {
    "count": (1, 1), "compare": (2, 2), "top_label": (0, 0), "top_user": (1, 1), "top_month": (1, 1),
    "pairs": (2, 2), "counts": (0, None), "user_counts": (1, 1), "month_counts": (1, 1), "users_with": (1, None),
}
#: what a parent asks its children so that their answers combine into an answer of ``kind``
CHILD_KIND = {
    "count": "count", "compare": "counts", "top_label": "counts", "top_user": "user_counts",
    "top_month": "month_counts", "pairs": "users_with",
    "counts": "counts", "user_counts": "user_counts", "month_counts": "month_counts", "users_with": "users_with",
}
COMPARISONS = ("more common", "less common", "same frequency")
NONE = "none"
DECAY = 0.75
TOP_LABEL_LEAD = 0.1  # a top_label question is asked only when the winner leads by at most this share of the lines


class Question(BaseModel):
    """One question: its ``kind`` (see the module table) and the labels it names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[KINDS]  # type: ignore[valid-type]
    labels: tuple[str, ...] = Field(default_factory=tuple)

    def child(self) -> Question:
        """The partial question a parent asks each child so their answers combine into this one's."""
        kind = CHILD_KIND[self.kind]
        return self if kind == self.kind else Question(kind=kind, labels=self.labels)


def check_question(raw: Any, labels: tuple[str, ...]) -> Question:
    """Validate a question given as ``{"kind": ..., "labels": [...]}``; ValueError says what is wrong."""
    if isinstance(raw, Question):
        raw = raw.model_dump()
    if not isinstance(raw, dict):
        raise ValueError('question must be an object such as {"kind": "count", "labels": ["' + labels[0] + '"]}')
    extra = set(raw) - {"kind", "labels"}
    if extra:
        raise ValueError(f"question takes only kind and labels; got {sorted(map(str, extra))[:4]}")
    kind, names = raw.get("kind"), raw.get("labels", [])
    if kind not in KINDS:
        raise ValueError(f"question kind {str(kind)[:40]!r} is not one of {', '.join(KINDS)}")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise ValueError("question labels must be a list of label names")
    names = [x.strip().lower() for x in names]
    bad = [x for x in names if x not in labels]
    if bad:
        raise ValueError(f"unknown label(s) {bad[:3]}; the labels are {', '.join(labels)}")
    if len(set(names)) != len(names):
        raise ValueError("question labels must be distinct")
    lo, hi = ARITY[kind]
    if len(names) < lo or (hi is not None and len(names) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}"
        raise ValueError(f"a {kind} question names {want} label(s), got {len(names)}")
    return Question(kind=kind, labels=tuple(names))


def render(q: Question, scope: str = "the document") -> str:
    """The question as text, with the answer format (``scope`` names the lines it is about)."""
    a, b = (list(q.labels) + ["", ""])[:2]
    names = ", ".join(f"'{x}'" for x in q.labels)
    return {
        "count": f"How many instances in {scope} are labelled '{a}'? Answer with an integer.",
        "compare": (f"In {scope}, is label '{a}' more common, less common, or the same frequency as label '{b}'? "
                    "Answer 'more common', 'less common' or 'same frequency'."),
        "top_label": f"Which label is the most common in {scope}? Answer with the label.",
        "top_user": f"Which user has the most instances labelled '{a}' in {scope}? Answer with the user id.",
        "top_month": f"In which month were instances labelled '{a}' most frequent in {scope}? Answer like 'Mar 2021'.",
        "pairs": (f"Which users in {scope} have at least one instance labelled '{a}' and at least one labelled '{b}'? "
                  "Answer with a list of user ids."),
        "counts": (f"Count the instances of {'each label' if not q.labels else 'each of ' + names} in {scope}. "
                   'Answer {"label": count}.'),
        "user_counts": f"Count each user's instances labelled '{a}' in {scope}. Answer {{\"user id\": count}}.",
        "month_counts": f"Count the instances labelled '{a}' per month in {scope}. Answer {{\"Mar 2021\": count}}.",
        "users_with": f"For each of {names}, list the users with an instance of it in {scope}. Answer {{\"label\": [user ids]}}.",
    }[q.kind]


# ------------------------------------------------------------------------------ exact answers
def _argmax_set(counts: np.ndarray) -> set[int]:
    top = int(counts.max()) if len(counts) else 0
    return set() if top == 0 else {int(i) for i in np.flatnonzero(counts == top)}


def gold(doc: Document, q: Question, i0: int, i1: int) -> Any:
    """The exact answer of ``q`` over lines ``i0 .. i1-1`` of ``doc`` (sets for ``top_*``: every tied answer)."""
    labels = doc.labels
    idx = {name: labels.index(name) for name in q.labels}
    lab = doc.label[i0:i1]
    kind = q.kind
    if kind == "count":
        return int(np.count_nonzero(lab == idx[q.labels[0]]))
    if kind in ("compare", "counts", "top_label"):
        counts = np.bincount(lab, minlength=len(labels))
        if kind == "compare":
            x, y = (int(counts[idx[n]]) for n in q.labels)
            return COMPARISONS[0] if x > y else COMPARISONS[1] if x < y else COMPARISONS[2]
        if kind == "top_label":
            return {labels[i] for i in _argmax_set(counts)}
        return {n: int(counts[labels.index(n)]) for n in (q.labels or labels)}
    if kind in ("top_user", "user_counts"):
        users = doc.user[i0:i1][lab == idx[q.labels[0]]]
        counts = np.bincount(users, minlength=len(doc.users))
        if kind == "top_user":
            return {int(doc.users[i]) for i in _argmax_set(counts)}
        return {int(doc.users[i]): int(counts[i]) for i in np.flatnonzero(counts)}
    if kind in ("top_month", "month_counts"):
        months = doc.month[i0:i1][lab == idx[q.labels[0]]]
        counts = np.bincount(months, minlength=len(MONTHS)) if len(months) else np.zeros(0, dtype=np.int64)
        if kind == "top_month":
            return {month_name(i) for i in _argmax_set(counts)}
        return {month_name(int(i)): int(counts[i]) for i in np.flatnonzero(counts)}
    user = doc.user[i0:i1]
    sets = {n: {int(doc.users[u]) for u in np.unique(user[lab == idx[n]])} for n in q.labels}
    if kind == "pairs":
        return sets[q.labels[0]] & sets[q.labels[1]]
    return sets  # users_with


def format_answer(q: Question, answer: Any) -> Any:
    """An exact answer as a JSON-able ``finish`` value (ties: the smallest of the tied answers)."""
    if q.kind.startswith("top_"):
        return min(answer, default=NONE)
    if q.kind == "pairs":
        return sorted(answer)
    if q.kind == "users_with":
        return {k: sorted(v) for k, v in answer.items()}
    if q.kind == "user_counts":
        return {str(k): v for k, v in sorted(answer.items())}
    return answer


# ------------------------------------------------------------------------------ parsing model answers
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_INT = re.compile(r"-?\d+")
_MONTH_WORD = re.compile(r"\b(" + "|".join(m.lower() for m in MONTH_NAMES) + r")[a-z]*\.?\s+(?:\d{1,2}(?:st|nd|rd|th)?,?\s+)?(\d{4})\b")
_YEAR_MONTH = re.compile(r"\b(\d{4})[-/.](\d{1,2})\b")
_MONTH_YEAR = re.compile(r"\b(\d{1,2})[-/.](\d{4})\b")


def _tail(text: str) -> str:
    """Oolong's rule: the answer is what follows the last ``:`` (inside ``\\boxed{}`` when present)."""
    boxed = _BOXED.findall(text)
    if boxed:
        text = boxed[-1]
    return text.rsplit(":", 1)[-1].strip() if ":" in text else text.strip()


def parse_month(value: Any) -> str | None:
    """A month in any common form (``"Mar 2021"``, ``"March 2021"``, ``"2021-03"``, ``"3/2021"``) as ``"Mar 2021"``."""
    if not isinstance(value, str):
        return None
    text = value.lower()
    year = month = None
    if m := _MONTH_WORD.search(text):
        month, year = [x.lower() for x in MONTH_NAMES].index(m.group(1)) + 1, int(m.group(2))
    elif m := _YEAR_MONTH.search(text):
        year, month = int(m.group(1)), int(m.group(2))
    elif m := _MONTH_YEAR.search(text):
        month, year = int(m.group(1)), int(m.group(2))
    if year is None or not 1 <= month <= 12:
        return None
    name = f"{MONTH_NAMES[month - 1]} {year}"
    return name if name in MONTHS else None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return round(value) if math.isfinite(value) and abs(value) < 1e15 else None
    if isinstance(value, str):
        m = _INT.search(_tail(value))
        return int(m.group(0)) if m and len(m.group(0)) < 16 else None
    return None


def _as_user(value: Any) -> int | None:
    if isinstance(value, str):
        m = re.search(r"\d{5}", _tail(value))
        return int(m.group(0)) if m else None
    n = _as_int(value)
    return n if n is not None and 10_000 <= n <= 99_999 else None


def _as_users(value: Any) -> set[int] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {int(x) for x in re.findall(r"\b\d{5}\b", value)}
    if isinstance(value, (list, tuple)):
        users = {_as_user(v) for v in value}
        return None if None in users else users
    return None


def _as_dict(value: Any) -> dict | None:
    if isinstance(value, str):
        text = value.strip()
        start = text.find("{")
        try:
            value = json.loads(text[start:]) if start >= 0 else None
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and _tail(value).strip(" .'\"").lower() in ("none", "", "null", "nobody"))


def parse_answer(q: Question, value: Any, labels: tuple[str, ...]) -> Any:
    """A model's ``finish`` value read as an answer of ``q`` (None when it cannot be read)."""
    kind = q.kind
    if kind == "count":
        return _as_int(value)
    if kind == "compare":
        if not isinstance(value, str):
            return None
        text = _tail(value).lower()
        hits = [c for c, words in zip(COMPARISONS, (("more", "greater", "higher"), ("less", "fewer", "lower"), ("same", "equal", "tie")))
                if any(w in text for w in words)]
        return hits[0] if len(hits) == 1 else None
    if kind.startswith("top_") and _is_none(value):
        return NONE
    if kind == "top_label":
        text = _tail(value).strip(" .'\"").lower() if isinstance(value, str) else None
        return text if text in labels else None
    if kind == "top_user":
        return _as_user(value)
    if kind == "top_month":
        return parse_month(value) if isinstance(value, str) else None
    if kind == "pairs":
        return _as_users(value)
    raw = _as_dict(value)
    if raw is None:
        return None
    out: dict[Any, Any] = {}
    for key, v in raw.items():
        if kind == "users_with":
            k, parsed = str(key).strip().lower(), _as_users(v)
        else:
            k = str(key).strip().lower() if kind == "counts" else _as_user(str(key)) if kind == "user_counts" else parse_month(str(key))
            parsed = _as_int(v) if not isinstance(v, str) or v.strip().lstrip("-").isdigit() else None
        if k is None or parsed is None:
            return None
        out[k] = parsed
    return out


# ------------------------------------------------------------------------------ scoring
def _overlap(g: set, p: set) -> float:
    if not g and not p:
        return 1.0
    return len(g & p) / max(len(g), len(p))


def _counts_score(g: dict, p: dict, keys: list) -> float:
    if not keys:
        return 1.0
    return sum(DECAY ** min(abs(g.get(k, 0) - p.get(k, 0)), 1000) for k in keys) / len(keys)


def score_answer(q: Question, truth: Any, value: Any, labels: tuple[str, ...]) -> float:
    """Oolong's score in [0, 1] of a model's ``finish`` value against the exact answer ``truth`` (from :func:`gold`)."""
    pred = parse_answer(q, value, labels)
    if pred is None:
        return 0.0
    kind = q.kind
    if kind == "count":
        return DECAY ** min(abs(pred - truth), 1000)
    if kind == "compare":
        return float(pred == truth)
    if kind.startswith("top_"):
        return float(pred in truth) if truth else float(pred == NONE)
    if kind == "pairs":
        return _overlap(truth, pred)
    if kind == "counts":
        return _counts_score(truth, pred, list(truth))
    if kind == "users_with":
        return sum(_overlap(truth[n], pred.get(n, set())) for n in truth) / len(truth)
    g = {k: v for k, v in truth.items() if v}
    p = {k: v for k, v in pred.items() if v}
    return _counts_score(g, p, sorted(set(g) | set(p), key=str))


def _margin(counts: np.ndarray) -> int:
    """How far the largest count leads the next one (0: a tie, or nothing counted)."""
    top = np.sort(counts)[::-1]
    return int(top[0] - (top[1] if len(top) > 1 else 0)) if len(top) and top[0] > 0 else 0


def root_question(rng: np.random.Generator, doc: Document) -> Question:
    """A root question with a well-defined answer that needs the whole document.

    The kind is drawn uniformly; among its candidates the generator prefers close calls, so
    that a sample of the lines does not give the answer away: ``compare`` takes the label
    pair with the closest counts, ``top_user`` and ``top_month`` the label whose winner leads
    by the least (and leads: the answer is unique), ``top_label`` needs a winner that leads
    by at most :data:`TOP_LABEL_LEAD` of the lines, ``pairs`` a non-empty answer. A kind
    without a candidate is redrawn.
    """
    labels, n = doc.labels, doc.n_lines
    counts = np.bincount(doc.label, minlength=len(labels))
    kinds = list(ROOT_KINDS)
    while kinds:
        kind = kinds.pop(int(rng.integers(len(kinds))))
        if kind == "count":
            return Question(kind=kind, labels=(labels[int(rng.integers(len(labels)))],))
        if kind == "compare":
            pairs = [(abs(int(counts[a]) - int(counts[b])), a, b) for a in range(len(labels)) for b in range(a + 1, len(labels))]
            closest = min(p[0] for p in pairs)
            ties = [p for p in pairs if p[0] == closest]
            _, a, b = ties[int(rng.integers(len(ties)))]
            a, b = (a, b) if rng.random() < 0.5 else (b, a)
            return Question(kind=kind, labels=(labels[a], labels[b]))
        if kind == "top_label":
            if 0 < _margin(counts) <= TOP_LABEL_LEAD * n:
                return Question(kind=kind)
            continue
        if kind == "pairs":
            order = rng.permutation(len(labels))
            for a, b in zip(order, np.roll(order, -1)):
                q = Question(kind=kind, labels=(labels[a], labels[b]))
                if gold(doc, q, 0, n):
                    return q
            continue
        key = doc.user if kind == "top_user" else doc.month
        margins = []
        for k in rng.permutation(len(labels)).tolist():
            m = _margin(np.bincount(key[doc.label == k]))
            if m > 0:
                margins.append((m, k))
        if margins:
            return Question(kind=kind, labels=(labels[min(margins)[1]],))
    return Question(kind="count", labels=(labels[0],))
