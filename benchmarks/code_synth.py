"""Code-Synth speed (issue 13, part 6): instance generation and hidden-test scoring.

* Generation: a batch of 128 fresh instances per difficulty (programs, specs, reference
  outputs, checks), as instances per second; target: 128 in < 1 s.
* Scoring one function (its 10 hidden tests against a module of medium programs) in the
  ``local`` sandbox (warm pooled box, a fresh session per scoring, forked and warmed up ahead
  of time: the task's way) against a fresh ``python3 -I`` subprocess per scoring running the
  same harness (the naive way; also ``-I -S``, which skips site-packages), p50/p99 in the same
  run, interleaved; targets: p50 <= 10 ms and >= 10x faster than the ``python3 -I``
  subprocess. The box's work ahead (close the used session, fork and warm up the next) is
  waited for outside the timed spans, so it never overlaps another method's timing; its cost
  is the extra row "including the work ahead" (what a loop of back-to-back scorings pays).

    python benchmarks/code_synth.py [--n 200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import rao_envs  # noqa: F401  (registers the tasks)
from rao_envs.envs.code_synth.program import LEVELS, _build_cached, build_program
from rao_envs.envs.code_synth.runner import HARNESS, CodeRunner, compare


def generation(batch: int, offset: int) -> dict[str, tuple[float, float]]:
    """Wall-clock and CPU seconds to generate ``batch`` fresh instances per difficulty (the cache
    cleared first; on a loaded machine the wall clock is the larger)."""
    out = {}
    for difficulty in LEVELS:
        _build_cached.cache_clear()
        t0, c0 = time.perf_counter(), time.process_time()
        for seed in range(offset, offset + batch):
            build_program(seed, difficulty, "train" if seed % 5 else "val")
        out[difficulty] = (time.perf_counter() - t0, time.process_time() - c0)
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def scoring_jobs(n: int) -> list[tuple[list, list, list]]:
    """``n`` scorings: (module, calls, expected) for one function each, from medium programs."""
    jobs = []
    seed = 0
    while len(jobs) < n:
        p = build_program(10_000 + seed, "medium", "train")
        seed += 1
        module = [(f["name"], f["source"]) for f in p["functions"]]
        for f in p["functions"]:
            jobs.append((module, [(f["name"], a) for a, _ in f["tests"]], [o for _, o in f["tests"]]))
    return jobs[:n]


def subprocess_score(module: list, calls: list, flags: tuple[str, ...] = ("-I",)) -> list:
    """The naive way: a fresh ``python3 -I`` per scoring, same harness, payload on stdin (NOT isolated:
    only ever run on our own reference code, as here)."""
    nonce = "@@naive@@"
    payload = json.dumps({"module": module, "calls": calls, "per_call": 1.0, "total": 6.0, "nonce": nonce})
    code = HARNESS + "\nimport sys\n_cs_main(sys.stdin.read())\n"
    proc = subprocess.run([sys.executable, *flags, "-c", code], input=payload, capture_output=True, text=True, timeout=30)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(nonce))
    return json.loads(line[len(nonce):])["results"]


def main() -> None:
    """Run both measurements and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="scorings per method")
    ap.add_argument("--batch", type=int, default=128, help="instances per generation batch")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = ap.parse_args()
    n, batch = (20, 16) if args.quick else (args.n, args.batch)
    try:
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "?"
    print(f"Code-Synth benchmark: {os.cpu_count()} CPUs, load average {load}\n")

    gen = generation(batch, offset=1_000_000)
    print(f"## Generation ({batch} fresh instances per difficulty)\n")
    print("| difficulty | functions | seconds per batch | CPU seconds | instances/s | target < 1 s per 128 |")
    print("|---|---|---:|---:|---:|---|")
    for difficulty, (secs, cpu) in gen.items():
        lv = LEVELS[difficulty]
        per128 = secs * 128 / batch
        print(f"| {difficulty} | {lv.functions[0]}–{lv.functions[1]} | {secs:.3f} | {cpu:.3f} | {batch / secs:.0f} | "
              f"{'met' if per128 < 1 else 'missed'} ({per128:.2f} s) |")

    jobs = scoring_jobs(n)
    runner = CodeRunner("local")
    runner.run(*jobs[0][:2])  # warm the box
    runner.run(*jobs[1][:2])  # ... and its session forked ahead
    timings: dict[str, list[float]] = {"local": [], "local+ahead": [], "subprocess": [], "subprocess -S": []}
    for module, calls, expected in jobs:
        runner.settle()
        t0 = time.perf_counter()
        res = runner.run(module, calls)
        t1 = time.perf_counter()
        runner.settle()
        timings["local"].append(t1 - t0)
        timings["local+ahead"].append(time.perf_counter() - t0)
        assert all(compare(r, e) for r, e in zip(res, expected)), "the reference failed its tests in the sandbox"
        t0 = time.perf_counter()
        res = subprocess_score(module, calls)
        timings["subprocess"].append(time.perf_counter() - t0)
        assert all(compare(r, e) for r, e in zip(res, expected)), "the reference failed its tests in a subprocess"
        t0 = time.perf_counter()
        subprocess_score(module, calls, ("-I", "-S"))
        timings["subprocess -S"].append(time.perf_counter() - t0)
    fast, batches = runner.stats["fast"], runner.stats["batches"]
    runner.close()
    p50 = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    p99 = {k: _pct(v, 0.99) * 1000 for k, v in timings.items()}
    ratio = p50["subprocess"] / p50["local"]
    print(f"\n## Scoring one function (10 hidden tests, {n} scorings per method, interleaved)\n")
    print("| method | p50 ms | p99 ms | vs subprocess |")
    print("|---|---:|---:|---:|")
    print(f"| local sandbox, warm box, fresh session per scoring (forked ahead) | {p50['local']:.1f} | {p99['local']:.1f} | {ratio:.1f}× |")
    print(f"| ... including the work ahead (close, fork and warm up the next) | {p50['local+ahead']:.1f} | "
          f"{p99['local+ahead']:.1f} | {p50['subprocess'] / p50['local+ahead']:.1f}× |")
    print(f"| fresh `python3 -I` subprocess per scoring (naive) | {p50['subprocess']:.1f} | {p99['subprocess']:.1f} | 1.0× |")
    s_ratio = p50["subprocess"] / p50["subprocess -S"]
    print(f"| fresh `python3 -I -S` subprocess (no site-packages) | {p50['subprocess -S']:.1f} | {p99['subprocess -S']:.1f} | "
          f"{s_ratio:.1f}× |")
    print(f"\ntarget p50 <= 10 ms: {'met' if p50['local'] <= 10 else 'missed'} ({p50['local']:.1f} ms); "
          f"target >= 10x the subprocess: {'met' if ratio >= 10 else 'missed'} ({ratio:.1f}x; "
          f"{p50['subprocess -S'] / p50['local']:.1f}x against `python3 -I -S`); {fast} of {batches} batches ran "
          "the fast way")


if __name__ == "__main__":
    main()
