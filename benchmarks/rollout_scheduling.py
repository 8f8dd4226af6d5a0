"""How well the async rollout driver schedules wide and deep trees (issue 5, part 6).

A fake endpoint answers every call after a fixed latency (default 200 ms) and serves at most
``capacity`` calls at once (more wait in its queue, like a saturated vLLM). The batch mixes
deep Toy-v0 trees (hard) with a wide TextCraft-v0 tree (hard: 18 nodes, 4 levels). The
answers come from each task's oracle, so every run does the same work. Measured, in one run:

* the driver at ample capacity, against the critical-path lower bound (the most rounds of
  dependent calls in any tree × latency); target wall ≤ 1.1 × bound;
* the driver when the endpoint is the bottleneck, against ``calls × latency / capacity``;
  target ≥ 95 % of the endpoint's capacity used;
* a sequential driver (one call at a time), for scale.

    python benchmarks/rollout_scheduling.py [--latency 0.2] [--capacity 4]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import rao_envs
from rao_envs.policies import OraclePolicy
from rao_envs.rollout import RolloutDriver

BATCH = [("Toy-v0", {"difficulty": "hard"}, list(range(6))), ("TextCraft-v0", {"difficulty": "hard"}, [1])]


class FakeEndpoint:
    """An async policy with a fixed per-call latency and a capacity (calls served at once)."""

    def __init__(self, latency: float, capacity: int) -> None:
        self.latency, self.sem = latency, asyncio.Semaphore(capacity)
        self.oracles = {env: OraclePolicy(lambda e=env, k=kw: rao_envs.make_engine(e, **k).task.oracle()) for env, kw, _ in BATCH}
        self.calls = 0

    async def __call__(self, messages, info):
        async with self.sem:  # a slot is busy for exactly the latency
            await asyncio.sleep(self.latency)
            self.calls += 1
        return await self.oracles[info["env_id"]](messages, info)


def rounds_and_calls(batch: list | None = None) -> tuple[int, int]:
    """Critical path (most rounds of any tree) and total calls of ``batch`` (default :data:`BATCH`), from the engine."""
    from rao_envs.rollout import run_sync

    worst = calls = 0
    for env, kw, seeds in batch or BATCH:
        for s in seeds:
            eng = rao_envs.make_engine(env, **kw)
            count = {"rounds": 0}
            runnable = eng.runnable

            def counting():
                ids = runnable()
                count["rounds"] += 1
                return ids

            eng.runnable = counting  # type: ignore[method-assign]
            tree = run_sync(eng, eng.task.oracle(), seed=s)
            worst, calls = max(worst, count["rounds"]), calls + tree.clock
    return worst, calls


async def run_batch(latency: float, capacity: int, concurrency: int) -> tuple[float, int]:
    endpoint = FakeEndpoint(latency, capacity)
    driver = RolloutDriver(endpoint, concurrency=concurrency)
    t0 = time.perf_counter()
    trees = await asyncio.gather(*(driver.run(env, seeds, env_kwargs=kw) for env, kw, seeds in BATCH))
    wall = time.perf_counter() - t0
    assert all(t.root.score == 1.0 for batch in trees for t in batch), "the oracle should solve every tree"
    return wall, endpoint.calls


def main() -> None:
    """Run the three measurements and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--capacity", type=int, default=2, help="endpoint capacity in the bottleneck case")
    a = p.parse_args()
    rounds, calls = rounds_and_calls()
    L = a.latency
    rows = []
    wall, n = asyncio.run(run_batch(L, 10_000, 256))
    bound = rounds * L
    rows.append(("driver, ample capacity", n, wall, bound, "critical path", wall / bound, n * L / wall))
    wall_b, n_b = asyncio.run(run_batch(L, a.capacity, 64))
    bound_b = max(n_b * L / a.capacity, bound)
    rows.append((f"driver, endpoint capacity {a.capacity}", n_b, wall_b, bound_b, "calls×L/capacity", wall_b / bound_b,
                 n_b * L / wall_b))
    wall_s, n_s = asyncio.run(run_batch(L, 10_000, 1))
    rows.append(("sequential driver", n_s, wall_s, bound, "critical path", wall_s / bound, n_s * L / wall_s))
    trees = sum(len(s) for _, _, s in BATCH)
    print(f"\nbatch: {trees} trees ({', '.join(f'{len(s)}x {e} {kw}' for e, kw, s in BATCH)}), {calls} calls, "
          f"critical path {rounds} rounds; latency {L * 1000:.0f} ms per call\n")
    head = f"| {'run':<30} | {'calls':>5} | {'wall s':>7} | {'lower bound s':>13} | {'bound':<16} | {'wall/bound':>10} | {'busy slots':>10} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for name, n, w, b, kind, ratio, busy in rows:
        print(f"| {name:<30} | {n:>5} | {w:>7.2f} | {b:>13.2f} | {kind:<16} | {ratio:>10.3f} | {busy:>10.2f} |")
    util = rows[1][6] / a.capacity
    print(f"\nample capacity: wall = {rows[0][5]:.3f} x critical path (target <= 1.1); "
          f"bottleneck: {100 * util:.1f}% of the endpoint's capacity used (target >= 95%); "
          f"speed-up over sequential: {wall_s / wall:.1f}x")


if __name__ == "__main__":
    main()
