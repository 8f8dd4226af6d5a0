"""The Ray backend against the local driver, in one run (issue 18, part 6).

A fake endpoint answers every call after a fixed latency (default 200 ms, ample capacity)
from each task's oracle, so every run does the same work. One local Ray cluster (a head and
a second node, ``LocalCluster``) serves both Ray measurements. Measured:

* trees/s of the local driver, of Ray with every worker on one node, and of Ray with one worker
  on each of two nodes (workers started before the clock starts; start-up time reported apart);
* the per-tree overhead Ray adds: trees run one at a time against an endpoint with no latency,
  so nothing overlaps, (Ray wall − local wall) / trees, target ≤ 5 ms; and, for the batches,
  the extra wall time per tree against the local driver;
* the scheduling efficiency: wall / lower bound, the bound being the critical path (most rounds
  of dependent calls in any tree × latency) or ``calls × latency / concurrency`` if larger;
  target ≤ 1.1×.

    python benchmarks/ray_scaling.py [--latency 0.2] [--seeds 24] [--group 2] [--concurrency 256] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import rao_envs
from rao_envs.distributed import LocalCluster, RayRolloutDriver
from rao_envs.policies import OraclePolicy
from rao_envs.rollout import RolloutDriver

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout_scheduling import rounds_and_calls  # noqa: E402  (one source for the critical path)

ENV, KW = "Toy-v0", {"difficulty": "hard"}


def _oracle():
    return rao_envs.make_engine(ENV, **KW).task.oracle()


class FixedLatencyEndpoint:
    """An async policy answering after exactly ``latency`` seconds (picklable: Ray ships it to workers)."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.oracle = OraclePolicy(_oracle)

    async def __call__(self, messages, info):
        await asyncio.sleep(self.latency)
        return await self.oracle(messages, info)


async def timed(driver, seeds, group) -> tuple[float, list]:
    t0 = time.perf_counter()
    trees = await driver.run(ENV, seeds, group_size=group, env_kwargs=KW)
    wall = time.perf_counter() - t0
    assert all(t.root.score == 1.0 for t in trees), "the oracle should solve every tree"
    return wall, trees


async def one_at_a_time(seeds) -> tuple[float, float]:
    """Walls of the local driver and of one Ray worker (one tree in flight) running ``seeds`` one tree at a time."""
    local = RolloutDriver(FixedLatencyEndpoint(0.0), concurrency=8)
    t0 = time.perf_counter()
    for s in seeds:
        await local.run(ENV, [s], env_kwargs=KW)
    wall_local = time.perf_counter() - t0
    driver = RayRolloutDriver(FixedLatencyEndpoint(0.0), concurrency=8, workers=1, trees_per_worker=1)
    try:
        await driver.run(ENV, [10_000], env_kwargs=KW)  # warm-up
        wall_ray, _ = await timed(driver, seeds, 1)
        handle = next(iter(driver._workers.values())).handle
        t0 = time.perf_counter()
        for _ in range(50):  # the floor: one empty actor call
            await handle.ready.remote()
        rtt = (time.perf_counter() - t0) / 50
    finally:
        driver.close()
    return wall_local, wall_ray, rtt


async def ray_run(latency, seeds, group, concurrency, workers, options) -> tuple[float, float, int, float]:
    """Start the workers (a warm-up batch), then time one batch; returns (wall, start-up s, calls, overhead s/tree)."""
    t0 = time.perf_counter()
    driver = RayRolloutDriver(FixedLatencyEndpoint(latency), concurrency=concurrency, workers=workers,
                              worker_options=options)
    try:
        await driver.run(ENV, [10_000], env_kwargs=KW)  # warm-up: the workers start, the task modules load
        startup = time.perf_counter() - t0
        calls0, over0 = driver.stats.calls, driver.stats.overhead_s
        wall, trees = await timed(driver, seeds, group)
        return wall, startup, driver.stats.calls - calls0, (driver.stats.overhead_s - over0) / len(trees)
    finally:
        driver.close()


def main() -> None:
    """Run the three measurements and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--group", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="a 4-tree smoke run (tests)")
    a = p.parse_args()
    if a.quick:
        a.seeds, a.group, a.latency = 4, 1, 0.02
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    seeds = list(range(a.seeds))
    n = a.seeds * a.group
    rounds, calls_per_group = rounds_and_calls([(ENV, KW, seeds)])
    calls = calls_per_group * a.group
    L = a.latency
    bound = max(rounds * L, calls * L / a.concurrency)

    local_driver = RolloutDriver(FixedLatencyEndpoint(L), concurrency=a.concurrency)
    wall_local, _ = asyncio.run(timed(local_driver, seeds, a.group))
    rows = [("local driver", 1, wall_local, 0.0, local_driver.stats.calls, 0.0)]

    t0 = time.perf_counter()
    with LocalCluster(nodes=2, cpus=2) as cluster:
        cluster_s = time.perf_counter() - t0
        import ray

        ray.init(address=cluster.address, logging_level="ERROR")
        try:
            one = asyncio.run(ray_run(L, seeds, a.group, a.concurrency, 2, {"resources": {"node0": 0.01}}))
            rows.append(("Ray, 2 workers on 1 node", 1, *one))
            two = asyncio.run(ray_run(L, seeds, a.group, a.concurrency, 2, {}))
            rows.append(("Ray, 1 worker on each of 2 nodes", 2, *two))
            seq_local, seq_ray, rtt = asyncio.run(one_at_a_time(seeds))
        finally:
            ray.shutdown()
    leaked = cluster.leaked()

    print(f"\nbatch: {n} trees ({a.seeds} seeds x {a.group} of {ENV} {KW}), {calls} calls, critical path {rounds} rounds; "
          f"latency {L * 1000:.0f} ms per call, concurrency {a.concurrency}; lower bound {bound:.2f} s; "
          f"cluster start {cluster_s:.1f} s\n")
    head = (f"| {'run':<34} | {'nodes':>5} | {'wall s':>7} | {'trees/s':>7} | {'vs local':>8} | "
            f"{'extra wall ms/tree':>18} | {'wall/bound':>10} | {'worker start s':>14} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for name, nodes, wall, start, ncalls, _ in rows:
        assert ncalls == calls, f"{name}: {ncalls} calls, expected {calls}"
        extra = (wall - wall_local) / n * 1000
        print(f"| {name:<34} | {nodes:>5} | {wall:>7.2f} | {n / wall:>7.1f} | {wall_local / wall:>7.2f}x | "
              f"{extra:>18.2f} | {wall / bound:>10.3f} | {start:>14.1f} |")
    worst_over = (seq_ray - seq_local) / len(seeds) * 1000
    print(f"\none tree at a time, no endpoint latency ({len(seeds)} trees): local {seq_local / len(seeds) * 1000:.1f} ms/tree, "
          f"Ray {seq_ray / len(seeds) * 1000:.1f} ms/tree; one empty Ray actor call takes {rtt * 1000:.2f} ms here")
    eff = {r[0]: r[2] / bound for r in rows}
    print(f"\nRay per-tree overhead: {worst_over:.2f} ms (target <= 5 ms); scheduling efficiency (wall / lower bound, "
          f"target <= 1.1): local {eff['local driver']:.3f}, Ray worst {max(list(eff.values())[1:]):.3f}; "
          f"Ray processes left after the run: {len(leaked)}")


if __name__ == "__main__":
    main()
