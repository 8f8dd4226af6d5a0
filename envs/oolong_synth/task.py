"""OolongSynth-v0: long-context aggregation over a document that does not fit a node's context.

Description
-----------
Oolong-synth (Bertsch et al. 2025) rebuilt with a deterministic label oracle, after RAO's
Oolong-Real result (paper §4.2). A document is a list of lines
``Date: Mar 5, 2021 || User: 63685 || Instance: <text>``; every instance has one label of
the document's label set (question type, sentiment or topic; :mod:`.corpus`). The root is
asked one Oolong question about the whole document (count a label, compare two labels, the
most common label, the user or the month with the most of a label, the users with both of
two labels; :mod:`.questions`). It sees the question and the document's size, never the
text: it reads pieces with ``read`` and can read at most ``context_chars`` characters in
all (its *reading budget*, the model's window), so a document longer than that must be
split, the pieces handed to sub-agents in parallel, and their answers combined.
(``reading_budget`` sets the total apart from the window, for ablations: a node that may
read the whole document, one window per call, needs no sub-agents.)

The tree stores no document text: the instance holds the generator's :class:`.DocSpec`
(seed, length, label set, split) and node args hold character ranges, so an episode tree
only contains the text its nodes actually read.

Tools
-----
* ``read(offset, length)``: the characters ``[offset, offset + length)`` of the node's
  range, at most ``context_chars`` per call and within what is left of its reading budget
  (``reading_budget``, default ``context_chars``; every character shown counts, re-reads too).
* ``doc_info()``: the document's size, the node's range and lines, its budget left (no text).

Delegation
----------
``delegate(goal, start, end, question)``: the child gets every line that *starts* at an
offset in ``[start, end)`` (adjacent ranges never share or lose a line), which must lie
inside the parent's own range, and a ``question = {"kind": ..., "labels": [...]}`` about
those lines: any root kind, or a partial kind made for combining (``counts``,
``user_counts``, ``month_counts``, ``users_with``). When the child's lines fit its
window (one read) they are shown in its first message, which uses its budget. A range of
at most ``context_chars - MAX_LINE_CHARS`` characters always fits. Defaults:
``max_depth=2``, at most 8 children per turn, 25 steps per node.

State scope
-----------
``isolated``: each node's state is its own view (the character range of its lines) and
the characters it has read; children share nothing with their parent.

Rewards
-------
Every node is scored exactly against its own range and question with Oolong's scorer
(:func:`.questions.score_answer`): exact for labels, users, months and comparisons,
``0.75 ** |error|`` for counts, set overlap for lists. The local reward is the engine's
``R = s + λ · mean(children s)``.

Termination
-----------
The episode ends when the root calls ``finish``; a node that runs out of steps is
truncated (score 0).

Difficulties
------------
Document length over the context budget ``context_chars`` (default 4,096 characters;
``max_obs_chars`` defaults to ``context_chars + 1024`` so one read and its header fit an
observation: pass both to change them): easy 0.5-1 (one read), medium 2-4, hard 8-16,
extreme 32-128 (131k-524k characters at the default budget). Measured with
``benchmarks/oolong_oracles.py`` (see ``README.md``): the delegating oracle scores 1.0 at
every difficulty; the flat oracle (reads what its budget allows, then extrapolates) is exact
only on easy (39% at medium, 19% hard, 17% extreme; mean scores 0.53, 0.23, 0.18), and
exact everywhere its reading budget covers the document.

Registered ids
--------------
``OolongSynth-v0`` (``gymnasium.make("rao_envs/OolongSynth-v0", difficulty="hard")``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from rao_envs.envs.oolong_synth.corpus import LABEL_SETS, corpus
from rao_envs.envs.oolong_synth.document import MAX_LINE_CHARS, DocSpec, Document, build_document
from rao_envs.envs.oolong_synth.questions import (
    KINDS,
    Question,
    check_question,
    format_answer,
    gold,
    render,
    root_question,
    score_answer,
)
from rao_envs.errors import ConfigError, ToolError
from rao_envs.task import NodeContext, Task, TaskInstance, tool
from rao_envs.types import StateScope

CONTEXT_CHARS = 4096  # default reading budget of a node (its "window")
OBS_HEADROOM = 1024  # max_obs_chars = context_chars + this: room for headers and the status line
#: difficulty -> document length as a multiple of the context budget
RATIOS: dict[str, tuple[float, float]] = {"easy": (0.5, 1.0), "medium": (2.0, 4.0), "hard": (8.0, 16.0), "extreme": (32.0, 128.0)}
CHUNK_HEADER = "# Your chunk"


class OolongArgs(BaseModel):
    """A node's task arguments: the character range ``[start, end)`` and its question."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int
    end: int
    question: Question


class OolongSynth(Task):
    """Answer an Oolong question about a document far longer than a node can read."""

    name = "OolongSynth"
    version = 0
    state_scope = StateScope.ISOLATED
    difficulties = ("easy", "medium", "hard", "extreme")
    default_difficulty = "medium"
    default_limits = {
        "max_depth": 2,
        "max_steps_per_node": 25,
        "max_children_per_turn": 8,
        "max_nodes": 512,
        "max_obs_chars": CONTEXT_CHARS + OBS_HEADROOM,
    }
    delegate_args_doc = ", start: int, end: int, question: dict"
    examples = {
        "read": {"offset": 0, "length": 4000},
        "delegate": {"goal": "Count the matching records in your chunk", "start": 0, "end": 4000,
                     "question": {"kind": "count", "labels": ["LABEL"]}},
        "finish": {"result": "12"},
    }
    instance_model = OolongArgs
    system_prompt = (
        "You answer questions about a long document of lines 'Date: <date> || User: <id> || Instance: <text>'. "
        "Each instance has one label; decide it by reading the instance (single keywords mislead)."
    )
    how_to_split: ClassVar[str] = (
        "You can read at most {budget} characters in all (your reading budget), {per_read} per call: "
        "read(offset, length) shows characters of your range and uses that budget. To cover more, delegate(goal, start, end, question): the sub-agent "
        "gets the lines that start in [start, end) (ranges of up to {child} characters fit its budget) and a "
        'question {{"kind": K, "labels": [...]}}, K one of count, compare, top_label, top_user, top_month, pairs '
        "or, to combine answers, counts, user_counts, month_counts, users_with. Combine their answers and finish."
    )
    """The reading and delegation rules, shown to every node whose lines are not all shown at once."""

    def __init__(
        self,
        difficulty: str | None = None,
        split: str = "train",
        context_chars: int = CONTEXT_CHARS,
        reading_budget: int | None = None,
    ) -> None:
        super().__init__(difficulty, split)
        for name, value in (("context_chars", context_chars), ("reading_budget", reading_budget)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2 * MAX_LINE_CHARS):
                raise ConfigError(f"{name} must be an integer >= {2 * MAX_LINE_CHARS}, got {value!r}")
        self.context_chars = context_chars
        self.reading_budget = context_chars if reading_budget is None else reading_budget

    @property
    def window(self) -> int:
        """The most a node sees at once: one read, or the chunk shown to a child (``min(context_chars, reading_budget)``)."""
        return min(self.context_chars, self.reading_budget)

    @property
    def child_range_chars(self) -> int:
        """The longest range whose lines always fit a child's window (so they are shown in its first message)."""
        return self.window - MAX_LINE_CHARS

    # -- instances and documents ------------------------------------------------------------
    def generate(self, rng: np.random.Generator) -> TaskInstance:
        """A document of the difficulty's length (a multiple of ``context_chars``) and one root question."""
        lo, hi = RATIOS[self.difficulty]
        ratio = float(rng.uniform(lo, hi))
        spec = DocSpec(
            seed=int(rng.integers(2**31 - 1)),
            chars=max(int(ratio * self.context_chars), 2 * MAX_LINE_CHARS),
            label_set=LABEL_SETS[int(rng.integers(len(LABEL_SETS)))],
            split=self.split,
        )
        doc = build_document(spec)
        q = root_question(rng, doc)
        args = {"start": 0, "end": doc.length, "question": q.model_dump(mode="json")}
        data = {
            "doc": spec.as_dict(),
            "context_chars": self.context_chars,
            "ratio": round(doc.length / self.context_chars, 3),
            "answer": format_answer(q, gold(doc, q, 0, doc.n_lines)),
        }
        return TaskInstance(goal=render(q), args=args, data=data)

    def document(self, instance: TaskInstance) -> Document:
        """The instance's document (rebuilt from its spec; cached)."""
        return build_document(DocSpec(**instance.data["doc"]))

    def initial_state(self, instance: TaskInstance) -> dict[str, int]:
        """The root's view is the whole document; it has read nothing yet."""
        return {"lo": 0, "hi": self.document(instance).length, "read": 0}

    def child_state(self, instance: TaskInstance, args: dict[str, Any]) -> dict[str, int]:
        """A child's view: the lines that start in its range (shown at once, and so read, when they fit its budget)."""
        lo, hi = self.document(instance).view(args["start"], args["end"])
        return {"lo": lo, "hi": hi, "read": hi - lo if 0 < hi - lo <= self.window else 0}

    # -- prompts and delegation -------------------------------------------------------------
    def node_prompt(self, ctx: NodeContext) -> str:
        """The question, the labels, the node's range and budget, and its chunk when it was shown."""
        doc, state, args = self.document(ctx.instance), ctx.state, ctx.node.args
        q = Question(**args["question"])
        root = ctx.node.parent is None
        scope = "the document" if root else "your chunk"
        asked = render(q, scope)
        labelset = corpus()[doc.spec.label_set]
        i0, i1 = doc.lines_in(args["start"], args["end"])
        lo, hi, left = state["lo"], state["hi"], self.reading_budget - state["read"]
        text = f"# Task\n{ctx.node.goal}"
        if ctx.node.goal != asked:
            text += f"\n\n# Question you are scored on\n{asked}"
        text += f"\n\n# Labels\n{labelset.describe()}\n\n"
        if not root and 0 < hi - lo <= self.window:  # the chunk fits: show it (it uses the reading budget)
            return text + f"{CHUNK_HEADER}: characters {lo}-{hi}, {i1 - i0} lines\n{doc.text(lo, hi)}"
        if root:
            text += f"# The document\n{doc.length} characters, {doc.n_lines} lines (not shown).\n"
        else:
            text += f"# Your range\n{i1 - i0} lines that start in {args['start']}-{args['end']} (characters {lo}-{hi} of {doc.length}).\n"
        rules = self.how_to_split.format(budget=self.reading_budget, per_read=self.context_chars, child=self.child_range_chars)
        return f"{text}{rules} Budget left: {left}."

    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A child needs ``start`` and ``end`` (inside the parent's own range) and a ``question``."""
        labels = self.document(parent.instance).labels
        keys = {"start", "end", "question"}
        if set(args) != keys:
            missing, extra = sorted(keys - set(args)), sorted(set(map(str, args)) - keys)
            raise ToolError(
                "delegate takes start, end and question "
                f'(e.g. start=0, end=3800, question={{"kind": "count", "labels": ["{labels[0]}"]}})'
                + (f"; missing {missing}" if missing else "") + (f"; unknown {extra[:4]}" if extra else "")
            )
        start, end = args["start"], args["end"]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (start, end)):
            raise ToolError("start and end must be integer character offsets")
        lo, hi = parent.node.args["start"], parent.node.args["end"]
        if not lo <= start < end <= hi:
            raise ToolError(f"the range [{start}, {end}) must lie inside your own range [{lo}, {hi}), with start < end")
        try:
            q = check_question(args["question"], labels)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        return goal or render(q, "your chunk"), {"start": start, "end": end, "question": q.model_dump(mode="json")}

    # -- verifier ---------------------------------------------------------------------------
    def score(self, ctx: NodeContext) -> float:
        """Oolong's score of the node's answer against the exact answer on its own lines."""
        doc, args = self.document(ctx.instance), ctx.node.args
        q = Question(**args["question"])
        i0, i1 = doc.lines_in(args["start"], args["end"])
        return score_answer(q, gold(doc, q, i0, i1), ctx.node.result, doc.labels)

    # -- tools ------------------------------------------------------------------------------
    @tool
    def read(self, ctx: NodeContext, offset: int, length: int) -> str:
        """Characters [offset, offset + length) of your range; they use your reading budget."""
        state, cap = ctx.state, self.reading_budget
        lo, hi = state["lo"], state["hi"]
        if lo >= hi:
            raise ToolError("your range holds no lines: finish with the answer for an empty range")
        if not lo <= offset < hi:
            raise ToolError(f"offset {offset} is outside your range: read offsets {lo} to {hi - 1}")
        if length < 1:
            raise ToolError("length must be a positive number of characters")
        left = cap - state["read"]
        if left <= 0:
            raise ToolError(
                f"your reading budget is used up ({cap} characters read): delegate parts of your range "
                "to sub-agents, or finish with your best answer"
            )
        end = min(offset + length, hi, offset + left, offset + self.context_chars)
        state["read"] += end - offset
        text = self.document(ctx.instance).text(offset, end)
        return f"[characters {offset}-{end} of your range {lo}-{hi}; {left - (end - offset)} of {cap} characters left to read]\n{text}"

    @tool
    def doc_info(self, ctx: NodeContext) -> str:
        """Sizes of the document and of your range, and your reading budget left (shows no text)."""
        doc, state, args = self.document(ctx.instance), ctx.state, ctx.node.args
        i0, i1 = doc.lines_in(args["start"], args["end"])
        return json.dumps({
            "document_chars": doc.length,
            "document_lines": doc.n_lines,
            "range": [args["start"], args["end"]],
            "lines": [state["lo"], state["hi"]],
            "n_lines": i1 - i0,
            "label_set": doc.spec.label_set,
            "labels": list(doc.labels),
            "reading_budget": self.reading_budget,
            "reading_left": self.reading_budget - state["read"],
            "read_per_call": self.context_chars,
            "sub_agent_range": self.child_range_chars,
            "question_kinds": list(KINDS),
        })

    # -- oracles ----------------------------------------------------------------------------
    def oracle(self, delegate: bool = True, width: int | None = None) -> Any:
        """Scripted policy: delegating (default; chunks, delegates in parallel, combines) or flat (``delegate=False``).

        ``width`` is the most children it starts per turn (default: ``max_children_per_turn``
        of :attr:`default_limits`; it halves it when the engine refuses a wave).
        """
        from rao_envs.envs.oolong_synth.oracle import OolongOracle

        return OolongOracle(self, delegate=delegate, width=width)
