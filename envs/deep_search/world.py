"""The DeepSearch-Synth world: seeded entities, typed relations and attributes, and their pages.

A world of ``size`` entities (one encyclopedia page each) is a pure function of ``(seed,
size)``. Five entity types: people, organisations, places, works and events; every name is
built from meaningless syllables (``Talo Veskin``, ``Velmora Guild``), and about a fifth of
the entities are deliberate near-namesakes of another entity of the same type (one vowel or
one onset changed), so a page must be checked by its exact title.

Relations are functional (each subject has exactly one object): ``birthplace``, ``employer``
and ``mentor`` of a person, ``founder`` and ``headquarters`` of an organisation,
``sister_city`` of a place, ``author`` and ``publisher`` of a work, ``venue`` and ``organiser``
of an event; objects are drawn with a skew, so some entities are mentioned on many pages.
Attributes: a date per type except places (``born``, ``founded``, ``published``, ``held``)
and numbers (``population``, ``members``, ``pages``, ``attendance``).

A page opens with a lead sentence (``Talo Veskin is a person.``), then its facts and a few
filler sentences in a seeded order; after the lead, a person's own page names them by family
name (``Veskin was born on ...``), as encyclopedias do. Attribute facts sit on their entity's
own page. A relation fact ``s R o`` is stated on ``s``'s page, or only on ``o``'s page: at
most one relation fact per subject moves, for a share (:data:`MOVE_SHARE`) of the subjects
with at most :data:`MAX_RIVALS_FOR_MOVE` rival pages (pages naming them or sharing a word of
their name) and only to an ``o`` named on at most :data:`MAX_OBJECT_MENTIONS_FOR_MOVE` pages
(about 16% of all relation facts). A moved fact is phrased from ``o``'s side (``Lumeo is the birthplace of Talo Veskin.``). Both phrasings contain the
lookup's keyword, so the query ``"<subject name> <keyword>"`` (:func:`hop_query`) finds the
page that states the fact: the recall contract the tests check for every backend.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rao_envs.tools.cache import build_once, cache_dir
from rao_envs.tools.search import Doc

GENERATOR_VERSION = 1
"""Bump when worlds or pages change for a given seed (cached indexes are keyed by it)."""
TYPES = ("person", "organisation", "place", "work", "event")
TYPE_SHARE = (0.40, 0.12, 0.08, 0.25, 0.15)
NEAR_NAMESAKE_SHARE = 0.2
MOVE_SHARE = 0.6
MAX_RIVALS_FOR_MOVE = 3
MAX_OBJECT_MENTIONS_FOR_MOVE = 20
MIN_SIZE = 200

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "th", "br", "tr", "kr", "dr")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "", "n", "r", "l", "s", "k")
ORG_KINDS = ("Guild", "Society", "Institute", "Company", "Press", "Academy", "Union", "Foundation")
EVENT_KINDS = ("Festival", "Summit", "Congress", "Games", "Fair", "Council")
_KIND_WORDS = frozenset(ORG_KINDS + EVENT_KINDS)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


@dataclass(frozen=True)
class Relation:
    """A functional relation ``subject -> object``, its noun and its two phrasings."""

    name: str
    subject: str
    object: str
    noun: str
    """``the {noun} of X``; its first word is the lookup's search keyword."""
    own: str
    """The sentence on the subject's page (``{s}``, ``{o}`` are names)."""
    other: str
    """The sentence on the object's page."""

    @property
    def keyword(self) -> str:
        """The word both phrasings contain (used by :func:`hop_query`)."""
        return self.noun.split()[0]


@dataclass(frozen=True)
class Attribute:
    """A date or number attribute of one entity type, its noun, its sentence and its range."""

    name: str
    subject: str
    kind: str
    """``"date"`` or ``"number"``."""
    noun: str
    own: str
    keyword: str
    low: int
    high: int
    log: bool = False


RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation("birthplace", "person", "place", "birthplace", "The birthplace of {s} is {o}.", "{o} is the birthplace of {s}."),
    Relation("employer", "person", "organisation", "employer", "The employer of {s} is {o}.", "{o} is the employer of {s}."),
    Relation("mentor", "person", "person", "mentor", "The mentor of {s} was {o}.", "{o} was the mentor of {s}."),
    Relation("founder", "organisation", "person", "founder", "The founder of {s} is {o}.", "{o} is the founder of {s}."),
    Relation("headquarters", "organisation", "place", "headquarters", "The headquarters of {s} are in {o}.",
             "{o} hosts the headquarters of {s}."),
    Relation("sister_city", "place", "place", "sister city", "The sister city of {s} is {o}.", "{o} is the sister city of {s}."),
    Relation("author", "work", "person", "author", "The author of {s} is {o}.", "{o} is the author of {s}."),
    Relation("publisher", "work", "organisation", "publisher", "The publisher of {s} is {o}.", "{o} is the publisher of {s}."),
    Relation("venue", "event", "place", "venue", "The venue of {s} was {o}.", "{o} was the venue of {s}."),
    Relation("organiser", "event", "organisation", "organiser", "The organiser of {s} was {o}.", "{o} was the organiser of {s}."),
)}
ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in (
    Attribute("born", "person", "date", "birth date", "{s} was born on {v}.", "born", 1500, 1985),
    Attribute("founded", "organisation", "date", "founding date", "{s} was founded on {v}.", "founded", 1400, 1990),
    Attribute("members", "organisation", "number", "number of members", "{s} has {v} members.", "members", 5, 20_000, True),
    Attribute("population", "place", "number", "population", "The population of {s} is {v}.", "population", 800, 3_000_000, True),
    Attribute("published", "work", "date", "publication date", "{s} was published on {v}.", "published", 1500, 2000),
    Attribute("pages", "work", "number", "number of pages", "{s} has {v} pages.", "pages", 40, 1_500),
    Attribute("held", "event", "date", "date", "{s} was held on {v}.", "held", 1600, 2010),
    Attribute("attendance", "event", "number", "attendance", "The attendance of {s} was {v} people.", "attendance", 50, 200_000, True),
)}
LOOKUPS = {**RELATIONS, **ATTRIBUTES}
"""Every lookup a question may chain: relations (to an entity) and attributes (to a value)."""
FILLERS = {
    "person": ("{s} is remembered for a {w} style.", "{s} kept a notebook called {W}.",
               "Friends called {s} by the nickname {W}.", "{s} collected {w} stones for many years.",
               "Late in life {s} wrote letters about {w} weather."),
    "organisation": ("{s} publishes a yearly report called {W}.", "The motto of {s} mentions {w}.",
                     "{s} keeps an archive of {w} records.", "Staff of {s} wear a {w} badge.",
                     "{s} awards a prize called the {W} medal."),
    "place": ("{s} is known for its {w} gardens.", "A river called {W} flows near {s}.",
              "{s} holds a {w} market every spring.", "The old quarter of {s} is called {W}.",
              "Visitors to {s} praise its {w} bridges."),
    "work": ("{s} is written in a {w} style.", "{s} opens with a chapter called {W}.", "Critics compared {s} to {W}.",
             "A character named {W} appears in {s}.", "{s} ends in a {w} harbour."),
    "event": ("{s} featured a {w} parade.", "The emblem of {s} shows a {w} bird.", "{s} closed with a speech called {W}.",
              "Guests at {s} were served {w} bread.", "A bell called {W} opened {s}."),
}


def format_date(ordinal: int) -> str:
    """``3 May 1723`` for a proleptic Gregorian day number."""
    d = dt.date.fromordinal(int(ordinal))
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def format_value(attr: Attribute, value: int) -> str:
    """An attribute value as pages and answers write it (dates ``3 May 1723``, numbers ``12,345``)."""
    return format_date(value) if attr.kind == "date" else f"{int(value):,}"


def hop_query(name: str, lookup: str) -> str:
    """The search query that finds the page stating ``lookup`` of the entity ``name``."""
    return f"{name} {LOOKUPS[lookup].keyword}"


@dataclass
class World:
    """A generated world: entity types and names, relation and attribute arrays, fact placement.

    Arrays are indexed by entity id (0..size-1); ``rel[r][e]`` / ``attr[a][e]`` are -1 where
    the entity's type has no such relation/attribute. ``moved[r][e]`` is True when the fact
    ``e r rel[r][e]`` is stated only on the object's page.
    """

    seed: int
    size: int
    types: np.ndarray
    names: list[str]
    rel: dict[str, np.ndarray]
    attr: dict[str, np.ndarray]
    moved: dict[str, np.ndarray]
    doc_index: np.ndarray
    by_name: dict[str, int] = field(default_factory=dict)
    _inverse: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """A name for this world's cached artifacts: seed, size and generator version."""
        return self.key_for(self.seed, self.size)

    @staticmethod
    def key_for(seed: int, size: int) -> str:
        """The cache name of world ``(seed, size)`` (:attr:`key`)."""
        return f"deep_search-w{seed}-n{size}-g{GENERATOR_VERSION}"

    def type_of(self, e: int) -> str:
        """The type name of entity ``e``."""
        return TYPES[int(self.types[e])]

    def of_type(self, type_name: str) -> np.ndarray:
        """The ids of every entity of ``type_name``."""
        return np.flatnonzero(self.types == TYPES.index(type_name))

    def doc_id(self, e: int) -> str:
        """The id of entity ``e``'s page (a shuffled number: ids reveal nothing)."""
        return f"d{int(self.doc_index[e]):06d}"

    def lookup(self, e: int, name: str) -> int:
        """The object id (relation) or raw value (attribute) of ``name`` for entity ``e``."""
        return int(self.rel[name][e] if name in RELATIONS else self.attr[name][e])

    def answer_text(self, e: int, name: str) -> str:
        """What a lookup answers, as text: an entity name, a number or a date."""
        value = self.lookup(e, name)
        return self.names[value] if name in RELATIONS else format_value(ATTRIBUTES[name], value)

    def fact_doc(self, e: int, name: str) -> str:
        """The id of the page that states lookup ``name`` of entity ``e``."""
        if name in RELATIONS and self.moved[name][e]:
            return self.doc_id(int(self.rel[name][e]))
        return self.doc_id(e)

    def subjects(self, name: str, obj: int) -> np.ndarray:
        """Every entity whose relation ``name`` points at ``obj`` (the inverse relation)."""
        if name not in self._inverse:
            arr = self.rel[name]
            subs = np.flatnonzero(arr >= 0)
            order = np.argsort(arr[subs], kind="stable")
            self._inverse[name] = (subs[order], arr[subs][order])
        subs, objs = self._inverse[name]
        lo, hi = np.searchsorted(objs, obj, "left"), np.searchsorted(objs, obj, "right")
        return subs[lo:hi]

    def short_name(self, e: int) -> str:
        """How entity ``e``'s own page names it after the lead: a person by family name, others in full."""
        name = self.names[e]
        return name.rsplit(" ", 1)[-1] if self.types[e] == 0 else name

    # ------------------------------------------------------------------ pages
    def documents(self) -> list[Doc]:
        """Every page of the world, in doc-id order (a pure function of the world)."""
        rng = np.random.default_rng([self.seed, self.size, 2])
        names, n = self.names, self.size
        short = [self.short_name(e) for e in range(n)]
        sentences: list[list[str]] = [[] for _ in range(n)]
        for a in ATTRIBUTES.values():
            vals = self.attr[a.name]
            for e in np.flatnonzero(vals >= 0).tolist():
                sentences[e].append(a.own.format(s=short[e], v=format_value(a, int(vals[e]))))
        for r in RELATIONS.values():
            arr, moved = self.rel[r.name], self.moved[r.name]
            for e in np.flatnonzero(arr >= 0).tolist():
                o = int(arr[e])
                if moved[e]:
                    sentences[o].append(r.other.format(s=names[e], o=names[o]))
                else:
                    sentences[e].append(r.own.format(s=short[e], o=names[o]))
        n_fill = rng.integers(1, 6, size=n)
        fill_pick = np.argsort(rng.random((n, 5)), axis=1)  # distinct filler templates per page
        fill_words = _words(rng, n * 5, 2)
        docs = [None] * n
        for e in range(n):
            t = TYPES[int(self.types[e])]
            lines = sentences[e]
            for j in range(int(n_fill[e])):
                w = fill_words[5 * e + j]
                lines.append(FILLERS[t][int(fill_pick[e, j])].format(s=short[e], w=w.lower(), W=w))
            order = rng.permutation(len(lines)).tolist()
            article = "an" if t[0] in "aeiou" else "a"
            text = " ".join([f"{names[e]} is {article} {t}."] + [lines[i] for i in order])
            docs[int(self.doc_index[e])] = Doc(self.doc_id(e), names[e], text)
        return docs  # type: ignore[return-value]


# ---------------------------------------------------------------------------- generation
SYLLABLES = tuple(o + v + c for o in ONSETS for v in VOWELS for c in CODAS)


def _words(rng: np.random.Generator, count: int, n_syl: int | None = None) -> list[str]:
    """``count`` capitalised meaningless words of 2-3 syllables (or exactly ``n_syl``)."""
    syl = rng.integers(0, len(SYLLABLES), size=(count, 3)).tolist()
    three = (np.full(count, n_syl == 3) if n_syl else rng.random(count) < 0.5).tolist()
    S = SYLLABLES
    return [(S[a] + S[b] + (S[c] if t else "")).capitalize() for (a, b, c), t in zip(syl, three)]


def _mutate(rnd: random.Random, name: str) -> str:
    """A near-namesake: one word of ``name`` (not a type word) with one vowel or its onset changed."""
    words = name.split()
    last = len(words) - 1 if len(words) > 1 and words[-1] in _KIND_WORDS else len(words)
    i = rnd.randrange(last)
    w = words[i].lower()
    vowel_at = [j for j, ch in enumerate(w) if ch in "aeiou"]
    if vowel_at and rnd.random() < 0.7:
        j = rnd.choice(vowel_at)
        w = w[:j] + rnd.choice([v for v in "aeiou" if v != w[j]]) + w[j + 1:]
    else:
        w = rnd.choice(ONSETS) + w[1:]
    words[i] = w.capitalize()
    return " ".join(words)


def _names(rng: np.random.Generator, types: np.ndarray) -> list[str]:
    """Unique names for every entity, about :data:`NEAR_NAMESAKE_SHARE` of them near-namesakes."""
    n = len(types)
    rnd = random.Random(int(rng.integers(2**62)))  # scalar draws: the stdlib generator is much faster
    n_given = max(30, int((types == 0).sum()))
    given = _words(rng, n_given, 2)
    fam, word2 = _words(rng, n), _words(rng, n)
    org_kind = rng.integers(0, len(ORG_KINDS), n).tolist()
    ev_kind = rng.integers(0, len(EVENT_KINDS), n).tolist()
    g_pick = rng.integers(0, n_given, n).tolist()
    near = (rng.random(n) < NEAR_NAMESAKE_SHARE).tolist()
    taken: set[str] = set()
    names: list[str] = []
    pools: dict[int, list[str]] = {t: [] for t in range(len(TYPES))}
    for e, t in enumerate(types.tolist()):
        pool = pools[t]
        name = None
        if near[e] and pool:
            for _ in range(5):
                cand = _mutate(rnd, pool[rnd.randrange(len(pool))])
                if cand not in taken:
                    name = cand
                    break
        k = 0
        while name is None or name in taken:
            base = fam[e] if k == 0 else _words(rng, 1)[0]
            if t == 0:
                name = f"{given[g_pick[e]]} {base}"
            elif t == 1:
                name = f"{base} {ORG_KINDS[org_kind[e]]}"
            elif t == 2:
                name = base
            elif t == 3:
                name = f"{base} {word2[e]}"
            else:
                name = f"{base} {EVENT_KINDS[ev_kind[e]]}"
            k += 1
        taken.add(name)
        names.append(name)
        pool.append(name)
    return names


def _skewed_targets(rng: np.random.Generator, objects: np.ndarray, count: int) -> np.ndarray:
    """``count`` draws from ``objects``, popularity ∝ 1/sqrt(rank) over a random ranking."""
    weights = 1.0 / np.sqrt(np.arange(1, len(objects) + 1))
    ranked = rng.permutation(objects)
    return ranked[rng.choice(len(objects), size=count, p=weights / weights.sum())]


def build_world(seed: int, size: int) -> World:
    """Generate the world of ``size`` entities for ``seed`` (deterministic)."""
    if size < MIN_SIZE:
        raise ValueError(f"a DeepSearch world needs at least {MIN_SIZE} entities, got {size}")
    rng = np.random.default_rng([seed, size, 1])
    counts = np.floor(np.array(TYPE_SHARE) * size).astype(int)
    counts[0] += size - counts.sum()
    types = rng.permutation(np.repeat(np.arange(len(TYPES), dtype=np.int8), counts))
    names = _names(rng, types)
    of_type = {t: np.flatnonzero(types == i) for i, t in enumerate(TYPES)}
    rel: dict[str, np.ndarray] = {}
    for r in RELATIONS.values():
        arr = np.full(size, -1, dtype=np.int64)
        subs, objs = of_type[r.subject], of_type[r.object]
        targets = _skewed_targets(rng, objs, len(subs))
        if r.subject == r.object:  # no entity is its own mentor or sister city
            same = targets == subs
            while same.any():
                targets[same] = _skewed_targets(rng, objs, int(same.sum()))
                same = targets == subs
        arr[subs] = targets
        rel[r.name] = arr
    attr: dict[str, np.ndarray] = {}
    for a in ATTRIBUTES.values():
        arr = np.full(size, -1, dtype=np.int64)
        subs = of_type[a.subject]
        if a.kind == "date":
            lo, hi = dt.date(a.low, 1, 1).toordinal(), dt.date(a.high, 12, 31).toordinal()
            arr[subs] = rng.integers(lo, hi + 1, len(subs))
        elif a.log:
            arr[subs] = np.round(np.exp(rng.uniform(np.log(a.low), np.log(a.high), len(subs)))).astype(np.int64)
        else:
            arr[subs] = rng.integers(a.low, a.high + 1, len(subs))
        attr[a.name] = arr
    mentions = np.zeros(size, dtype=np.int64)  # pages naming an entity when every fact sits on its subject's page
    for r in RELATIONS.values():
        arr = rel[r.name]
        np.add.at(mentions, arr[arr >= 0], 1)
    # pages that compete with a moved fact's page for "<subject name> <keyword>": those naming the
    # subject, and the pages of other entities sharing a word of its name (type words aside)
    word_count = Counter(w for name in names for w in name.split())
    rivals = mentions + np.array(
        [sum(word_count[w] - 1 for w in name.split() if w not in _KIND_WORDS) for name in names], dtype=np.int64
    )
    # at most one relation fact per subject moves (a second would be a rival page for the first)
    n_rels = np.zeros(size, dtype=np.int64)
    for r in RELATIONS.values():
        n_rels += rel[r.name] >= 0
    pick = np.floor(rng.random(size) * n_rels).astype(np.int64)  # which of its relations may move
    move = (rng.random(size) < MOVE_SHARE) & (rivals <= MAX_RIVALS_FOR_MOVE)
    moved: dict[str, np.ndarray] = {}
    slot = np.zeros(size, dtype=np.int64)
    for r in RELATIONS.values():
        arr = rel[r.name]
        has = arr >= 0
        quiet_object = np.zeros(size, dtype=bool)
        quiet_object[has] = mentions[arr[has]] <= MAX_OBJECT_MENTIONS_FOR_MOVE
        moved[r.name] = has & move & (pick == slot) & quiet_object
        slot += has
    world = World(
        seed=seed, size=size, types=types, names=names, rel=rel, attr=attr, moved=moved,
        doc_index=rng.permutation(size),
    )
    world.by_name = {name: e for e, name in enumerate(names)}
    return world


def save_world(world: World, path: str | Path) -> None:
    """Write ``world``'s arrays and names to the ``.npz`` file ``path``."""
    arrays = {"types": world.types, "doc_index": world.doc_index, "names": np.array(world.names)}
    for kind, table in (("rel", world.rel), ("attr", world.attr), ("moved", world.moved)):
        arrays.update({f"{kind}:{k}": v for k, v in table.items()})
    np.savez(path, **arrays)


def load_world(seed: int, size: int, path: str | Path) -> World:
    """Read a world written by :func:`save_world`."""
    with np.load(path, allow_pickle=False) as z:
        table = {kind: {k.split(":", 1)[1]: z[k] for k in z.files if k.startswith(kind + ":")} for kind in ("rel", "attr", "moved")}
        world = World(seed=seed, size=size, types=z["types"], names=z["names"].tolist(), doc_index=z["doc_index"], **table)
    world.by_name = {name: e for e, name in enumerate(world.names)}
    return world


@functools.lru_cache(maxsize=4)
def get_world(seed: int, size: int) -> World:
    """The world for ``(seed, size)``: built once per machine (cached on disk), loaded once per process."""
    key = World.key_for(seed, size)
    path = build_once(cache_dir("deep_search", "worlds") / key, lambda tmp: save_world(build_world(seed, size), tmp / "world.npz"))
    try:
        return load_world(seed, size, path / "world.npz")
    except (OSError, ValueError, KeyError):  # an unreadable cache entry: rebuild in memory
        return build_world(seed, size)
