"""Seeded, streamed documents of ``Date: … || User: … || Instance: …`` lines.

A document is fully determined by a :class:`DocSpec` (seed, target length, label set,
split), so a tree stores the spec and never the text. :func:`build_document` draws the
document's *line index* with numpy in bulk (for every line: its day, user and instance; no
text), and :meth:`Document.text` renders any character range on demand by joining
pre-rendered pieces (``"Date: Mar 5, 2021 || User: "``, ``"63685 || Instance: "``, the
instance text with its newline). Generation therefore costs a few numpy draws per line plus
one ``str.join`` over the lines asked for (≥ 50 MB/s, see ``benchmarks/task_generation.py``).

Per document, as in Oolong-synth:

* the label distribution is drawn from a Dirichlet (α = 1, mixed with 10% uniform), so
  priors over a label set do not help;
* 80% of the lines come from the 20% most active users (5-digit user ids; 10 to 48 users,
  growing with the document's length);
* dates are uniform over a span of 3 to 5 whole years starting in 2015-2021;
* lines are in random order (not sorted by date).

Exact answers about any range come from the index arrays (:attr:`Document.label`,
:attr:`Document.user`, :attr:`Document.month`) without rendering text.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rao_envs.envs.oolong_synth.corpus import LABEL_SETS, LabelSet, corpus

FIRST_YEAR, LAST_YEAR = 2015, 2026
SPLITS = ("train", "val")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
HEAVY_SHARE, HEAVY_USERS = 0.8, 0.2  # 80% of the lines from 20% of the users
MIN_USERS, MAX_USERS, LINES_PER_USER = 10, 48, 8
MAX_LINE_CHARS = 160  # no line is longer (date 28 + user 19 + instance <= 110 + newline)
#: one parsed line: date, user id, instance text
LINE_RE = re.compile(r"^Date: ([A-Z][a-z]{2} \d{1,2}, \d{4}) \|\| User: (\d{5}) \|\| Instance: (.*)$", re.M)


def _days() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Pre-rendered ``"Date: Mon D, YYYY || User: "`` pieces for every day of the calendar, and month indices."""
    first, last = dt.date(FIRST_YEAR, 1, 1), dt.date(LAST_YEAR, 12, 31)
    n = (last - first).days + 1
    pieces = np.empty(n, dtype=object)
    month = np.empty(n, dtype=np.int16)
    for i in range(n):
        d = first + dt.timedelta(days=i)
        pieces[i] = f"Date: {MONTH_NAMES[d.month - 1]} {d.day}, {d.year} || User: "
        month[i] = (d.year - FIRST_YEAR) * 12 + d.month - 1
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=n)
    months = [f"{MONTH_NAMES[m % 12]} {FIRST_YEAR + m // 12}" for m in range(int(month.max()) + 1)]
    return pieces, lengths, month, months


DAY_PIECES, DAY_LENGTHS, DAY_MONTH, MONTHS = _days()
USER_PIECE_CHARS = len("12345 || Instance: ")


def month_name(index: int) -> str:
    """``"Mar 2021"`` for a month index (months since January of :data:`FIRST_YEAR`)."""
    return MONTHS[index]


def day_index(year: int, month: int, day: int) -> int:
    """Index of a calendar day in :data:`DAY_PIECES`."""
    return (dt.date(year, month, day) - dt.date(FIRST_YEAR, 1, 1)).days


@dataclass(frozen=True)
class DocSpec:
    """What fixes a document: ``seed``, target length ``chars``, ``label_set`` and ``split``."""

    seed: int
    chars: int
    label_set: str
    split: str = "train"

    def as_dict(self) -> dict[str, object]:
        """JSON form (what a :class:`~rao_envs.task.TaskInstance` stores instead of the text)."""
        return {"seed": self.seed, "chars": self.chars, "label_set": self.label_set, "split": self.split}


class Document:
    """The line index of one generated document, and text of any range on demand.

    ``starts`` holds every line's start offset plus the document length at the end;
    ``label``/``user``/``day``/``instance`` one entry per line; ``users`` the user ids
    (``user`` indexes into it); ``probs`` the label distribution the lines were drawn from.
    """

    __slots__ = ("spec", "labels", "starts", "label", "user", "day", "instance", "users", "probs", "_labelset", "_user_pieces")

    def __init__(self, spec: DocSpec, labelset: LabelSet, starts: np.ndarray, label: np.ndarray, user: np.ndarray,
                 day: np.ndarray, instance: np.ndarray, users: np.ndarray, probs: np.ndarray) -> None:
        self.spec, self._labelset, self.labels = spec, labelset, labelset.labels
        self.starts, self.label, self.user, self.day, self.instance = starts, label, user, day, instance
        self.users, self.probs = users, probs
        pieces = np.empty(len(users), dtype=object)
        pieces[:] = [f"{u} || Instance: " for u in users.tolist()]
        self._user_pieces = pieces

    @property
    def length(self) -> int:
        """Characters in the whole document."""
        return int(self.starts[-1])

    @property
    def n_lines(self) -> int:
        """Lines in the whole document."""
        return len(self.label)

    @property
    def month(self) -> np.ndarray:
        """Month index of every line (see :func:`month_name`)."""
        return DAY_MONTH[self.day]

    def lines_in(self, start: int, end: int) -> tuple[int, int]:
        """``(i0, i1)``: the lines that *start* at an offset in ``[start, end)`` are ``i0 .. i1-1``."""
        heads = self.starts[:-1]
        return int(np.searchsorted(heads, start, "left")), int(np.searchsorted(heads, end, "left"))

    def view(self, start: int, end: int) -> tuple[int, int]:
        """The character range of the lines that start in ``[start, end)``: whole lines, never sharing one with a neighbour."""
        i0, i1 = self.lines_in(start, end)
        return int(self.starts[i0]), int(self.starts[i1])

    def text(self, start: int = 0, end: int | None = None) -> str:
        """The document's characters ``[start, end)`` (rendered now, from the line index)."""
        end = self.length if end is None else min(end, self.length)
        start = max(0, start)
        if start >= end:
            return ""
        i0 = int(np.searchsorted(self.starts, start, "right")) - 1
        i1 = int(np.searchsorted(self.starts, end, "left"))
        # hot path: three fancy-indexed object arrays interleaved, then one join
        parts = np.empty((i1 - i0, 3), dtype=object)
        parts[:, 0] = DAY_PIECES[self.day[i0:i1]]
        parts[:, 1] = self._user_pieces[self.user[i0:i1]]
        parts[:, 2] = self._labelset.texts[self.instance[i0:i1]]
        text = "".join(parts.ravel().tolist())
        base = int(self.starts[i0])
        return text[start - base : end - base]

    def stream(self, chunk_chars: int = 1 << 20) -> Iterator[str]:
        """The whole text in pieces of ``chunk_chars`` characters (never all of it in memory at once)."""
        for start in range(0, self.length, max(1, chunk_chars)):
            yield self.text(start, start + chunk_chars)


def _draw(rng: np.random.Generator, n: int, cum: np.ndarray, pools: tuple[np.ndarray, ...], n_users: int,
          n_heavy: int, day0: int, n_days: int) -> tuple[np.ndarray, ...]:
    """``n`` lines: label, instance, user index and day, each one vectorised draw."""
    label = np.searchsorted(cum, rng.random(n), "right").astype(np.int8)
    label = np.minimum(label, len(pools) - 1)
    sizes = np.array([len(p) for p in pools])
    pick = (rng.random(n) * sizes[label]).astype(np.int64)
    flat = np.concatenate(pools)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    instance = flat[offsets[label] + pick]
    heavy = rng.random(n) < HEAVY_SHARE
    user = np.where(heavy, rng.integers(0, n_heavy, n), rng.integers(n_heavy, n_users, n)).astype(np.int16)
    day = (day0 + rng.integers(0, n_days, n)).astype(np.int16)
    return label, instance, user, day


@functools.lru_cache(maxsize=64)
def build_document(spec: DocSpec) -> Document:
    """The document of ``spec`` (cached: the same spec gives the same object while it stays in the cache)."""
    labelset = corpus()[spec.label_set]
    key = (spec.seed, spec.chars, LABEL_SETS.index(spec.label_set), SPLITS.index(spec.split))
    rng = np.random.default_rng(np.random.SeedSequence(key))
    k = len(labelset.labels)
    probs = 0.9 * rng.dirichlet(np.ones(k)) + 0.1 / k
    cum = np.cumsum(probs)
    year0 = int(rng.integers(FIRST_YEAR, 2022))
    years = int(rng.integers(3, 6))
    day0 = day_index(year0, 1, 1)
    n_days = day_index(year0 + years, 1, 1) - day0  # year0 + years <= 2026: inside the calendar
    pools = labelset.pools[spec.split]
    mean_inst = float(np.mean([labelset.lengths[p].mean() for p in pools]))
    mean_line = mean_inst + float(DAY_LENGTHS.mean()) + USER_PIECE_CHARS
    est_lines = max(1, int(spec.chars / mean_line))
    n_users = int(np.clip(est_lines // LINES_PER_USER, MIN_USERS, MAX_USERS))
    n_heavy = max(1, round(n_users * HEAVY_USERS))
    users = np.sort(rng.choice(90_000, size=n_users, replace=False)) + 10_000
    users = rng.permutation(users)  # heavy users are the first n_heavy: not the smallest ids
    chunks: list[tuple[np.ndarray, ...]] = []
    total, need = 0, spec.chars
    while total < need:  # one batch almost always suffices; a second one tops up
        batch = _draw(rng, int((need - total) / mean_line * 1.05) + 8, cum, pools, n_users, n_heavy, day0, n_days)
        chunks.append(batch)
        total += int((DAY_LENGTHS[batch[3]] + USER_PIECE_CHARS + labelset.lengths[batch[1]]).sum())
    label, instance, user, day = (np.concatenate(parts) for parts in zip(*chunks))
    lengths = DAY_LENGTHS[day] + USER_PIECE_CHARS + labelset.lengths[instance]
    ends = np.cumsum(lengths)
    n = max(1, int(np.searchsorted(ends, spec.chars, "right")))  # whole lines up to the target length
    starts = np.concatenate(([0], ends[:n])).astype(np.int64)
    return Document(spec, labelset, starts, label[:n], user[:n], day[:n], instance[:n], users, probs)
