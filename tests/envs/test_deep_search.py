"""DeepSearchSynth-v0: world and pages, questions, scoring, tools, delegation, oracles, recall contract."""

from __future__ import annotations

import json
import re
from collections import Counter

import gymnasium
import numpy as np
import pytest

from rao_envs import Action, ConfigError, NodeStatus, make_engine
from rao_envs import testing as conf
from rao_envs.envs.deep_search import LEVELS, OPEN_CHARS, DeepSearchSynth, get_index, get_world, hop_query, make_question
from rao_envs.envs.deep_search.questions import answers_match, combine, follow, parse_date, parse_number
from rao_envs.envs.deep_search.world import ATTRIBUTES, RELATIONS, build_world, format_value, load_world, save_world
from rao_envs.tools.search import available_backends

ENV = "rao_envs/DeepSearchSynth-v0"
SIZE = 1000  # small corpora keep these tests fast; the default sizes are exercised by the benchmarks


def make(**kwargs):
    """The unwrapped Gymnasium env on a small corpus."""
    kwargs.setdefault("corpus_size", SIZE)
    return gymnasium.make(ENV, **kwargs).unwrapped


def run(env, policy, seed):
    """One episode of the Gymnasium view; the finished tree."""
    obs, info = env.reset(seed=seed)
    for _ in range(100_000):
        obs, _r, term, trunc, info = env.step(policy(obs, info))
        if term or trunc:
            return env.tree
    raise AssertionError("episode did not end")


def act(env, action):
    """Step and return (observation text, info); the episode must still be running."""
    obs, _r, term, trunc, info = env.step(action)
    assert not (term or trunc)
    return obs["text"], info


def call(name, **args):
    return Action.tool(name, **args).to_text()


# ---------------------------------------------------------------------------------- world
def test_world_is_deterministic_and_round_trips(tmp_path):
    a, b = build_world(5, 600), build_world(5, 600)
    assert a.names == b.names and all((a.rel[k] == b.rel[k]).all() and (a.moved[k] == b.moved[k]).all() for k in a.rel)
    assert [d.text for d in a.documents()] == [d.text for d in b.documents()]
    assert build_world(6, 600).names != a.names
    save_world(a, tmp_path / "w.npz")
    c = load_world(5, 600, tmp_path / "w.npz")
    assert c.names == a.names and c.by_name == a.by_name and all((c.attr[k] == a.attr[k]).all() for k in a.attr)
    assert get_world(5, 600) is get_world(5, 600)
    with pytest.raises(ValueError, match="at least"):
        build_world(0, 10)


def test_world_shape_names_and_near_namesakes():
    w = build_world(0, 2000)
    assert len(set(w.names)) == w.size and sorted(w.doc_id(e) for e in range(w.size)) == [f"d{i:06d}" for i in range(w.size)]
    counts = Counter(w.type_of(e) for e in range(w.size))
    assert counts["person"] == 800 and counts["organisation"] == 240 and counts["place"] == 160
    for r in RELATIONS.values():  # functional and typed: every subject has exactly one object of the right type
        subs = np.flatnonzero(w.rel[r.name] >= 0)
        assert set(subs.tolist()) == set(w.of_type(r.subject).tolist())
        assert {w.type_of(int(o)) for o in w.rel[r.name][subs]} == {r.object}
        assert (w.rel[r.name][subs] != subs).all()
    near = 0
    for name in w.names[:400]:
        for other in w.names:
            if other != name and len(other) == len(name) and sum(x != y for x, y in zip(name, other)) == 1:
                near += 1
                break
    assert near >= 40  # deliberate one-letter near-namesakes (about a fifth)


def test_pages_state_each_fact_once_on_the_right_page():
    w = build_world(1, 800)
    docs = {d.id: d for d in w.documents()}
    moved = 0
    for e in range(w.size):
        page = docs[w.doc_id(e)]
        assert page.title == w.names[e] and page.text.startswith(f"{w.names[e]} is a")
        for name in [*RELATIONS, *ATTRIBUTES]:
            if name in RELATIONS and w.rel[name][e] < 0 or name in ATTRIBUTES and w.attr[name][e] < 0:
                continue
            holder = docs[w.fact_doc(e, name)]
            answer = w.answer_text(e, name)
            keyword = (RELATIONS.get(name) or ATTRIBUTES[name]).keyword
            sentences = [s for s in re.split(r"(?<=\.) ", holder.text)
                         if answer in s and keyword in s.lower() and (w.names[e] in s or w.short_name(e) in s)]
            assert sentences, (w.names[e], name, holder.text)
            moved += holder.id != page.id
    assert moved > 100  # some facts are stated only on the other entity's page


# ---------------------------------------------------------------------------------- questions
@pytest.mark.parametrize("difficulty", list(LEVELS))
def test_questions_have_exact_subquestions(difficulty):
    level, w = LEVELS[difficulty], get_world(0, 2000)
    rng = np.random.default_rng(0)
    ops = set()
    for _ in range(25):
        hops, branches = int(rng.integers(level.hops[0], level.hops[1] + 1)), int(rng.integers(level.branches[0], level.branches[1] + 1))
        qs = make_question(w, rng, hops, branches)
        json.dumps(qs)
        root = qs["q"]
        assert root["hops"] == hops and 2 <= hops <= 6 and root["text"].endswith(("?", "Answer with the number.", "Answer with the date."))
        for qid, q in qs.items():
            plan = q["plan"]
            assert plan["id"] == qid and "answer" not in json.dumps(plan)
            if "op" not in plan:  # a chain: its answer is the walk's end, its part is its prefix
                start = w.by_name[plan["start"]]
                steps = plan["steps"]
                end = follow(w, start, steps[:-1])
                assert q["answer"] == w.answer_text(end, steps[-1]) and q["hops"] == len(steps)
                assert q["answer"] != plan["start"]
                assert (f"{qid}.1" in qs) == (len(steps) > 1)
        if branches == 1:
            assert "op" not in root["plan"]
        else:
            ops.add(root["plan"]["op"])
            parts = root["plan"]["parts"]
            assert len(parts) == branches and len({p["start"] for p in parts}) == branches
            assert all(len(p["steps"]) == hops for p in parts)
            values = [qs[p["id"]]["answer"] for p in parts]
            assert combine(root["plan"]["op"], values, root["plan"].get("target")) == root["answer"]
            assert answers_match(root["answer"], root["answer"], root["kind"])
            if root["plan"]["op"] == "count":
                assert 1 <= parse_number(root["answer"]) < branches
    if LEVELS[difficulty].branches[1] > 1:
        assert len(ops) >= 3


def test_answers_match_normalises_case_articles_numbers_and_dates():
    assert answers_match("  the VELMORA   guild. ", "Velmora Guild", "entity")
    assert answers_match('"Lumeo"', "Lumeo", "entity") and not answers_match("Lumea", "Lumeo", "entity")
    assert not answers_match("", "Lumeo", "entity") and not answers_match(None, "Lumeo", "entity")
    for text in ("12,345", "12345", "12 345", "12345.0", 12345, 12345.0, "+12345", "12\u202f345"):
        assert answers_match(text, "12,345", "number"), text
    for text in ("12,34", "12.345", "about 12345", "1.2e4", True, "twelve", "12346"):
        assert not answers_match(text, "12,345", "number"), text
    for text in ("3 May 1723", "May 3, 1723", "3rd of May 1723", "1723-05-03", "03 may 1723", "3 MAY 1723.", "May 3 1723", "3 Mar 1723"[:0] or "3 May, 1723"):
        assert answers_match(text, "3 May 1723", "date"), text
    for text in ("4 May 1723", "1723", "May 1723", "1723-13-03", "3/5/1723 or so", "31 February 1723"):
        assert not answers_match(text, "3 May 1723", "date"), text
    assert parse_date("3 Mar 1723").month == 3 and parse_number("-0") == 0


# ---------------------------------------------------------------------------------- task
def test_instances_deterministic_split_by_world_and_kwargs_checked():
    train, val = DeepSearchSynth("hard", corpus_size=SIZE), DeepSearchSynth("hard", split="val", corpus_size=SIZE)
    a = train.generate(np.random.default_rng(3))
    assert a == train.generate(np.random.default_rng(3)) and a != train.generate(np.random.default_rng(4))
    assert a.data["world"] == {"seed": 0, "size": SIZE} and val.generate(np.random.default_rng(3)).data["world"]["seed"] == 1
    assert a.goal == a.data["questions"]["q"]["text"] and a.args["question"] == "q"
    assert DeepSearchSynth.instance_model.model_validate(a.args)
    many = DeepSearchSynth("easy", corpus_size=SIZE, worlds=3)
    seeds = {many.generate(np.random.default_rng(s)).data["world"]["seed"] for s in range(20)}
    assert seeds == {0, 2, 4}
    for bad in ({"corpus_size": 5}, {"corpus_size": True}, {"backend": "lucene"}, {"worlds": 0}, {"difficulty": "insane"}):
        with pytest.raises(ConfigError):
            gymnasium.make(ENV, **{"corpus_size": SIZE, **bad})


def test_prompt_lists_parts_and_answer_format():
    env = make(difficulty="hard")
    obs, info = env.reset(seed=0)
    text = obs["text"]
    assert "# Question (q)" in text and "# Parts you may delegate" in text
    assert all(f"- q.{i}: " in text for i in range(1, 6)) and "Answer with" in text
    assert info["node_args"]["question"] == "q" and "answer" not in json.dumps(info["node_args"])
    assert 'delegate(question="q.1")' in env.engine.system_prompt and "question: str" in env.engine.system_prompt


def test_search_tool_output_and_feedback():
    env = make(difficulty="easy")
    env.reset(seed=1)
    w = get_world(0, SIZE)
    name = w.names[7]
    text, _ = act(env, call("search", query=f"{name} {'born' if w.type_of(7) == 'person' else ''}", k=3))
    lines = text.splitlines()
    assert lines[0].startswith("Top 3 pages for: ") and f"1. {w.doc_id(7)} | {name} | {name} is a" in lines[1]
    assert all(re.match(r"\d\. d\d{6} \| .+ \| .+ is an? \w+\.$", ln) for ln in lines[1:4])
    for query in ("", '"(*:', "\x00\x00", "the of", "x" * 30_000):
        text, _ = act(env, call("search", query=query))
        assert text.startswith(("Error: your query has no words", "No page matches", "Top ")), text[:80]
    text, _ = act(env, call("search", query="zzzqqq"))
    assert text.startswith("No page matches the words: zzzqqq")
    for k in (0, 11, -1):
        text, _ = act(env, call("search", query=name, k=k))
        assert text.startswith("Error: k must be from 1 to 10")
    text, _ = act(env, '<tool>{"name": "search", "args": {"query": 5}}</tool>')
    assert text.startswith("Error: bad arguments for search")


def test_search_tool_fuzz_every_query_is_an_observation():
    env = make(difficulty="hard", max_steps_per_node=1000)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    pieces = ['"', "(", ")", "*", ":", "NEAR", "AND", "OR", "NOT", "\x00", "title:", "^", "~", "-", "é", "\ud800", "Lumeo", "born"]
    for i in range(300):
        query = "".join(str(x) for x in rng.choice(pieces, size=int(rng.integers(0, 20))))
        if i % 50 == 0:
            query = (query * 5000)[:4_000]  # a long query (JSON escapes may make it 6x longer; a turn is capped at 32k)
        text, info = act(env, call("search", query=query, k=int(rng.integers(1, 11))))
        assert text.startswith(("Top ", "No page matches", "Error: your query has no words")), (query[:80], text[:200])
        assert info["node"] == "0"


def test_open_reads_long_pages_in_parts():
    env = make(difficulty="easy")
    env.reset(seed=1)
    index, w = get_index(0, SIZE, env.task.backend), get_world(0, SIZE)
    longest = max((index.get(w.doc_id(e)) for e in range(w.size)), key=lambda d: len(d.text))
    assert len(longest.text) > OPEN_CHARS
    offset, parts = 0, []
    while True:
        text, _ = act(env, call("open", doc_id=longest.id.upper() + " ", offset=offset))
        head, *body, tail = text.rsplit("\n\n[node", 1)[0].splitlines()
        assert head.startswith(f"[{longest.id}] {longest.title} (characters {offset}-")
        parts.append("\n".join(body))
        if tail == "[end of page]":
            break
        offset = int(re.search(r"offset=(\d+)\) for the next part", tail).group(1))
        assert len(body[0]) <= OPEN_CHARS
    assert " ".join(parts) == longest.text
    for args, message in (({"doc_id": "d999999"}, "no page with id"), ({"doc_id": "x'; DROP"}, "no page with id"),
                          ({"doc_id": longest.id, "offset": 10**9}, "offset must be from 0"),
                          ({"doc_id": longest.id, "offset": -1}, "offset must be from 0")):
        text, _ = act(env, call("open", **args))
        assert text.startswith("Error: ") and message in text


def test_delegation_takes_part_ids_and_scores_children_exactly():
    env = make(difficulty="hard")
    obs, info = env.reset(seed=2)
    qs = env.engine.instance.data["questions"]
    for args, message in (({}, "give the sub-agent the id"), ({"question": "q"}, "is not a part"),
                          ({"question": "q.9"}, "is not a part"), ({"question": "q.1", "hint": 1}, "unknown delegate argument"),
                          ({"question": 3}, "give the sub-agent the id")):
        text, info = act(env, Action.delegate("x", **args).to_text())
        assert text.startswith("Refused") and message in text, text
    text, info = act(env, Action.delegate(qs["q.2"]["text"].upper()).to_text())  # a part named by its text
    assert info["node"] == "0.0" and info["node_args"]["question"] == "q.2" and info["goal"] == qs["q.2"]["text"]
    assert "# Question (q.2)" in text and "- q.2.1: " in text
    text, info = act(env, Action.delegate("", question="q.2.1").to_text())  # a deeper part
    assert info["node"] == "0.0.0" and info["node_args"]["question"] == "q.2.1"
    text, info = act(env, Action.finish(qs["q.2.1"]["answer"].lower()).to_text())
    assert env.tree.nodes["0.0.0"].score == 1.0 and info["node"] == "0.0"
    env.step(Action.finish("wrong").to_text())
    assert env.tree.nodes["0.0"].score == 0.0


@pytest.mark.parametrize("difficulty", list(LEVELS))
def test_delegating_oracle_solves_every_node_at_default_limits(difficulty):
    env = make(difficulty=difficulty)
    for seed in range(4):
        oracle = env.task.oracle()
        tree = run(env, oracle, seed)
        bad = {n.id: (n.status.value, n.score) for n in tree.nodes.values() if n.score != 1.0}
        assert tree.root.status is NodeStatus.FINISHED and not bad, bad
        assert max(n.depth for n in tree.nodes.values()) <= 4
        assert oracle.stats["not_listed"] == oracle.stats["not_read"] == 0
        conf.check_tree_invariants(tree)
        if difficulty in ("hard", "extreme"):
            assert len(tree.root.children) == len(env.engine.instance.args["plan"]["parts"])


@pytest.mark.parametrize("difficulty", list(LEVELS))
def test_flat_oracle_fails_hard_and_succeeds_with_enough_steps(difficulty):
    env, roomy = make(difficulty=difficulty), make(difficulty=difficulty, max_steps_per_node=200)
    scores, roomy_scores = [], []
    for seed in range(4):
        tree = run(env, env.task.oracle(delegate=False), seed)
        assert len(tree.nodes) == 1
        scores.append(tree.root.score)
        roomy_scores.append(run(roomy, roomy.task.oracle(delegate=False), seed).root.score)
    assert roomy_scores == [1.0] * 4
    if difficulty in ("hard", "extreme"):
        assert scores == [0.0] * 4  # more hops than 25 steps allow
    else:
        assert scores == [1.0] * 4


def test_oracle_through_the_engine_in_any_order():
    engine = make_engine("DeepSearchSynth-v0", difficulty="hard", corpus_size=SIZE)
    oracle = engine.task.oracle()
    rng = np.random.default_rng(0)
    engine.reset(5)
    while not engine.done:
        runnable = engine.runnable()
        nid = runnable[int(rng.integers(len(runnable)))]
        engine.commit(nid)
        engine.step(nid, oracle({"text": engine.observe(nid)}, engine.node_info(nid)))
    assert engine.tree.root.score == 1.0


# ---------------------------------------------------------------------------------- recall and backends
def test_recall_contract_every_hop_in_every_backends_top5():
    """For a fixed corpus, the page stating each hop's fact is in the top 5 of its hop query, on every backend."""
    w = get_world(0, 2000)
    rng = np.random.default_rng(7)
    hops = set()
    for _ in range(150):
        qs = make_question(w, rng, int(rng.integers(2, 7)), int(rng.integers(1, 4)))
        for q in qs.values():
            if "op" in q["plan"]:
                continue
            e = w.by_name[q["plan"]["start"]]
            for step in q["plan"]["steps"]:
                hops.add((w.names[e], step, w.fact_doc(e, step)))
                e = w.lookup(e, step) if step in RELATIONS else e
    assert len(hops) > 500
    for backend in available_backends():
        index = get_index(0, 2000, backend)
        missed = [(name, step) for name, step, doc in sorted(hops) if doc not in [h.id for h in index.search(hop_query(name, step), 5)]]
        assert not missed, (backend, missed[:5])


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "tantivy"])
def test_other_backends_pass_conformance(backend):
    report = conf.run_conformance("DeepSearchSynth-v0", quick=True, corpus_size=SIZE, backend=backend)
    report.raise_on_failure()  # the failed checks, by name, in the error
    assert report.ok and report.results


def test_index_is_cached_on_disk_and_shared(tmp_path, monkeypatch):
    from rao_envs.envs.deep_search.task import clear_caches
    from rao_envs.envs.deep_search.world import GENERATOR_VERSION

    monkeypatch.setenv("RAO_ENVS_CACHE", str(tmp_path))
    clear_caches()
    try:
        DeepSearchSynth("easy", corpus_size=600, backend="fts5").generate(np.random.default_rng(0))
        names = sorted(p.name for p in (tmp_path / "search").iterdir())
        assert names == [f"deep_search-w0-n600-g{GENERATOR_VERSION}.fts5.v1"]  # fts5: no library version in the name
        assert (tmp_path / "deep_search" / "worlds" / f"deep_search-w0-n600-g{GENERATOR_VERSION}" / "world.npz").is_file()
        clear_caches()
        stamp = (tmp_path / "search" / names[0] / "index.sqlite3").stat().st_mtime_ns
        DeepSearchSynth("easy", corpus_size=600, backend="fts5").generate(np.random.default_rng(1))
        assert (tmp_path / "search" / names[0] / "index.sqlite3").stat().st_mtime_ns == stamp  # opened, not rebuilt
    finally:
        clear_caches()


def test_values_render_as_pages_write_them():
    import datetime as dt

    assert format_value(ATTRIBUTES["born"], dt.date(1725, 11, 15).toordinal()) == "15 November 1725"
    assert format_value(ATTRIBUTES["population"], 1234567) == "1,234,567"
