"""DeepSearchSynth-v0 (DeepSearch-Synth, after the RAO paper's DeepDive, section 4.3): multi-hop
research over a generated encyclopedia, scored exactly.

Description
    A seeded world of people, organisations, places, works and events with typed relations
    and attributes (:mod:`~rao_envs.envs.deep_search.world`) is rendered into one
    encyclopedia page per entity; names are meaningless syllables with deliberate
    near-namesakes, and a fact is stated on its entity's page or only on the page of the
    other entity it names. A question is a walk over the relation graph, 2 to 6 hops,
    rendered as one question whose answer is an entity name, a number or a date
    (:mod:`~rao_envs.envs.deep_search.questions`): a strict chain (``What is the population
    of the birthplace of the founder of Velmora Guild?``) or an aggregate over independent
    chains (count, sum, largest, earliest, latest). Every question carries its
    sub-questions (ids ``q``, ``q.1``, ``q.1.1`` ...) and their exact answers; a node's
    prompt lists the parts of its own question.

Tools
    ``search(query, k=5)``: the top ``k`` (1-10) pages for the words of ``query``, each
    with its id, exact title and opening sentence (BM25 over
    :mod:`rao_envs.tools.search`; no query syntax: any text is read as plain words).
    ``open(doc_id, offset=0)``: a page from ``offset``, at most :data:`OPEN_CHARS`
    characters cut at a sentence end; a cut page ends with the offset to open next. Plus
    the tree verbs ``delegate``, ``wait``, ``cancel``, ``finish``.

Delegation
    ``delegate(question="q.1", context=...)``: ``question`` is the id of a sub-question of
    the node's own question (listed in its prompt); the child's goal is that sub-question's
    text and it is scored against that sub-question's exact answer. Independent parts of
    an aggregate can be delegated together (they run in parallel); a chain's part is its
    prefix, so a node delegates the prefix and does the last hop itself.

State scope
    ``isolated``: the corpus is read-only, nodes share nothing but the search index.

Rewards
    A node's score is 1.0 when its ``finish`` result matches its own (sub-)question's answer
    after normalisation (:func:`~rao_envs.envs.deep_search.questions.answers_match`:
    case, whitespace, articles and punctuation; numbers as integers with or without
    thousands separators; dates in any common format), else 0.0. The engine adds RAO's local
    reward term over the children.

Termination
    The episode ends when the root finishes (terminated) or runs out of steps (truncated);
    a child that runs out of steps is truncated and its parent is told.

Difficulties
    Hops per chain x parallel chains x corpus size (documents): ``easy`` 2 x 1 x 1k,
    ``medium`` 2-3 x 1-3 x 10k, ``hard`` 3-4 x 5 x 30k, ``extreme`` 4-6 x 5-6 x 100k.
    Limits as the paper's DeepDive config: ``max_depth`` 4, 25 steps per node. One
    world per split: world seed 0 (``train``) or 1 (``val``); ``worlds=n`` draws among
    ``n`` worlds per split (even seeds train, odd seeds val). Each world's index is built once
    and cached on disk (``$RAO_ENVS_CACHE``, default ``~/.cache/rao_envs``) by world seed and
    size. Measured (``benchmarks/deep_search_depth.py``, 50 seeds per difficulty): the
    delegating oracle solves every instance at every difficulty; the flat oracle (never
    delegates) solves every easy and medium instance and no hard or extreme one.

Registered ids
    ``rao_envs/DeepSearchSynth-v0`` (kwargs: ``difficulty``, ``split``, ``corpus_size`` to
    override the corpus size, ``backend`` ``tantivy``/``fts5``/``bm25s``, ``worlds``).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from rao_envs.errors import ConfigError, InfraError, ToolError
from rao_envs.task import NodeContext, Task, TaskInstance, tool
from rao_envs.tools.search import SearchIndex, SearchIndexError, available_backends, cached_index, default_backend, query_terms
from rao_envs.types import StateScope

from rao_envs.envs.deep_search.questions import answers_match, make_question, normalize_text
from rao_envs.envs.deep_search.world import MIN_SIZE, World, get_world

OPEN_CHARS = 600
"""The most characters one ``open`` shows (cut back to a sentence end)."""
MAX_K = 10
MAX_SIZE = 1_000_000


@dataclass(frozen=True)
class Level:
    """A difficulty: hops per chain, parallel chains and the corpus size."""

    hops: tuple[int, int]
    branches: tuple[int, int]
    size: int


LEVELS = {
    "easy": Level((2, 2), (1, 1), 1_000),
    "medium": Level((2, 3), (1, 3), 10_000),
    "hard": Level((3, 4), (5, 5), 30_000),
    "extreme": Level((4, 6), (5, 6), 100_000),
}


class DeepSearchArgs(BaseModel):
    """A node's task arguments: its (sub-)question id, its world's seed and its plan (start name,
    lookups or parts; no answers). Only ``question`` is given to ``delegate``; the rest follows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str
    world: int
    plan: dict[str, Any]


def get_index(seed: int, size: int, backend: str) -> SearchIndex:
    """The search index over the pages of world ``(seed, size)``: built once per machine, opened once per process."""
    return _open_index(seed, size, backend, os.getpid())


@functools.lru_cache(maxsize=8)
def _open_index(seed: int, size: int, backend: str, pid: int) -> SearchIndex:
    # keyed by pid: a forked worker opens its own handles (SQLite connections must not cross a fork)
    world = get_world(seed, size)
    return cached_index(world.key, world.documents, backend=backend)


def clear_caches() -> None:
    """Forget the worlds and indexes this process opened (the on-disk cache stays)."""
    _open_index.cache_clear()
    get_world.cache_clear()


SYSTEM_PROMPT = """You answer research questions about a fictional world from its encyclopedia, \
one page per person, organisation, place, work or event. Every name is made up, and many names \
differ from another name by one letter: check that a page's title is exactly the name you look for.

# Tools
- search(query, k=5) lists the top k pages for the words of your query, each with its page id, \
its exact title and its opening sentence. Search for a name together with the fact you need, \
e.g. "Talo Veskin birthplace" or "Velmora Guild founder".
- open(doc_id, offset=0) shows a page. Long pages are cut; the cut tells you the offset to open next.
A fact about an entity is usually on its own page, but sometimes only on the page of the other \
entity it names (a birthplace may be stated only on the place's page): if a page does not state \
the fact, open the other pages your search found.

# Answers
Finish with the answer alone: a name exactly as its page title writes it, a number in digits \
(12,345 or 12345), or a date such as 3 May 1723.

# Delegation
Your question is made of parts, listed under it with their ids. delegate(question="q.1") starts \
a sub-agent on a part, and its answer comes back to you. Parts that do not depend on each other \
(the items of a list) can be delegated together: write several delegate calls in one turn and \
they run in parallel. For a chain ("the birthplace of the founder of X"), delegate its part (who \
is the founder of X?) and do the last hop yourself with the answer. Each hop costs at least two \
steps (search, then open): delegate when your steps will not cover every hop yourself. Example:
<tool>{"name": "delegate", "args": {"question": "q.1"}}</tool>"""

_KIND_TEXT = {
    "entity": "a name, exactly as its page title writes it",
    "number": "a number in digits",
    "date": "a date such as 3 May 1723",
}


class DeepSearchSynth(Task):
    """Answer multi-hop questions over a generated encyclopedia; delegate independent parts and chain prefixes."""

    name = "DeepSearchSynth"
    version = 0
    state_scope = StateScope.ISOLATED
    difficulties = ("easy", "medium", "hard", "extreme")
    default_difficulty = "medium"
    default_limits = {"max_depth": 4, "max_steps_per_node": 25, "max_nodes": 256}
    delegate_args_doc = ", question: str"
    examples = {
        "search": {"query": "founder of the Velmora Guild"},
        "open": {"doc_id": "d000123"},
        "delegate": {"goal": "Answer part q.1 of the question", "question": "q.1"},
        "finish": {"result": "Arden Holt"},
    }
    system_prompt = SYSTEM_PROMPT
    instance_model = DeepSearchArgs

    def __init__(
        self,
        difficulty: str | None = None,
        split: str = "train",
        corpus_size: int | None = None,
        backend: str | None = None,
        worlds: int = 1,
    ) -> None:
        super().__init__(difficulty, split)
        self.level = LEVELS[self.difficulty]
        size = self.level.size if corpus_size is None else corpus_size
        if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
            raise ConfigError(f"{self.name}: corpus_size must be an integer from {MIN_SIZE} to {MAX_SIZE:,}, got {corpus_size!r}")
        if backend is not None and backend not in available_backends():
            raise ConfigError(f"{self.name}: search backend {backend!r} is not available; installed: {available_backends()}")
        if isinstance(worlds, bool) or not isinstance(worlds, int) or not 1 <= worlds <= 1000:
            raise ConfigError(f"{self.name}: worlds must be an integer from 1 to 1000, got {worlds!r}")
        self.size, self.backend, self.worlds = size, backend or default_backend(), worlds

    # -- the corpus ---------------------------------------------------------------------
    def world(self, seed: int) -> World:
        """The world with seed ``seed`` at this task's corpus size."""
        return get_world(seed, self.size)

    def index(self, seed: int) -> SearchIndex:
        """The search index of world ``seed`` (built and cached on the first call)."""
        return get_index(seed, self.size, self.backend)

    def _corpus(self, ctx: NodeContext) -> tuple[World, SearchIndex]:
        spec = ctx.instance.data["world"]
        try:
            return get_world(spec["seed"], spec["size"]), get_index(spec["seed"], spec["size"], self.backend)
        except (OSError, SearchIndexError) as exc:
            raise InfraError(f"search index unavailable: {exc}") from None

    # -- instances ----------------------------------------------------------------------
    def generate(self, rng: np.random.Generator) -> TaskInstance:
        """A question of the difficulty's shape over one of the split's worlds (its index made ready)."""
        seed = 2 * int(rng.integers(self.worlds)) + (self.split == "val")
        world = self.world(seed)
        self.index(seed)  # build or open now, so the episode's first search is fast
        lo, hi = self.level.hops
        blo, bhi = self.level.branches
        hops, branches = int(rng.integers(lo, hi + 1)), int(rng.integers(blo, bhi + 1))
        questions = make_question(world, rng, hops, branches)
        root = questions["q"]
        return TaskInstance(
            goal=root["text"],
            args={"question": "q", "world": seed, "plan": root["plan"]},
            data={"world": {"seed": seed, "size": self.size}, "questions": questions},
        )

    def initial_state(self, instance: TaskInstance) -> None:
        """No mutable state: the corpus is read-only."""
        return None

    def child_state(self, instance: TaskInstance, args: dict[str, Any]) -> None:
        """No mutable state: the corpus is read-only."""
        return None

    def node_prompt(self, ctx: NodeContext) -> str:
        """The node's question, the answer format and the parts it may delegate."""
        questions = ctx.instance.data["questions"]
        qid = ctx.node.args["question"]
        q = questions[qid]
        text = f"# Question ({qid})\n{q['text']}\n\nAnswer with {_KIND_TEXT[q['kind']]}."
        parts = _parts(questions, qid)
        if parts:
            if "op" in q["plan"]:
                head = "# Parts you may delegate (independent of each other: delegate them together to run in parallel)"
                tail = "Then combine their answers as the question asks."
            else:
                head = "# Part you may delegate"
                tail = "Its answer is the entity your question's last hop starts from."
            lines = "\n".join(f"- {p}: {questions[p]['text']}" for p in parts)
            text += f"\n\n{head}\n{lines}\n{tail}"
        if ctx.node.context:
            text += f"\n\n# Context from your parent agent\n{ctx.node.context}"
        return text

    # -- delegation and verification ----------------------------------------------------
    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A child needs ``question``: the id of a sub-question of the parent's question."""
        questions = parent.instance.data["questions"]
        own = parent.node.args["question"]
        parts = _parts(questions, own)
        example = f'e.g. delegate(question="{parts[0]}")' if parts else "your question has no parts: answer it yourself"
        extra = sorted(set(args) - {"question"})
        if extra:
            raise ToolError(f"unknown delegate argument(s) {[str(x)[:40] for x in extra[:5]]}; give question=<part id> ({example})")
        qid = args.get("question")
        if qid is None and goal:  # the part named by its text
            want = normalize_text(goal)
            qid = next((p for p in parts if normalize_text(questions[p]["text"]) == want), None)
        if not isinstance(qid, str) or not qid:
            raise ToolError(f"give the sub-agent the id of one of your question's parts ({example})")
        if not qid.startswith(own + ".") or qid not in questions:
            raise ToolError(
                f"{qid[:40]!r} is not a part of your question {own}; its parts: {', '.join(parts) or 'none'} ({example})"
            )
        return questions[qid]["text"], {"question": qid, "world": parent.node.args["world"], "plan": questions[qid]["plan"]}

    def score(self, ctx: NodeContext) -> float:
        """1.0 when the finish result matches the node's own (sub-)question's answer (normalised)."""
        q = ctx.instance.data["questions"][ctx.node.args["question"]]
        return float(answers_match(ctx.node.result, q["answer"], q["kind"]))

    # -- tools --------------------------------------------------------------------------
    @tool
    def search(self, ctx: NodeContext, query: str, k: int = 5) -> str:
        """Search the encyclopedia: id, exact title and opening sentence of the top k pages (k from 1 to 10)."""
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be from 1 to {MAX_K}, got {k}")
        words = query_terms(query)
        if not words:
            raise ToolError('your query has no words to search for (letters or digits); e.g. search(query="Velmora Guild founder")')
        _, index = self._corpus(ctx)
        hits = index.search(query, k)
        shown = " ".join(words)
        if not hits:
            return f"No page matches the words: {shown}. Try other words (a name, or a fact such as founder or birthplace)."
        lines = [f"Top {len(hits)} pages for: {shown}"]
        # only the lead sentence ("X is a person."): the rest of a page is read with open
        lines += [f"{i}. {h.id} | {h.title} | {h.snippet.split('. ', 1)[0].rstrip('.…')}." for i, h in enumerate(hits, 1)]
        return "\n".join(lines)

    @tool
    def open(self, ctx: NodeContext, doc_id: str, offset: int = 0) -> str:
        """Read page doc_id from character offset; long pages are cut and end with the offset to read on."""
        key = doc_id.strip().lower()
        _, index = self._corpus(ctx)
        doc = index.get(key) if re.fullmatch(r"d\d{6}", key) else None
        if doc is None:
            raise ToolError(f"no page with id {doc_id[:40]!r}; page ids look like d004211 (search lists them)")
        text = doc.text
        if not 0 <= offset < len(text):
            raise ToolError(f"offset must be from 0 to {len(text) - 1} for page {doc.id} ({len(text)} characters)")
        end = min(len(text), offset + OPEN_CHARS)
        if end < len(text):
            stop = text.rfind(". ", offset, end)
            end = stop + 2 if stop > offset else (text.rfind(" ", offset, end) + 1 or end)
            if end <= offset:
                end = offset + OPEN_CHARS
        body = text[offset:end].strip()
        head = f"[{doc.id}] {doc.title} (characters {offset}-{end} of {len(text)})"
        if end >= len(text):
            return f"{head}\n{body}\n[end of page]"
        return f'{head}\n{body}\n[page continues: open(doc_id="{doc.id}", offset={end}) for the next part]'

    # -- oracles ------------------------------------------------------------------------
    def oracle(self, delegate: bool = True) -> Any:
        """Scripted policy: delegating (default; parts in parallel, chain prefixes) or flat (``delegate=False``)."""
        from rao_envs.envs.deep_search.oracle import DeepSearchOracle

        return DeepSearchOracle(self, delegate=delegate)


def _parts(questions: dict[str, Any], qid: str) -> list[str]:
    """The ids of the immediate parts of sub-question ``qid``, in order."""
    q = questions[qid]
    if "op" in q["plan"]:
        return [p["id"] for p in q["plan"]["parts"]]
    child = f"{qid}.1"
    return [child] if child in questions else []
