"""Seeded Code-Synth programs: functions composed from :mod:`~rao_envs.envs.code_synth.library`
that call each other (a dependency DAG), each with a spec, a reference implementation and tests.

A function is a short pipeline: ``v1 = op(param, ...)``, ``v2 = f_dep(v1, ...)``, ...,
``return v_last``; every step consumes the value of the step before it, so every step and
every call matters. A function at DAG level ``L >= 1`` calls at least one function of level
``L - 1`` (and sometimes one more of a lower level); level-0 functions call none. Names are
meaningless (``f_k3``). Hidden tests are seeded random inputs plus edge cases (empty
containers, zero, negatives, duplicates); expected outputs come from running the reference
here, on the host (it is our own code), as the same op templates its source is rendered
from, compiled once per op and constant (:meth:`Op.bound`) and run a step at a time over all
inputs. Every program is checked: the reference runs on all its tests, no function is constant on its tests or returns its input
unchanged, and no two functions with the same parameter types agree on all of their tests.

Train/val split by *program shape*: the call DAG (each function's level and callees) and every
function's signature (parameter and return types). A shape's hash decides its split (one in
:data:`VAL_FRACTION` shapes is val), so no val program has the shape of a train program.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import random
from dataclasses import dataclass, field
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
    # The top of issue 13's 6-10: writing a function flat takes 3 steps (view_spec of its spec,
    # write_function, run_tests), so 9 of them and finish (28 steps) do not fit in the default 25
    # steps per node, while 6-8 would (hard must be out of reach without delegation).
    "hard": Level((9, 10), (3, 4)),
    "extreme": Level((12, 20), (5, 6)),
}

EDGE = {
    INT: [0, -1, 1, -37, 12, 100],
    STR: ["", "a", "aab", "Hello World", "  x  ", "zzz abc"],
    LIST: [[], [0], [3, 3, 1], [-2, 5, -2, 7], [1, 2, 3, 4, 5, 6], [9, -9]],
}
_ALPHABET = "aabbcdeeiHoWxyz  "
_ALPHABET_LEN = float(len(_ALPHABET))


def random_value(rng: random.Random, t: str) -> Any:
    """A random test input of type ``t`` (small, with negatives and duplicates)."""
    # Hot path (about ten inputs per candidate function). The same draws as rng.randint(lo, hi)
    # (lo + rng._randbelow(hi - lo + 1)) and rng.choices(_ALPHABET, k=...) (one random() each),
    # without their per-call overhead; tests/envs/test_code_synth.py checks that they still agree.
    below = rng._randbelow
    if t == INT:
        return below(101) - 50
    if t == STR:
        rnd = rng.random
        return "".join([_ALPHABET[int(rnd() * _ALPHABET_LEN)] for _ in range(below(11))])
    return [below(30) - 9 for _ in range(below(9))]


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


def _inputs(
    rng: random.Random, types: list[str], k: int, edges: bool, avoid: set[str] = frozenset()
) -> tuple[list[list[Any]], list[str]]:
    """``k`` distinct argument lists (not in ``avoid``) and their reprs; with ``edges`` the first four are edge cases."""
    out: list[list[Any]] = []
    keys: list[str] = []
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
            keys.append(key)
    return out, keys


_LITERALS: dict[str, Any] = {}


def _literal(text: str) -> Any:
    """The value of a literal input (``"3"``, ``"'ab'"``, ``"[1, 2, 3]"``), parsed once."""
    if text not in _LITERALS:
        import ast

        _LITERALS[text] = ast.literal_eval(text)
    return _LITERALS[text]


def _columns(sk: Skeleton, ns: dict[str, Any]) -> Any:
    """The skeleton as a host-side function over *columns*: ``run(*columns)`` takes, for each
    parameter, its values on all inputs and returns the outputs on all of them (the same
    templates as its source; ``ns`` maps the functions it calls to their column functions)."""
    # Hot path: every candidate body runs on a dozen inputs and about half are rejected, so a
    # body is evaluated a step at a time over all its inputs (one map() per step, no Python loop
    # per input and step), each op with its constant already compiled in (Op.bound), and a call
    # hands whole columns to the callee's column function. No op changes its inputs, so nothing
    # is copied.
    slots = {p: i for i, (p, _) in enumerate(sk.params)}
    literals: list[Any] = []
    for st in sk.steps:
        for i in st.ins:
            if i not in slots and not i.isidentifier():
                slots[i] = len(sk.params) + len(literals)
                literals.append(_literal(i))
    base = len(sk.params) + len(literals)
    steps = []
    for k, st in enumerate(sk.steps):
        fn = st.op.bound(st.const) if st.op is not None else ns[st.call]
        steps.append((fn, st.op is None, tuple(slots[i] for i in st.ins)))
        slots[st.var] = base + k

    def run(*columns: Any) -> list[Any]:
        n = len(columns[0])
        vals = [*columns, *([lit] * n for lit in literals)]
        for fn, call, ins in steps:
            vals.append(fn(*[vals[i] for i in ins]) if call else list(map(fn, *[vals[i] for i in ins])))
        return vals[-1]

    return run


def _evaluate(run: Any, inputs: list[list[Any]]) -> tuple[list[Any], list[str]] | None:
    """The outputs of a column function on ``inputs`` and their reprs (None when it raises on one
    of them or returns something large)."""
    try:
        outs = run(*zip(*inputs))
    except Exception:  # noqa: BLE001 - a degenerate draw: redraw the function
        return None
    texts = [repr(o) for o in outs]
    if any(len(t) > 300 for t in texts):
        return None
    return outs, texts


def _agrees(run: Any, inputs: Any, outputs: Any) -> bool:
    """True when the column function ``run`` returns exactly ``outputs`` on ``inputs`` (the first
    input alone first: two different functions almost always differ there)."""
    inputs, outputs = list(inputs), list(outputs)
    for lo, hi in ((0, 1), (1, len(inputs))):
        if lo >= hi:
            continue
        try:
            got = run(*zip(*inputs[lo:hi]))
        except Exception:  # noqa: BLE001
            return False
        if not all(type(g) is type(w) and g == w for g, w in zip(got, outputs[lo:hi])):
            return False
    return True


def build_program(seed: int, difficulty: str, split: str) -> dict[str, Any]:
    """The program of ``(seed, difficulty, split)``: deterministic, JSON-able, checked (see the module doc)."""
    return _build_cached(int(seed), difficulty, split)


@functools.lru_cache(maxsize=256)
def _build_cached(seed: int, difficulty: str, split: str) -> dict[str, Any]:
    rng = random.Random(f"code-synth:{seed}:{difficulty}")
    level = LEVELS[difficulty]
    # Drawing a program allocates many small lists and no reference cycles: the cyclic
    # collector would only scan them (about a tenth of the time), so it pauses meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _attempt in range(500):
            program = _try_program(rng, level, split == "val")
            if program is not None:
                program.update(seed=seed, difficulty=difficulty, split=split)
                return program
    finally:
        if collecting:
            gc.enable()
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
    done = _Accepted({}, {})
    for i, sk in enumerate(skels):
        fn = None
        for retry in range(40):
            fn = _try_function(rng, sk, done)
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


@dataclass
class _Accepted:
    """The functions accepted so far: each one's column function, its outputs by input repr, and
    the functions by parameter types."""

    runs: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    by_types: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)


def _try_function(rng: random.Random, sk: Skeleton, done: _Accepted) -> dict[str, Any] | None:
    types = [t for _, t in sk.params]
    hidden, keys = _inputs(rng, types, HIDDEN_TESTS, edges=True)
    examples, _ = _inputs(rng, types, EXAMPLES, edges=False, avoid=set(keys))
    if len(examples) < EXAMPLES or len(hidden) < HIDDEN_TESTS:
        return None
    # Every check below only accepts or rejects (the draws above are all this try takes from the
    # RNG), so they may run in any order: the cheap ones first, the examples only once the hidden
    # tests look fine.
    run = _columns(sk, done.runs)
    got = _evaluate(run, hidden)
    if got is None:
        return None
    hidden_out, texts = got
    if len(set(texts)) < 3:
        return None  # (nearly) constant on its tests: guessable
    if all(text == repr(a[0]) for text, a in zip(texts, hidden)):
        return None  # returns its first argument unchanged
    got = _evaluate(run, examples)
    if got is None:
        return None
    example_out = got[0]
    for other in done.by_types.get(tuple(types), ()):  # no two functions identical on the tests
        if not _differ_on_shared(done.outputs[other["name"]], keys, hidden_out):
            if _agrees(done.runs[other["name"]], hidden, hidden_out) or _agrees(run, *zip(*other["tests"])):
                return None
    source, body = _render(sk)
    done.runs[sk.name] = run  # the same templates as the source: later callers use it, no compile
    done.outputs[sk.name] = dict(zip(keys, hidden_out))
    fn = {
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
    done.by_types.setdefault(tuple(types), []).append(fn)
    return fn


def _differ_on_shared(other: dict[str, Any], keys: list[str], outputs: list[Any]) -> bool:
    """True when another function's known output differs from ``outputs`` on an input both were
    tested on (the edge cases are shared by every function of a signature): then neither agrees
    with the other on all tests, and nothing needs to run."""
    for key, out in zip(keys, outputs):
        if key in other:
            want = other[key]
            if type(want) is not type(out) or want != out:
                return True
    return False


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
