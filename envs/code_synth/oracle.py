"""Scripted policies for CodeSynth-v0: a delegating oracle and a flat one.

Both write each function's reference implementation the way a careful programmer would: read
its spec (``view_spec``), write it (``write_function``), check it on the spec's examples
(``run_tests``): three steps per function. They read only the structured ``info`` (the
node's targets and program reference, depth, refusals, child results), never the engine's
prose; the program is rebuilt from its reference (cached).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from rao_envs.types import Action

from rao_envs.envs.code_synth.program import build_program, dependency_order

Step = Generator[str, tuple[Any, dict[str, Any]], str]


class CodeSynthOracle:
    """``policy(observation, info) -> action text`` for CodeSynth-v0.

    Delegating (default): a node whose depth allows it delegates its functions in waves, one
    child per function, each wave holding every function whose callees are written (they run
    in parallel): dependencies first. A child's function that did not come back finished it
    writes itself; a refused delegation makes it write everything left itself. A child with
    one function writes it itself. Flat (``delegate=False``): every node writes all its
    functions itself, in dependency order, so a module of more than 8 functions does not fit
    in 25 steps.
    """

    def __init__(self, delegate: bool = True) -> None:
        self.delegate = delegate
        self.jobs: dict[str, Step] = {}
        self.infos: dict[str, dict[str, Any]] = {}  # each node's latest info
        self.stats = {"nodes": 0, "written": 0, "delegated": 0}

    def __call__(self, obs: Any, info: dict[str, Any]) -> str:
        """The next action of the node ``info`` describes."""
        text = obs["text"] if isinstance(obs, dict) else str(obs)
        node = info["node"]
        if info["turn"] == 0 and node == "0":
            self.jobs.clear()
            self.infos.clear()
        self.infos[node] = info
        if info["turn"] == 0:
            self.stats["nodes"] += 1
            self.jobs[node] = self._solve(info)
            return next(self.jobs[node])
        try:
            return self.jobs[node].send((text, info))
        except StopIteration as done:
            return Action.finish(done.value).to_text()

    def _solve(self, info: dict[str, Any]) -> Step:
        node = info["node"]
        program = build_program(**info["node_args"]["program"])
        fns = {f["name"]: f for f in program["functions"]}
        targets = dependency_order(program, list(info["node_args"]["targets"]))
        written: set[str] = set()
        can = self.delegate and info["depth"] < info["max_depth"] and len(targets) > 1
        todo = list(targets)
        while can and todo:
            wave = [n for n in todo if all(d in written or d not in targets for d in fns[n]["deps"])]
            first = len(self.infos[node]["children"])
            yield "\n".join(Action(name="delegate", args={"targets": [n]}).to_text() for n in wave)
            info = self.infos[node]
            if info["refused"]:
                break
            self.stats["delegated"] += len(wave)
            for k, name in enumerate(wave):
                res = info["child_results"].get(f"{node}.{first + k}")
                if res is None or res["status"] != "finished":
                    yield from self._write(fns[name])  # the child did not make it: do it here
                written.add(name)
                todo.remove(name)
        for name in todo:
            yield from self._write(fns[name])
        yield Action.finish(f"wrote {', '.join(targets)}").to_text()
        return "done"

    def _write(self, fn: dict[str, Any]) -> Step:
        """view_spec, write_function with the reference source, run_tests."""
        name = fn["name"]
        yield Action.tool("view_spec", names=[name]).to_text()
        yield Action.tool("write_function", name=name, source=fn["source"]).to_text()
        self.stats["written"] += 1
        yield Action.tool("run_tests", name=name).to_text()
        return name
