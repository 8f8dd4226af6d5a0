"""How fast tasks generate their instances, and how big their trees get.

One function per task returns its rows (``oolong_rows`` for Oolong-Synth, issue 15 part 6);
``main`` prints them as one table. Each row: what is measured, the value, the target, and
whether it is met; a baseline measured in the same run sits next to the numbers it explains.

Oolong-Synth:

* document text generated per second (index draw + rendering the whole text), next to a
  plain Python generator of the same lines (``random.choice`` per field, an f-string per
  line: the baseline) and a bare ``str.join`` of pre-rendered lines (the floor);
* time to build one 1M-character document (index only, and index + full text), and to
  render one 4k-character chunk of a 4M-character document on demand;
* tree JSON size of extreme episodes solved by the delegating oracle, and how much of it is
  document text the nodes read.

    python benchmarks/task_generation.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import gymnasium

import rao_envs  # noqa: F401  (registers the tasks)
from rao_envs.envs.oolong_synth import LINE_RE, DocSpec, build_document, corpus
from rao_envs.envs.oolong_synth.document import DAY_PIECES

Row = tuple[str, str, str, str]


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


def main() -> None:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller documents, fewer runs and seeds (smoke test)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = oolong_rows(quick=args.quick)
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Task generation")
        for col in ("measure", "value", "target", "met"):
            table.add_column(col, justify="left" if col == "measure" else "right")
        for r in rows:
            table.add_row(*r)
        Console(width=160).print(table)
    except ImportError:  # pragma: no cover - rich is a dependency, plain text as a fallback
        for r in rows:
            print(" | ".join(r))
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
