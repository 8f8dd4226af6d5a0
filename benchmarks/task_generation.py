"""How fast every task generates its instances, and what the long-context and search tasks cost.

Part 1, every registered built-in task (issue 14, part 7): 128 ``task.make_instance(rng)``
calls in a warm process (world and index already loaded), and 128 ``env.reset(seed)`` of the
Gymnasium view (instance + root prompt). For DeepSearchSynth-v0 also, each in a fresh process:

* **no cache**: an empty cache directory, so the first instance generates the world and its
  pages, builds the search index and saves both; then 127 more instances;
* **index cached on disk**: the same cache directory again, so the process loads the world
  and opens the index; then 128 instances (target: under 1 s).

Part 2, Oolong-Synth (issue 15, part 6), one row per measure with its target and, next to
the numbers it explains, a baseline measured in the same run:

* document text generated per second (index draw + rendering the whole text), next to a
  plain Python generator of the same lines (``random.choice`` per field, an f-string per
  line: the baseline) and a bare ``str.join`` of pre-rendered lines (the floor);
* time to build one 1M-character document (index only, and index + full text), and to
  render one 4k-character chunk of a 4M-character document on demand;
* tree JSON size of extreme episodes solved by the delegating oracle, and how much of it is
  document text the nodes read.

    python benchmarks/task_generation.py [--n 128] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import gymnasium
import numpy as np

import rao_envs  # noqa: F401  (registers the tasks)
from rao_envs.envs.oolong_synth import LINE_RE, DocSpec, build_document, corpus
from rao_envs.envs.oolong_synth.document import DAY_PIECES

Row = tuple[str, str, str, str]


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


def _best(fn, repeat: int) -> float:
    """The fastest of ``repeat`` runs of ``fn()``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _naive_document(seed: int, chars: int, label_set: str) -> str:
    """The baseline: the same kind of lines, one ``random.choice`` per field and an f-string per line."""
    rng = random.Random(seed)
    texts = corpus()[label_set].texts.tolist()
    users = [rng.randrange(10_000, 100_000) for _ in range(48)]
    days = DAY_PIECES.tolist()
    out, total = [], 0
    while total < chars:
        line = f"{rng.choice(days)}{rng.choice(users)} || Instance: {rng.choice(texts)}"
        out.append(line)
        total += len(line)
    return "".join(out)


def _fresh_document(seed: int, chars: int, text: bool = True) -> int:
    build_document.cache_clear()
    doc = build_document(DocSpec(seed=seed, chars=chars, label_set="topic"))
    return len(doc.text()) if text else doc.length


def oolong_rows(quick: bool = False) -> list[Row]:
    """Oolong-Synth's rows: generation speed, document build time, chunk render time, extreme tree sizes."""
    repeat = 3 if quick else 7
    big = 1_000_000 if quick else 4_000_000
    rows: list[Row] = []

    t = _best(lambda: _fresh_document(1, big), repeat)
    speed = big / t / 1e6
    rows.append((f"Oolong-Synth: document text generated, {big / 1e6:.0f}M-char documents", f"{speed:,.0f} MB/s", ">= 50 MB/s",
                 "met" if speed >= 50 else "NOT met"))
    t_naive = _best(lambda: _naive_document(1, 1_000_000, "topic"), max(1, repeat // 2))
    rows.append(("  baseline: plain Python, random.choice + f-string per line", f"{1.0 / t_naive:,.1f} MB/s",
                 "", f"ours {speed * t_naive:,.0f}x faster"))
    lines = _naive_document(2, 1_000_000, "topic")
    pieces = [m.group(0) + "\n" for m in LINE_RE.finditer(lines)]
    t_join = _best(lambda: "".join(pieces), repeat)
    rows.append(("  floor: str.join of 1M chars of pre-rendered lines", f"{len(lines) / t_join / 1e6:,.0f} MB/s", "", ""))

    t_index = _best(lambda: _fresh_document(3, 1_000_000, text=False), repeat)
    t_full = _best(lambda: _fresh_document(3, 1_000_000), repeat)
    rows.append(("Oolong-Synth: build one 1M-character document (index + text)", f"{t_full * 1e3:.1f} ms", "< 50 ms",
                 "met" if t_full < 0.05 else "NOT met"))
    rows.append(("  of which the line index (draws, lengths, offsets)", f"{t_index * 1e3:.1f} ms", "", ""))
    build_document.cache_clear()
    doc = build_document(DocSpec(seed=4, chars=4_000_000, label_set="sentiment"))
    offsets = [random.Random(0).randrange(doc.length - 4096) for _ in range(200)]
    t_chunk = _best(lambda: [doc.text(o, o + 4096) for o in offsets], repeat) / len(offsets)
    rows.append(("Oolong-Synth: render one 4k-char chunk of a 4M-char document", f"{t_chunk * 1e6:.0f} µs", "", ""))

    env = gymnasium.make("rao_envs/OolongSynth-v0", difficulty="extreme").unwrapped
    sizes, ratios, text_share, nodes = [], [], [], []
    for seed in range(4 if quick else 20):
        obs, info = env.reset(seed=seed)
        policy = env.task.oracle()
        while True:
            obs, _r, term, trunc, info = env.step(policy(obs, info))
            if term or trunc:
                break
        tree = env.tree
        assert tree.root.score == 1.0, f"oracle failed on extreme seed {seed}"
        sizes.append(len(tree.to_json().encode()))
        ratios.append(tree.instance["data"]["ratio"])
        text_share.append(env.task.document(env.engine.instance).length / sizes[-1])
        nodes.append(len(tree.nodes))
    worst = max(range(len(sizes)), key=sizes.__getitem__)
    rows.append((f"Oolong-Synth: extreme tree JSON, delegating oracle ({len(sizes)} seeds), mean / max",
                 f"{statistics.mean(sizes) / 1e6:.2f} / {sizes[worst] / 1e6:.2f} MB", "< 1 MB",
                 "met" if sizes[worst] < 1e6 else f"mean met; max {sizes[worst] / 2**20:.2f} MiB"))
    rows.append(("  the largest: document / budget, nodes, document text in its JSON",
                 f"{ratios[worst]:.0f}x, {nodes[worst]} nodes, {100 * text_share[worst]:.0f}%", "", ""))
    return rows


def print_rows(rows: list[Row]) -> None:
    """The Oolong-Synth rows as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Oolong-Synth generation")
    for col in ("measure", "value", "target", "met"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for r in rows:
        table.add_row(*r)
    Console(width=160).print(table)


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

    print(f"| task | difficulty | instances/s (warm) | env.reset/s (warm) | {n} instances, warm |")
    print("|---|---|---:|---:|---:|")
    from rao_envs.registration import task_spec

    for env_id in ("Toy-v0", "TextCraft-v0", "OolongSynth-v0", "DeepSearchSynth-v0"):
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
    print(f"\nmachine: {os.cpu_count()} CPUs\n")
    print_rows(oolong_rows(quick=args.quick))


if __name__ == "__main__":
    main()
