"""The ``rao-envs`` command line: list, play, solve, check, render, new-task, rollout, view, demos.

    rao-envs list
    rao-envs play TASK-v0 --seed 3                 # a person plays a whole tree
    rao-envs solve TASK-v0 --policy oracle --out tree.json
    rao-envs render tree.json
    rao-envs check TASK-v0                         # the conformance suite
    rao-envs new-task MyTask --dir .               # a new task file from the template
    rao-envs rollout TASK-v0 --base-url http://localhost:8000/v1 --model NAME -n 64 --group-size 8 --out trees.jsonl
    rao-envs view trees.jsonl --out trees.html     # a self-contained HTML tree viewer
    rao-envs demos TASK-v0 -n 64 --out demos.parquet   # oracle trees as chat SFT rows (TRL's SFTTrainer)
    rao-envs sandbox-build-image                   # offline image for the docker sandbox
    rao-envs verl-dataset TASK-v0 --difficulty medium -n 1024 --out train.parquet   # verl RLHFDataset rows
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tyro

Positional = tyro.conf.Positional


def _kwargs(pairs: list[str]) -> dict:
    """``["difficulty=hard", "max_depth=8"]`` → ``{"difficulty": "hard", "max_depth": 8}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--kw expects KEY=VALUE pairs, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _load(targets: list[str]) -> None:
    """Import task files or modules so that their ``register_task`` calls run."""
    import importlib
    import importlib.util

    for target in targets:
        path = Path(target)
        if path.suffix == ".py" and path.exists():
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(target)


@dataclass
class List:
    """List every registered task (built-in and from plugins) with its difficulties."""

    load: list[str] = field(default_factory=list)
    """Task files or modules to import first."""

    def run(self) -> int:
        from rich.console import Console
        from rich.table import Table

        import rao_envs

        _load(self.load)
        table = Table(title="rao_envs tasks")
        for col in ("id", "gymnasium ids (views)", "difficulties", "state scope", "source"):
            table.add_column(col)
        for tid in rao_envs.task_ids():
            spec = rao_envs.task_spec(tid)
            cls = spec.load()
            views = "\n".join(f"{gym_id} ({view})" for view, gym_id in spec.views.items())
            table.add_row(tid, views, ", ".join(cls.difficulties), cls.state_scope.value, spec.source)
        Console(width=140).print(table)
        return 0


@dataclass
class Check:
    """Run the conformance suite on one task id."""

    env_id: Positional[str]
    quick: bool = False
    """Fewer seeds, cycles and fuzz strings."""
    load: list[str] = field(default_factory=list)
    """Task files or modules to import first (e.g. my_task.py)."""
    kw: list[str] = field(default_factory=list)
    """Extra make() kwargs as KEY=VALUE."""

    def run(self) -> int:
        from rich.console import Console

        from rao_envs.testing import run_conformance

        _load(self.load)
        console = Console()

        def show(result):
            name, ok, msg, secs = result
            mark = "[green]PASS[/green]" if ok else "[red]FAIL[/red]"
            console.print(f"{mark} {name} ({secs:.1f}s){'' if ok and msg == 'ok' else ': ' + msg}")

        report = run_conformance(self.env_id, quick=self.quick, on_result=show, **_kwargs(self.kw))
        console.print(f"{report.env_id}: {'all checks passed' if report.ok else 'FAILED'}")
        return 0 if report.ok else 1


@dataclass
class Solve:
    """Run a scripted policy on one episode, print the tree, optionally save it as JSON."""

    env_id: Positional[str]
    seed: int = 0
    policy: Literal["oracle", "flat", "random"] = "oracle"
    """oracle: the task's oracle; flat: oracle(delegate=False); random: random tool calls."""
    out: Path | None = None
    kw: list[str] = field(default_factory=list)
    """Extra make() kwargs as KEY=VALUE, e.g. difficulty=hard max_depth=8."""
    load: list[str] = field(default_factory=list)
    protocol: Literal["tool", "code"] = "tool"
    """tool: JSON tool calls; code: the paper's <python> cells in a sandboxed REPL per node."""

    def run(self) -> int:
        import gymnasium

        import rao_envs
        from rao_envs.policies import RandomPolicy, run_episode
        from rao_envs.render import print_tree

        _load(self.load)
        env = gymnasium.make(f"rao_envs/{rao_envs.task_spec(self.env_id).id}", **_protocol_kw(self.protocol, self.kw))
        task = env.unwrapped.task
        if self.policy == "random":
            policy = RandomPolicy(task, seed=self.seed)
        else:
            policy = task.oracle(**({"delegate": False} if self.policy == "flat" else {}))
        if self.protocol == "code":
            from rao_envs.protocols import CodeOracle

            policy = CodeOracle(policy)  # the same policy, each action written as a cell
        tree, total, steps = run_episode(env, policy, seed=self.seed)
        env.close()
        print_tree(tree)
        print(f"root score {tree.root.score}  total reward {total:.2f}  node-steps {steps}")
        if self.out:
            self.out.write_text(tree.to_json())
            print(f"saved {self.out}")
        return 0


@dataclass
class Render:
    """Render a saved tree (JSON, or one line of a JSONL file) in the terminal."""

    path: Positional[Path]
    index: int = 0
    """Which tree of a JSONL file."""

    def run(self) -> int:
        from rao_envs.render import print_tree
        from rao_envs.types import EpisodeTree

        text = self.path.read_text()
        if self.path.suffix == ".jsonl":
            lines = [ln for ln in text.splitlines() if ln.strip()]
            if not 0 <= self.index < len(lines):
                raise SystemExit(f"{self.path} holds {len(lines)} trees; --index must be in 0..{len(lines) - 1}")
            text = lines[self.index]
        print_tree(EpisodeTree.from_json(text))
        return 0


@dataclass
class Play:
    """Play a whole tree yourself: act for any node that can act, switch between nodes (`:help` inside)."""

    env_id: Positional[str]
    seed: int = 0
    save: Path | None = None
    """Write the finished tree here as JSON."""
    kw: list[str] = field(default_factory=list)
    load: list[str] = field(default_factory=list)
    protocol: Literal["tool", "code"] = "tool"
    """code: type one line of Python per turn (statements separated by ;), run in the node's REPL."""

    def run(self) -> int:
        from rich.console import Console
        from rich.panel import Panel
        from rich.text import Text

        import rao_envs
        from rao_envs.render import print_tree

        _load(self.load)
        console = Console()
        engine = rao_envs.make_engine(self.env_id, **_protocol_kw(self.protocol, self.kw))
        engine.reset(self.seed)
        code = self.protocol == "code"
        console.print(Panel(Text(engine.system_prompt), title="system prompt (every node)"))
        current = engine.selection
        while not engine.done:
            if current not in engine.runnable():
                current = engine.selection
            node = engine.tree.nodes[current]
            title = f"node {current} (depth {node.depth}) | runnable: {', '.join(engine.runnable())}"
            engine.commit(current)  # shown to the player: it joins the node's transcript
            console.print(Panel(Text(engine.observe(current)), title=Text(title)))
            try:
                line = input(f"{current}> ").strip()
            except EOFError:
                console.print("input closed; stopping")
                break
            if not line:
                continue
            if line.startswith(":"):
                cmd, _, arg = line[1:].partition(" ")
                if cmd in ("q", "quit"):
                    break
                if cmd == "nodes":
                    for nid, n in engine.tree.nodes.items():
                        console.print(Text(f"{nid}: {n.status.value} steps {n.steps_used}/{n.budget} {n.goal[:60]}"))
                elif cmd == "switch":
                    if arg.strip() in engine.runnable():
                        current = arg.strip()
                    else:
                        console.print(Text(f"node {arg!r} cannot act now; runnable: {engine.runnable()}", style="red"))
                elif cmd == "tree":
                    print_tree(engine.tree, console)
                elif cmd == "history":
                    for m in node.transcript[1:]:
                        console.print(Text(f"{m['role']}: ", style="bold") + Text(m["content"]))
                else:
                    console.print(Text(PLAY_HELP))
                continue
            acted = current
            action = (line if "<python>" in line else f"<python>\n{line}\n</python>") if code else _shorthand(line)
            if current == engine.selection:
                engine.act(action)  # the engine passes the turn on in its fair order
            else:
                engine.step(current, action)  # the player switched to another node
            _report(engine, acted, console)
            # the node acted for stays on screen (its tool's result) until it finishes or waits
            current = acted if acted in engine.runnable() else (engine.selection or "0")
        engine.close()
        print_tree(engine.tree, console)
        console.print(f"root: {engine.tree.root.status.value}, score {engine.tree.root.score}")
        if self.save:
            self.save.write_text(engine.tree.to_json())
            console.print(f"saved {self.save}")
        return 0


PLAY_HELP = """\
Act for the node shown: a tool call, either the short form  NAME {json args}
  e.g.  finish {"result": "42"}
or one or more <tool>{"name": ..., "args": {...}}</tool> blocks on one line. Several
delegate calls in one turn open those children in parallel:
  <tool>{"name": "delegate", "args": {"goal": "part A", ...}}</tool><tool>{"name": "delegate", "args": {"goal": "part B", ...}}</tool>
(the system prompt lists each task's delegate arguments). The node waits for its children;
each child is a node you play in turn, and its result comes back to the parent.
With --protocol code, type one line of Python per turn (statements separated by ;), e.g.
  r = await launch_subagent("part A", ...); print(r)
and in parallel:  a, b = await asyncio.gather(launch_subagent("A", ...), launch_subagent("B", ...))
After you act, the node stays on screen until it finishes or waits; then play moves on.
Commands: :nodes (every node and its status)  :switch ID (act for another runnable node)
          :tree  :history (this node's messages)  :help  :quit"""


def _report(engine, node_id: str, console) -> None:
    """Tell the player what became of the node they acted for, when it finished or now waits."""
    from rich.text import Text

    node = engine.tree.nodes[node_id]
    if node.status.ended:
        result = "" if node.result is None else f" result {json.dumps(node.result)[:200]}"
        console.print(Text(f"node {node_id} ended: {node.status.value}, score {node.score}{result}", style="bold green"))
    elif node.status.value == "waiting":
        open_ = [c for c in node.children if not engine.tree.nodes[c].status.ended]
        console.print(Text(f"node {node_id} waits for its children {', '.join(open_)}", style="bold"))


def _protocol_kw(protocol: str, kw: list[str]) -> dict[str, Any]:
    """The make() kwargs of ``--kw`` items, with ``protocol`` when it is not the default."""
    out = _kwargs(kw)
    if protocol != "tool":
        out["protocol"] = protocol
    return out


def _shorthand(line: str) -> str:
    """``NAME {"a": 1}`` → ``<tool>{"name": "NAME", "args": {"a": 1}}</tool>``; else unchanged."""
    from rao_envs.types import Action

    m = re.fullmatch(r"([A-Za-z_]\w*)\s*(\{.*\})?", line, re.S)
    if m and "<" not in line:
        try:
            args = json.loads(m.group(2) or "{}")
        except ValueError:
            return line  # not JSON: the engine's parser explains what it expected
        return Action(name=m.group(1), args=args).to_text()
    return line


@dataclass
class NewTask:
    """Write a new task file from the template (then edit its four parts)."""

    name: Positional[str]
    """CamelCase task name, e.g. SortNumbers (the id becomes SortNumbers-v0)."""
    dir: Path = Path(".")
    force: bool = False

    def run(self) -> int:
        from importlib.resources import files

        if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", self.name):
            raise SystemExit(f"task name must be CamelCase letters/digits starting with a capital, got {self.name!r}")
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower()
        target = self.dir / f"{snake}.py"
        if target.exists() and not self.force:
            raise SystemExit(f"{target} exists; pass --force to overwrite")
        text = (files("rao_envs.envs") / "_template.py").read_text()
        text = text.replace("TemplateTask", f"{self.name}Task").replace("TemplateOracle", f"{self.name}Oracle")
        text = text.replace('name = "Template"', f'name = "{self.name}"').replace("Template-v0", f"{self.name}-v0")
        self.dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target}; check it with: rao-envs check {self.name}-v0 --load {target}")
        return 0


@dataclass
class SandboxBuildImage:
    """Build the offline container image for the 'docker' sandbox backend (Podman or Docker)."""

    tag: str = "localhost/rao-envs-sandbox:latest"
    """Image tag (the docker backend's default; or set RAO_SANDBOX_IMAGE)."""
    python: str = "/usr/bin/python3"
    """Host interpreter to package (binary, stdlib and the libraries ldd lists)."""
    engine: Literal["auto", "podman", "docker", "sdk"] = "auto"

    def run(self) -> int:
        from rao_envs.sandboxes.image import main as build_main

        return build_main(["--tag", self.tag, "--python", self.python]
                          + ([] if self.engine == "auto" else ["--engine", self.engine]))


@dataclass
class Rollout:
    """Run trees against an OpenAI-compatible endpoint (or a scripted oracle); save them as JSONL.

    -n tasks (seeds seed-start, seed-start+1, ...), each sampled --group-size times.
    """

    env_id: Positional[str]
    base_url: str = "http://127.0.0.1:8000/v1"
    """Endpoint root, e.g. http://localhost:8000/v1 (vLLM, SGLang, llama.cpp server, Ollama); several
    comma-separated roots of one model are balanced, a dead one taken out and retried later."""
    model: str = "default"
    n: Annotated[int, tyro.conf.arg(aliases=("-n",))] = 8
    """Number of tasks (seeds)."""
    group_size: int = 8
    """Trees per task (G of the leave-one-out baseline)."""
    seed_start: int = 0
    concurrency: int = 32
    """Requests in flight, shared fairly by all trees."""
    temperature: float = 1.0
    top_p: float | None = None
    max_tokens: int = 512
    timeout: float = 120.0
    """Seconds per request before it is retried."""
    retries: int = 4
    api_key: str | None = None
    """Bearer token (default: $OPENAI_API_KEY if set)."""
    extra_body: str = ""
    """JSON merged into every request body, e.g. '{"return_token_ids": true}' for vLLM."""
    policy: Literal["endpoint", "oracle", "flat"] = "endpoint"
    """endpoint: the model at --base-url; oracle/flat: the task's scripted oracle in process (no server)."""
    policy_version: int | None = None
    out: Path = Path("trees.jsonl")
    progress: bool = True
    max_infra_frac: float = 0.25
    """Exit with status 1 when more than this fraction of nodes ended in infra_error (the trees are saved anyway)."""
    kw: list[str] = field(default_factory=list)
    """Extra make() kwargs as KEY=VALUE, e.g. difficulty=hard lam=0.4."""
    load: list[str] = field(default_factory=list)
    protocol: Literal["tool", "code"] = "tool"
    """tool: JSON tool calls; code: the paper's <python> cells in a sandboxed REPL per node."""
    ray: str | None = None
    """Run the trees on the Ray cluster at this address (auto, or HOST:PORT) instead of in this process."""
    ray_workers: int | None = None
    """Ray rollout workers (default: one per alive node)."""

    def run(self) -> int:
        """Run the batch, save the JSONL, print a one-line summary; non-zero exit when too many requests failed."""
        import asyncio
        import os

        import rao_envs
        from rao_envs.policies import OpenAIPolicy, OraclePolicy
        from rao_envs.rollout import RolloutDriver
        from rao_envs.types import save_trees

        _load(self.load)
        kw = _protocol_kw(self.protocol, self.kw)
        env_id = rao_envs.task_spec(self.env_id).id
        if self.policy == "endpoint":
            try:
                extra = json.loads(self.extra_body) if self.extra_body else None
            except ValueError as exc:
                raise SystemExit(f"--extra-body must be a JSON object: {exc}") from None
            policy = OpenAIPolicy(
                self.base_url, self.model, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                timeout=self.timeout, retries=self.retries, extra_body=extra,
                api_key=self.api_key or os.environ.get("OPENAI_API_KEY"),
            )
            if "," in self.base_url:  # several endpoints of one model: balanced, a dead one taken out
                from rao_envs.distributed.endpoints import BalancedPolicy

                policy = BalancedPolicy.from_policy(policy, self.base_url)
        else:
            task = rao_envs.make_engine(env_id, **kw).task
            flat = self.policy == "flat"
            if self.protocol == "code":
                from rao_envs.protocols import CodeOracle

                policy = OraclePolicy(lambda: CodeOracle(task.oracle(delegate=False) if flat else task.oracle()))
            else:
                policy = OraclePolicy(lambda: task.oracle(delegate=False) if flat else task.oracle())
        seeds = range(self.seed_start, self.seed_start + self.n)
        if self.ray is not None:
            from rao_envs.distributed.driver import RayRolloutDriver

            driver = RayRolloutDriver(policy, address=self.ray, workers=self.ray_workers, concurrency=self.concurrency,
                                      policy_version=self.policy_version, progress=self.progress)

            async def go():
                try:
                    return await driver.run(env_id, seeds, group_size=self.group_size, env_kwargs=kw)
                finally:
                    driver.close()

            trees = asyncio.run(go())
        else:
            driver = RolloutDriver(policy, concurrency=self.concurrency, policy_version=self.policy_version,
                                   progress=self.progress)
            trees = asyncio.run(driver.run(env_id, seeds, group_size=self.group_size, env_kwargs=kw))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        save_trees(trees, str(self.out))
        st = driver.stats
        solved = sum(1 for t in trees if t.root.score == 1.0)
        print(
            f"{len(trees)} trees ({st.nodes} nodes, {st.calls} calls, {st.infra_errors} infra errors) in {st.wall_s:.1f}s; "
            f"{solved} roots solved; saved {self.out}"
        )
        if self.ray is not None:
            print(f"ray: {st.workers_started} workers started, {st.workers_lost} lost; {st.retried} trees re-run, "
                  f"{st.failed} failed")
        return _infra_verdict(st.infra_errors, st.nodes, self.max_infra_frac, st.errors)


def _infra_verdict(infra: int, nodes: int, max_frac: float, errors: list[str]) -> int:
    """0, or 1 with a message on stderr when every node, or more than ``max_frac`` of them, hit an infra error."""
    if not nodes or infra <= max_frac * nodes and infra < nodes:
        return 0
    what = "every request failed" if infra >= nodes else f"{infra} of {nodes} nodes ({infra / nodes:.0%}) ended in infra_error"
    first = f"; first error: {errors[0]}" if errors else ""
    print(f"rao-envs rollout: {what}, over --max-infra-frac {max_frac:g}{first}. Check --base-url and --model "
          "(is the server up?); the trees were saved.", file=sys.stderr)
    return 1


@dataclass
class View:
    """Write a self-contained HTML page showing saved trees (expand nodes, read transcripts)."""

    path: Positional[Path]
    """A JSONL file of trees (rao-envs rollout --out) or one tree's JSON."""
    out: Path = Path("trees.html")
    method: str = "rao"
    """Credit method for the advantage column: rao, root, depth_grpo, sibling."""
    lam: float | None = None
    """λ of the local reward (default: each tree's own)."""

    def run(self) -> int:
        """Load the trees, assign credit over them, write the page."""
        from rao_envs.credit import assign_credit
        from rao_envs.types import EpisodeTree, load_trees
        from rao_envs.viewer import write_html

        if not self.path.exists():
            raise SystemExit(f"{self.path} does not exist; write trees with `rao-envs rollout ... --out {self.path}`")
        if self.path.suffix == ".jsonl":
            trees = load_trees(str(self.path))
        else:
            trees = [EpisodeTree.from_json(self.path.read_text())]
        credit = assign_credit(trees, self.method, lam=self.lam, drop_no_signal=False) if trees else None
        write_html(trees, str(self.out), credit=credit, title=f"rao_envs: {self.path.name}")
        print(f"wrote {self.out} ({len(trees)} trees, {sum(len(t.nodes) for t in trees)} nodes)")
        return 0


@dataclass
class Demos:
    """Write the task oracle's trees as chat SFT rows (one per node; its own assistant turns are the targets).

    -n tasks (seeds seed-start, ...). TRL's SFTTrainer reads the Parquet file as is:
    SFTTrainer(model, args=SFTConfig(assistant_only_loss=True), train_dataset=Dataset.from_parquet(OUT)).
    """

    env_id: Positional[str]
    n: Annotated[int, tyro.conf.arg(aliases=("-n",))] = 64
    """Number of tasks (seeds), one oracle tree each."""
    out: Path = Path("demos.parquet")
    seed_start: int = 0
    protocol: str = "tool"
    """Action protocol the demonstrations are written in (rao_envs.protocols.PROTOCOLS)."""
    kw: list[str] = field(default_factory=list)
    """Extra make() kwargs as KEY=VALUE, e.g. difficulty=easy max_depth=2."""
    load: list[str] = field(default_factory=list)

    def run(self) -> int:
        """Run the oracle on the seeds, write the rows, print a one-line summary."""
        from rao_envs.adapters.sft import write_demos

        _load(self.load)
        path, rows = write_demos(self.env_id, self.n, self.out, seed_start=self.seed_start, protocol=self.protocol,
                                 env_kwargs=_kwargs(self.kw))
        print(f"wrote {rows} rows ({self.n} oracle trees of {self.env_id}, protocol {self.protocol}) to {path}")
        return 0


@dataclass
class VerlDataset:
    """Write task rows for verl's RLHFDataset, run by the 'rao_envs' agent loop (one row per task seed).

    -n tasks (seeds seed-start, ...); verl samples each row rollout.n times (the G trees of a task).
    """

    env_id: Positional[str]
    n: Annotated[int, tyro.conf.arg(aliases=("-n",))] = 1024
    """Number of tasks (seeds)."""
    out: Path = Path("train.parquet")
    difficulty: str | None = None
    """The task's difficulty (e.g. easy, medium, hard); default: the task's own."""
    seed_start: int = 0
    kw: list[str] = field(default_factory=list)
    """More make() kwargs as KEY=VALUE: limits such as max_depth=2 max_steps_per_node=8."""
    load: list[str] = field(default_factory=list)

    def run(self) -> int:
        """Build the rows, write the Parquet file, print a one-line summary."""
        from rao_envs.adapters.verl_dataset import AGENT_NAME, write_verl_dataset

        _load(self.load)
        kwargs = _kwargs(self.kw)
        if self.difficulty is not None:
            kwargs["difficulty"] = self.difficulty
        path = write_verl_dataset(self.env_id, self.out, n=self.n, seed_start=self.seed_start, env_kwargs=kwargs)
        print(f"wrote {self.n} rows ({self.env_id}, seeds {self.seed_start}..{self.seed_start + self.n - 1}, "
              f"agent_name={AGENT_NAME}) to {path}")
        return 0


COMMANDS = {
    "list": List,
    "check": Check,
    "solve": Solve,
    "play": Play,
    "render": Render,
    "new-task": NewTask,
    "sandbox-build-image": SandboxBuildImage,
    "rollout": Rollout,
    "view": View,
    "demos": Demos,
    "verl-dataset": VerlDataset,
}


def _summary(cls: type) -> str:
    """The first paragraph of a command's docstring: its line in ``rao-envs --help``."""
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rao-envs`` script."""
    choices = [Annotated[cls, tyro.conf.subcommand(name=name, description=_summary(cls))] for name, cls in COMMANDS.items()]
    cmd = tyro.cli(Union[tuple(choices)], args=argv, prog="rao-envs")  # noqa: UP007 (a runtime Union of the commands)
    return cmd.run()


if __name__ == "__main__":
    sys.exit(main())
