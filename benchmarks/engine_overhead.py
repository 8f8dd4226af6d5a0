#!/usr/bin/env python
"""Engine overhead: node-steps per second of the full agent loop, next to TextArena and CartPole.

``python benchmarks/engine_overhead.py`` (under a minute) or ``--quick`` (a few seconds);
``--task Toy-v0`` measures another task (default TextCraft-v0, falling back to Toy-v0 loudly).

What is timed
-------------
*Our loop* is what an RL user runs: ``obs, r, term, trunc, info = env.step(action_text)`` on the
Gymnasium env (``gymnasium.make("rao_envs/TextCraft-v0").unwrapped``, and separately through the
default ``gymnasium.make`` wrappers), reading ``obs["text"]`` every step. Each step parses the
action text, validates and runs the tool, updates the tree and renders the next observation
text. The action texts (valid ``view_inventory``, ``get_info`` and ``craft`` calls; the crafts
make tier-1 items from base materials that are topped up before timing so they never run out)
are **pre-generated**, so the policy's own cost is excluded; the ``for`` loop's own ~0.05 µs is
not subtracted. Resets and tree building are outside the timed blocks.

* depth 0: the root steps through one long episode (``max_steps_per_node`` = 10 000); the
  per-step cost of 100-step windows early, in the middle and late shows it stays flat;
* deep tree: a chain of delegations down to depth 10 with ``fanout`` finished leaf sub-agents at
  every level (11 / 311 / 911 nodes), then the depth-10 node steps 2 000 times;
* round robin: 200 live sibling sub-agents served one turn each in the fair order;
* engine alone: ``TreeEngine.step(node, text)`` + ``TreeEngine.observe(node)``, no Gymnasium view;
* no-op tool: the same loop on a task whose tool returns ``"pong"`` (engine + view only), and
  one returning a prebuilt 8 000-character page (the per-character costs of a long observation).

Baselines (benchmark-only dependency ``textarena``, ``pip install -e ".[bench]"``; without it
those rows say "not installed"):

* TextArena ``TowerOfHanoi-v0`` with its default wrappers (``LLMObservationWrapper``,
  ``ActionFormattingWrapper``): ``env.get_observation()`` + ``env.step(move)``, TextArena's own
  agent loop. (a) its registered episodes (3 disks, the optimal 7 moves), a fresh ``ta.make``
  per episode (untimed), because (d) the wrapper keeps its history across ``reset`` (0.7.4), so
  a reused env slows down every episode; (b) one long episode (``max_turns`` raised, the small
  disk shuttled back and forth) measured at turn 0, 1000 and 9000: the wrapper re-renders the
  whole history on every observation. To reach turn N quickly the benchmark raw-steps N turns
  and then observes once (untimed); the wrapper's state is then the same as after observing
  every turn.
* TextArena raw ``env.step`` (``TowerOfHanoi-v0-raw``: no wrappers, no observation rendering).
* Gymnasium ``CartPole-v1`` ``env.step`` as a floor (actions pre-sampled from its action space).

Each run's number is its mean µs/step (total time / steps); the table shows the median over
several runs after a warm-up run. Wall clock (``perf_counter_ns``) is the measurement; the CPU
time of the thread (``thread_time_ns``) is printed beside it, so a busy machine shows as wall
clock well above CPU time.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

import rao_envs  # registers rao_envs/<task> with Gymnasium
from rao_envs import Action, Task, TaskInstance, tool

_ns, _cpu = time.perf_counter_ns, time.thread_time_ns
TARGET_US = 30.0  # issue 3: ≤ 30 µs per node step for our loop
TARGET_RATIO = 10.0  # issue 3: ≥ 10× faster than TextArena's observe+step loop


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    repeats: int  # runs per measurement (median taken)
    depth0_steps: int  # length of the long depth-0 episode
    windows: tuple[int, ...]  # window starts (step index) for flatness tables
    window: int  # steps per window
    deep_depth: int
    fanouts: tuple[int, ...]  # finished leaf sub-agents per level of the deep chain
    deep_steps: int  # steps of the deep node
    siblings: int  # live siblings for the round-robin measurement
    sibling_rounds: int
    engine_steps: int
    ta_episodes: int  # registered 7-move Hanoi episodes per run
    ta_turns: tuple[int, ...]  # long-episode window starts for TextArena
    ta_repeats: int
    ta_reuse: tuple[int, ...]  # episode numbers measured on one reused TextArena env
    cartpole_steps: int


FULL = Settings(
    repeats=7, depth0_steps=10_000, windows=(0, 1000, 9000), window=100, deep_depth=10,
    fanouts=(0, 30, 90), deep_steps=2_000, siblings=200, sibling_rounds=20, engine_steps=10_000,
    ta_episodes=1_000, ta_turns=(0, 1000, 9000), ta_repeats=3, ta_reuse=(1, 100, 500),
    cartpole_steps=20_000,
)
QUICK = Settings(
    repeats=2, depth0_steps=1_200, windows=(0, 1000), window=100, deep_depth=10,
    fanouts=(0, 10), deep_steps=300, siblings=50, sibling_rounds=4, engine_steps=1_000,
    ta_episodes=100, ta_turns=(0, 1000), ta_repeats=1, ta_reuse=(1, 50),
    cartpole_steps=2_000,
)


# --------------------------------------------------------------------------- scenarios
@dataclass
class Scenario:
    """How to drive one task with cheap, valid, pre-generated actions."""

    task_id: str
    make_kwargs: dict[str, Any]
    actions: Callable[[Any, dict[str, Any]], list[str]]  # (env, info) -> cyclic tool calls of that node
    delegate: Callable[[Any, dict[str, Any]], str]  # (env, info) -> one delegate call
    finish: str
    note: str = ""


def _toy_actions(env: Any, info: dict[str, Any]) -> list[str]:
    return [Action.tool("calc", a=i, op="+*-"[i % 3], b=7).to_text() for i in range(12)]


def toy_scenario() -> Scenario:
    return Scenario(
        task_id="Toy-v0",
        make_kwargs={},
        actions=_toy_actions,
        delegate=lambda env, info: Action(name="delegate", args={"expr": "(1 + 2)"}).to_text(),
        finish=Action.finish(3).to_text(),
    )


class BenchNoop(Task):
    """A task whose only tool does nothing: what is left of a step is the engine's own cost."""

    name = "BenchNoop"
    version = 0
    system_prompt = "Call ping."

    def generate(self, rng: Any) -> TaskInstance:
        return TaskInstance(goal="Call ping until you are told to stop.")

    def score(self, ctx: Any) -> float:
        return 1.0

    @tool
    def ping(self, ctx: Any) -> str:
        """Return pong."""
        return "pong"

    @tool
    def page(self, ctx: Any) -> str:
        """Return a page of text (8 000 characters, prebuilt: the tool itself costs nothing)."""
        return PAGE


#: 8 000 characters of printable ASCII in 80-column lines: a long observation (default max_obs_chars 8192)
PAGE = "\n".join(("page of text " * 7)[:79] for _ in range(100))


def noop_scenario(tool_name: str = "ping") -> Scenario:
    if "BenchNoop-v0" not in rao_envs.task_ids():
        rao_envs.register_task("BenchNoop-v0", BenchNoop, source="benchmarks/engine_overhead.py")
    return Scenario(
        task_id="BenchNoop-v0",
        make_kwargs={},
        actions=lambda env, info: [Action.tool(tool_name).to_text()],
        delegate=lambda env, info: Action.delegate("Call ping.").to_text(),
        finish=Action.finish("done").to_text(),
    )


def _textcraft_actions(env: Any, info: dict[str, Any]) -> list[str]:
    """view_inventory, get_info and craft calls that stay valid for thousands of steps.

    The crafts make tier-1 items straight from base materials; those base materials are
    topped up to 10**9 in the (shared) inventory before timing, so every craft succeeds.
    """
    task = env.unwrapped.task
    world, inv = task.world, env.unwrapped.engine.context(info["node"]).state
    targets = list((info.get("node_args") or {}).get("targets") or {})
    simple = sorted(i for i, r in world.recipes.items() if all(world.is_base(g) for g, _ in r.ingredients))[:3]
    crafts = []
    for item in simple:
        recipe = world.recipes[item]
        for ing, _q in recipe.ingredients:
            inv[ing] = 10**9
        crafts.append(Action.tool("craft", ingredients=recipe.as_dict(), target=[item, recipe.result_count]).to_text())
    return [
        Action.tool("view_inventory").to_text(),
        Action.tool("get_info", items=targets[:1] or simple[:1]).to_text(),
        crafts[0],
        Action.tool("get_info", items=simple).to_text(),
        crafts[1 % len(crafts)],
        Action.tool("view_inventory").to_text(),
        crafts[2 % len(crafts)],
        Action.tool("get_info", items=sorted(inv)[:2]).to_text(),
    ]


def textcraft_scenario() -> Scenario:
    return Scenario(
        task_id="TextCraft-v0",
        make_kwargs={"difficulty": "medium"},
        actions=_textcraft_actions,
        # a sub-agent on the node's own targets (a valid delegation in TextCraft-Synth)
        delegate=lambda env, info: Action.delegate("help with: " + info["goal"][:80], **dict(info["node_args"])).to_text(),
        finish=Action.finish("done").to_text(),
    )


def pick_scenario(name: str) -> Scenario:
    """TextCraft-v0 when it is implemented (a reset and a tool step work), else Toy-v0."""
    if name == "Toy-v0":
        return toy_scenario()
    if name == "BenchNoop-v0":
        return noop_scenario()
    sc = textcraft_scenario()
    try:
        env = _make(sc, unwrapped=True, max_steps_per_node=50)
        _, info = env.reset(seed=0)
        acts = sc.actions(env, info)
        if not acts:
            raise RuntimeError("no view_inventory/get_info tools")
        for a in acts:
            obs, *_ = env.step(a)
            if obs["text"].startswith(("Error", "Refused")):
                raise RuntimeError(f"scripted action rejected: {obs['text'][:120]}")
        return sc
    except Exception as exc:  # placeholder task or API drift: fall back, loudly
        if name == "TextCraft-v0":
            print(f"note: TextCraft-v0 is not usable yet ({type(exc).__name__}: {str(exc)[:160]}); "
                  "measuring Toy-v0 instead", flush=True)
        toy = toy_scenario()
        toy.note = "TextCraft-v0 unavailable"
        return toy


def _make(sc: Scenario, *, unwrapped: bool, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(f"rao_envs/{sc.task_id}", **{**sc.make_kwargs, **kwargs})
    return env.unwrapped if unwrapped else env


# --------------------------------------------------------------------------- timing helpers
def _clock() -> tuple[int, int]:
    """(wall ns, this thread's CPU ns): wall is the measurement, CPU shows a busy machine."""
    return _ns(), _cpu()


def _since(t0: tuple[int, int], steps: int) -> tuple[float, float]:
    """(wall, CPU) µs per step since ``t0``."""
    w, c = _ns(), _cpu()
    return (w - t0[0]) / steps / 1e3, (c - t0[1]) / steps / 1e3


def _blocks(step: Callable[[str], Any], actions: Sequence[str], block: int) -> list[tuple[float, float]]:
    """Run ``actions`` through ``step`` (Gymnasium signature) in timed blocks: (wall, CPU) µs/step each."""
    out = []
    for start in range(0, len(actions), block):
        chunk = actions[start:start + block]
        t0 = _clock()
        for a in chunk:
            obs = step(a)[0]
            obs["text"]
        out.append(_since(t0, len(chunk)))
    return out


def _mean_blocks(blocks: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.fmean(b[0] for b in blocks), statistics.fmean(b[1] for b in blocks)


def _cycle(base: Sequence[str], n: int) -> list[str]:
    return [base[i % len(base)] for i in range(n)]


def _med(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


@dataclass
class Result:
    """One row: per-run (wall, CPU) µs/step; the row shows the medians."""

    name: str
    runs: list[tuple[float, float]] = field(default_factory=list)
    note: str = ""

    @property
    def us(self) -> float | None:
        return _med(r[0] for r in self.runs) if self.runs else None

    @property
    def cpu(self) -> float | None:
        return _med(r[1] for r in self.runs) if self.runs else None

    @property
    def best_cpu(self) -> float:
        return min(r[1] for r in self.runs)


def _window_medians(per_block: list[list[tuple[float, float]]], starts: Iterable[int], width: int) -> dict[int, tuple[float, float, float]]:
    """Per window start: (median wall, median CPU, least CPU) µs/step over the runs."""
    return {w: (_med(b[w // width][0] for b in per_block), _med(b[w // width][1] for b in per_block),
                min(b[w // width][1] for b in per_block)) for w in starts}


# --------------------------------------------------------------------------- our loops
def bench_depth0(sc: Scenario, s: Settings, *, wrapped: bool, label: str = ""):
    """The root steps ``depth0_steps`` times: (row, per-window medians, warnings seen)."""
    runs, per_block, warns = [], [], []
    for rep in range(s.repeats + 1):  # run 0 is the warm-up
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            env = _make(sc, unwrapped=not wrapped, max_steps_per_node=s.depth0_steps + 10)
            _, info = env.reset(seed=rep)
            actions = _cycle(sc.actions(env, info), s.depth0_steps)
            gc.collect()
            blocks = _blocks(env.step, actions, s.window)
        if rep == 0:
            warns = sorted({str(w.message).replace("\x1b[33m", "").replace("\x1b[0m", "")[:200] for w in caught})
            continue
        runs.append(_mean_blocks(blocks))
        per_block.append(blocks)
    kind = "gymnasium.make(...) wrappers" if wrapped else "RaoEnv.step (unwrapped)"
    row = Result(label or f"ours: {kind}, depth 0", runs)
    return row, _window_medians(per_block, s.windows, s.window), warns


def _build_deep(sc: Scenario, s: Settings, fanout: int) -> tuple[Any, dict[str, Any]]:
    """A chain of delegations to depth ``deep_depth`` with ``fanout`` finished leaves per level."""
    n_nodes = 1 + s.deep_depth * (fanout + 1)
    env = _make(sc, unwrapped=True, max_depth=s.deep_depth, max_nodes=n_nodes + 8,
                max_steps_per_node=s.deep_steps + fanout + 20)
    _, info = env.reset(seed=0)
    batch = env.engine.limits.max_children_per_turn or max(fanout, 1)
    delegated: dict[str, int] = {}
    leaves: set[str] = set()
    for _ in range(20 * n_nodes + 100):
        node, depth = info["node"], info["depth"]
        if depth == s.deep_depth and node not in leaves:
            assert len(env.tree.nodes) == n_nodes, (len(env.tree.nodes), n_nodes)
            return env, info
        if node in leaves:
            action = sc.finish
        else:
            done = delegated.get(node, 0)
            if done < fanout:  # leaves first (in batches), all of which finish at once
                k = min(batch, fanout - done)
                kids = len(env.tree.nodes[node].children)
                leaves.update(f"{node}.{kids + i}" for i in range(k))
                action = "\n".join([sc.delegate(env, info)] * k)
                delegated[node] = done + k
            else:
                action = sc.delegate(env, info)  # then the next link of the chain
        _, _, term, trunc, info = env.step(action)
        if term or trunc:
            break
    raise RuntimeError(f"could not build the deep tree (node {info['node']}: {env.engine.observe(info['node'])[:300]})")


def bench_deep(sc: Scenario, s: Settings) -> tuple[list[Result], dict[int, dict[int, tuple[float, float]]]]:
    rows, windows = [], {}
    starts = sorted({0, s.deep_steps // 2 // s.window * s.window, s.deep_steps - s.window})
    for fanout in s.fanouts:
        runs, per_block = [], []
        for rep in range(s.repeats + 1):
            env, info = _build_deep(sc, s, fanout)
            actions = _cycle(sc.actions(env, info), s.deep_steps)
            gc.collect()
            blocks = _blocks(env.step, actions, s.window)
            assert env.engine.active() == info["node"], "the deep node should have acted alone"
            if rep:
                runs.append(_mean_blocks(blocks))
                per_block.append(blocks)
        n = len(env.tree.nodes)
        windows[n] = _window_medians(per_block, starts, s.window)
        rows.append(Result(f"ours: RaoEnv.step, depth-{s.deep_depth} node, {n}-node tree", runs))
    return rows, windows


def bench_siblings(sc: Scenario, s: Settings) -> Result:
    """The root delegates ``siblings`` sub-agents at once; they act in the fair round-robin order."""
    runs = []
    for rep in range(s.repeats + 1):
        env = _make(sc, unwrapped=True, max_depth=2, max_nodes=s.siblings + 2,
                    max_steps_per_node=s.sibling_rounds + 5, max_children_per_turn=None)
        _, info = env.reset(seed=0)
        _, _, _, _, info = env.step("\n".join([sc.delegate(env, info)] * s.siblings))
        live = sum(1 for n in env.tree.nodes.values() if n.status.value == "running")
        assert live == s.siblings and info["depth"] == 1, (live, info["depth"])
        actions = _cycle(sc.actions(env, info), s.siblings * s.sibling_rounds)
        gc.collect()
        blocks = _blocks(env.step, actions, s.siblings)
        if rep:
            runs.append(_mean_blocks(blocks))
    return Result(f"ours: RaoEnv.step, {s.siblings} live siblings round-robin", runs)


def bench_engine(sc: Scenario, s: Settings) -> Result:
    """TreeEngine.step + TreeEngine.observe on the root, no Gymnasium view."""
    runs = []
    for rep in range(s.repeats + 1):
        env = _make(sc, unwrapped=True, max_steps_per_node=s.engine_steps + 10)
        _, info = env.reset(seed=rep)
        eng = env.engine
        node = eng.active()
        actions = _cycle(sc.actions(env, info), s.engine_steps)
        step, observe = eng.step, eng.observe
        gc.collect()
        t0 = _clock()
        for a in actions:
            step(node, a)
            observe(node)
        if rep:
            runs.append(_since(t0, len(actions)))
    return Result("ours: engine only (TreeEngine.step + observe)", runs)


# --------------------------------------------------------------------------- TextArena
HANOI_OPTIMAL = ["[A C]", "[A B]", "[C B]", "[A C]", "[B A]", "[B C]", "[A C]"]
HANOI_SHUTTLE = ["[A B]", "[B A]"]  # the small disk back and forth: valid forever, never solves


def _textarena() -> tuple[Any, str]:
    try:
        import textarena as ta
    except Exception as exc:  # noqa: BLE001 - report whatever breaks the import
        return None, f"not installed ({type(exc).__name__}: {str(exc)[:100]}); pip install -e '.[bench]'"
    return ta, ""


@dataclass
class TextArenaResults:
    rows: list[Result]
    growth: dict[int, tuple[float, float]] = field(default_factory=dict)  # turn -> (observe+step, raw) wall µs
    reuse: dict[int, float] = field(default_factory=dict)  # episode number -> observe+step wall µs/step
    info: str = ""


def bench_textarena(s: Settings) -> TextArenaResults:
    ta, why = _textarena()
    names = ("TextArena TowerOfHanoi-v0 observe+step (registered 7-turn episodes)",
             "TextArena TowerOfHanoi-v0 raw step (-raw, no wrappers)")
    if ta is None:
        return TextArenaResults([Result(n, note=why) for n in names], info=why)
    try:
        version = getattr(ta, "__version__", "?")
        # (a) observe+step on the registered game, a fresh env per episode (untimed make/reset)
        runs = []
        for rep in range(s.repeats + 1):
            wall = cpu = steps = 0
            for ep in range(s.ta_episodes):
                env = ta.make("TowerOfHanoi-v0")
                env.reset(num_players=1, seed=ep)
                t0 = _clock()
                for move in HANOI_OPTIMAL:
                    _pid, obs = env.get_observation()
                    done, _info = env.step(move)
                w, c = _since(t0, 1)
                wall, cpu, steps = wall + w, cpu + c, steps + len(HANOI_OPTIMAL)
                assert done, "the optimal Hanoi solution should end the episode"
            if rep:
                runs.append((wall / steps, cpu / steps))
        obs_step = Result(names[0], runs, "fresh ta.make per episode")
        # (b) raw step, same episodes, no wrappers, no observation
        runs = []
        for rep in range(s.repeats + 1):
            env = ta.make("TowerOfHanoi-v0-raw")
            wall = cpu = steps = 0
            for ep in range(s.ta_episodes):
                env.reset(num_players=1, seed=ep)
                t0 = _clock()
                for move in HANOI_OPTIMAL:
                    done, _info = env.step(move)
                w, c = _since(t0, 1)
                wall, cpu, steps = wall + w, cpu + c, steps + len(HANOI_OPTIMAL)
            if rep:
                runs.append((wall / steps, cpu / steps))
        raw = Result(names[1], runs)
        # (c) growth with the turn count: one long episode, observe+step and raw step windows
        growth, extra = {}, []
        for turn in s.ta_turns:
            obs_runs, raw_runs = [], []
            for rep in range(s.ta_repeats):
                env = ta.make("TowerOfHanoi-v0", max_turns=10**9)
                env.reset(num_players=1, seed=rep)
                for k in range(turn):  # fast-forward: raw steps, then absorb the history once
                    env.step(HANOI_SHUTTLE[k % 2])
                env.get_observation()
                moves = _cycle(HANOI_SHUTTLE[turn % 2:] + HANOI_SHUTTLE[: turn % 2], s.window)
                gc.collect()
                t0 = _clock()
                for move in moves:
                    _pid, obs = env.get_observation()
                    done, _info = env.step(move)
                obs_runs.append(_since(t0, len(moves)))
                assert not done
                t0 = _clock()
                for move in moves:
                    done, _info = env.step(move)
                raw_runs.append(_since(t0, len(moves)))
            growth[turn] = (_med(r[0] for r in obs_runs), _med(r[0] for r in raw_runs))
            if turn:
                extra.append(Result(f"TextArena TowerOfHanoi-v0 observe+step @ turn {turn}-{turn + s.window}",
                                    obs_runs, "one long episode"))
        # (d) one env reused across resets: LLMObservationWrapper keeps every earlier episode
        reuse: dict[int, float] = {}
        env = ta.make("TowerOfHanoi-v0")
        for ep in range(1, max(s.ta_reuse) + 1):
            env.reset(num_players=1, seed=ep)
            if ep in s.ta_reuse:
                t0 = _clock()
                for move in HANOI_OPTIMAL:
                    _pid, obs = env.get_observation()
                    env.step(move)
                reuse[ep] = _since(t0, len(HANOI_OPTIMAL))[0]
            else:  # fast-forward: play the episode, observe once (same wrapper state afterwards)
                for move in HANOI_OPTIMAL:
                    env.step(move)
                env.get_observation()
        return TextArenaResults([obs_step, *extra, raw], growth, reuse, f"textarena {version}")
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not fatal
        why = f"broken ({type(exc).__name__}: {str(exc)[:120]})"
        return TextArenaResults([Result(n, note=why) for n in names], info=why)


# --------------------------------------------------------------------------- CartPole
def bench_cartpole(s: Settings, *, wrapped: bool) -> Result:
    runs = []
    for rep in range(s.repeats + 1):
        env = gym.make("CartPole-v1")
        env.action_space.seed(rep)
        actions = [env.action_space.sample() for _ in range(s.cartpole_steps)]
        e = env if wrapped else env.unwrapped
        e.reset(seed=rep)
        step = e.step
        wall = cpu = 0.0
        i = 0
        while i < len(actions):  # time the steps between resets
            t0 = _clock()
            while i < len(actions):
                _, _, term, trunc, _ = step(actions[i])
                i += 1
                if term or trunc:
                    break
            w, c = _since(t0, 1)
            wall, cpu = wall + w, cpu + c
            if term or trunc:
                e.reset()
        if rep:
            runs.append((wall / len(actions), cpu / len(actions)))
    kind = "gymnasium.make, default wrappers" if wrapped else "unwrapped"
    return Result(f"Gymnasium CartPole-v1 step ({kind})", runs)


# --------------------------------------------------------------------------- report
def _fmt_us(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:,.1f}" if us < 1000 else f"{us:,.0f}"


def _table(rows: list[Result], ours: float) -> str:
    width = max(len(r.name) for r in rows) + 2
    head = f"{'loop':<{width}}{'µs/step':>9}{'steps/s':>10}{'vs ours':>9}{'CPU µs':>9}  runs min-max; note"
    lines = [head, "-" * (len(head) + 14)]
    for r in rows:
        if r.us is None:
            lines.append(f"{r.name:<{width}}{'-':>9}{'-':>10}{'-':>9}{'-':>9}  {r.note}")
            continue
        walls = [x[0] for x in r.runs]
        spread = f"{_fmt_us(min(walls))}-{_fmt_us(max(walls))}" if len(walls) > 1 else ""
        note = "; ".join(x for x in (spread, r.note) if x)
        lines.append(f"{r.name:<{width}}{_fmt_us(r.us):>9}{1e6 / r.us:>10,.0f}{r.us / ours:>8.2f}x"
                     f"{_fmt_us(r.cpu):>9}  {note}")
    return "\n".join(lines)


def _windows(ws: dict[int, tuple[float, float, float]], width: int) -> str:
    return "   ".join(f"steps {w}-{w + width}: {_fmt_us(v[0])} (CPU {_fmt_us(v[1])})" for w, v in ws.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few-second smoke run (small sizes, 2 runs)")
    ap.add_argument("--task", default="TextCraft-v0", help="task id for our loop (falls back to Toy-v0)")
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    t_start = time.perf_counter()

    sc = pick_scenario(args.task)
    print(f"rao_envs engine overhead: task {sc.task_id} {sc.make_kwargs or ''}| Python {platform.python_version()} | "
          f"gymnasium {gym.__version__} | {platform.machine()}, {os.cpu_count()} CPUs | "
          f"{'--quick' if args.quick else 'full'} run: median of {s.repeats} runs after a warm-up run")
    print("our loop: obs, r, term, trunc, info = env.step(action_text), obs['text'] read every step. Action texts are\n"
          "pre-generated (policy cost excluded; the for-loop's own ~0.05 µs is not subtracted); resets and tree\n"
          "building are untimed. µs/step is wall clock (perf_counter_ns); CPU µs (thread_time_ns) is shown beside\n"
          "it: when they differ, other processes were competing for the CPU.\n", flush=True)

    d0, d0_windows, d0_warns = bench_depth0(sc, s, wrapped=False)
    d0w, _, wrap_warns = bench_depth0(sc, s, wrapped=True)
    deep, deep_windows = bench_deep(sc, s)
    sib = bench_siblings(sc, s)
    eng = bench_engine(sc, s)
    noop, _, _ = bench_depth0(noop_scenario(), s, wrapped=False,
                              label="ours: RaoEnv.step, no-op tool (engine+view cost only)")
    page, _, _ = bench_depth0(noop_scenario("page"), s, wrapped=False,
                              label=f"ours: RaoEnv.step, no-op tool, {len(PAGE):,}-char observations")
    ta = bench_textarena(s)
    cp = [bench_cartpole(s, wrapped=True), bench_cartpole(s, wrapped=False)]

    ours = d0.us
    print(_table([d0, d0w, *deep, sib, eng, noop, page, *ta.rows, *cp], ours))
    print("vs ours = this loop's µs/step / ours (first row): above 1 is slower than ours, below 1 faster.")

    print(f"\nours, per-step cost along one {s.depth0_steps}-step depth-0 episode (µs/step per {s.window}-step window):")
    print("  " + _windows(d0_windows, s.window))
    print(f"ours, per-step cost of the depth-{s.deep_depth} node by tree size (µs/step per {s.window}-step window):")
    for n, ws in deep_windows.items():
        print(f"  {n:>4} nodes: " + _windows(ws, s.window))
    if ta.growth:
        print(f"TextArena TowerOfHanoi-v0 along one long episode ({ta.info}), µs/step, observe+step | raw step:")
        print("  " + "   ".join(f"turns {t}-{t + s.window}: {_fmt_us(o)} | {_fmt_us(r)}" for t, (o, r) in ta.growth.items()))
    if ta.reuse:
        print("TextArena TowerOfHanoi-v0, one env reused with reset() (LLMObservationWrapper keeps every earlier "
              "episode), observe+step µs/step:")
        print("  " + "   ".join(f"episode {e}: {_fmt_us(v)}" for e, v in ta.reuse.items()))

    # ----- verdicts
    print()
    ta_default = ta.rows[0].us
    turns = {t: o for t, (o, _r) in ta.growth.items() if t}
    if ta_default is None:
        print(f"ours vs TextArena observe+step: n/a (textarena {ta.rows[0].note})")
    else:
        parts = [f"{ta_default / ours:.2f}x on its registered 7-turn episodes"]
        parts += [f"{o / ours:,.0f}x at turn {t}" for t, o in turns.items()]
        if ta.reuse:
            e = max(ta.reuse)
            parts.append(f"{ta.reuse[e] / ours:,.1f}x in episode {e} of a reused env")
        print("ours vs TextArena observe+step: " + "; ".join(parts) + "  (TextArena µs / ours; >1: ours faster)")
        if len(ta.growth) >= 2:  # line through the two earliest windows (mid-points): the crossings are early
            (t1, (o1, _)), (t2, (o2, _)) = sorted(ta.growth.items())[:2]
            slope = (o2 - o1) / (t2 - t1)  # µs per turn of history
            base = o1 - slope * (t1 + s.window / 2)
            if slope > 0:
                cross, tenfold = (ours - base) / slope, (TARGET_RATIO * ours - base) / slope
                print(f"TextArena observe+step ~ {base:.1f} µs + {slope * 1e3:.0f} ns x turn (line through turns {t1} and "
                      f"{t2}; it grows faster later): it costs more than "
                      f"ours from turn ~{max(cross, 0):,.0f} and {TARGET_RATIO:.0f}x ours from turn ~{max(tenfold, 0):,.0f}")
    loops = (d0, d0w, *deep, sib)
    worst = max(r.us for r in loops)
    print(f"target <= {TARGET_US:.0f} µs per node step: {'MET' if worst <= TARGET_US else 'MISSED'} "
          f"(depth 0 {d0.us:.1f} µs, through gymnasium.make {d0w.us:.1f} µs, worst of our loops {worst:.1f} µs "
          f"wall / {max(r.cpu for r in loops):.1f} µs CPU; engine+view alone {noop.us:.1f} µs)")
    per_char = (page.cpu - noop.cpu) / len(PAGE) * 1e3
    print(f"long observations: {page.us:.1f} µs/step with {len(PAGE):,}-char observations vs {noop.us:.1f} µs with "
          f"'pong' ({per_char:.1f} ns per observation character, CPU)")
    # flatness on the least-disturbed run (least CPU time): robust to other processes on the machine
    late = d0_windows[max(d0_windows)][2] / d0_windows[0][2]
    sizes = sorted(deep_windows)
    deep_growth = deep[-1].best_cpu / deep[0].best_cpu
    flat = late < 1.5 and deep_growth < 1.5
    print(f"flat per-step cost: {'YES' if flat else 'NO'} (least CPU time of the runs; depth 0: last/first window "
          f"{late:.2f}x; depth {s.deep_depth}: {sizes[-1]}-node / {sizes[0]}-node tree {deep_growth:.2f}x)")
    if ta_default is not None:
        first_ok = next((t for t, o in turns.items() if o / ours >= TARGET_RATIO), None)
        if ta_default / ours >= TARGET_RATIO:
            verdict = "MET on its registered episodes"
        elif first_ok is not None:
            verdict = (f"NOT MET on its registered 7-turn episodes ({ta_default / ours:.2f}x); MET by turn {first_ok} "
                       "of a long episode (TextArena re-renders its whole history every turn)")
        else:
            verdict = f"NOT MET (best {max([ta_default, *turns.values()]) / ours:.1f}x)"
        print(f"target >= {TARGET_RATIO:.0f}x TextArena observe+step: {verdict}")
    busy = max(r.us / r.cpu for r in (d0, d0w, *deep, sib, eng, noop, page) if r.cpu)
    if busy > 1.25:
        print(f"note: wall clock was up to {busy:.1f}x the CPU time: the machine was busy, rerun for clean numbers")
    for label, ws in (("RaoEnv", d0_warns), ("gymnasium.make", wrap_warns)):
        for w in ws:
            print(f"warning during our {label} loop: {w}")
    print(f"\n(total {time.perf_counter() - t_start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
