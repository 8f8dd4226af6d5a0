"""Rendering of episode trees: rich text for the terminal (id, goal, status, steps, score, reward), or an RGB image."""

from __future__ import annotations

import io

from rich.console import Console
from rich.tree import Tree

from rao_envs.errors import ConfigError
from rao_envs.types import EpisodeTree, Node, NodeStatus

STATUS_STYLE = {
    NodeStatus.FINISHED: "green",
    NodeStatus.RUNNING: "cyan",
    NodeStatus.WAITING: "cyan",
    NodeStatus.TRUNCATED: "yellow",
    NodeStatus.CANCELLED: "magenta",
    NodeStatus.REFUSED: "magenta",
    NodeStatus.INFRA_ERROR: "red",
}


def _label(node: Node) -> str:
    goal = node.goal.replace("\n", " ")
    goal = goal if len(goal) <= 70 else goal[:67] + "..."
    score = "-" if node.score is None else f"{node.score:.2f}"
    reward = "-" if node.reward is None else f"{node.reward:.2f}"
    style = STATUS_STYLE.get(node.status, "white")
    return (
        f"[bold]{node.id}[/bold] [{style}]{node.status.value}[/{style}] "
        f"steps {node.steps_used}/{node.budget} score {score} reward {reward}  [dim]{_escape(goal)}[/dim]"
    )


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def build_rich_tree(tree: EpisodeTree, max_nodes: int = 500) -> Tree:
    """A ``rich.tree.Tree`` of the episode (at most ``max_nodes`` nodes shown)."""
    stats = tree.stats()
    top = Tree(
        f"[bold]{tree.env_id}[/bold] seed={tree.seed} nodes={stats['nodes']} "
        f"max_depth={stats['max_depth']} steps={stats['steps']}"
    )
    if not tree.nodes:
        return top
    handles = {}
    for shown, node in enumerate(tree.walk()):
        if shown >= max_nodes:
            top.add(f"[dim]… {len(tree.nodes) - max_nodes} more nodes[/dim]")
            break
        parent = handles.get(node.parent, top)
        handles[node.id] = parent.add(_label(node))
    return top


def render_tree_text(tree: EpisodeTree, width: int = 120, color: bool = False) -> str:
    """The tree as plain (or ANSI-coloured) text."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system="standard" if color else None, force_terminal=color)
    console.print(build_rich_tree(tree))
    return buf.getvalue()


def print_tree(tree: EpisodeTree, console: Console | None = None) -> None:
    """Print the tree to the terminal."""
    (console or Console()).print(build_rich_tree(tree))


#: the render modes every view offers
RENDER_MODES = ["ansi", "human", "rgb_array"]


def render_tree_image(tree: EpisodeTree, width_px: int = 960):
    """The tree's text drawn as an ``(H, W, 3)`` uint8 image (``"rgb_array"``; needs matplotlib).

    What video recorders (Gymnasium's ``RecordVideo``) and SB3's ``make_vec_env``, which asks
    for ``render_mode="rgb_array"``, expect from ``render()``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError('render_mode="rgb_array" draws with matplotlib: pip install matplotlib') from None
    import numpy as np

    lines = render_tree_text(tree).splitlines()[:80] or [""]
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, (14 * len(lines) + 20) / dpi), dpi=dpi, facecolor="white")
    fig.text(0.01, 0.99, "\n".join(line[:140] for line in lines), family="monospace", fontsize=8, va="top")
    canvas = FigureCanvasAgg(fig)  # off-screen: no pyplot, no global backend change
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def render_for_mode(tree: EpisodeTree | None, render_mode: str | None):
    """What a view's ``render()`` returns: text for ``"ansi"``, an RGB array for ``"rgb_array"``; prints for ``"human"``."""
    if tree is None:
        return None
    if render_mode == "ansi":
        return render_tree_text(tree)
    if render_mode == "rgb_array":
        return render_tree_image(tree)
    if render_mode == "human":
        print_tree(tree)
    return None
