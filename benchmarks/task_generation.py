"""Instances per second of every task's generator, and DeepSearch with and without a cached index (issue 14, part 7).

For each registered built-in task and difficulty: 128 ``task.make_instance(rng)`` calls in a
warm process (world and index already loaded), and 128 ``env.reset(seed)`` of the Gymnasium
view (instance + root prompt). For DeepSearchSynth-v0 also, each in a fresh process:

* **no cache**: an empty cache directory, so the first instance generates the world and its
  pages, builds the search index and saves both; then 127 more instances;
* **index cached on disk**: the same cache directory again, so the process loads the world
  and opens the index; then 128 instances (target: under 1 s).

    python benchmarks/task_generation.py [--n 128] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def child(difficulty: str, n: int, corpus_size: int | None) -> None:
    """In a fresh process: time import, task construction, the first instance and the rest."""
    t0 = time.perf_counter()
    from rao_envs.envs.deep_search import DeepSearchSynth

    t1 = time.perf_counter()
    kwargs = {} if corpus_size is None else {"corpus_size": corpus_size}
    task = DeepSearchSynth(difficulty, **kwargs)
    t2 = time.perf_counter()
    task.make_instance(np.random.default_rng(0))
    t3 = time.perf_counter()
    for seed in range(1, n):
        task.make_instance(np.random.default_rng(seed))
    t4 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "make": t2 - t1, "first": t3 - t2, "rest": t4 - t3, "size": task.size}))


def fresh(difficulty: str, n: int, cache: str, corpus_size: int | None) -> dict:
    """Run :func:`child` in a new interpreter with ``RAO_ENVS_CACHE=cache``."""
    cmd = [sys.executable, __file__, "--child", difficulty, "--n", str(n)]
    if corpus_size is not None:
        cmd += ["--corpus-size", str(corpus_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RAO_ENVS_CACHE": cache}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm_rates(env_id: str, difficulty: str, n: int, **kwargs) -> tuple[float, float]:
    """(make_instance per second, env.reset per second) in this process, after one warm-up."""
    import gymnasium

    env = gymnasium.make(f"rao_envs/{env_id}", difficulty=difficulty, **kwargs).unwrapped
    env.reset(seed=0)
    task = env.task
    t0 = time.perf_counter()
    for seed in range(n):
        task.make_instance(np.random.default_rng(seed))
    gen = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for seed in range(n):
        env.reset(seed=seed)
    return gen, n / (time.perf_counter() - t0)


def main() -> None:
    """Measure and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="DeepSearch on 1,000-document corpora, fresh processes for easy only (smoke test)")
    ap.add_argument("--corpus-size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.n, args.corpus_size)
    n = args.n
    size = 1000 if args.quick else None

    import rao_envs  # noqa: F401

    print(f"| task | difficulty | instances/s (warm) | env.reset/s (warm) | {n} instances, warm |")
    print("|---|---|---:|---:|---:|")
    from rao_envs.registration import task_spec

    for env_id in ("Toy-v0", "TextCraft-v0", "DeepSearchSynth-v0"):
        cls = task_spec(env_id).load()
        for difficulty in cls.difficulties:
            kwargs = {"corpus_size": size} if (size and env_id.startswith("DeepSearch")) else {}
            gen, reset = warm_rates(env_id, difficulty, n, **kwargs)
            print(f"| {env_id} | {difficulty} | {gen:,.0f} | {reset:,.0f} | {1000 * n / gen:.1f} ms |")

    print(f"\nDeepSearchSynth-v0 in a fresh process ({n} instances; import of rao_envs not counted):\n")
    print(f"| difficulty | documents | no cache: first instance (world + pages + index) | no cache: {n} instances | "
          f"index cached: first instance (load + open) | index cached: {n} instances | target < 1 s |")
    print("|---|---:|---:|---:|---:|---:|---|")
    from rao_envs.envs.deep_search import DeepSearchSynth

    for difficulty in DeepSearchSynth.difficulties[:1] if args.quick else DeepSearchSynth.difficulties:
        with tempfile.TemporaryDirectory(prefix="rao_envs-cache-") as cache:
            cold = fresh(difficulty, n, cache, size)
            warm = fresh(difficulty, n, cache, size)
        cold_total = cold["make"] + cold["first"] + cold["rest"]
        warm_total = warm["make"] + warm["first"] + warm["rest"]
        print(f"| {difficulty} | {cold['size']:,} | {cold['first']:.2f} s | {cold_total:.2f} s | "
              f"{warm['first'] * 1000:.0f} ms | {warm_total:.2f} s | {'met' if warm_total < 1 else 'NOT met'} |")
    print(f"\nmachine: {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
