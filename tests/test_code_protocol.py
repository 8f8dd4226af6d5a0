"""The ``code`` protocol (issue 12): cells in sandboxed REPLs, host calls, suspension, views, conformance."""

from __future__ import annotations

import asyncio
import json
import os

import gymnasium as gym
import pytest

import rao_envs
from rao_envs import testing as conf
from rao_envs.policies.scripted import OraclePolicy, run_episode
from rao_envs.protocols import Call, CodeOracle, CodeProtocol, ParseError
from rao_envs.protocols.code import cell_for_calls, turn_text, unawaited_launches
from rao_envs.registration import make_engine
from rao_envs.rollout import rollout
from rao_envs.types import Action, NodeStatus

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FAST = {"backend": "local", "cell_timeout": 1.0}


@pytest.fixture(scope="module", autouse=True)
def _local_sandbox():
    from rao_envs.sandboxes import available_backends

    why = available_backends()["local"]
    if why is not None:
        if IN_CI:
            pytest.fail(f"the local sandbox is required in CI: {why}")
        pytest.skip(why)


def cell(code: str) -> str:
    return turn_text(code, "test")


def engine(env_id="Toy-v0", **kw):
    eng = make_engine(env_id, protocol="code", sandbox=kw.pop("sandbox", FAST), **kw)
    return eng


# ----------------------------------------------------------------------------- parsing (no sandbox)
def test_parse_reads_the_cell_tolerantly():
    p = CodeProtocol()
    assert p.parse("<thought>hi</thought>\n<python>\nx = 1\n</python> trailing") == [Call("python", {"code": "x = 1"})]
    assert p.parse("<python>print(2)")[0].args["code"] == "print(2)"  # unclosed final tag
    assert p.parse("Sure:\n```python\nprint(3)\n```")[0].args["code"] == "print(3)"
    for bad in ["", "no code here", "<python></python>", "<python>a</python><python>b</python>", None, 5]:
        with pytest.raises(ParseError):
            p.parse(bad)
    assert "finish(" in p.parse(Action.finish(7))[0].args["code"]


def test_cells_written_from_tool_calls_and_unawaited_check():
    import ast

    code = cell_for_calls([Call("delegate", {"expr": "(1 + 2)"}), Call("delegate", {"expr": "(3 * 4)"})])
    assert "asyncio.gather" in code and code.count("launch_subagent(") == 2
    ast.parse(code)  # valid Python (top-level await is allowed by the kernel)
    assert cell_for_calls([Call("calc", {"a": 1, "op": "+", "b": 2})]) == "print(calc(a=1, op='+', b=2))"
    assert unawaited_launches(ast.parse("launch_subagent('x')\nr = launch_subagent('y')")) == [1, 2]
    assert unawaited_launches(ast.parse("r = await launch_subagent('x')\nawait asyncio.gather(*[launch_subagent(g) for g in gs])")) == []


def test_system_prompt_lists_tools_as_python_functions():
    eng = make_engine("TextCraft-v0", protocol="code")
    prompt = eng.system_prompt
    assert "async def launch_subagent(goal: str = '', *, targets: dict[str, int]" in prompt
    assert "def craft(" in prompt and "def finish(result" in prompt and "asyncio.gather" in prompt
    assert "<python>" in prompt and "<thought>" in prompt
    assert "budget of 25 steps" in eng.reset(0).root.transcript[1]["content"]  # the paper variant states it once
    eng.close()
    guided = make_engine("TextCraft-v0", protocol="code", variant="guided")
    assert "steps left" in guided.reset(0).root.transcript[1]["content"]  # guided: the status line
    guided.close()


# ----------------------------------------------------------------------------- oracles, views, driver
@pytest.mark.parametrize("env_id,kw", [("Toy-v0", {"difficulty": "hard"}), ("TextCraft-v0", {"difficulty": "hard"}),
                                      ("TextCraft-v0", {"difficulty": "easy", "flat": True})])  # the paper world: flat fits easy
def test_oracle_at_max_reward_in_the_gym_view(env_id, kw):
    kw = dict(kw)
    flat = kw.pop("flat", False)
    env = gym.make(f"rao_envs/{env_id}", protocol="code", sandbox=FAST, **kw)
    try:
        for seed in range(2):
            oracle = env.unwrapped.task.oracle(**({"delegate": False} if flat else {}))
            tree, total, steps = run_episode(env, CodeOracle(oracle), seed=seed)
            conf.check_tree_invariants(tree)
            assert tree.root.status is NodeStatus.FINISHED and tree.root.score == 1.0
            assert all(n.status is NodeStatus.FINISHED for n in tree.nodes.values())
    finally:
        env.close()


def test_code_mode_scores_and_steps_match_tool_mode():
    """Same oracle, same seeds: the same tree shape, scores and per-node step counts in both protocols."""
    for seed in range(2):
        shapes = []
        for protocol in ("tool", "code"):
            env = gym.make("rao_envs/TextCraft-v0", difficulty="hard", protocol=protocol, sandbox=FAST) if protocol == "code" \
                else gym.make("rao_envs/TextCraft-v0", difficulty="hard")
            oracle = env.unwrapped.task.oracle()
            tree, _, _ = run_episode(env, CodeOracle(oracle) if protocol == "code" else oracle, seed=seed)
            shapes.append({i: (n.status.value, n.score, n.steps_used) for i, n in tree.nodes.items()})
            env.close()
        assert shapes[0] == shapes[1]


def test_rollout_driver_and_pettingzoo_view_in_code_mode():
    task = make_engine("TextCraft-v0").task
    trees = asyncio.run(rollout("TextCraft-v0", OraclePolicy(lambda: CodeOracle(task.oracle())), range(2),
                                env_kwargs={"protocol": "code", "sandbox": FAST, "difficulty": "hard"}))
    assert [t.root.score for t in trees] == [1.0, 1.0] and any(len(t.nodes) > 1 for t in trees)
    pz = rao_envs.parallel_env("Toy-v0", protocol="code", sandbox=FAST, difficulty="hard")
    obs, _ = pz.reset(seed=2)
    oracle = CodeOracle(pz.engine.task.oracle())
    while pz.agents:
        acts = {}
        for a in pz.agents:
            nid = pz._slot_to_node[a]
            if pz.engine.tree.nodes[nid].status is NodeStatus.RUNNING:
                acts[a] = oracle(obs[a], pz.engine.node_info(nid))
        obs, rew, term, trunc, infos = pz.step(acts)
    assert pz.engine.tree.root.score == 1.0 and len(pz.engine.tree.nodes) > 1
    pz.close()


# ----------------------------------------------------------------------------- semantics
def test_gather_suspends_once_and_results_land_in_variables():
    eng = engine(difficulty="easy")
    eng.reset(seed=0)
    out = eng.act(cell("rs = await asyncio.gather(launch_subagent(expr='(1 + 2)'), launch_subagent(expr='(3 * 4)'))\nprint('got', rs)"))
    root = eng.tree.root
    assert out.spawned == ["0.0", "0.1"] and root.status is NodeStatus.WAITING and root.steps_used == 1
    assert eng.observe("0.0").startswith("# Task")
    eng.act(cell("finish(expr)"))  # the child's task args are REPL variables: finish with the wrong type
    # the child's REPL is fresh: variables from the parent do not exist there
    assert eng.tree.nodes["0.0"].status is NodeStatus.FINISHED
    eng.step("0.1", cell("print(rs)"))
    assert "NameError" in eng.observe("0.1")
    out = eng.step("0.1", cell("finish(12)"))
    assert root.status is NodeStatus.RUNNING and root.steps_used == 1  # resumed without a policy call
    text = eng.observe("0")
    assert "[Cell 1 Output]" in text and "got ['(1 + 2)', 12]" in text and "suspended" in text and "resumed" in text
    eng.step("0", cell("print(rs[1] * 2)"))  # the REPL kept the variable across cells
    assert "24" in eng.observe("0")
    eng.step("0", cell("finish({'any': ['json', 1, None]})"))
    assert eng.done and root.result == {"any": ["json", 1, None]}
    assert all(n.delivered == 1 for n in eng.tree.nodes.values() if n.parent)
    eng.close()


def test_refusals_and_truncated_children_come_back_as_strings():
    eng = engine(max_depth=0)
    eng.reset(seed=0)
    eng.act(cell("r = await launch_subagent(expr='(1 + 2)')\nprint(r)"))
    assert eng.tree.root.status is NodeStatus.RUNNING and len(eng.tree.nodes) == 1
    assert "maximum depth" in eng.observe() and "yourself" in eng.observe() and eng.node_info()["refused"]
    eng.close()
    eng = engine(max_steps_per_node=2)
    eng.reset(seed=0)
    eng.act(cell("r = await launch_subagent(expr='(1 + 2)', context='a hint')\nprint(r)"))
    eng.step("0.0", cell("print(context)"))
    assert "a hint" in eng.observe("0.0")
    eng.step("0.0", cell("print('still working')"))  # the child's budget runs out
    assert eng.tree.nodes["0.0"].status is NodeStatus.TRUNCATED
    assert "did not finish before its step budget was exhausted" in eng.observe("0")
    eng.close()


def test_unawaited_launch_is_rejected_before_the_cell_runs():
    eng = engine()
    eng.reset(seed=0)
    eng.act(cell("x = 5\nlaunch_subagent(expr='(1 + 2)')"))
    assert "not awaited" in eng.observe() and len(eng.tree.nodes) == 1 and eng.tree.root.steps_used == 1
    eng.act(cell("print(x)"))
    assert "NameError" in eng.observe()  # the rejected cell did not run at all
    # an identifier Python folds to the same name (NFKC: fullwidth letters) is caught too
    eng.act(cell("y = 6\n\uff4caunch_subagent(expr='(1 + 2)')"))
    assert "not awaited" in eng.observe() and len(eng.tree.nodes) == 1
    eng.act(cell("print(y)"))
    assert "NameError" in eng.observe()
    eng.close()


def test_the_repl_keeps_one_event_loop_and_nothing_of_a_cell_runs_in_the_next():
    eng = engine(max_steps_per_node=20)
    eng.reset(seed=0)
    eng.act(cell("await asyncio.sleep(0)\nfirst = id(asyncio.get_running_loop())"))
    eng.act(cell("await asyncio.sleep(0)\nsame = id(asyncio.get_running_loop()) == first\nprint(same)"))
    assert "True" in eng.observe()  # kept: no new loop (epoll fd, self-pipe) per cell
    # a timer, a callback and a task left by one cell never run in a later one
    eng.act(cell(
        "hits = []\nawait asyncio.sleep(0)\nloop = asyncio.get_running_loop()\nloop.call_later(0.05, hits.append, 'timer')\n"
        "loop.call_soon(hits.append, 'soon')\nasync def later():\n    await asyncio.sleep(0.05)\n    hits.append('task')\n"
        "t = asyncio.ensure_future(later())"))
    eng.act(cell("await asyncio.sleep(0.2)\nprint(sorted(hits))"))
    assert "['soon']" in eng.observe()  # only the ready callback ran, in its own cell's last turn of the loop
    # a task that swallows its cancellation: the loop is dropped, the task never runs again
    eng.act(cell(
        "hits = []\nasync def stubborn():\n    while True:\n        try:\n            await asyncio.sleep(0.01)\n"
        "            hits.append(1)\n        except asyncio.CancelledError:\n            pass\n"
        "t = asyncio.ensure_future(stubborn())\nawait asyncio.sleep(0)\nkept = id(asyncio.get_running_loop())"))
    eng.act(cell("n = len(hits)\nawait asyncio.sleep(0.1)\nnew = id(asyncio.get_running_loop()) != kept\nprint(len(hits) == n, new)"))
    assert "True True" in eng.observe()
    # a cell that closes the loop: the next one gets a new loop
    eng.act(cell("await asyncio.sleep(0)\nl = asyncio.get_running_loop()"))
    eng.act(cell("l.close()"))
    eng.act(cell("await asyncio.sleep(0)\nother = asyncio.get_running_loop() is not l\nprint('ok', other)"))
    assert "ok True" in eng.observe()
    eng.act(cell("await asyncio.Future()"))
    assert "never complete" in eng.observe()  # the deadlock check still sees an idle loop
    eng.close()


def test_agent_crashes_restart_the_repl_and_cost_a_step():
    eng = engine(max_steps_per_node=10)
    eng.reset(seed=0)
    eng.act(cell("v = 41"))
    eng.act(cell("import os; os._exit(0)"))
    text = eng.observe()
    assert "restarted" in text and "variables" in text and eng.tree.root.status is NodeStatus.RUNNING
    eng.act(cell("print(v)"))
    assert "NameError" in eng.observe()
    eng.act(cell("print(calc(a=2, op='*', b=21))"))  # a fresh REPL with the tools
    assert "42" in eng.observe()
    eng.act(cell("while True:\n    pass"))
    assert "time limit" in eng.observe() and eng.tree.root.steps_used == 5
    eng.act(cell("await asyncio.Future()"))
    assert "never complete" in eng.observe()
    for text in (eng.tree.root.transcript[i]["content"] for i in range(2, len(eng.tree.root.transcript), 2)):
        assert "/tmp/" not in text and "sandbox" not in text.lower() and "site-packages" not in text
    eng.close()


def test_a_broken_sandbox_is_infra_error_of_that_node_only():
    from rao_envs.sandboxes import make_sandbox

    box = make_sandbox("local", timeout=5)
    eng = make_engine("Toy-v0", protocol="code", sandbox=box, difficulty="easy")
    try:
        eng.reset(seed=0)
        eng.act(cell("rs = await asyncio.gather(launch_subagent(expr='(1 + 2)'), launch_subagent(expr='(3 * 4)'))"))
        eng.step("0.0", cell("x = 1"))
        box.kill_worker()  # the host's sandbox service dies: not the agent's doing
        eng.step("0.0", cell("print(x)"))
        assert eng.tree.nodes["0.0"].status is NodeStatus.INFRA_ERROR
        assert eng.tree.root.status is NodeStatus.WAITING  # the episode goes on
        eng.step("0.1", cell("finish(12)"))  # a fresh box serves the next cell
        assert eng.tree.nodes["0.1"].status is NodeStatus.FINISHED
        assert "failed before finishing" in eng.observe("0") or eng.tree.root.status is NodeStatus.RUNNING
    finally:
        eng.close()
        box.stop()


def test_tool_values_are_plain_json_and_the_world_stays_on_the_host():
    eng = engine("TextCraft-v0", difficulty="easy")
    eng.reset(seed=0)
    eng.act(cell("inv = view_inventory()\nprint(type(inv).__name__)"))
    assert eng.observe().split("\n")[1] in ("str", "dict", "list")
    state = eng.context("0").state
    eng.act(cell("import gc\nprint(len([o for o in gc.get_objects() if type(o).__name__ == 'World']))"))
    assert eng.observe().split("\n")[1] == "0"  # no host object crossed into the REPL
    assert eng.context("0").state is state
    eng.close()


def test_process_backend_works_too():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make("rao_envs/Toy-v0", protocol="code", sandbox="process", difficulty="easy")
        tree, _, _ = run_episode(env, CodeOracle(env.unwrapped.task.oracle()), seed=1)
        env.close()
    assert tree.root.score == 1.0


def test_bad_sandbox_argument_is_a_config_error():
    with pytest.raises(rao_envs.errors.ConfigError, match="sandbox"):
        make_engine("Toy-v0", protocol="code", sandbox="nowhere")
    with pytest.raises(rao_envs.errors.ConfigError, match="sandbox"):
        make_engine("Toy-v0", protocol="code", sandbox=3.5)


# ----------------------------------------------------------------------------- conformance in code mode
@pytest.mark.parametrize("env_id", rao_envs.task_ids())
def test_conformance_suite_in_code_mode(env_id):
    report = conf.run_conformance(env_id, quick=True, protocol="code", sandbox=FAST)
    report.raise_on_failure()  # the failed checks, by name, in the error
    assert report.ok and report.results


def test_json_of_a_code_mode_tree_round_trips():
    env = gym.make("rao_envs/Toy-v0", protocol="code", sandbox=FAST, difficulty="medium")
    tree, _, _ = run_episode(env, CodeOracle(env.unwrapped.task.oracle()), seed=4)
    env.close()
    again = type(tree).from_json(tree.to_json())
    assert again == tree and json.loads(tree.to_json())["nodes"]["0"]["transcript"][2]["content"].startswith("<thought>")


# ----------------------------------------------------------------------------- rows, viewer, CLI
def test_rows_train_on_cells_only_and_the_viewer_shows_outputs(tmp_path):
    from rao_envs.viewer import render_html
    from tests.test_rows import ChatMLTokenizer

    env = gym.make("rao_envs/Toy-v0", protocol="code", sandbox=FAST, difficulty="hard")
    tree, _, _ = run_episode(env, CodeOracle(env.unwrapped.task.oracle()), seed=2)
    env.close()
    tok = ChatMLTokenizer()
    rows = tree.to_rows(tok)
    assert len(rows) == sum(1 for n in tree.nodes.values() if n.steps_used)
    for row in rows:
        node = tree.nodes[row["node_id"]]
        trained = tok.decode([t for t, m in zip(row["completion_ids"], row["loss_mask"]) if m])
        assert "<python>" in trained and "[Cell" not in trained  # own cells trained, outputs masked
        # a resumed cell's output is one user message, never an extra assistant turn
        roles = [m["role"] for m in node.transcript[1:]]
        assert all(a != b for a, b in zip(roles, roles[1:]))
    root_text = " ".join(m["content"] for m in tree.root.transcript)
    assert "[cell suspended: waiting for sub-agents" in root_text and "[cell resumed" in root_text
    html = render_html([tree])
    assert "[Cell 1 Output]" in html and "launch_subagent" in html


def test_cli_solve_and_rollout_take_protocol_code(tmp_path, capsys):
    from rao_envs.cli import main

    assert main(["solve", "Toy-v0", "--protocol", "code", "--kw", "difficulty=hard", "--seed", "1"]) == 0
    assert "root score 1.0" in capsys.readouterr().out
    out = tmp_path / "trees.jsonl"
    assert main(["rollout", "Toy-v0", "--protocol", "code", "--policy", "oracle", "-n", "2", "--group-size", "1",
                 "--out", str(out), "--no-progress"]) == 0
    assert "2 roots solved" in capsys.readouterr().out


@pytest.mark.slow
def test_code_protocol_benchmark_runs():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "code_protocol.py"), "--n", "20", "--trees", "1"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("(a) local sandbox, engine step, tool call", "(c) fresh node REPL", "code mode costs"):
        assert line in proc.stdout


def test_a_wide_fan_out_spreads_over_several_boxes():
    from rao_envs.code_runner import SESSIONS_PER_BOX

    eng = engine(difficulty="easy", max_nodes=64)
    eng.reset(seed=0)
    n = SESSIONS_PER_BOX + 4
    eng.act(cell(f"rs = await asyncio.gather(*[launch_subagent(expr='(1 + 2)') for _ in range({n})])\nprint(sum(rs))"))
    kids = eng.tree.root.children
    assert len(kids) == n
    for k in kids:
        eng.step(k, cell("print('hi')"))  # every child gets a live REPL
    assert len(eng._runner._boxes) == 2 and all(eng.tree.nodes[k].status is NodeStatus.RUNNING for k in kids)
    for k in kids:
        eng.step(k, cell("finish(3)"))
    assert f"{3 * n}" in eng.observe("0")
    eng.close()
    assert eng._runner._boxes == []


@pytest.mark.parametrize("env_id", rao_envs.task_ids())
def test_every_registered_task_oracle_reaches_max_score_in_code_mode(env_id):
    trees = conf.check_oracle(env_id, seeds=range(2), protocol="code", sandbox=FAST)
    assert all(t.root.score == 1.0 for t in trees)


def test_reset_does_no_sandbox_io_and_stderr_of_every_segment_is_shown():
    eng = engine(difficulty="easy")
    eng.reset(seed=0)
    eng.act(cell("import sys\nprint('warn-before', file=sys.stderr)\nr = await launch_subagent(expr='(1 + 2)')\nprint('after', r)"))
    eng.step("0.0", cell("finish(3)"))
    text = eng.observe("0")
    assert "warn-before" in text and "after 3" in text
    box = eng._runner.box
    epoch = box._epoch
    eng.reset(seed=1)  # the rollout driver calls this on its event loop: no sandbox call may happen here
    assert box._epoch == epoch and eng._runner.sessions == {}
    eng.act(cell("print(x)"))  # the first cell wipes the box: nothing of the last episode is left
    assert box._epoch != epoch and "NameError" in eng.observe()
    eng.close()


@pytest.mark.parametrize("per_box", [None, 1])
def test_a_cell_that_kills_every_process_of_its_box(per_box):
    sandbox = dict(FAST, **({} if per_box is None else {"repls_per_box": per_box}))
    eng = engine(difficulty="easy", sandbox=sandbox)
    eng.reset(seed=0)
    eng.act(cell("rs = await asyncio.gather(launch_subagent(expr='(1 + 2)'), launch_subagent(expr='(3 * 4)'))"))
    eng.step("0.0", cell("v = 5"))
    eng.step("0.1", cell("import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('alive')"))
    eng.step("0.0", cell("print(v)"))
    text = eng.observe("0.0")
    assert eng.tree.nodes["0.0"].status is NodeStatus.RUNNING  # never infra_error: a cell's doing
    assert "_rao_repl" not in text and "<sandbox>" not in text
    if per_box == 1:
        assert "\n5\n" in text  # a box of its own: untouched
    else:
        assert "REPL was lost" in text and "NameError" in text
    eng.step("0.0", cell("finish(3)"))
    eng.step("0.1", cell("finish(12)"))
    assert "[3, 12]" in eng.observe("0") or eng.tree.root.status is NodeStatus.RUNNING
    eng.close()
