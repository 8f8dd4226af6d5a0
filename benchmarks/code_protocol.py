"""Code-mode speed, side by side in one run (issue 12 part 9).

(a) one engine step of a cell in our ``local`` sandbox (bwrap box, warm REPL session): a cell
    that only assigns a variable, and a cell with one tool call (a host round trip);
(b) the same two cells in a Jupyter kernel driven by ``jupyter_client`` + ``ipykernel`` (what
    the reference implementation uses; its "tool" is a function defined in the kernel, so it
    has no host round trip at all: a baseline in Jupyter's favour). Needs the ``bench`` extra;
    the rows are skipped, with a note, when it is missing;
(c) a fresh node REPL: fork a session from the box's template and run its first cell (what a
    newly spawned node costs);
(d) whole-tree overhead: TextCraft-v0 hard with the delegating oracle, code mode vs tool mode
    in the Gym view, node-steps per second.

Ratios are against the baselines measured in the same run. Targets on the project's 2-core
machine: tool-call cell p50 <= 1 ms, new node REPL p50 <= 5 ms, >= 10x faster per cell than
the Jupyter kernel, code mode <= 3x the tool mode's per-step cost.

    python benchmarks/code_protocol.py [--n 300] [--trees 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import gymnasium as gym

from rao_envs.policies.scripted import run_episode
from rao_envs.protocols import CodeOracle
from rao_envs.protocols.code import turn_text
from rao_envs.registration import make_engine

ASSIGN, TOOL = "x = 40 + 2", "y = calc(a=40, op='+', b=2)"


def pct(xs, p):
    """The ``p``-th percentile of ``xs`` (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(fn, n, warm=20):
    """Seconds of each of ``n`` calls of ``fn`` after ``warm`` untimed ones."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def engine_cells(n):
    """(a): engine steps of the two cells on one Toy-v0 node in the local sandbox."""
    eng = make_engine("Toy-v0", protocol="code", max_steps_per_node=100_000)
    eng.reset(seed=0)
    out = {}
    for name, code in (("assign", ASSIGN), ("tool call", TOOL)):
        text = turn_text(code, "bench")

        def step():
            eng.step("0", text)
            eng.commit("0")

        out[name] = timed(step, n)
    if "42" not in eng.observe("0") and "Error" in eng.observe("0"):
        raise RuntimeError(f"the bench cell failed: {eng.observe('0')}")
    runner = eng._runner
    box = runner._box()
    run = "__import__('_rao_repl').run_cell('x = 1', globals(), '{\"context\": null}')"

    def fresh_node():
        s = box.fork()
        s.run(run).raise_for_infra()
        s.close()

    fresh = timed(fresh_node, max(20, n // 5), warm=5)
    eng.close()
    return out, fresh


def jupyter_cells(n):
    """(b): the same cells in an ipykernel driven by jupyter_client (None when not installed)."""
    try:
        from jupyter_client.manager import start_new_kernel
    except ImportError:
        return None
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("def calc(a, op, b):\n    return str(a + b)", timeout=30)
        out = {}
        for name, code in (("assign", ASSIGN), ("tool call", TOOL)):
            out[name] = timed(lambda: kc.execute_interactive(code, timeout=30, output_hook=lambda m: None), n)
        return out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def tree_rate(protocol, trees):
    """(d): node-steps per second of the delegating oracle on TextCraft-v0 hard."""
    kw = {"protocol": "code"} if protocol == "code" else {}
    env = gym.make("rao_envs/TextCraft-v0", difficulty="hard", **kw)
    steps, t0, scores = 0, time.perf_counter(), []
    for seed in range(trees):
        oracle = env.unwrapped.task.oracle()
        tree, _, k = run_episode(env, CodeOracle(oracle) if protocol == "code" else oracle, seed=seed)
        steps += k
        scores.append(tree.root.score)
    wall = time.perf_counter() - t0
    env.close()
    return steps / wall, steps, scores


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="timed cells per row")
    ap.add_argument("--trees", type=int, default=3, help="TextCraft trees per protocol in (d)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    ours, fresh = engine_cells(args.n)
    jup = jupyter_cells(args.n)
    code_rate, code_steps, code_scores = tree_rate("code", args.trees)
    tool_rate, tool_steps, tool_scores = tree_rate("tool", args.trees)
    ms = lambda xs, p: pct(xs, p) * 1e3  # noqa: E731
    rows = []
    print(f"{'what':44s} {'p50 ms':>8s} {'p99 ms':>8s}  vs Jupyter (p50)")
    for name in ("assign", "tool call"):
        vs = f"{statistics.median(jup[name]) / statistics.median(ours[name]):.1f}x faster" if jup else "n/a (no jupyter_client)"
        print(f"{'(a) local sandbox, engine step, ' + name:44s} {ms(ours[name], 50):8.2f} {ms(ours[name], 99):8.2f}  {vs}")
        rows.append({"what": f"local {name}", "p50_ms": ms(ours[name], 50), "p99_ms": ms(ours[name], 99)})
        if jup:
            print(f"{'(b) Jupyter kernel (jupyter_client), ' + name:44s} {ms(jup[name], 50):8.2f} {ms(jup[name], 99):8.2f}  1.0x")
            rows.append({"what": f"jupyter {name}", "p50_ms": ms(jup[name], 50), "p99_ms": ms(jup[name], 99)})
    print(f"{'(c) fresh node REPL (fork + first cell)':44s} {ms(fresh, 50):8.2f} {ms(fresh, 99):8.2f}")
    rows.append({"what": "fresh node REPL", "p50_ms": ms(fresh, 50), "p99_ms": ms(fresh, 99)})
    ratio = tool_rate / code_rate
    print(f"(d) TextCraft-v0 hard, delegating oracle: code {code_rate:.0f} node-steps/s ({code_steps} steps, "
          f"scores {code_scores}), tool {tool_rate:.0f} node-steps/s ({tool_steps} steps, scores {tool_scores}); "
          f"code mode costs {ratio:.1f}x the tool mode per step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "code_steps_per_s": code_rate, "tool_steps_per_s": tool_rate,
                       "code_over_tool": ratio}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
