"""CodeSynth-v0: generator checks, tools, shared module, exact scoring in the sandbox, hostile code, oracles."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import gymnasium
import pytest

from rao_envs import Action, ConfigError, NodeStatus
from rao_envs.envs.code_synth import LEVELS, CodeSynth, build_program, check_source, compare, dependency_order, spec_text
from rao_envs.envs.code_synth.program import call_text, split_of_shape
from rao_envs.errors import ToolError

ENV = "rao_envs/CodeSynth-v0"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FAST = 0.2  # call_timeout for tests that run hanging code


@pytest.fixture(autouse=True)
def _needs_bwrap():
    if shutil.which("bwrap") is None:
        if IN_CI:
            pytest.fail("bubblewrap is required in CI for CodeSynth-v0")
        pytest.skip("CodeSynth-v0 runs model code in the local sandbox: install bubblewrap (`make setup` as root)")


def make(**kwargs):
    """The unwrapped Gymnasium env."""
    return gymnasium.make(ENV, **kwargs).unwrapped


def run(env, policy, seed):
    """One episode of the Gymnasium view; the finished tree."""
    obs, info = env.reset(seed=seed)
    for _ in range(10_000):
        obs, _r, term, trunc, info = env.step(policy(obs, info))
        if term or trunc:
            return env.tree
    raise AssertionError("episode did not end")


def act(env, action):
    """Step and return (observation text, info); the episode must still be running."""
    obs, _r, term, trunc, info = env.step(action)
    assert not (term or trunc)
    return obs["text"], info


def call(tool_name, /, **args):
    return Action.tool(tool_name, **args).to_text()


def program_of(env):
    return env.engine.context("0").instance.data["program"]


# ---------------------------------------------------------------------------------- generator
@pytest.mark.parametrize("difficulty", list(LEVELS))
def test_programs_follow_the_difficulty_and_are_checked(difficulty):
    level = LEVELS[difficulty]
    for seed in range(6):
        p = build_program(seed, difficulty, "train")
        fns = p["functions"]
        assert level.functions[0] <= len(fns) <= level.functions[1]
        assert p["depth"] <= level.depth[1] and p["depth"] == max(f["level"] for f in fns) + 1
        names = [f["name"] for f in fns]
        assert len(set(names)) == len(names) and all(re.fullmatch(r"f_[a-z0-9]{2}", n) for n in names)
        assert dependency_order(p, list(reversed(names))) == names  # generated in topological order
        ns: dict = {}
        for f in fns:
            assert all(names.index(d) < names.index(f["name"]) for d in f["deps"])
            if f["level"] > 0:
                assert any(fns[names.index(d)]["level"] == f["level"] - 1 for d in f["deps"])
            assert len(f["tests"]) == 10 and len(f["examples"]) == 2
            spec = spec_text(f)
            assert spec.startswith(f"{f['name']}(") and spec.count(f"{f['name']}(") >= 3  # signature + 2 examples
            exec(f["source"], ns)  # noqa: S102 - our own reference code
        for f in fns:  # the reference passes its own tests (host-side, the source the oracle writes)
            for args, out in f["tests"] + f["examples"]:
                got = ns[f["name"]](*json.loads(json.dumps(args)))
                assert got == out and type(got) is type(out)
            outs = [json.dumps(o) for _, o in f["tests"]]
            assert len(set(outs)) >= 3
        for i, a in enumerate(fns):  # no two functions identical on the tests
            for b in fns[i + 1:]:
                if [t for _, t in a["params"]] == [t for _, t in b["params"]]:
                    assert [ns[b["name"]](*x) for x, _ in a["tests"]] != [o for _, o in a["tests"]]
        kinds = {json.dumps(args) for f in fns for args, _ in f["tests"]}
        assert any("[]" in k or '""' in k or "0" in k for k in kinds)  # edge cases are among the tests
        assert json.loads(json.dumps(p)) == p  # JSON-able


def test_the_generators_fast_paths_draw_and_compute_what_the_plain_code_does():
    import copy
    import itertools
    import random

    from rao_envs.envs.code_synth.library import OPS
    from rao_envs.envs.code_synth.program import _ALPHABET, EDGE, random_value

    def plain(rng, t):  # random_value written with the public API
        if t == "int":
            return rng.randint(-50, 50)
        if t == "str":
            return "".join(rng.choices(_ALPHABET, k=rng.randint(0, 10)))
        return [rng.randint(-9, 20) for _ in range(rng.randint(0, 8))]

    fast, slow = random.Random(7), random.Random(7)
    for i in range(3000):  # random_value skips randint's and choices' overhead: the same draws
        t = ("int", "str", "list[int]")[i % 3]
        assert random_value(fast, t) == plain(slow, t)
    assert fast.random() == slow.random()
    rng = random.Random(1)
    for op in OPS:  # Op.bound (the generator's) = the rendered source; no op changes its inputs (nothing is copied)
        const = op.const(rng) if op.const else None
        for j in range(6):
            ins = [EDGE[t][(j + 2 * p) % 6] for p, t in enumerate(op.inputs)]
            before = copy.deepcopy(ins)
            fill = {"a": "a", "b": "b"}
            if isinstance(const, tuple):
                fill["k0"], fill["k1"] = repr(const[0]), repr(const[1])
            elif const is not None:
                fill["k"] = const if isinstance(const, int) else repr(const)  # as program._render writes it
            scope = {"itertools": itertools, **dict(zip("ab", copy.deepcopy(ins)))}
            want = eval(op.py.format(**fill), scope)  # noqa: S307 - our own templates
            assert op.bound(const)(*ins) == want and ins == before, op.name


def test_programs_are_deterministic_and_split_by_shape():
    assert build_program(3, "hard", "train") == build_program(3, "hard", "train")
    assert build_program(3, "hard", "train") != build_program(4, "hard", "train")
    train = {build_program(s, "medium", "train")["shape"] for s in range(30)}
    val = {build_program(s, "medium", "val")["shape"] for s in range(30)}
    assert not train & val
    assert all(split_of_shape(int(k, 16)) == "train" for k in train)
    assert all(split_of_shape(int(k, 16)) == "val" for k in val)


def test_bad_settings_are_typed_errors():
    with pytest.raises(ConfigError, match="difficulty"):
        CodeSynth(difficulty="impossible")
    with pytest.raises(ConfigError, match="sandbox"):
        CodeSynth(sandbox="vm")
    with pytest.raises(ConfigError, match="call_timeout"):
        CodeSynth(call_timeout=0)
    with pytest.raises(ConfigError, match="fork_ahead"):
        CodeSynth(fork_ahead="yes")


def test_check_source_accepts_one_def_and_explains_every_mistake():
    fn = {"name": "f_ab", "params": [["xs", "list[int]"], ["n", "int"]], "returns": "int"}
    check_source(fn, "import math\ndef f_ab(xs, n):\n    return n\n")
    check_source(fn, "def f_ab(xs: list[int], n: int) -> int:\n    def h(): return 1\n    return h()\n")
    for bad, why in [
        ("def f_ab(xs, n)\n    return 1", "syntax error"),
        ("def f_ab(xs):\n    return 1", "wrong signature"),
        ("def f_ab(xs, m):\n    return 1", "wrong signature"),
        ("def f_ab(*a):\n    return 1", "wrong signature"),
        ("def f_zz(xs, n):\n    return 1", "exactly one function"),
        ("x = 1\ndef f_ab(xs, n):\n    return 1", "exactly one function"),
        ("def f_ab(xs, n):\n    return 1\ndef g(): pass", "exactly one function"),
        ("print(1)", "exactly one function"),
        ("\x00", "could not parse|syntax error"),
        ("(" * 5000, "parse|syntax"),
        ("x" * 9000, "at most"),
    ]:
        with pytest.raises(ToolError, match=why):
            check_source(fn, bad)


# ---------------------------------------------------------------------------------- tools
def test_tools_give_feedback_and_the_module_is_the_world():
    env = make(difficulty="medium")
    text, info = env.reset(seed=0)[0]["text"], None
    p = program_of(env)
    f0 = p["functions"][0]
    assert all(f["name"] in text for f in p["functions"])
    text, _ = act(env, call("view_spec", names=[f0["name"]]))
    assert spec_text(f0) in text
    text, _ = act(env, call("view_spec", names=["f_zz"]))
    assert "no function 'f_zz'" in text
    text, _ = act(env, call("run_tests", name=f0["name"]))
    assert "not written yet" in text
    text, _ = act(env, call("write_function", name=f0["name"], source="def oops(:"))
    assert "syntax error" in text and env.engine.context("0").state["module"] == {}
    params = ", ".join(pn for pn, _ in f0["params"])
    wrong = f"def {f0['name']}({params}):\n    return 12345\n"
    text, _ = act(env, call("write_function", name=f0["name"], source=wrong))
    assert text.startswith(f"Wrote {f0['name']}")
    text, _ = act(env, call("run_tests", name=f0["name"]))
    assert "0/2 examples passed. First failing:" in text and "returned 12345" in text
    assert not any(call_text(f0["name"], a) in text for a, _ in f0["tests"])  # hidden tests are never shown
    text, _ = act(env, call("write_function", name=f0["name"], source=f0["source"]))
    assert text.startswith(f"Replaced {f0['name']}")
    text, _ = act(env, call("run_tests", name=f0["name"]))
    assert text == f"{f0['name']}: 2/2 examples passed." or text.startswith(f"{f0['name']}: 2/2 examples passed.\n")
    text, _ = act(env, call("view_module"))
    assert f"1 of {len(p['functions'])} functions written" in text and f0["source"].strip() in text
    f1 = next(f for f in p["functions"] if f["deps"])
    text, _ = act(env, call("write_function", name=f1["name"], source=f1["source"]))
    missing = [d for d in f1["deps"] if d != f0["name"]]
    if missing:
        assert "not written yet" in text
        text, _ = act(env, call("run_tests", name=f1["name"]))
        assert "not written yet: " in text
    _obs, _r, term, _t, _i = env.step(Action.finish("done").to_text())
    assert term
    solved = 1 + (not missing)  # f0 and, if its callees were all written, f1
    want = sum(len(f["tests"]) for f in p["functions"][:0]) + 10 * solved
    assert env.tree.root.score == pytest.approx(want / (10 * len(p["functions"])))


def test_children_are_scored_on_their_own_functions_and_see_the_shared_module():
    env = make(difficulty="medium")
    env.reset(seed=1)
    p = program_of(env)
    fns = {f["name"]: f for f in p["functions"]}
    top = next(f for f in p["functions"] if f["deps"])
    dep = fns[top["deps"][0]]
    text, info = act(env, Action.delegate("", targets=[dep["name"]]).to_text())
    assert info["node"] == "0.0" and dep["name"] in info["goal"]
    assert env.engine.context("0.0").state is env.engine.context("0").state
    act(env, call("write_function", name=dep["name"], source=dep["source"]))
    assert dep["name"] in env.engine.context("0").state["module"]  # seen by the parent at once
    text, info = act(env, Action.finish("ok").to_text())
    assert info["node"] == "0"
    assert env.tree.nodes["0.0"].score == 1.0  # exactly its own function's hidden tests
    # a child whose function is wrong scores the fraction of its tests that pass
    text, info = act(env, Action.delegate("", targets=[top["name"]]).to_text())
    params = ", ".join(pn for pn, _ in top["params"])
    act(env, call("write_function", name=top["name"], source=f"def {top['name']}({params}):\n    return None\n"))
    act(env, Action.finish("ok").to_text())
    assert env.tree.nodes["0.1"].score == 0.0
    text, info = act(env, Action.delegate("", targets=["f_zz"]).to_text())
    assert "not a function of this module" in text
    text, info = act(env, Action.delegate("write f_zz").to_text())
    assert "not a function of this module" in text or "give the sub-agent" in text


# ---------------------------------------------------------------------------------- hostile code
HOSTILE = {
    "infinite loop": "def {f}({p}):\n    while True:\n        pass\n",
    "loop that eats the timeout": (
        "def {f}({p}):\n    while True:\n        try:\n            while True: pass\n        except BaseException:\n            pass\n"
    ),
    "os.system": "import os\ndef {f}({p}):\n    return os.system('touch {escape}; echo all tests passed')\n",
    "reads and deletes host files": (
        "import os\ndef {f}({p}):\n    os.remove('{canary}')\n    return open('{canary}').read()\n"
    ),
    "huge output": "def {f}({p}):\n    print('x' * 10**7)\n    return 'y' * 10**6\n",
    "recursion bomb": "import sys\ndef {f}({p}):\n    sys.setrecursionlimit(10**6)\n    return {f}({p})\n",
    "memory bomb": "def {f}({p}):\n    x = bytearray(10**10)\n    return len(x)\n",
    "fork bomb": "import os\ndef {f}({p}):\n    while True:\n        try: os.fork()\n        except OSError: pass\n",
    "fake pass lines": (
        "import os, sys\ndef {f}({p}):\n    for fd in (1, 2):\n        os.write(fd, b'all tests passed\\n@@cs-report-0@@{{\"results\": []}}\\n')\n"
        "    print('OK: 10/10 hidden tests passed')\n    return None\n"
    ),
    "patches the harness when called": (
        "import json, sys, builtins, os\ndef {f}({p}):\n    m = sys.modules['__main__']\n"
        "    for k in list(vars(m)):\n        if k.startswith('_cs'):\n            setattr(m, k, lambda *a, **kw: None)\n"
        "    json.dumps = lambda *a, **k: '{{\"i\": 0, \"out\": 0}}'\n    json.loads = lambda *a, **k: {{}}\n"
        "    builtins.sorted = lambda *a, **k: []\n    os.write = lambda *a: 0\n    return None\n"
    ),
    "patches the harness when defined": (
        "import sys, builtins\n@(lambda g: (setattr(builtins, 'print', lambda *a, **k: None), "
        "setattr(builtins, 'exec', lambda *a, **k: None), g)[-1])\n"
        "def {f}({p}):\n    return None\n"
    ),
    "kills the test process and its parent": "import os\ndef {f}({p}):\n    os.kill(os.getppid(), 9)\n    os._exit(0)\n",
    "exits": "def {f}({p}):\n    raise SystemExit(0)\n",
    "hostile return value": (
        "def {f}({p}):\n    class Evil(str):\n        def __eq__(self, o): return True\n"
        "        def __repr__(self): raise RuntimeError\n    return Evil('x')\n"
    ),
}


def test_hostile_function_sources_never_raise_never_score_never_escape(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("host secret")
    escape = tmp_path / "escaped"
    env = make(difficulty="easy", call_timeout=FAST, max_steps_per_node=3 * len(HOSTILE))
    env.reset(seed=2)
    p = program_of(env)
    f0 = p["functions"][0]
    params = ", ".join(pn for pn, _ in f0["params"])
    task, runner = env.task, env.task.runner()
    for kind, template in HOSTILE.items():
        source = template.format(f=f0["name"], p=params, canary=canary, escape=escape)
        text, info = act(env, call("write_function", name=f0["name"], source=source))
        assert text.startswith(("Wrote", "Replaced")), (kind, text)
        text, info = act(env, call("run_tests", name=f0["name"]))
        assert text.startswith(f"{f0['name']}: 0/2 examples passed. First failing:"), (kind, text)
        assert env.tree.root.status is NodeStatus.RUNNING, kind
        tests = f0["tests"][:4]  # hanging sources cost call_timeout per test
        results = runner.run([(f0["name"], source)], [(f0["name"], a) for a, _ in tests])
        assert not any(compare(r, o) for r, (_, o) in zip(results, tests)), (kind, results)
        # the next scoring starts clean: the reference passes every hidden test after any of these
        results = runner.run([(f0["name"], f0["source"])], [(f0["name"], a) for a, _ in f0["tests"]])
        assert all(compare(r, o) for r, (_, o) in zip(results, f0["tests"])), (kind, results)
    assert canary.read_text() == "host secret" and not escape.exists()
    assert task.score(env.engine.context("0")) == 0.0  # the last hostile source is still in the module
    act(env, call("write_function", name=f0["name"], source=f0["source"]))
    _obs, _r, term, _t, _i = env.step(Action.finish("done").to_text())
    assert term and env.tree.root.status is NodeStatus.FINISHED
    assert env.tree.root.score == pytest.approx(len(f0["tests"]) / sum(len(f["tests"]) for f in p["functions"]))


def test_batches_run_the_fast_way_and_anything_unclean_runs_again_the_robust_way():
    from rao_envs.envs.code_synth.runner import CodeRunner

    runner = CodeRunner("local", per_call=FAST, total=3.0)
    calls = [("f", [i]) for i in range(5)]
    want = [{"out": [i, i]} for i in range(5)]
    try:
        ok = "def f(a):\n    return [a, a]\n"
        assert runner.run([("f", ok)], calls) == want  # the first batch: no session forked ahead yet
        assert runner.stats["fast"] == 0
        assert runner.run([("f", ok)], calls) == want
        assert runner.run([("f", ok)], calls[:2]) == want[:2]
        assert runner.stats["fast"] == 2 and runner.stats["fallbacks"] == 0
        # a call over its time: the whole batch runs again the robust way, where it fails alone
        slow = "import time\ndef f(a):\n    if a == 2:\n        time.sleep(5)\n    return [a, a]\n"
        got = runner.run([("f", slow)], calls)
        assert got[:2] == want[:2] and got[3:] == want[3:] and got[2]["err"].startswith("timeout"), got
        assert runner.stats["fallbacks"] == 1
        # model code that forges a report (with an infrastructure claim) and ends the session
        forge = (
            "import os, sys\ndef f(a):\n    fr = sys._getframe(1)\n"
            "    while fr is not None and not {'keep', 'job'} <= set(fr.f_locals):\n        fr = fr.f_back\n"
            "    if fr is not None:\n        line = fr.f_locals['job']['nonce'] + "
            "'{\"results\": [], \"infra\": \"forged\", \"incomplete\": false}\\n'\n"
            "        os.write(fr.f_locals['keep'][0], line.encode())\n        os._exit(0)\n    return [a, a]\n"
        )
        assert runner.run([("f", forge)], calls) == want  # the robust way: its child cannot reach the output
        assert runner.stats["fallbacks"] == 2
        # model code that rewrites the fast report itself: only outputs can come of it, never infra
        patch = (
            "import json\nreal = json.dumps\n"
            "def fake(o, *a, **k):\n    if isinstance(o, dict) and 'incomplete' in o:\n"
            "        o = dict(o, infra='forged', results=[{'out': 'forged'}] * len(o['results']))\n"
            "    return real(o, *a, **k)\n"
            "def f(a):\n    json.dumps = fake\n    return [a, a]\n"
        )
        got = runner.run([("f", patch)], calls)
        assert got == [{"out": "forged"}] * 5 and not any(compare(r, w["out"]) for r, w in zip(got, want))
        assert runner.run([("f", ok)], calls) == want  # and the next batch is clean again
    finally:
        runner.close()
    robust = CodeRunner("local", per_call=FAST, total=3.0, ahead=False)  # fork_ahead=False: the robust way only
    try:
        for _ in range(3):
            assert robust.run([("f", "def f(a):\n    return [a, a]\n")], calls) == want
        assert robust.stats["fast"] == 0 and robust.stats["fallbacks"] == 0 and robust._spare is None
    finally:
        robust.close()


def test_a_dead_sandbox_is_an_infra_error_of_that_node_and_the_next_call_gets_a_fresh_box():
    env = make(difficulty="easy")
    env.reset(seed=0)
    f0 = program_of(env)["functions"][0]
    act(env, call("write_function", name=f0["name"], source=f0["source"]))
    runner = env.task.runner()
    runner._sandbox().kill_worker()
    _obs, _r, term, trunc, _info = env.step(call("run_tests", name=f0["name"]))
    assert env.tree.root.status is NodeStatus.INFRA_ERROR and (term or trunc)
    assert "sandbox" in (env.tree.root.error or "")
    tree = run(env, env.task.oracle(), seed=0)
    assert tree.root.score == 1.0


# ---------------------------------------------------------------------------------- oracles
def test_delegating_oracle_solves_hard_with_one_child_per_function_in_dependency_waves():
    env = make(difficulty="hard")
    for seed in range(2):
        policy = env.task.oracle()
        tree = run(env, policy, seed)
        p = program_of(env)
        assert tree.root.score == 1.0 and all(n.score == 1.0 for n in tree.nodes.values())
        kids = [n for n in tree.nodes.values() if n.depth == 1]
        assert sorted(k.args["targets"][0] for k in kids) == sorted(f["name"] for f in p["functions"])
        assert tree.root.steps_used <= p["depth"] + 1  # one delegate turn per DAG level, then finish


def test_flat_oracle_solves_small_modules_and_runs_out_of_steps_on_hard_and_extreme():
    env = make(difficulty="medium")
    tree = run(env, env.task.oracle(delegate=False), 0)
    assert tree.root.score == 1.0 and len(tree.nodes) == 1
    for difficulty in ("hard", "extreme"):  # 3 steps per function: 9 or more do not fit in 25
        env = make(difficulty=difficulty)
        tree = run(env, env.task.oracle(delegate=False), 0)
        assert tree.root.status is NodeStatus.TRUNCATED and len(tree.nodes) == 1, difficulty


def test_delegating_oracle_falls_back_to_writing_itself_at_max_depth_zero():
    env = make(difficulty="medium", max_depth=0)
    tree = run(env, env.task.oracle(), 0)
    assert tree.root.score == 1.0 and len(tree.nodes) == 1
