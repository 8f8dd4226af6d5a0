"""CodeSynth-v0: write a module of interdependent functions against hidden unit tests (see the
package docstring, :mod:`rao_envs.envs.code_synth`, for the full description)."""

from __future__ import annotations

import ast
import re
from typing import Any

import numpy as np

from rao_envs.errors import ConfigError, ToolError
from rao_envs.task import NodeContext, Task, TaskInstance, tool
from rao_envs.types import StateScope

from rao_envs.envs.code_synth.program import LEVELS, build_program, call_text, dependency_order, signature, spec_text
from rao_envs.envs.code_synth.runner import compare, decode, get_runner

MAX_SOURCE_CHARS = 8000
"""The longest function source ``write_function`` accepts."""
MAX_TARGETS = 20
_NAME = re.compile(r"\bf_[a-z0-9]{2}\b")

SYSTEM_PROMPT = """You write a Python module of small functions that call each other. Each function \
has a spec: its signature, what it computes step by step, and two worked examples. Hidden unit \
tests (random inputs and edge cases: empty lists and strings, zero, negative numbers, duplicates) \
decide your score: the fraction of the hidden tests of your functions that pass.

# Tools
- view_spec(names) shows the specs of the functions named.
- write_function(name, source) puts one function into the module: source is exactly one \
`def name(...)` with the spec's parameter names (imports may come before it; helpers go inside \
it). Writing a function again replaces it. The module is shared with your sub-agents: a \
function written by anyone is visible to everyone at once.
- run_tests(name) runs the two examples of a function's spec against the module as it stands \
and reports the first failing case. The hidden tests are never shown.
- view_module() lists every function of the module, which are written, and their sources.
A function that calls another function of the module needs that function written too \
before its tests can pass.

# Delegation
delegate(targets=["f_k3"]) starts a sub-agent that writes the functions named; it is scored on \
their hidden tests, run against the module when it finishes. Write or delegate the functions \
a function calls before the function itself; functions that do not call each other can be \
delegated together in one turn (they run in parallel). Example:
<tool>{"name": "delegate", "args": {"targets": ["f_k3"]}}</tool>"""


class CodeSynth(Task):
    """Write a module of interdependent functions against hidden tests; delegate one function per child."""

    name = "CodeSynth"
    version = 0
    state_scope = StateScope.SHARED
    difficulties = tuple(LEVELS)
    default_difficulty = "medium"
    default_limits = {"max_depth": 4, "max_steps_per_node": 25, "max_nodes": 128}
    delegate_args_doc = ", targets: list[str]"
    examples = {
        "view_spec": {"names": ["f_k3"]},
        "write_function": {"name": "f_k3", "source": "def f_k3(xs: list[int]) -> int:\n    return len(xs)"},
        "run_tests": {"name": "f_k3"},
        "delegate": {"goal": "Write f_k3 as its spec says", "targets": ["f_k3"]},
        "finish": {"result": "f_k3 is written and passes its examples"},
    }
    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        difficulty: str | None = None,
        split: str = "train",
        sandbox: str | None = None,
        memory_mb: int = 256,
        call_timeout: float = 1.0,
        fork_ahead: bool = True,
    ) -> None:
        super().__init__(difficulty, split)
        from rao_envs.sandboxes import BACKENDS, SandboxUnavailable, default_backend

        backend = sandbox or default_backend()
        if backend not in BACKENDS:
            raise ConfigError(f"{self.name}: sandbox must be one of {list(BACKENDS)}, got {sandbox!r}")
        if backend == "local":
            from rao_envs.sandboxes.local import LocalSandbox

            try:
                LocalSandbox.check_available()
            except SandboxUnavailable as exc:
                raise SandboxUnavailable(
                    f"{self.name} runs model code in the 'local' sandbox, which is unavailable here: {exc} "
                    "(or pass sandbox='docker')"
                ) from None
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not 64 <= memory_mb <= 4096:
            raise ConfigError(f"{self.name}: memory_mb must be an integer from 64 to 4096, got {memory_mb!r}")
        if isinstance(call_timeout, bool) or not isinstance(call_timeout, (int, float)) or not 0.05 <= call_timeout <= 30:
            raise ConfigError(f"{self.name}: call_timeout must be a number of seconds from 0.05 to 30, got {call_timeout!r}")
        if not isinstance(fork_ahead, bool):
            raise ConfigError(f"{self.name}: fork_ahead must be True or False, got {fork_ahead!r}")
        self.backend, self.memory_mb, self.call_timeout = backend, memory_mb, float(call_timeout)
        self.fork_ahead = fork_ahead

    # -- the sandbox ----------------------------------------------------------------------
    def runner(self) -> Any:
        """The process's warm test runner for this task's sandbox settings."""
        return get_runner(self.backend, self.memory_mb, self.call_timeout, max(6.0, 4 * self.call_timeout), self.fork_ahead)

    # -- instances ------------------------------------------------------------------------
    def generate(self, rng: np.random.Generator) -> TaskInstance:
        """One seeded program of the difficulty's size and depth from this split's shapes."""
        seed = int(rng.integers(2**62))
        program = build_program(seed, self.difficulty, self.split)
        names = [f["name"] for f in program["functions"]]
        ref = {"seed": seed, "difficulty": self.difficulty, "split": self.split}
        return TaskInstance(goal=goal_text(names), args={"targets": names, "program": ref}, data={"program": program})

    def initial_state(self, instance: TaskInstance) -> dict[str, dict[str, str]]:
        """The shared module: ``{"module": {function name: source}}``, empty at the start (the
        sandbox box is reset here when model code ran in it since its last reset)."""
        self.runner().new_episode()
        return {"module": {}}

    def snapshot(self, state: dict[str, Any]) -> dict[str, Any]:
        """The names of the functions written when a node is spawned."""
        return {"written": sorted(state["module"])}

    def node_prompt(self, ctx: NodeContext) -> str:
        """The node's goal, its functions' signatures and what they call, and what is written already."""
        program = _functions(ctx)
        targets = ctx.node.args.get("targets") or []
        lines = []
        for name in targets:
            fn = program[name]
            calls = f"; calls {', '.join(fn['deps'])}" if fn["deps"] else ""
            lines.append(f"- {signature(fn)}{calls}")
        written = sorted(ctx.state["module"])
        text = f"# Task\n{ctx.node.goal}\n\nYour functions:\n" + "\n".join(lines)
        others = [n for n in program if n not in targets]
        if others:
            text += f"\n\nOther functions of the module: {', '.join(others)}."
        text += f"\nWritten so far: {', '.join(written) if written else 'none'}."
        text += "\nUse view_spec to read the specs."
        if ctx.node.context:
            text += f"\n\n# Context from your parent agent\n{ctx.node.context}"
        return text

    # -- delegation and verification -------------------------------------------------------
    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A child needs ``targets``: a list of function names of the module (read from the goal if missing)."""
        program = _functions(parent)
        extra = sorted(set(args) - {"targets"})
        if extra:
            raise ToolError(
                f"unknown delegate argument(s) {[str(x)[:40] for x in extra[:5]]}; Code-Synth takes "
                'targets=["f_k3", ...] besides goal, context, budget and wait'
            )
        targets = args.get("targets")
        if targets is None:
            targets = list(dict.fromkeys(_NAME.findall(goal or "")))
            if not targets:
                raise ToolError('give the sub-agent its functions, e.g. delegate(targets=["f_k3"])')
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets or len(targets) > MAX_TARGETS:
            raise ToolError(f'targets must be a non-empty list of at most {MAX_TARGETS} function names, e.g. ["f_k3"]')
        clean: list[str] = []
        for name in targets:
            if not isinstance(name, str) or name not in program:
                raise ToolError(f"{str(name)[:40]!r} is not a function of this module; its functions: {', '.join(program)}")
            if name not in clean:
                clean.append(name)
        clean = dependency_order(parent.instance.data["program"], clean)
        return goal or goal_text(clean), {"targets": clean, "program": parent.node.args["program"]}

    def score(self, ctx: NodeContext) -> float:
        """The fraction of the hidden tests of the node's functions that pass against the module as it stands now."""
        program = _functions(ctx)
        targets = ctx.node.args.get("targets") or []
        calls, expected = [], []
        for name in targets:
            for args, out in program[name]["tests"]:
                calls.append((name, args))
                expected.append(out)
        if not calls:
            return 0.0
        results = self.runner().run(_module(ctx), calls)
        return sum(compare(r, e) for r, e in zip(results, expected)) / len(calls)

    # -- tools ----------------------------------------------------------------------------
    @tool
    def view_spec(self, ctx: NodeContext, names: list[str]) -> str:
        """The specs of the functions named: signature, the functions it calls, its steps and two examples."""
        program = _functions(ctx)
        if not names:
            raise ToolError(f'name at least one function, e.g. view_spec(names=["{next(iter(program))}"])')
        if len(names) > 8:
            raise ToolError(f"view at most 8 specs at a time; you asked for {len(names)}")
        unknown = [n for n in names if n not in program]
        if unknown:
            raise ToolError(f"no function {unknown[0][:40]!r} in this module; its functions: {', '.join(program)}")
        return "\n\n".join(spec_text(program[n]) for n in dict.fromkeys(names))

    @tool
    def write_function(self, ctx: NodeContext, name: str, source: str) -> str:
        """Put one function into the shared module (replacing an earlier version): source is one `def name(...)`.

        Imports may come before the def; helpers go inside it. The parameters must be the spec's.
        """
        program = _functions(ctx)
        fn = program.get(name)
        if fn is None:
            raise ToolError(f"no function {name[:40]!r} in this module; its functions: {', '.join(program)}")
        check_source(fn, source)
        replaced = name in ctx.state["module"]
        ctx.state["module"][name] = source
        missing = [d for d in fn["deps"] if d not in ctx.state["module"]]
        note = f" It calls {', '.join(missing)}, not written yet." if missing else ""
        return f"{'Replaced' if replaced else 'Wrote'} {name} ({source.count(chr(10)) + 1} lines).{note}"

    @tool
    def run_tests(self, ctx: NodeContext, name: str) -> str:
        """Run the two examples of a function's spec against the module as it stands; report the first failure."""
        program = _functions(ctx)
        fn = program.get(name)
        if fn is None:
            raise ToolError(f"no function {name[:40]!r} in this module; its functions: {', '.join(program)}")
        if name not in ctx.state["module"]:
            raise ToolError(f"{name} is not written yet: write it with write_function first")
        examples = fn["examples"]
        results = self.runner().run(_module(ctx), [(name, a) for a, _ in examples])
        passed = [compare(r, o) for r, (_, o) in zip(results, examples)]
        head = f"{name}: {sum(passed)}/{len(passed)} examples passed."
        for ok, r, (args, out) in zip(passed, results, examples):
            if not ok:
                call = call_text(name, args)
                got = f"raised {r['err']}" if "err" in r else f"returned {decode(r.get('out'))}"
                missing = [d for d in fn["deps"] if d not in ctx.state["module"]]
                hint = f" (not written yet: {', '.join(missing)})" if missing else ""
                return f"{head} First failing: {call} {got[:400]}, expected {out!r}.{hint}"
        return head

    @tool
    def view_module(self, ctx: NodeContext) -> str:
        """Every function of the module: signature, whether it is written, and the source of those written."""
        program = _functions(ctx)
        module = ctx.state["module"]
        lines = [f"Module: {len(module)} of {len(program)} functions written."]
        for name, fn in program.items():
            lines.append(f"- {signature(fn)}: {'written' if name in module else 'not written'}")
        for name in program:
            if name in module:
                lines.append(f"\n# {name}\n{module[name].rstrip()}")
        return "\n".join(lines)

    # -- oracles --------------------------------------------------------------------------
    def oracle(self, delegate: bool = True) -> Any:
        """Scripted policy: delegating (default; one child per function, dependencies first, in parallel waves) or flat."""
        from rao_envs.envs.code_synth.oracle import CodeSynthOracle

        return CodeSynthOracle(delegate=delegate)


def goal_text(names: list[str]) -> str:
    """The default goal of a node that writes ``names``."""
    return (
        f"Write the function{'s' if len(names) > 1 else ''} {', '.join(names)} of the module so that "
        f"{'they pass their' if len(names) > 1 else 'it passes its'} hidden tests; finish when done."
    )


def check_source(fn: dict[str, Any], source: str) -> None:
    """Raise :class:`ToolError` unless ``source`` is one ``def`` of ``fn``'s name and parameters (imports allowed before it)."""
    name = fn["name"]
    want = [p for p, _ in fn["params"]]
    sig = f"def {name}({', '.join(want)}):"
    if len(source) > MAX_SOURCE_CHARS:
        raise ToolError(f"source is {len(source)} characters; at most {MAX_SOURCE_CHARS}")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        raise ToolError(f"syntax error in {name}: {exc.msg}{where}; nothing was written") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise ToolError(f"could not parse the source of {name} ({type(exc).__name__}); nothing was written") from None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    others = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))]
    if len(defs) != 1 or others or not isinstance(defs[0], ast.FunctionDef) or defs[0].name != name:
        raise ToolError(
            f"source must be exactly one function `{sig}` (imports may come before it, helpers go inside it); "
            f"nothing was written"
        )
    a = defs[0].args
    got = [x.arg for x in a.posonlyargs + a.args]
    if got != want or a.vararg or a.kwarg or a.kwonlyargs:
        raise ToolError(f"wrong signature for {name}: the spec's is {signature(fn)}, so write `{sig}`; nothing was written")


def _functions(ctx: NodeContext) -> dict[str, dict[str, Any]]:
    """The program's functions by name, in dependency order."""
    return {f["name"]: f for f in ctx.instance.data["program"]["functions"]}


def _module(ctx: NodeContext) -> list[tuple[str, str]]:
    """The written functions as ``[(name, source)]`` in the program's order."""
    module = ctx.state["module"]
    return [(f["name"], module[f["name"]]) for f in ctx.instance.data["program"]["functions"] if f["name"] in module]
