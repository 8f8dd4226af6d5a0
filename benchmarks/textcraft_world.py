"""TextCraft-Synth's world and task sets next to the reference's statistics (spec ``textcraft_synth_reference.md`` §2, §3).

Prints, per tier label, our items, ingredients per recipe and work per target (distinct crafts,
min / median / max) beside the spec's figures for the authors' generator, the label/depth
mismatches, the task-set sizes, and both digests (ours and the spec's).

    python benchmarks/textcraft_world.py
"""

from __future__ import annotations

import statistics
from collections import Counter

from rao_envs.envs.textcraft import LABEL_DEPTH_MISMATCH, TextCraftSynth, get_world
from rao_envs.envs.textcraft.task_sets import task_set_digest, task_sets

#: spec §2: tier -> (items, mean ingredients, crafts min, median, max)
SPEC = {
    1: (125, 1.0, 1, 1, 1), 2: (125, 1.984, 1, 2, 3), 3: (120, 2.492, 3, 5, 10), 4: (120, 2.525, 4, 10, 19),
    5: (120, 2.542, 7, 19, 38), 6: (115, 2.939, 15, 34, 65), 7: (115, 3.009, 26, 53, 84), 8: (115, 4.017, 33, 90, 115),
    9: (110, 4.064, 77, 120, 141), 10: (114, 4.053, 92, 148.5, 168), 11: (114, 3.982, 135, 173, 267),
    12: (109, 4.945, 174, 201, 549),
}
SPEC_WORLD_DIGEST = "01017108c14650481516674de7f323e5653bc4f38cc530bdcd2f241922d0f673"
SPEC_TASK_DIGEST = "96770b2a55d2c9c545ecfe6bfee8208baacdfc1be9b62958bd06e95caef93cce"


def main() -> None:
    """Print the tables."""
    from rich.console import Console
    from rich.table import Table

    w = get_world()
    table = Table(title=f"World: {len(w.tier)} items, {len(w.recipes)} recipes (spec: 1,452 / 1,402)")
    for col in ("tier", "items (spec)", "mean ingredients (spec)", "crafts min/median/max", "spec", "depth < label (spec)"):
        table.add_column(col, justify="right")
    shallow = Counter(w.tier[i] for i in w.recipes if w.depth(i) < w.tier[i])
    for t in range(1, 13):
        items = w.by_tier[t]
        crafts = [len(w.closure([i])) for i in items]
        mean_ing = statistics.mean(len(w.recipes[i].ingredients) for i in items)
        s = SPEC[t]
        table.add_row(str(t), f"{len(items)} ({s[0]})", f"{mean_ing:.3f} ({s[1]})",
                      f"{min(crafts)} / {statistics.median(crafts):g} / {max(crafts)}", f"{s[2]} / {s[3]:g} / {s[4]}",
                      f"{shallow.get(t, 0)} ({LABEL_DEPTH_MISMATCH.get(t, 0)})")
    console = Console(width=160)
    console.print(table)
    sets = task_sets()
    sizes = {s: Counter(t.difficulty for t in sets[s]) for s in sets}
    console.print(f"task sets: train {len(sets['train'])} {dict(sizes['train'])}; val {len(sets['val'])} {dict(sizes['val'])} "
                  "(spec: 2,522 / 632; val 147 / 213 / 136 / 136)")
    first = Counter(t.difficulty for t in TextCraftSynth.tasks("val")[:100])
    console.print(f"first 100 val tasks: {dict(first)} (spec: 28 / 32 / 19 / 21)")
    console.print(f"world digest ours {w.canonical_digest()[:16]}..., spec {SPEC_WORLD_DIGEST[:16]}...")
    console.print(f"task-set digest ours {task_set_digest(sets)[:16]}..., spec {SPEC_TASK_DIGEST[:16]}...")


if __name__ == "__main__":
    main()
