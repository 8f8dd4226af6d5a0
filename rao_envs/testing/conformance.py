"""Conformance checks for any registered task (DESIGN: tree invariants, views, oracle, fuzz)."""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rao_envs.credit import local_reward
from rao_envs.errors import RaoEnvsError
from rao_envs.registration import task_spec
from rao_envs.tree import DEFER_NOTE
from rao_envs.types import Action, EpisodeTree, NodeStatus, StateScope

# PettingZoo warns about these for any env with text spaces or many possible agents.
_EXPECTED_PZ_WARNINGS = (
    "Observation is not NumPy array",
    "Observation is not a NumPy array",
    "probably should be gymnasium.spaces.box or gymnasium.spaces.discrete",
    "No agents present but not all possible_agents are terminated or truncated",
    "Agent was given",
)


class ConformanceError(AssertionError):
    """A task or view broke the rao_envs contract; the message says which rule and where."""


def _fail(msg: str) -> None:
    raise ConformanceError(msg)


def _env(env_id: str, **kwargs: Any):
    import gymnasium

    return gymnasium.make(f"rao_envs/{task_spec(env_id).id}", **kwargs).unwrapped


def _oracle(env, **kwargs: Any):
    try:
        return _code_form(env, env.unwrapped.task.oracle(**kwargs))
    except NotImplementedError:
        return None


def _code_form(env, policy):
    """``policy`` as is, or its code form (:class:`~rao_envs.protocols.CodeOracle`) when ``env`` is in code mode."""
    if getattr(env.unwrapped.engine.protocol, "runs_cells", False):
        from rao_envs.protocols import CodeOracle

        return CodeOracle(policy)
    return policy


def _told_deferred(node) -> bool:
    """True when the node was told that messages which did not fit would come with its next observation."""
    mark = DEFER_NOTE.split("{k}")[1]
    return any(m["role"] == "user" and mark in m["content"] for m in node.transcript)


def run_policy(env, policy: Callable, seed: int, max_steps: int = 200_000) -> EpisodeTree:
    """Run ``policy`` for one episode of the Gymnasium view; return the finished tree."""
    from rao_envs.policies import run_episode

    tree, _total, _steps = run_episode(env, policy, seed=seed, max_steps=max_steps)
    if not tree.done:
        _fail(f"episode did not end within {max_steps} steps")
    return tree


# ---------------------------------------------------------------------------- views
def check_gym_env(env_id: str, **kwargs: Any) -> None:
    """Gymnasium's ``check_env`` passes on the unwrapped env with no warnings at all."""
    from gymnasium.utils.env_checker import check_env

    import contextlib
    import io

    env = _env(env_id, **kwargs)
    gc.collect()  # objects left by earlier code warn when collected: not during the check
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        check_env(env, skip_render_check=False)  # renders "human" mode: keep it off the terminal
    # a ResourceWarning comes from the garbage collector finalising some other object, not from the env
    msgs = [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]
    if msgs:
        _fail(f"{env_id}: gymnasium check_env warned: {msgs[:5]}")


def check_parallel_env(env_id: str, num_cycles: int = 200, **kwargs: Any) -> None:
    """PettingZoo ``parallel_api_test`` and ``parallel_seed_test`` pass (text-space warnings allowed)."""
    from pettingzoo.test import parallel_api_test, parallel_seed_test

    from rao_envs.views.parallel import RaoParallelEnv

    sid = task_spec(env_id).id
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(RaoParallelEnv(sid, **kwargs), num_cycles=num_cycles)
        parallel_seed_test(lambda: RaoParallelEnv(sid, **kwargs), num_cycles=num_cycles)
    bad = [str(w.message) for w in caught if not any(e in str(w.message) for e in _EXPECTED_PZ_WARNINGS)]
    if bad:
        _fail(f"{env_id}: PettingZoo tests warned: {bad[:5]}")


# ---------------------------------------------------------------------------- tree invariants
def check_tree_invariants(tree: EpisodeTree) -> None:
    """Structural rules every finished tree obeys (depth, budgets, statuses, deliveries)."""
    lim, nodes = tree.limits, tree.nodes
    if not nodes or next(iter(nodes)) != "0":
        _fail("the root '0' must be the first node")
    if len(nodes) > lim.max_nodes:
        _fail(f"{len(nodes)} nodes > max_nodes={lim.max_nodes}")
    steps = 0
    slots = set()
    for node in nodes.values():
        where = f"node {node.id}"
        steps += node.steps_used
        slots.add(node.slot)
        if node.depth > lim.max_depth:
            _fail(f"{where}: depth {node.depth} > max_depth {lim.max_depth}")
        if not 0 <= node.steps_used <= node.budget:
            _fail(f"{where}: steps_used {node.steps_used} outside [0, budget {node.budget}]")
        if node.budget > lim.max_steps_per_node:
            _fail(f"{where}: budget {node.budget} > max_steps_per_node {lim.max_steps_per_node}")
        if node.parent is not None:
            parent = nodes[node.parent]
            if node.id not in parent.children or node.depth != parent.depth + 1:
                _fail(f"{where}: not linked to parent {parent.id} correctly")
            if node.id != f"{parent.id}.{parent.children.index(node.id)}":
                _fail(f"{where}: id does not match its position under {parent.id}")
            if node.delivered > 1:
                _fail(f"{where}: result delivered to its parent {node.delivered} times")
            if (
                node.ended_at is not None
                and parent.last_acted is not None
                and node.ended_at < parent.last_acted
                and node.delivered != 1
                and not (node.delivered == 0 and _told_deferred(parent))
            ):
                _fail(f"{where}: ended before its parent's last action but its result was delivered {node.delivered} times")
        if tree.done and not node.status.ended:
            _fail(f"{where}: still {node.status.value} after the root ended")
        if node.status.ended:
            if node.ended_at is None:
                _fail(f"{where}: ended without an end time")
            if node.last_acted is not None and node.last_acted > node.ended_at:
                _fail(f"{where}: acted at clock {node.last_acted} after it ended at {node.ended_at}")
            if node.status is NodeStatus.INFRA_ERROR:
                if node.score is not None or node.reward is not None:
                    _fail(f"{where}: infra_error nodes must be masked (score/reward None)")
            else:
                if node.score is None or not 0.0 <= node.score <= 1.0:
                    _fail(f"{where}: score {node.score} not in [0, 1]")
                kids = [c.score for c in tree.children(node.id) if not c.masked and c.score is not None]
                want = local_reward(node.score, kids, tree.lam)
                if node.reward is None or abs(node.reward - want) > 1e-9:
                    _fail(f"{where}: reward {node.reward} != s + lam*mean(children s) = {want}")
            if node.status is NodeStatus.FINISHED and node.transcript[-1]["role"] != "assistant":
                _fail(f"{where}: finished but its last message is not its own finish action")
        assistant_turns = sum(1 for m in node.transcript if m["role"] == "assistant")
        if assistant_turns != node.steps_used:
            _fail(f"{where}: {assistant_turns} assistant messages but steps_used={node.steps_used}")
        roles = [m["role"] for m in node.transcript]
        if roles[:1] != ["system"] or any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles[1:])):
            _fail(f"{where}: transcript must be system, then alternating user/assistant messages: {roles[:12]}")
    if steps != tree.clock:
        _fail(f"steps of all nodes ({steps}) != tree clock ({tree.clock})")
    if slots != set(range(len(nodes))):
        _fail("node slots must be 0..n-1 in spawn order")
    if lim.tree_step_budget is not None:
        used = sum(n.steps_used if n.status.ended else n.budget for n in nodes.values())
        if used > lim.tree_step_budget:
            _fail(f"tree used/reserved {used} steps > tree_step_budget {lim.tree_step_budget}")


# ---------------------------------------------------------------------------- behaviour
def check_oracle(env_id: str, seeds: range | list[int] = range(3), **kwargs: Any) -> list[EpisodeTree]:
    """The task's oracle reaches the maximum root score (1.0) and obeys the invariants."""
    env = _env(env_id, **kwargs)
    trees = []
    for seed in seeds:
        policy = _oracle(env)
        if policy is None:
            _fail(f"{env_id}: the task has no oracle (implement Task.oracle)")
        tree = run_policy(env, policy, seed)
        check_tree_invariants(tree)
        if tree.root.status is not NodeStatus.FINISHED or tree.root.score != 1.0:
            _fail(f"{env_id} seed {seed}: oracle root ended {tree.root.status.value} with score {tree.root.score}")
        trees.append(tree)
    return trees


def check_determinism(env_id: str, seeds: range | list[int] = range(2), **kwargs: Any) -> None:
    """Same seed + same actions → identical trees (shape, every text, scores)."""
    from rao_envs.policies import RandomPolicy

    for seed in seeds:
        dumps = []
        for _ in range(2):
            env = _env(env_id, **kwargs)
            oracle = _oracle(env)
            policies = [_code_form(env, RandomPolicy(env.task, seed=seed))] + ([oracle] if oracle is not None else [])
            dumps.append([run_policy(env, p, seed).to_json() for p in policies])
        if dumps[0] != dumps[1]:
            _fail(f"{env_id} seed {seed}: two runs with the same seed and actions gave different trees")
        first = EpisodeTree.from_json(dumps[0][-1])
        if first.to_json() != dumps[0][-1] or EpisodeTree.from_json(dumps[0][-1]) != first:
            _fail(f"{env_id}: tree JSON does not round-trip")
    env = _env(env_id, **kwargs)
    o1, _ = env.reset(seed=123)
    o2, _ = env.reset(seed=124)
    env.reset(seed=123)
    o3 = env.unwrapped.engine.observe("0")
    if o1["text"] != o3:
        _fail(f"{env_id}: reset(seed=123) twice gave different first observations")
    del o2


def check_state_scope(env_id: str, seeds: range | list[int] = range(10), **kwargs: Any) -> str:
    """The declared state scope holds when a child is spawned (uses the oracle to delegate).

    Tries ``seeds`` at the given settings, then at each harder difficulty, until the oracle
    delegates at least once.
    """
    cls = task_spec(env_id).load()
    settings = [kwargs]
    if "difficulty" not in kwargs:
        settings += [{**kwargs, "difficulty": d} for d in reversed(cls.difficulties)]
    for setting in settings:
        env = _env(env_id, **setting)
        engine, scope = env.engine, env.task.state_scope
        for seed in seeds:
            policy = _oracle(env)
            if policy is None:
                return "not exercised (no oracle)"
            obs, info = env.reset(seed=seed)
            while True:
                before = len(engine.tree.nodes)
                obs, _r, term, trunc, info = env.step(policy(obs, info))
                spawned = list(engine.tree.nodes)[before:]
                for cid in spawned:
                    child = engine.context(cid)
                    parent = engine.context(engine.tree.nodes[cid].parent)
                    if scope is StateScope.SHARED and child.state is not parent.state:
                        _fail(f"{env_id}: state_scope=shared but child {cid} got its own state object")
                    if scope is StateScope.FORK and (child.state is parent.state or child.state != parent.state):
                        _fail(f"{env_id}: state_scope=fork but child {cid} is not an equal copy of its parent's state")
                    if scope is StateScope.ISOLATED and child.state is parent.state and child.state is not None:
                        _fail(f"{env_id}: state_scope=isolated but child {cid} shares its parent's state")
                if spawned:
                    return f"{scope.value}: checked"
                if term or trunc:
                    break
    return "not exercised (the oracle never delegated)"


def fuzz_actions(
    rng: np.random.Generator, n: int, tool_names: list[str], arg_names: dict[str, list[str]] | None = None
) -> list[Any]:
    """Random and adversarial action strings (plus a few non-strings).

    ``arg_names`` maps a tool to its parameter names (from the task's tool signatures), so
    junk values reach every real argument of every tool.
    """
    arg_names = arg_names or {}
    junk_kinds = [[1e309], {"a": -1}, [None, -5]]
    fixed: list[Any] = [
        "", " ", "\n\n", "<tool>", "</tool>", "<tool></tool>", "<tool>{}</tool>", "<tool>[]</tool>",
        "<tool>null</tool>", '<tool>{"name": 1}</tool>', '<tool>{"name": ""}</tool>',
        '<tool>{"name": "delegate", "args": []}</tool>', '<tool>{"name": "delegate", "args": {"goal": 5}}</tool>',
        '<tool>{"name": "delegate", "args": {"budget": -3, "goal": "x"}}</tool>',
        '<tool>{"name": "wait", "args": {"ids": [1, 2]}}</tool>', '<tool>{"name": "cancel", "args": {"id": "0.99"}}</tool>',
        '<tool>{"name": "nope", "args": {}}</tool>', '{"tool_calls": []}', '{"function": {"name": "x", "arguments": "{bad"}}',
        "```json\n{\"name\": 3}\n```", "[" * 50_000 + "]" * 50_000, "{" * 10_000, "x" * 200_000,
        "\x00\x01\x02\xff", "é✓" * 1000, "\ud800", "<tool>" + '{"name": "a", "args": ' * 3000 + "</tool>",
        b"<tool>bytes</tool>", None, 12345, 3.5, ["list"], {"dict": 1},
        '<tool>{"name": "delegate", "args": {"goal": "x", "wait": false}}</tool>',
        '<tool>{"name": "cancel", "args": {"ids": ["0.0", "0.0"]}}</tool>',
        '<tool>{"name": "finish", "args": {"result": [NaN, Infinity, -Infinity]}}</tool>',
        '<tool>{"name": "finish", "args": {"result": "\\ud800 lone surrogate"}}</tool>',
        '<tool>{"name": "finish", "args": {"result": ' + "[" * 400 + "]" * 400 + "}}</tool>",
        "\ud800<tool>" + "\udfff" * 10,
    ]
    for name in tool_names:
        fixed += [
            f'<tool>{{"name": "{name}", "args": {{"zzz": 1}}}}</tool>',
            f'<tool>{{"name": "{name}", "args": "not a dict"}}</tool>',
            Action(name=name, args={
                a: junk_kinds[k % len(junk_kinds)] for k, a in enumerate(arg_names.get(name) or ["a"])
            }).to_text(),
        ]
    out = list(fixed)
    alphabet = list('<>{}[]":, toolnamearg\\\n0123456789-.')
    while len(out) < n:
        kind = rng.integers(4)
        length = int(rng.integers(0, 200))
        if kind == 0:
            out.append("".join(rng.choice(alphabet, size=length)))
        elif kind == 1:
            out.append("<tool>" + "".join(rng.choice(alphabet, size=length)) + "</tool>")
        elif kind == 2:
            out.append(bytes(rng.integers(0, 256, size=length, dtype=np.uint8)).decode("latin-1"))
        else:
            name = tool_names[int(rng.integers(len(tool_names)))] if tool_names else "x"
            junks = [0, -1, 10**30, "s", None, [], {}, [[[]]], {"a": {"b": 1}}, True, 1.5]
            junk = junks[int(rng.integers(len(junks)))]
            out.append(json.dumps({"name": name, "args": {"a": junk, **{a: junk for a in arg_names.get(name, [])}}}))
    return out[:n] if n >= len(fixed) else out


def code_fuzz_cells(tool_names: list[str], arg_names: dict[str, list[str]] | None = None) -> list[str]:
    """Hostile code-mode turns: runaway, crashing, channel-attacking and malformed cells.

    Every one must come back as feedback (or a clean refusal) with the episode going on and
    the host unharmed; the sandbox's failures caused by the cell are the agent's, not infra.
    """
    arg_names = arg_names or {}
    cells = [
        "while True:\n    pass",
        "print('x' * 10**7)",
        "def broken(:\n  pass",
        "import os; os._exit(0)",
        "class E(Exception):\n    def __str__(self):\n        raise ValueError('no')\nraise E()",
        "def f(n):\n    return f(n + 1)\nf(0)",
        "await asyncio.Future()",
        "r = await asyncio.gather(*[launch_subagent('x') for _ in range(10000)])\nprint(len(r), r[0])",
        "launch_subagent('never awaited')",
        "import _rao_host\n_rao_host.call({'t': 'tool', 'name': 'x' * 10**6})",
        "import _rao_host\nprint(_rao_host.call({'t': 'spawn', 'count': 10**9, 'requests': None}))",
        "import _rao_host\nprint(_rao_host.call({'t': 'spawn', 'count': 2, 'requests': [1, 2]}))",
        "import _rao_host\nprint(_rao_host.call('garbage'))",
        "import _rao_host\nprint(_rao_host.call({'t': 'tool', 'node': '0.7', 'name': 'nope', 'args': {}}))",
        "import threading, _rao_host\nt = threading.Thread(target=lambda: _rao_host.call({'t': 'tool', 'name': 'x'}))\nt.start(); t.join()",
        "import os, _rao_host\nst = _rao_host.call.__globals__['_CALL']\nos.write(st['report'], b'\\x00\\x00\\x00\\x05junk!')",
        "import _rao_host\n_rao_host.call.__globals__['_CALL']['sock'].send(b'garbage on the channel')",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        "import os, signal\nos.kill(-1, signal.SIGKILL)",
        "x = bytearray(10**11)",
        "finish({1, 2})",
        "import sys; sys.exit(3)",
        "raise KeyboardInterrupt",
        "import asyncio\nasync def main():\n    return await asyncio.gather(launch_subagent('a'), launch_subagent('b'))\nprint(asyncio.run(main()))",
        "print(launch_subagent)\nprint(finish.__doc__)",
    ]
    junks = ["s", -1, None, [[[]]], {"a": {"b": 1}}, 10**30]
    for i, name in enumerate(tool_names):
        params = arg_names.get(name) or []
        junk = junks[i % len(junks)]
        cells.append(f"print({name}(" + ", ".join(f"{p}={junk!r}" for p in params) + "))")
        cells.append(f"try:\n    {name}(zzz=1)\nexcept Exception as e:\n    print(type(e).__name__, e)")
    return [f"<thought>fuzz</thought><python>\n{c}\n</python>" for c in cells]


def check_fuzz(env_id: str, n: int = 2000, seed: int = 0, **kwargs: Any) -> int:
    """Thousands of random/adversarial actions never raise; each gets a feedback observation."""
    env = _env(env_id, **kwargs)
    engine = env.engine
    names = list(env.task.tools) + ["delegate", "finish", "wait", "cancel"]
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    arg_names = {name: list(spec.model.model_fields) for name, spec in env.task.tools.items()}
    actions = fuzz_actions(rng, n, names, arg_names)
    if getattr(engine.protocol, "runs_cells", False):  # code mode: hostile cells first, then the text fuzz
        actions = (code_fuzz_cells(list(env.task.tools), arg_names) + actions)[: max(n, 1)]
    for i, action in enumerate(actions):
        node = info["node"]
        turns = len(engine.tree.nodes[node].transcript)
        try:
            obs, _r, term, trunc, info = env.step(action)
        except RaoEnvsError:
            raise
        except Exception as exc:  # noqa: BLE001
            _fail(f"{env_id}: action #{i} {str(action)[:80]!r} raised {type(exc).__name__}: {exc}")
        acted = engine.tree.nodes[node]
        if not env.observation_space.contains(obs):
            _fail(f"{env_id}: observation after action #{i} is outside the observation space")
        if acted.status is NodeStatus.RUNNING:
            engine.commit(node)
            if len(acted.transcript) != turns + 2 or acted.transcript[-1]["role"] != "user":
                _fail(f"{env_id}: action #{i} {str(action)[:80]!r} got no feedback observation")
        if term or trunc:
            check_tree_invariants(engine.tree)
            if EpisodeTree.from_json(engine.tree.to_json()) != engine.tree:
                _fail(f"{env_id}: the tree after action #{i} does not save and load back equal")
            obs, info = env.reset(seed=seed + i + 1)
    return n


# ---------------------------------------------------------------------------- the whole suite
@dataclass
class ConformanceReport:
    """Outcome of :func:`run_conformance`: one line per check."""

    env_id: str
    results: list[tuple[str, bool, str, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(r[1] for r in self.results)

    def raise_on_failure(self) -> None:
        """Raise :class:`ConformanceError` listing the failed checks."""
        bad = [f"{name}: {msg}" for name, ok, msg, _ in self.results if not ok]
        if bad:
            raise ConformanceError(f"{self.env_id} failed {len(bad)} check(s):\n" + "\n".join(bad))


CHECKS: dict[str, Callable[..., Any]] = {
    "gymnasium check_env": check_gym_env,
    "pettingzoo parallel_api_test + parallel_seed_test": check_parallel_env,
    "oracle reaches max score + tree invariants": check_oracle,
    "seed determinism (trees, texts)": check_determinism,
    "declared state scope": check_state_scope,
    "fuzz (random/adversarial actions)": check_fuzz,
}


def run_conformance(env_id: str, quick: bool = False, on_result: Callable | None = None, **kwargs: Any) -> ConformanceReport:
    """Run every check on ``env_id``; ``quick`` uses fewer seeds/cycles/fuzz strings."""
    report = ConformanceReport(task_spec(env_id).id)
    opts = {
        check_parallel_env: {"num_cycles": 50 if quick else 200},
        check_oracle: {"seeds": range(2 if quick else 5)},
        check_determinism: {"seeds": range(1 if quick else 2)},
        check_fuzz: {"n": 300 if quick else 2000},
    }
    for name, fn in CHECKS.items():
        t0 = time.perf_counter()
        try:
            detail = fn(report.env_id, **opts.get(fn, {}), **kwargs)
            ok, msg = True, detail if isinstance(detail, str) else "ok"
        except Exception as exc:  # noqa: BLE001 - the report collects every failure
            ok, msg = False, f"{type(exc).__name__}: {exc}"[:2000]
        report.results.append((name, ok, msg, time.perf_counter() - t0))
        if on_result:
            on_result(report.results[-1])
    return report
