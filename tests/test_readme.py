"""The README's Python tour runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "0.0 1" in out  # the tour's delegate call hands the turn to child 0.0 at depth 1


def test_readme_shows_the_two_commands_first():
    text = README.read_text()
    assert text.index("make demo") < text.index("make test") < text.index("30-second tour")


def test_tour_delegates_an_item_of_the_shown_seeds_task():
    """The tour's delegate names an item the seed-0 task really needs (an ingredient of its target, at any depth)."""
    import gymnasium as gym
    import rao_envs  # noqa: F401
    from rao_envs.envs.textcraft import get_world

    tour = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    make = re.search(r'gym\.make\("rao_envs/TextCraft-v0", (.*?)\)\n', tour).group(1)
    seed = int(re.search(r"env\.reset\(seed=(\d+)\)", tour).group(1))
    delegated = re.search(r'\\"targets\\": \{\\"(\w+)\\"|"targets": \{"(\w+)"', tour)
    item = next(g for g in delegated.groups() if g)
    env = gym.make("rao_envs/TextCraft-v0", **eval(f"dict({make})"))
    _, info = env.reset(seed=seed)
    world, needed, todo = get_world(), set(), list(info["node_args"]["targets"])
    while todo:
        cur = todo.pop()
        recipe = world.recipes.get(cur)
        for ing, _ in (recipe.ingredients if recipe else ()):
            if ing not in needed:
                needed.add(ing)
                todo.append(ing)
    assert item in needed, f"the tour delegates {item}, which seed {seed}'s task does not need"
