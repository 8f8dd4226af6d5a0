"""Seeded Code-Synth programs: functions composed from :mod:`~rao_envs.envs.code_synth.library`
that call each other (a dependency DAG), each with a spec, a reference implementation and tests.

A function is a short pipeline: ``v1 = op(param, ...)``, ``v2 = f_dep(v1, ...)``, ...,
``return v_last``; every step consumes the value of the step before it, so every step and
every call matters. A function at DAG level ``L >= 1`` calls at least one function of level
``L - 1`` (and sometimes one more of a lower level); level-0 functions call none. Names are
meaningless (``f_k3``). Hidden tests are seeded random inputs plus edge cases (empty
containers, zero, negatives, duplicates); expected outputs come from running the reference
implementation here, on the host (it is our own code). Every program is checked: the
reference runs on all its tests, no function is constant on its tests or returns its input
unchanged, and no two functions with the same parameter types agree on all of their tests.

Train/val split by *program shape*: the call DAG (each function's level and callees) and every
function's signature (parameter and return types). A shape's hash decides its split (one in
:data:`VAL_FRACTION` shapes is val), so no val program has the shape of a train program.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from typing import Any

from rao_envs.envs.code_synth.library import BY_FIRST, CONVERT, INT, LIST, STR, Op

NAME_CHARS = "abcdefghjkmnpqrstuvwxyz23456789"
PARAM_NAMES = {LIST: ("xs", "ys"), INT: ("n", "m"), STR: ("s", "t")}
SIGNATURES = ((LIST,), (STR,), (INT,), (LIST, INT), (STR, INT), (LIST, LIST), (STR, STR), (LIST, STR))
VAL_FRACTION = 5  # 1 in 5 shapes is val
HIDDEN_TESTS = 10
EXAMPLES = 2


@dataclass(frozen=True)
class Level:
    """A difficulty: how many functions and how many DAG levels (the longest call chain)."""

    functions: tuple[int, int]
    depth: tuple[int, int]


LEVELS = {
    "easy": Level((1, 2), (1, 2)),
    "medium": Level((3, 5), (2, 2)),
    "hard": Level((6, 10), (3, 4)),
    "extreme": Level((12, 20), (5, 6)),
}

EDGE = {
    INT: [0, -1, 1, -37, 12, 100],
    STR: ["", "a", "aab", "Hello World", "  x  ", "zzz abc"],
    LIST: [[], [0], [3, 3, 1], [-2, 5, -2, 7], [1, 2, 3, 4, 5, 6], [9, -9]],
}
_ALPHABET = "aabbcdeeiHoWxyz  "


def random_value(rng: random.Random, t: str) -> Any:
    """A random test input of type ``t`` (small, with negatives and duplicates)."""
    if t == INT:
        return rng.randint(-50, 50)
    if t == STR:
        return "".join(rng.choices(_ALPHABET, k=rng.randint(0, 10)))
    return [rng.randint(-9, 20) for _ in range(rng.randint(0, 8))]


def signature(fn: dict[str, Any]) -> str:
    """``f_k3(xs: list[int], n: int) -> int``."""
    params = ", ".join(f"{p}: {t}" for p, t in fn["params"])
    return f"{fn['name']}({params}) -> {fn['returns']}"


def call_text(name: str, args: list[Any]) -> str:
    """``f_k3([1, 2], 3)``: a call written as Python."""
    return f"{name}({', '.join(repr(a) for a in args)})"


# ----------------------------------------------------------------------------- skeletons
@dataclass
class Step:
    """One pipeline step: an op or a call, its input value names and constant."""

    var: str
    out: str
    op: Op | None = None
    call: str | None = None
    ins: tuple[str, ...] = ()
    const: Any = None


@dataclass
class Skeleton:
    """One function before its tests: name, DAG level, parameters, steps and the functions it calls."""

    name: str
    level: int
    params: list[tuple[str, str]]
    steps: list[Step]
    deps: list[str]

    @property
    def returns(self) -> str:
        """The return type (the last step's)."""
        return self.steps[-1].out

    def shape(self, deps: list[int]) -> str:
        """The function's part of the program shape: level, callees, parameter and return types."""
        return f"{self.level}:{deps}:{'/'.join(t for _, t in self.params)}->{self.returns}"

    def redraw_constants(self, rng: random.Random) -> None:
        """New constants for the same shape (when the first draw made a degenerate function)."""
        for st in self.steps:
            if st.op is not None and st.op.const is not None:
                st.const = st.op.const(rng)


def _other_input(rng: random.Random, t: str, values: list[tuple[str, str]], unused: list[str]) -> str:
    """A value name of type ``t`` for a second input: an unused parameter first, else any value, else a literal."""
    types = dict(values)
    for name in unused:
        if types[name] == t:
            return name
    pool = [n for n, vt in values[:-1] if vt == t]
    if pool:
        return rng.choice(pool)
    return repr({INT: rng.randint(1, 5), STR: "ab", LIST: [1, 2, 3]}[t])


def _skeleton(
    rng: random.Random, name: str, level: int, calls: list[Skeleton], like: Skeleton | None = None
) -> Skeleton:
    """Parameters and steps of one function that calls ``calls``; with ``like``, a new body for the
    same signature (parameter and return types)."""
    for _ in range(50):
        sk = _draw_skeleton(rng, name, level, calls, like.params if like else None)
        if like is None or sk.returns == like.returns:
            return sk
    return like


def _draw_skeleton(
    rng: random.Random, name: str, level: int, calls: list[Skeleton], params: list[tuple[str, str]] | None
) -> Skeleton:
    if params is not None:
        return _draw_body(rng, name, level, calls, params)
    sig = rng.choice(SIGNATURES)
    counts: dict[str, int] = {}
    params = []
    for t in sig:
        k = counts.get(t, 0)
        counts[t] = k + 1
        params.append((PARAM_NAMES[t][k], t))
    return _draw_body(rng, name, level, calls, params)


def _draw_body(rng: random.Random, name: str, level: int, calls: list[Skeleton], params: list[tuple[str, str]]) -> Skeleton:
    values: list[tuple[str, str]] = list(params)
    unused = [p for p, _ in params[1:]]
    latest = params[0]
    steps: list[Step] = []
    plan = ["op"] * rng.randint(1, 2) + ["call"] * len(calls)
    rng.shuffle(plan)
    if plan == ["op"] and rng.random() < 0.5:
        plan.append("op")
    pending = list(calls)

    def add(op: Op | None, call: Skeleton | None, ins: tuple[str, ...], out: str) -> None:
        nonlocal latest
        var = f"v{len(steps) + 1}"
        const = op.const(rng) if op is not None and op.const is not None else None
        steps.append(Step(var, out, op, call.name if call else None, ins, const))
        for i in ins:
            if i in unused:
                unused.remove(i)
        values.append((var, out))
        latest = (var, out)

    for kind in plan:
        if kind == "call":
            fn = pending.pop(0)
            want = [t for _, t in fn.params]
            if latest[1] != want[0]:
                conv = rng.choice(CONVERT[(latest[1], want[0])])
                add(conv, None, (latest[0],), conv.output)
            add(None, fn, (latest[0],) + tuple(_other_input(rng, t, values, unused) for t in want[1:]), fn.returns)
        else:
            op = rng.choice(BY_FIRST[latest[1]])
            add(op, None, (latest[0],) + tuple(_other_input(rng, t, values, unused) for t in op.inputs[1:]), op.output)
    def mix(p: str) -> None:  # combine the latest value with parameter p by a binary op
        t = dict(values)[p]
        ops = [op for op in BY_FIRST[latest[1]] if op.inputs[1:] == (t,)]
        if not ops:
            conv = rng.choice(CONVERT[(latest[1], t)])
            add(conv, None, (latest[0],), conv.output)
            ops = [op for op in BY_FIRST[t] if op.inputs[1:] == (t,)]
        op = rng.choice(ops)
        add(op, None, (latest[0], p), op.output)

    while unused:  # every parameter is used
        mix(unused[0])
    if calls:  # a caller mixes a parameter in after its calls, so its output still varies with its input
        mix(rng.choice(params)[0])
    return Skeleton(name, level, params, steps, [c.name for c in calls])


def _render(sk: Skeleton) -> tuple[str, str]:
    """The reference source and the English body of one function."""
    head = f"def {sk.name}({', '.join(f'{p}: {t}' for p, t in sk.params)}) -> {sk.returns}:"
    needs = sorted({st.op.needs for st in sk.steps if st.op is not None and st.op.needs})
    body = [f"    import {m}" for m in needs]
    lines = []
    for i, st in enumerate(sk.steps, 1):
        if st.op is not None:
            fill: dict[str, Any] = {"a": st.ins[0], "b": st.ins[1] if len(st.ins) > 1 else ""}
            if isinstance(st.const, tuple):
                fill["k0"], fill["k1"] = repr(st.const[0]), repr(st.const[1])
            elif st.const is not None:
                fill["k"] = st.const if isinstance(st.const, int) else repr(st.const)
            py, en = st.op.py.format(**fill), st.op.en.format(**fill)
        else:
            py = f"{st.call}({', '.join(st.ins)})"
            en = f"{py} (the function {st.call} of this module)"
        body.append(f"    {st.var} = {py}")
        lines.append(f"  {i}. {st.var} = {en}.")
    body.append(f"    return {sk.steps[-1].var}")
    lines.append(f"  Return {sk.steps[-1].var}.")
    return "\n".join([head, *body]) + "\n", "\n".join(lines)


def _shape_key(shapes: list[str]) -> int:
    digest = hashlib.sha256("|".join(shapes).encode()).digest()
    return int.from_bytes(digest[:8], "big")


# ----------------------------------------------------------------------------- programs
class GenerationError(RuntimeError):
    """No valid program could be drawn (should not happen; raised after many attempts)."""


def _draw_dag(rng: random.Random, level: Level) -> tuple[list[int], list[list[int]]]:
    """Levels of ``n`` functions and, for each, the indices of the functions it calls (earlier ones)."""
    n = rng.randint(*level.functions)
    depth = min(n, rng.randint(*level.depth))
    levels = sorted(list(range(depth)) + [rng.randrange(depth) for _ in range(n - depth)])
    calls: list[list[int]] = []
    for i, lv in enumerate(levels):
        if lv == 0:
            calls.append([])
            continue
        prev = [j for j in range(i) if levels[j] == lv - 1]
        lower = [j for j in range(i) if levels[j] < lv - 1]
        picked = [rng.choice(prev)]
        if rng.random() < 0.35:
            extra = [j for j in prev + lower if j not in picked]
            if extra:
                picked.append(rng.choice(extra))
        calls.append(sorted(picked))
    return levels, calls


def _names(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = "f_" + "".join(rng.choices(NAME_CHARS, k=2))
        if name not in out:
            out.append(name)
    return out


def _inputs(rng: random.Random, types: list[str], k: int, edges: bool, avoid: set[str] = frozenset()) -> list[list[Any]]:
    """``k`` distinct argument lists (not in ``avoid``); with ``edges`` the first four are edge cases."""
    out: list[list[Any]] = []
    seen: set[str] = set(avoid)
    tries = 0
    while len(out) < k and tries < 20 * k:
        tries += 1
        j = len(out)
        if edges and j < 4:
            args = [EDGE[t][(j + 2 * p) % len(EDGE[t])] for p, t in enumerate(types)]
        else:
            args = [random_value(rng, t) for t in types]
        key = repr(args)
        if key not in seen:
            seen.add(key)
            out.append(args)
    return out


def _callable(sk: Skeleton, ns: dict[str, Any]) -> Any:
    """The skeleton as a host-side function (the same templates as its source; no compile per draw)."""
    import ast

    literals = {i: ast.literal_eval(i) for st in sk.steps for i in st.ins if not i.isidentifier()}
    names = [p for p, _ in sk.params]
    steps = [(st.var, st.op, ns.get(st.call) if st.call else None, st.ins, st.const) for st in sk.steps]

    def run(*args: Any) -> Any:
        env = dict(zip(names, args))
        val = None
        for var, op, callee, ins, const in steps:
            vals = [env[i] if i in env else literals[i] for i in ins]
            val = op.apply(vals, const) if op is not None else callee(*vals)
            env[var] = val
        return val

    return run


def _evaluate(ns: dict[str, Any], name: str, inputs: list[list[Any]]) -> list[Any] | None:
    """The reference outputs (None when the reference raises or returns something large)."""
    fn, outs = ns[name], []
    for args in inputs:
        try:
            out = fn(*[list(a) if type(a) is list else a for a in args])
        except Exception:  # noqa: BLE001 - a degenerate draw: redraw the function
            return None
        if len(repr(out)) > 300:
            return None
        outs.append(out)
    return outs


def _agrees(fn: Any, inputs: Any, outputs: Any) -> bool:
    """True when ``fn`` returns exactly ``outputs`` on ``inputs`` (stops at the first difference)."""
    for args, want in zip(inputs, outputs):
        try:
            got = fn(*[list(a) if type(a) is list else a for a in args])
        except Exception:  # noqa: BLE001
            return False
        if type(got) is not type(want) or got != want:
            return False
    return True


def build_program(seed: int, difficulty: str, split: str) -> dict[str, Any]:
    """The program of ``(seed, difficulty, split)``: deterministic, JSON-able, checked (see the module doc)."""
    return _build_cached(int(seed), difficulty, split)


@functools.lru_cache(maxsize=256)
def _build_cached(seed: int, difficulty: str, split: str) -> dict[str, Any]:
    rng = random.Random(f"code-synth:{seed}:{difficulty}")
    level = LEVELS[difficulty]
    for _attempt in range(500):
        program = _try_program(rng, level, split == "val")
        if program is not None:
            program.update(seed=seed, difficulty=difficulty, split=split)
            return program
    raise GenerationError(f"Code-Synth: no valid {difficulty}/{split} program for seed {seed}")


def split_of_shape(shape_key: int) -> str:
    """``"val"`` for one in :data:`VAL_FRACTION` program shapes, else ``"train"``."""
    return "val" if shape_key % VAL_FRACTION == 0 else "train"


def _try_program(rng: random.Random, level: Level, want_val: bool) -> dict[str, Any] | None:
    levels, calls = _draw_dag(rng, level)
    names = _names(rng, len(levels))
    skels: list[Skeleton] = []
    for i, (lv, deps) in enumerate(zip(levels, calls)):
        skels.append(_skeleton(rng, names[i], lv, [skels[j] for j in deps]))
    key = _shape_key([sk.shape(deps) for sk, deps in zip(skels, calls)])
    if (split_of_shape(key) == "val") != want_val:
        return None  # cheap: no test was run yet
    fns: list[dict[str, Any]] = []
    ns: dict[str, Any] = {}
    for i, sk in enumerate(skels):
        fn = None
        for retry in range(40):
            fn = _try_function(rng, sk, fns, ns)
            if fn is not None:
                break
            if retry % 4 == 3:  # a degenerate body: a new one with the same signature (the shape stays)
                sk = _skeleton(rng, sk.name, sk.level, [skels[j] for j in calls[i]], like=sk)
            else:
                sk.redraw_constants(rng)
        if fn is None:
            return None
        fns.append(fn)
    users: dict[str, list[str]] = {f["name"]: [] for f in fns}
    for f in fns:
        for d in f["deps"]:
            users[d].append(f["name"])
    for f in fns:
        f["used_by"] = users[f["name"]]
    return {"functions": fns, "depth": max(levels) + 1, "shape": f"{key:016x}"}


def _try_function(rng: random.Random, sk: Skeleton, fns: list[dict[str, Any]], ns: dict[str, Any]) -> dict[str, Any] | None:
    source, body = _render(sk)
    types = [t for _, t in sk.params]
    hidden = _inputs(rng, types, HIDDEN_TESTS, edges=True)
    examples = _inputs(rng, types, EXAMPLES, edges=False, avoid={repr(h) for h in hidden})
    if len(examples) < EXAMPLES or len(hidden) < HIDDEN_TESTS:
        return None
    local = dict(ns)
    local[sk.name] = _callable(sk, local)
    outs = _evaluate(local, sk.name, hidden + examples)
    if outs is None:
        return None
    hidden_out, example_out = outs[:HIDDEN_TESTS], outs[HIDDEN_TESTS:]
    if len({repr(o) for o in hidden_out}) < 3:
        return None  # (nearly) constant on its tests: guessable
    if all(repr(o) == repr(a[0]) for o, a in zip(hidden_out, hidden)):
        return None  # returns its first argument unchanged
    for other in fns:  # no two functions identical on the tests
        if [t for _, t in other["params"]] == types:
            if _agrees(ns[other["name"]], hidden, hidden_out) or _agrees(local[sk.name], *zip(*other["tests"])):
                return None
    # accepted: compile the reference once, so later functions call fast compiled code
    exec(compile(source, f"<{sk.name}>", "exec"), ns)  # noqa: S102 - our own generated reference code
    return {
        "name": sk.name,
        "level": sk.level,
        "params": [[p, t] for p, t in sk.params],
        "returns": sk.returns,
        "deps": list(sk.deps),
        "source": source,
        "body": body,
        "examples": [[a, o] for a, o in zip(examples, example_out)],
        "tests": [[a, o] for a, o in zip(hidden, hidden_out)],
    }


def spec_text(fn: dict[str, Any]) -> str:
    """The plain-English spec of one function: signature, what it computes step by step, two worked examples."""
    deps = fn["deps"]
    calls = f"Calls {', '.join(deps)} (other functions of this module)." if deps else "Calls no other function of this module."
    ex = "\n".join(f"  {call_text(fn['name'], a)} == {o!r}" for a, o in fn["examples"])
    return (
        f"{signature(fn)}\n{calls} Computes, in order:\n{fn['body']}\nExamples:\n{ex}"
    )


def dependency_order(program: dict[str, Any], names: list[str]) -> list[str]:
    """``names`` sorted so that every function comes after the functions it calls."""
    order = [f["name"] for f in program["functions"]]  # generated in topological order
    return sorted(names, key=order.index)
