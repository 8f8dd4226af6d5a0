"""OolongSynth-v0: corpus and label oracle, documents, exact answers and scorer, tools, delegation, oracles, tree size."""

from __future__ import annotations

import asyncio
import collections
import json
import re

import gymnasium
import numpy as np
import pytest

import rao_envs
from rao_envs import Action, ConfigError, NodeStatus
from rao_envs.envs.oolong_synth import (
    LABEL_SETS,
    LINE_RE,
    MAX_LINE_CHARS,
    RATIOS,
    DocSpec,
    Question,
    build_document,
    corpus,
    gold,
    label_of,
    score_answer,
)
from rao_envs.envs.oolong_synth.oracle import finalize, partial, rows_of
from rao_envs.envs.oolong_synth.questions import KINDS, check_question, parse_month
from rao_envs.policies import OraclePolicy, run_episode
from rao_envs.rollout import rollout

ENV = "rao_envs/OolongSynth-v0"


def make(**kwargs):
    """The unwrapped Gymnasium env."""
    return gymnasium.make(ENV, **kwargs).unwrapped


def run(env, policy, seed):
    """One episode; the finished tree."""
    tree, _total, _steps = run_episode(env, policy, seed=seed)
    assert tree.done
    return tree


def act(env, action):
    """Step one action; return (observation text, info)."""
    obs, _r, _term, _trunc, info = env.step(action.to_text())
    return obs["text"], info


# ------------------------------------------------------------------------------ corpus
def test_label_sets_and_the_label_oracle():
    sets = corpus()
    assert len(sets) >= 3 and set(sets) == set(LABEL_SETS)
    seen = set()
    for s in sets.values():
        assert 3 <= len(s.labels) <= 8
        texts = s.texts.tolist()
        assert len(set(texts)) == len(texts)
        for split in ("train", "val"):
            assert len(s.pools[split]) == len(s.labels) and all(len(p) > 0 for p in s.pools[split])
        for k in range(len(s.labels)):
            assert not set(s.pools["train"][k].tolist()) & set(s.pools["val"][k].tolist())
        for text, k in zip(texts, s.label.tolist()):
            assert text.isascii() and text.endswith("\n") and "||" not in text
            assert label_of(text[:-1]) == s.labels[k]
            seen.add(text)
    assert len(seen) == sum(len(s.texts) for s in sets.values())  # no text in two sets
    with pytest.raises(KeyError):
        label_of("not an instance of the corpus")


def test_no_single_keyword_gives_a_label():
    """For every label, the best rule "word w occurs => label" has F1 below 0.75 over the pool."""
    for s in corpus().values():
        words = [set(re.findall(r"[a-z0-9']+", t.lower())) for t in s.texts.tolist()]
        labels = s.label.tolist()
        for k, name in enumerate(s.labels):
            positives = labels.count(k)
            with_word, with_word_and_label = collections.Counter(), collections.Counter()
            for ws, lab in zip(words, labels):
                with_word.update(ws)
                if lab == k:
                    with_word_and_label.update(ws)
            best = max(2 * with_word_and_label[w] / (with_word[w] + positives) for w in with_word_and_label)
            assert best < 0.75, (s.name, name, best)


# ------------------------------------------------------------------------------ documents
def test_documents_are_seeded_streamed_and_parse_back():
    spec = DocSpec(seed=7, chars=60_000, label_set="topic")
    doc = build_document(spec)
    text = doc.text()
    assert spec.chars - MAX_LINE_CHARS < doc.length == len(text) <= spec.chars
    build_document.cache_clear()
    again = build_document(spec)
    assert again is not doc and again.text() == text
    assert build_document(DocSpec(seed=8, chars=60_000, label_set="topic")).text() != text
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = sorted(int(x) for x in rng.integers(0, doc.length + 1, 2))
        assert doc.text(a, b) == text[a:b]
    pieces = list(doc.stream(7_000))
    assert "".join(pieces) == text and max(map(len, pieces)) == 7_000
    lines = LINE_RE.findall(text)
    assert len(lines) == doc.n_lines == text.count("\n")
    assert [label_of(inst) for _d, _u, inst in lines] == [doc.labels[k] for k in doc.label.tolist()]
    assert [int(u) for _d, u, _i in lines] == doc.users[doc.user].tolist()
    assert max(len(line) + 1 for line in text.split("\n")) <= MAX_LINE_CHARS


def test_documents_have_the_oolong_statistics():
    doc = build_document(DocSpec(seed=3, chars=400_000, label_set="question_type"))
    per_user = np.sort(np.bincount(doc.user))[::-1]
    heavy = max(1, round(len(per_user) * 0.2))
    assert 0.75 < per_user[:heavy].sum() / doc.n_lines < 0.85  # 80% of lines from 20% of users
    years = {int(date.split(", ")[1]) for date, _u, _i in LINE_RE.findall(doc.text(0, 100_000))}
    assert max(years) - min(years) >= 2  # dates over several years
    shares = [np.bincount(build_document(DocSpec(s, 50_000, "sentiment")).label, minlength=3) for s in range(6)]
    tops = {int(np.argmax(x)) for x in shares}
    assert len(tops) >= 2  # label distributions differ per document: priors do not help


def test_view_ranges_tile_the_document():
    """Adjacent ranges own every line exactly once (a line belongs to the range where it starts)."""
    doc = build_document(DocSpec(seed=1, chars=30_000, label_set="sentiment"))
    cuts = [0, 1, 999, 4000, 4001, 17_777, doc.length]
    views = [doc.view(a, b) for a, b in zip(cuts, cuts[1:])]
    assert views[0][0] == 0 and views[-1][1] == doc.length
    assert all(v[1] == w[0] for v, w in zip(views, views[1:]))
    assert sum(doc.lines_in(a, b)[1] - doc.lines_in(a, b)[0] for a, b in zip(cuts, cuts[1:])) == doc.n_lines


# ------------------------------------------------------------------------------ questions and scoring
def _all_questions(labels):
    a, b = labels[0], labels[1]
    return [Question(kind=k, labels=ls) for k, ls in [
        ("count", (a,)), ("compare", (a, b)), ("compare", (b, a)), ("top_label", ()), ("top_user", (a,)),
        ("top_month", (b,)), ("pairs", (a, b)), ("counts", ()), ("counts", (b,)), ("user_counts", (a,)),
        ("month_counts", (a,)), ("users_with", (a, b)),
    ]]


def test_exact_answers_match_a_reading_of_the_text():
    """gold() (numpy over the line index) agrees with labelling the rendered text line by line."""
    rng = np.random.default_rng(1)
    for name in LABEL_SETS:
        doc = build_document(DocSpec(seed=11, chars=40_000, label_set=name))
        for _ in range(6):
            a, b = sorted(int(x) for x in rng.integers(0, doc.length, 2))
            i0, i1 = doc.lines_in(a, b)
            lo, hi = doc.view(a, b)
            rows = rows_of(doc.text(lo, hi))
            assert len(rows) == i1 - i0
            for q in _all_questions(doc.labels):
                truth = gold(doc, q, i0, i1)
                answer = finalize(q, partial(q, rows))
                assert score_answer(q, truth, answer, doc.labels) == 1.0, (q, truth, answer)
                assert score_answer(q, truth, json.loads(json.dumps(answer)), doc.labels) == 1.0


@pytest.mark.parametrize(
    ("q", "truth", "answer", "want"),
    [
        (Question(kind="count", labels=("x",)), 10, 10, 1.0),
        (Question(kind="count", labels=("x",)), 10, "Answer: 12", 0.75**2),
        (Question(kind="count", labels=("x",)), 10, "the answer is \\boxed{7}", 0.75**3),
        (Question(kind="count", labels=("x",)), 10, 10.0, 1.0),
        (Question(kind="count", labels=("x",)), 10, True, 0.0),
        (Question(kind="count", labels=("x",)), 10, "many", 0.0),
        (Question(kind="compare", labels=("x", "y")), "more common", "x is MORE common than y", 1.0),
        (Question(kind="compare", labels=("x", "y")), "less common", "Answer: fewer", 1.0),
        (Question(kind="compare", labels=("x", "y")), "same frequency", "equal", 1.0),
        (Question(kind="compare", labels=("x", "y")), "more common", "more or less", 0.0),
        (Question(kind="top_label", labels=()), {"x"}, "Label: X.", 1.0),
        (Question(kind="top_label", labels=()), {"x"}, "y", 0.0),
        (Question(kind="top_user", labels=("x",)), {12345}, "User 12345", 1.0),
        (Question(kind="top_user", labels=("x",)), {12345}, 12345, 1.0),
        (Question(kind="top_user", labels=("x",)), {12345, 23456}, 23456, 1.0),  # a tie on a chunk: either
        (Question(kind="top_user", labels=("x",)), set(), "none", 1.0),
        (Question(kind="top_month", labels=("x",)), {"Mar 2021"}, "March 2021", 1.0),
        (Question(kind="top_month", labels=("x",)), {"Mar 2021"}, "2021-03", 1.0),
        (Question(kind="top_month", labels=("x",)), {"Mar 2021"}, "Answer: 3/2021", 1.0),
        (Question(kind="top_month", labels=("x",)), {"Mar 2021"}, "Apr 2021", 0.0),
        (Question(kind="pairs", labels=("x", "y")), {10001, 10002}, [10001, 10002], 1.0),
        (Question(kind="pairs", labels=("x", "y")), {10001, 10002}, "10001, 10002", 1.0),
        (Question(kind="pairs", labels=("x", "y")), {10001, 10002}, [10001], 0.5),
        (Question(kind="pairs", labels=("x", "y")), {10001, 10002}, [10001, 10002, 10003, 10004], 0.5),  # padding costs
        (Question(kind="counts", labels=("x", "y")), {"x": 3, "y": 1}, {"x": 3, "y": 1}, 1.0),
        (Question(kind="counts", labels=("x", "y")), {"x": 3, "y": 1}, '{"X": 3, "y": 2}', (1 + 0.75) / 2),
        (Question(kind="user_counts", labels=("x",)), {10001: 2}, {"10001": 2, "10002": 0}, 1.0),
        (Question(kind="month_counts", labels=("x",)), {"Mar 2021": 2}, {"March 2021": 2}, 1.0),
        (Question(kind="users_with", labels=("x", "y")), {"x": {10001}, "y": set()}, {"x": [10001], "y": []}, 1.0),
        (Question(kind="users_with", labels=("x", "y")), {"x": {10001}, "y": set()}, "not json", 0.0),
    ],
)
def test_oolong_scorer(q, truth, answer, want):
    assert score_answer(q, truth, answer, ("x", "y", "z")) == pytest.approx(want)


TRUTHS = {
    "count": 3, "compare": "more common", "top_label": {"x"}, "top_user": {10001}, "top_month": {"Mar 2021"},
    "pairs": {10001}, "counts": {"x": 1}, "user_counts": {10001: 1}, "month_counts": {"Mar 2021": 1},
}


def test_scorer_never_raises_on_junk():
    junk = [None, [], {}, [[[]]], {"a": {"b": 1}}, "\ud800", 1e309, -1, "{", "[1,", {"x": "y"}, {"x": [None]}, 10**40, "NaN"]
    for q in _all_questions(("x", "y", "z")):
        truth = TRUTHS.get(q.kind) or {n: {10001} for n in q.labels}
        for value in junk:
            assert 0.0 <= score_answer(q, truth, value, ("x", "y", "z")) <= 1.0


def test_question_validation_and_months():
    labels = ("positive", "negative", "neutral")
    assert check_question({"kind": "count", "labels": "Positive"}, labels) == Question(kind="count", labels=("positive",))
    for bad, msg in [
        ("count", "must be an object"), ({"kind": "sum"}, "not one of"), ({"kind": "count", "labels": []}, "exactly 1"),
        ({"kind": "compare", "labels": ["positive", "positive"]}, "distinct"), ({"kind": "count", "labels": ["happy"]}, "unknown label"),
        ({"kind": "count", "labels": ["positive"], "x": 1}, "only kind and labels"), ({"kind": "count", "labels": [3]}, "list of label names"),
    ]:
        with pytest.raises(ValueError, match=msg):
            check_question(bad, labels)
    assert set(KINDS) == {"count", "compare", "top_label", "top_user", "top_month", "pairs", "counts", "user_counts", "month_counts", "users_with"}
    assert parse_month("Dec 12, 2022") == "Dec 2022" and parse_month("1999-01") is None and parse_month("2021-13") is None


# ------------------------------------------------------------------------------ the task
def test_instances_store_specs_not_text():
    for difficulty, (lo, hi) in RATIOS.items():
        env = make(difficulty=difficulty)
        obs, info = env.reset(seed=5)
        inst = env.tree.instance
        assert len(json.dumps(inst)) < 2000
        doc = env.task.document(env.engine.instance)
        assert lo * 0.95 <= doc.length / env.task.context_chars <= hi
        assert inst["args"] == {"start": 0, "end": doc.length, "question": inst["args"]["question"]}
        assert "Instance:" not in obs["text"]  # the root sees the question and the size, not the text
        assert f"{doc.length} characters" in obs["text"]


def test_read_is_capped_confined_and_budgeted():
    env = make(difficulty="hard")
    env.reset(seed=2)
    budget = env.task.context_chars
    text, _ = act(env, Action.tool("read", offset=0, length=10**9))
    head, body = text.split("\n", 1)
    assert head.startswith(f"[characters 0-{budget} of your range") and f"0 of {budget} characters left" in head
    assert body.startswith("Date: ")
    text, _ = act(env, Action.tool("read", offset=budget, length=10))
    assert "reading budget is used up" in text
    env.reset(seed=2)
    for offset, length, msg in [(-1, 5, "outside your range"), (10**9, 5, "outside your range"), (0, 0, "positive number")]:
        text, _ = act(env, Action.tool("read", offset=offset, length=length))
        assert msg in text
    text, _ = act(env, Action.tool("read", offset=100, length=50))
    assert "50 characters" not in text and f"{budget - 50} of {budget} characters left" in text
    info = json.loads(act(env, Action.tool("doc_info"))[0].rsplit("\n\n", 1)[0])
    assert info["reading_left"] == budget - 50 and info["range"] == [0, info["document_chars"]]


def test_children_get_their_lines_and_nothing_else():
    env = make(difficulty="medium")
    env.reset(seed=4)
    doc = env.task.document(env.engine.instance)
    q = {"kind": "count", "labels": [doc.labels[0]]}
    text, info = act(env, Action.delegate("", start=0, end=doc.length + 1, question=q))
    assert text.startswith("Refused") and "inside your own range" in text
    text, info = act(env, Action.delegate("", start=1000, end=2500, question=q))
    assert info["node"] == "0.0"
    lo, hi = doc.view(1000, 2500)
    assert f"# Your chunk: characters {lo}-{hi}" in text and text.split("lines\n", 1)[1].startswith(doc.text(lo, hi))
    assert doc.text(lo - 5, lo) not in text.split("# Your chunk", 1)[1]  # nothing before its first line
    text, info = act(env, Action.tool("read", offset=lo, length=10))
    budget = env.task.context_chars
    assert f"{budget - (hi - lo) - 10} of {budget} characters left" in text  # the shown chunk used its share of the budget
    text, info = act(env, Action.delegate("", start=0, end=500, question=q))
    assert "inside your own range [1000, 2500)" in text  # a child delegates only inside its own range
    text, info = act(env, Action.finish(int(np.count_nonzero(doc.label[slice(*doc.lines_in(1000, 2500))] == 0))))
    assert env.tree.nodes["0.0"].score == 1.0 and info["node"] == "0"


def test_a_child_whose_lines_do_not_fit_reads_only_its_range():
    env = make(difficulty="hard")
    env.reset(seed=1)
    doc = env.task.document(env.engine.instance)
    text, info = act(env, Action.delegate("", start=0, end=9000, question={"kind": "counts", "labels": []}))
    lo, hi = doc.view(0, 9000)
    assert "# Your chunk" not in text and "Instance:" not in text and info["node"] == "0.0"
    text, _ = act(env, Action.tool("read", offset=hi, length=10))
    assert f"read offsets {lo} to {hi - 1}" in text
    text, _ = act(env, Action.tool("read", offset=hi - 20, length=100))
    assert text.split("\n", 1)[1].startswith(doc.text(hi - 20, hi)) and doc.text(hi, hi + 5) not in text.split("\n", 1)[1][:25]


def test_delegate_argument_errors_are_refusals():
    env = make()
    env.reset(seed=0)
    for args, msg in [
        ({"start": 0, "end": 10}, "missing ['question']"),
        ({"start": 0, "end": 10, "question": {"kind": "count", "labels": ["x"]}, "extra": 1}, "unknown ['extra']"),
        ({"start": "0", "end": 10, "question": {"kind": "top_label"}}, "integer character offsets"),
        ({"start": True, "end": 10, "question": {"kind": "top_label"}}, "integer character offsets"),
        ({"start": 10, "end": 10, "question": {"kind": "top_label"}}, "start < end"),
        ({"start": 0, "end": 10, "question": {"kind": "top_label", "labels": ["zzz"]}}, "unknown label"),
    ]:
        text, info = act(env, Action.delegate("x", **args))
        assert text.startswith("Refused") and msg in text, (args, text)
        assert info["refused"] and info["node"] == "0"


def test_context_chars_sizes_documents_and_budgets():
    env = make(difficulty="medium", context_chars=2000, max_obs_chars=3024)
    env.reset(seed=0)
    doc = env.task.document(env.engine.instance)
    assert 2 * 2000 * 0.95 <= doc.length <= 4 * 2000 and env.tree.task_kwargs == {"difficulty": "medium", "context_chars": 2000}
    assert run(env, env.task.oracle(), seed=1).root.score == 1.0
    for bad in (100, True, 2.5):
        with pytest.raises(ConfigError, match="context_chars"):
            make(context_chars=bad)


def test_val_documents_use_held_out_instances():
    train_texts = {t for s in corpus().values() for k in range(len(s.labels)) for t in s.texts[s.pools["train"][k]].tolist()}
    env = make(difficulty="medium", split="val")
    env.reset(seed=3)
    doc = env.task.document(env.engine.instance)
    assert doc.spec.split == "val"
    assert not {inst + "\n" for _d, _u, inst in LINE_RE.findall(doc.text())} & train_texts


# ------------------------------------------------------------------------------ oracles
@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard", "extreme"])
def test_delegating_oracle_is_exact_at_every_node(difficulty):
    env = make(difficulty=difficulty)
    for seed in range(2 if difficulty == "extreme" else 6):
        tree = run(env, env.task.oracle(), seed)
        assert tree.root.status is NodeStatus.FINISHED and tree.root.score == 1.0
        assert all(n.status is NodeStatus.FINISHED and n.score == 1.0 for n in tree.nodes.values())
        assert max(n.depth for n in tree.nodes.values()) <= tree.limits.max_depth
        if difficulty in ("hard", "extreme"):
            assert any(len(n.children) == tree.limits.max_children_per_turn for n in tree.nodes.values())


def test_flat_oracle_is_exact_alone_only_when_the_document_fits():
    means = {}
    for difficulty in ("easy", "medium", "hard"):
        env = make(difficulty=difficulty)
        trees = [run(env, env.task.oracle(delegate=False), seed) for seed in range(24)]
        assert all(len(t.nodes) == 1 for t in trees)
        means[difficulty] = sum(t.root.score for t in trees) / len(trees)
    assert means["easy"] == 1.0
    assert means["medium"] < 0.75 and means["hard"] < 0.5, means


@pytest.mark.parametrize("difficulty", ["medium", "hard"])
def test_both_oracles_are_exact_alone_with_enough_reading_budget(difficulty):
    """A reading budget that covers the document (16 windows, read one window per call) makes reading alone exact."""
    env = make(difficulty=difficulty, reading_budget=16 * 4096)
    for delegate in (False, True):
        for seed in range(4):
            tree = run(env, env.task.oracle(delegate=delegate), seed)
            assert tree.root.score == 1.0 and len(tree.nodes) == 1
            reads = [m for m in tree.root.transcript if m["role"] == "assistant" and '"read"' in m["content"]]
            assert len(reads) == -(-env.task.document(env.engine.instance).length // 4096)
    with pytest.raises(ConfigError, match="reading_budget"):
        make(reading_budget=10)


@pytest.mark.parametrize(("limits", "min_score", "depth"), [
    ({"max_children_per_turn": 3}, 1.0, 2),  # the oracle's waves of 8 are refused: it halves them
    ({"max_depth": 1}, 1.0, 1),  # one level: more waves at the root
    ({"max_depth": 4, "max_children_per_turn": 2}, 1.0, 4),  # deep binary splitting
    ({"max_depth": 0}, 0.0, 0),  # cannot delegate: reads what it can alone
])
def test_delegating_oracle_under_other_limits(limits, min_score, depth):
    env = make(difficulty="hard", **limits)
    for seed in range(3):
        tree = run(env, env.task.oracle(), seed)
        assert tree.root.status is NodeStatus.FINISHED and tree.root.score >= min_score
        assert max(n.depth for n in tree.nodes.values()) == depth
        width = tree.limits.max_children_per_turn
        assert all(len(n.children) <= (width or 8) * n.steps_used for n in tree.nodes.values())


def test_rollout_driver_with_random_latency_gives_exact_trees():
    import random

    rng = random.Random(3)
    eng = rao_envs.make_engine("OolongSynth-v0", difficulty="hard")
    oracle = OraclePolicy(lambda: eng.task.oracle())

    async def policy(messages, info):
        await asyncio.sleep(rng.random() * 0.001)
        return await oracle(messages, info)

    trees = asyncio.run(rollout("OolongSynth-v0", policy, range(2), concurrency=16, env_kwargs={"difficulty": "hard"}))
    assert all(t.root.score == 1.0 and len(t.nodes) > 8 for t in trees)


# ------------------------------------------------------------------------------ trees stay small
def test_a_multi_megabyte_document_never_enters_a_tree_in_full():
    """At a 32k-character budget an extreme document is megabytes long; no message, arg or instance field holds more than a chunk."""
    env = make(difficulty="extreme", context_chars=32_768, max_obs_chars=33_792)
    tree = run(env, env.task.oracle(), seed=0)
    doc = env.task.document(env.engine.instance)
    assert doc.length > 1_000_000 and tree.root.score == 1.0
    longest = max(len(m["content"]) for n in tree.nodes.values() for m in n.transcript)
    assert longest <= 33_792
    assert len(json.dumps(tree.instance)) < 2000
    assert all(len(json.dumps(n.args)) < 200 for n in tree.nodes.values())
    read = sum(len(LINE_RE.findall(m["content"])) for n in tree.nodes.values() for m in n.transcript if m["role"] == "user")
    assert read == doc.n_lines  # every line was seen exactly once, by one leaf
    assert len(tree.to_json()) < 1.25 * doc.length  # the text read, plus small per-node overhead
