"""CodeSynth-v0 (Code-Synth): write a module of interdependent functions against hidden unit tests
that run in the sandbox; the natural unit of delegation is one function per child.

The task's parts, one file each: ``library.py`` (the typed primitives), ``program.py`` (seeded
programs: the dependency DAG, specs, reference implementations, hidden tests, the train/val
split), ``harness.py`` (the test harness that runs inside the sandbox), ``runner.py`` (the
host side: a warm pooled sandbox, the output comparison), ``task.py`` (:class:`CodeSynth`:
prompt, tools, verifier) and ``oracle.py`` (:class:`CodeSynthOracle`).

## Description
An instance is a module of named functions (meaningless names such as ``f_k3``) over ints,
strings and lists of ints, each a short pipeline of primitives (map/filter/fold, string
edits, arithmetic, sorting with keys, run-length codes, ...) and calls of other functions
of the module (a dependency DAG). Every function has a plain-English spec (signature, the
functions it calls, its steps, two worked examples), a reference implementation (never
shown) and 10 hidden unit tests: seeded random inputs plus edge cases (empty, zero,
negative, duplicates). Every program is checked when generated: the reference runs on all
its tests, no function is constant on its tests or returns its input unchanged, and no two
functions with the same parameter types agree on all their tests. Train/val split by
program shape (the call DAG and every function's signature; one shape in five is val).

## Tools
``view_spec(names)`` (up to 8 specs), ``write_function(name, source)`` (one ``def`` with the
spec's parameters, imports before it allowed; a syntax error or a wrong signature is
feedback and writes nothing), ``run_tests(name)`` (the spec's two examples against the module
as it stands: pass/fail and the first failing case; the hidden tests are never shown) and
``view_module()``. Tool arguments and results are JSON values and text, so the same
functions work as plain functions in a REPL protocol. All model-written code runs only in
the sandbox (``sandbox="local"`` by default: bubblewrap, one warm box per process from a
``SandboxPool``), each batch in a freshly forked process with a per-call deadline
(``call_timeout``, 1 s) and a memory cap (``memory_mb``, 256): a call that hangs, raises,
crashes or runs out of memory is a failed test; a sandbox that fails is an ``infra_error``
of that node. With ``fork_ahead=True`` (the default) the box forks and warms up the next
batch's session while the host goes on, so a scoring waits about half as long, for about a
third more work in all; ``fork_ahead=False`` forks on the spot (less CPU on a saturated box).

## Delegation
``delegate(targets=["f_k3"])`` (goal optional: names ``f_xx`` in the goal are read when
``targets`` is missing): the child writes those functions and is scored on exactly their
hidden tests. Functions that do not call each other can be delegated in one turn (parallel).

## State scope
``shared``: one module (``{"module": {name: source}}``) by reference for the whole tree, like
TextCraft's inventory. A function written by any node is in the module at once: a sibling's
dependency is seen as soon as the sibling's ``write_function`` ran (not when it finishes), and
tests and scoring always use the module as it stands at that moment; rewriting a function
replaces it for everyone.

## Rewards
A node's score is the fraction of the hidden tests of its own functions (the root: all of
them) that pass, run against the module when it finishes, in a fresh forked process per
scoring, never in a process model code ran in before. Only the outputs come back from the
box; they are compared with the expected outputs on the host (exact, types included), so
code that prints "all tests passed", patches the harness or forges its report can only
report outputs of its own choosing. The engine adds RAO's local reward term over children.

## Termination
A node ends when it calls ``finish`` or runs out of its 25 steps (truncated, score 0); the
episode ends when the root does. Limits: ``max_depth`` 4, ``max_steps_per_node`` 25,
``max_nodes`` 128.

## Difficulties
Functions and DAG depth (the longest call chain): ``easy`` 1-2 functions, ``medium``
(default) 3-5 (depth 2), ``hard`` 9-10 (depth 3-4), ``extreme`` 12-20 (depth 5-6). A function
written flat takes 3 steps (``view_spec``, ``write_function``, ``run_tests``), so 8 functions
fit in 25 steps and 9 do not: hard is drawn from the top of issue 13's 6-10 range so that it
needs delegation (for an agent that reads one spec per call; one that reads 8 per
``view_spec`` call fits up to 11 functions flat). Measured (``benchmarks/code_synth_depth.py``, 20 seeds per cell, 25 steps
per node): the delegating oracle solves every instance of every difficulty at ``max_depth``
>= 1 (one child per function, a root turn per DAG level); the flat oracle solves all easy and
medium instances and no hard or extreme one.

## Registered ids
``rao_envs/CodeSynth-v0`` (kwargs: ``difficulty``, ``split``, ``sandbox`` ``local``/``docker``/
``process``, ``memory_mb``, ``call_timeout``, ``fork_ahead``), registered in ``rao_envs.envs``.
"""

from rao_envs.envs.code_synth.library import OPS, Op
from rao_envs.envs.code_synth.oracle import CodeSynthOracle
from rao_envs.envs.code_synth.program import LEVELS, build_program, dependency_order, signature, spec_text
from rao_envs.envs.code_synth.runner import CodeRunner, compare, get_runner
from rao_envs.envs.code_synth.task import MAX_SOURCE_CHARS, SYSTEM_PROMPT, CodeSynth, check_source, goal_text

__all__ = [
    "LEVELS", "MAX_SOURCE_CHARS", "OPS", "SYSTEM_PROMPT", "CodeRunner", "CodeSynth", "CodeSynthOracle", "Op",
    "build_program", "check_source", "compare", "dependency_order", "get_runner", "goal_text", "signature", "spec_text",
]
